import math

import pytest
import torch
from torch import nn

from reglab.data import TensorLoader
from reglab.groups import decay_plan
from reglab.loop import fit
from reglab.penalties import Penalty


class TinyLM(nn.Module):
    def __init__(self, vocab=13, d=16):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, 6, d) * 0.02)
        self.enc = nn.TransformerEncoderLayer(d, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        return self.head(self.ln_f(self.enc(self.wte(idx) + self.pos[:, : idx.shape[1]])))


def lm_batch(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 13, (n, 6), generator=g), torch.randint(0, 13, (n, 6), generator=g)


def lm_loss(model, x, y):
    return nn.functional.cross_entropy(model(x).reshape(-1, 13), y.reshape(-1))


def grads(model):
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}


def test_value_equals_closed_form_over_decayed_parameters():
    model = TinyLM()
    pen = Penalty(l1=0.003, l2=0.02)
    decayed = decay_plan(model).decayed_params
    expected = sum(0.01 * p.double().pow(2).sum() + 0.003 * p.double().abs().sum() for p in decayed)
    assert pen(model).item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():  # the fast value
        assert pen(model).item() == pytest.approx(expected.item(), rel=1e-5)
    names = {id(p) for p in decayed}
    assert id(model.head.bias) not in names and id(model.ln_f.weight) not in names
    assert id(model.enc.linear1.weight) in names and id(model.pos) in names


@pytest.mark.parametrize("l1, l2", [(0.0, 0.1), (0.01, 0.0), (0.01, 0.1)])
def test_fast_path_gradient_equals_autograd(l1, l2):
    torch.manual_seed(0)
    a, b = TinyLM(), TinyLM()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        a.enc.linear1.weight[0, :3] = 0.0  # sign(0): autograd's subgradient is 0 too
        b.enc.linear1.weight[0, :3] = 0.0
    x, y = lm_batch()
    pen = Penalty(l1=l1, l2=l2)
    (lm_loss(a, x, y) + pen(a)).backward()  # tutorial way
    lm_loss(b, x, y).backward()
    value = pen.add_grad_(b, return_value=True)
    ga, gb = grads(a), grads(b)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=0), n
    assert value.item() == pytest.approx(pen(a).item(), rel=1e-6)
    assert pen.add_grad_(b) is None  # no value unless asked


def test_parameters_without_grad_get_the_penalty_gradient():
    model = nn.Linear(3, 2)
    Penalty(l2=0.5, l1=0.1).add_grad_(model)
    w = model.weight.detach()
    assert torch.allclose(model.weight.grad, 0.5 * w + 0.1 * torch.sign(w))
    assert model.bias.grad is None


def test_explicit_params_and_policy_options():
    model = TinyLM()
    pen = Penalty(l2=1.0, params=[model.head.bias])
    assert pen.parameters(model) == [model.head.bias]
    assert pen().item() == pytest.approx(0.5 * model.head.bias.pow(2).sum().item(), rel=1e-6)
    pen2 = Penalty(l2=1.0, no_decay="wte.*")
    assert all(p is not model.wte.weight for p in pen2.parameters(model))


def test_cache_and_refresh_after_freezing():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    pen = Penalty(l2=1.0)
    assert len(pen.parameters(model)) == 2
    model[0].weight.requires_grad_(False)
    pen.refresh()
    assert pen.parameters(model) == [model[1].weight]


def test_schedule_needs_a_step():
    model = nn.Linear(2, 2)
    pen = Penalty(l2=lambda step: 0.1 * step)
    with pytest.raises(ValueError, match="step=None"):
        pen(model)
    w = model.weight.detach()
    assert pen(model, step=3).item() == pytest.approx(0.15 * w.pow(2).sum().item(), rel=1e-6)
    with pytest.raises(ValueError, match="returned -0.1"):
        Penalty(l1=lambda s: -0.1).strengths(step=1)


def run_manual(model, batches, l2, clip, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pen = Penalty(l2=l2)
    for x, y in batches[:steps]:
        opt.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + pen(model)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()


def test_callback_in_fit_matches_autograd_with_clipping():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))

    def make():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))

    a, b = make(), make()
    loader = TensorLoader(x, y, batch_size=16)
    batches = list(loader)
    opt = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    cb = Penalty(l2=0.5).callback(a, log_value=True)
    fit(a, loader, optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=1, callbacks=[cb], clip_grad_norm=0.05)
    run_manual(b, batches, 0.5, 0.05, len(batches))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert cb.last_value is not None and cb.last_value > 0


def test_grad_scaler_scaled_gradients():
    torch.manual_seed(0)
    a, b = TinyLM(), TinyLM()
    b.load_state_dict(a.state_dict())
    x, y = lm_batch()
    pen = Penalty(l2=0.1, l1=0.01)
    (lm_loss(a, x, y) + pen(a)).backward()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(b.parameters(), lr=0.0)
    scaler.scale(lm_loss(b, x, y)).backward()
    pen.add_grad_(b, scale=scaler.get_scale())  # gradients are still scaled here
    scaler.unscale_(opt)
    ga, gb = grads(a), grads(b)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-5, rtol=1e-5), n


def test_gradient_accumulation_once_after_the_last_micro_batch():
    torch.manual_seed(0)
    a, b, c = TinyLM(), TinyLM(), TinyLM()
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    micro = [lm_batch(seed=s, n=2) for s in range(3)]
    pen = Penalty(l2=0.2)
    (sum(lm_loss(a, x, y) for x, y in micro) / 3 + pen(a)).backward()
    for x, y in micro:
        (lm_loss(b, x, y) / 3).backward()
    pen.add_grad_(b)
    for x, y in micro:
        (lm_loss(c, x, y) / 3).backward()
        pen.add_grad_(c, scale=1 / 3)
    ga, gb, gc = grads(a), grads(b), grads(c)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-6), n
        assert torch.allclose(ga[n], gc[n], atol=1e-6), n


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"l2": -1.0}, "l2=-1.0"),
        ({"l1": math.nan}, "l1=nan"),
        ({"l2": "big"}, "l2='big'"),
        ({"l2": 0.1, "bogus": 1}, "bogus=1"),
        ({"l2": 0.1, "params": []}, "params=[]"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        Penalty(**kwargs)
    assert fragment in str(err.value)


def test_bad_model_and_scale():
    with pytest.raises(ValueError, match="received model='not a model'"):
        Penalty(l2=0.1)("not a model")
    with pytest.raises(ValueError, match="scale=inf"):
        Penalty(l2=0.1).add_grad_(nn.Linear(2, 2), scale=math.inf)
    with pytest.raises(ValueError, match="scale='x'"):
        Penalty(l2=0.1).callback(nn.Linear(2, 2), scale="x")


def test_schedule_in_fit_is_evaluated_at_the_optimizer_step():
    seen = []

    def l2(step):
        seen.append(step)
        return 0.01

    model = nn.Linear(4, 2)
    x, y = torch.randn(12, 4), torch.randint(0, 2, (12,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb = Penalty(l2=l2).callback(model)
    fit(model, TensorLoader(x, y, batch_size=4), optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=2, callbacks=[cb])
    assert seen == [0, 1, 2, 3, 4, 5]
