import copy
import io
import math

import pytest
import torch
from torch import nn

from reglab._bf16 import stochastic_round_to_bf16
from reglab.decay import decoupled, decoupled_decay_, soft_threshold_
from reglab.groups import param_groups


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)


def train(model, opt, steps, sched=None):
    x, y = data()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("foreach", [False, True])
def test_decoupled_adam_matches_adamw_with_groups_and_schedule(foreach):
    ours, ref = make_model(), make_model()
    o1 = decoupled(torch.optim.Adam)(param_groups(ours, weight_decay=0.3), lr=1e-2, foreach=foreach)
    o2 = torch.optim.AdamW(param_groups(ref, weight_decay=0.3), lr=1e-2, foreach=foreach)
    s1 = torch.optim.lr_scheduler.OneCycleLR(o1, max_lr=3e-2, total_steps=100)
    s2 = torch.optim.lr_scheduler.OneCycleLR(o2, max_lr=3e-2, total_steps=100)
    train(ours, o1, 100, s1)
    train(ref, o2, 100, s2)
    assert max_diff(ours, ref) < 1e-6
    assert max_diff(ours, make_model()) > 1e-2  # it trained
    assert [g["weight_decay"] for g in o1.param_groups] == [0.3, 0.0]  # visible values kept


def test_decoupled_sgd_equals_coupled_sgd():
    ours, ref = make_model(), make_model()
    o1 = decoupled(torch.optim.SGD)(param_groups(ours, weight_decay=0.05), lr=0.1)
    o2 = torch.optim.SGD(param_groups(ref, weight_decay=0.05), lr=0.1)
    train(ours, o1, 50)
    train(ref, o2, 50)
    assert max_diff(ours, ref) < 1e-6


def test_adam_with_l2_differs_from_adamw():
    """Loshchilov & Hutter, Proposition 2: L2 inside Adam is not weight decay."""
    a, b, c = make_model(), make_model(), make_model()
    train(a, decoupled(torch.optim.Adam)(param_groups(a, weight_decay=0.5), lr=1e-2), 100)
    train(b, torch.optim.Adam(param_groups(b, weight_decay=0.5), lr=1e-2), 100)  # coupled L2
    train(c, torch.optim.AdamW(param_groups(c, weight_decay=0.5), lr=1e-2), 100)
    assert max_diff(a, c) < 1e-6
    assert max_diff(a, b) > 1e-2


def test_decoupled_adamw_does_not_decay_twice():
    a, c = make_model(), make_model()
    train(a, decoupled(torch.optim.AdamW)(param_groups(a, weight_decay=0.5), lr=1e-2), 20)
    train(c, torch.optim.AdamW(param_groups(c, weight_decay=0.5), lr=1e-2), 20)
    assert max_diff(a, c) < 1e-6


def zero_grad_param(value=1.0, n=4, dtype=torch.float32):
    p = nn.Parameter(torch.full((n,), value, dtype=dtype))
    p.grad = torch.zeros_like(p)
    return p


def test_decay_uses_the_current_lr_and_lr_independent_variant():
    p, q = zero_grad_param(), zero_grad_param()
    o1 = decoupled(torch.optim.SGD)([p], lr=0.1, weight_decay=0.5)
    o2 = decoupled(torch.optim.SGD)([q], lr=0.1, weight_decay=0.5, lr_independent=True)
    for o in (o1, o2):
        o.step()
        o.param_groups[0]["lr"] = 0.05  # a schedule halves the lr
        o.step()
    assert p[0].item() == pytest.approx((1 - 0.1 * 0.5) * (1 - 0.05 * 0.5))
    assert q[0].item() == pytest.approx((1 - 0.5) * (1 - 0.5 * 0.5))


def test_schedule_strength_is_called_with_the_step():
    p = zero_grad_param()
    seen = []

    def wd(step):
        seen.append(step)
        return 0.1 * step

    opt = decoupled(torch.optim.SGD)([p], lr=1.0, weight_decay=wd)
    for _ in range(3):
        opt.step()
    assert seen == [0, 1, 2]
    assert p[0].item() == pytest.approx(1.0 * 0.9 * 0.8)


def test_proximal_l1_gives_exact_zeros_and_matches_soft_thresholding():
    torch.manual_seed(0)
    w0 = torch.randn(50)
    p = nn.Parameter(w0.clone())
    bias = nn.Parameter(w0.clone())
    opt = decoupled(torch.optim.SGD)(
        [{"params": [p], "decay": True}, {"params": [bias], "decay": False}], lr=0.1, l1=2.0
    )
    g = torch.randn(50)
    p.grad, bias.grad = g.clone(), g.clone()
    opt.step()
    expected = torch.sign(w0 - 0.1 * g) * torch.clamp((w0 - 0.1 * g).abs() - 0.2, min=0)
    assert torch.allclose(p.detach(), expected, atol=1e-7)
    assert (p == 0).sum() > 5  # exact zeros
    assert torch.allclose(bias.detach(), w0 - 0.1 * g)  # the no-decay group has l1=0
    assert opt.param_groups[1]["l1"] == 0.0


def test_pure_helpers():
    w = torch.tensor([2.0, -2.0])
    decoupled_decay_([w], lr=0.1, weight_decay=1.0)
    assert w.tolist() == pytest.approx([1.8, -1.8])
    soft_threshold_([w], 1.0)
    assert w.tolist() == pytest.approx([0.8, -0.8])


def test_closure_is_evaluated_before_the_decay():
    ours, ref = make_model(), make_model()
    x, y = data()
    o1 = decoupled(torch.optim.Adam)(param_groups(ours, weight_decay=0.2), lr=1e-2)
    o2 = torch.optim.AdamW(param_groups(ref, weight_decay=0.2), lr=1e-2)
    for model, opt in ((ours, o1), (ref, o2)):
        for _ in range(5):

            def closure(model=model, opt=opt):
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss

            loss = opt.step(closure)
            assert torch.isfinite(loss)
    assert max_diff(ours, ref) < 1e-6


def test_state_dict_round_trip_resumes_exactly():
    sched = lambda step: 0.1 / (1 + step)  # noqa: E731
    a, b = make_model(), make_model()
    oa = decoupled(torch.optim.Adam)(param_groups(a, weight_decay=sched), lr=1e-2, l1=1e-3)
    train(a, oa, 5)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": oa.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # no pickled code: the schedule is not saved
    assert saved["opt"]["param_groups"][0]["weight_decay"] is None
    b.load_state_dict(saved["model"])
    ob = decoupled(torch.optim.Adam)(param_groups(b, weight_decay=sched), lr=1e-2, l1=1e-3)
    ob.load_state_dict(saved["opt"])
    assert ob.param_groups[0]["weight_decay"] is sched
    assert ob.param_groups[0]["decay_step"] == 5
    train(a, oa, 5)
    train(b, ob, 5)
    assert max_diff(a, b) == 0.0


def test_loading_a_schedule_state_without_the_schedule_raises():
    a = make_model()
    oa = decoupled(torch.optim.Adam)(param_groups(a, weight_decay=lambda s: 0.1), lr=1e-2)
    ob = decoupled(torch.optim.Adam)(param_groups(a, weight_decay=0.1), lr=1e-2)
    with pytest.raises(ValueError, match="weight_decay=None"):
        ob.load_state_dict(oa.state_dict())


def test_same_class_for_same_base_and_names():
    assert decoupled(torch.optim.Adam) is decoupled(torch.optim.Adam)
    assert decoupled(torch.optim.SGD).__name__ == "DecoupledSGD"
    assert issubclass(decoupled(torch.optim.Adam), torch.optim.Adam)


def test_callers_groups_are_not_mutated():
    model = make_model()
    groups = param_groups(model, weight_decay=0.1)
    keys = [set(g) for g in groups]
    decoupled(torch.optim.Adam)(groups, lr=1e-3)
    assert [set(g) for g in groups] == keys


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"weight_decay": math.nan}, "weight_decay=nan"),
        ({"l1": -0.1}, "l1=-0.1"),
        ({"master_weights": True, "stochastic_rounding": True}, "stochastic_rounding=True"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        decoupled(torch.optim.Adam)(make_model().parameters(), lr=1e-3, **kwargs)
    assert fragment in str(err.value)


def test_bad_group_value_and_bad_base():
    model = make_model()
    with pytest.raises(ValueError, match=r"weight_decay=-0.5 \(param group 0\)"):
        decoupled(torch.optim.SGD)([{"params": list(model.parameters()), "weight_decay": -0.5}], lr=0.1)
    with pytest.raises(ValueError, match="base=<class 'torch.nn.modules.linear.Linear'>"):
        decoupled(nn.Linear)
    with pytest.raises(ValueError, match=r"received lr=0.0 \(param group 0\)"):
        decoupled(torch.optim.SGD)([zero_grad_param()], lr=0.0, lr_independent=True)
    with pytest.raises(ValueError, match=r"base=\[1\]"):
        decoupled([1])
    with pytest.raises(ValueError, match="float16"):
        decoupled(torch.optim.SGD)([zero_grad_param(dtype=torch.float16)], lr=0.1, stochastic_rounding=True)


# --- bf16 ------------------------------------------------------------------------------------


def bf16_run(steps=300, **kwargs):
    torch.manual_seed(0)
    p = nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
    opt = decoupled(torch.optim.Adam)([p], lr=1e-3, weight_decay=1e-2, **kwargs)
    for _ in range(steps):
        p.grad = torch.zeros_like(p)
        opt.step()
    return p, opt


def test_plain_bf16_loses_the_decay_and_reglab_keeps_it():
    exact = (1 - 1e-3 * 1e-2) ** 300  # 0.99700...
    half_ulp = 2.0**-9  # below 1.0 the bf16 spacing is 2**-8
    # plain PyTorch AdamW on bf16 weights: every w·(1 − 1e-5) rounds back to 1.0
    q = nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
    adamw = torch.optim.AdamW([q], lr=1e-3, weight_decay=1e-2)
    for _ in range(300):
        q.grad = torch.zeros_like(q)
        adamw.step()
    assert (q == 1.0).all()
    plain, _ = bf16_run()
    assert (plain == 1.0).all()
    master, opt = bf16_run(master_weights=True)
    assert master.dtype == torch.bfloat16
    assert (master.float() - exact).abs().max() <= half_ulp
    assert (master < 1.0).all()
    assert opt.state[master]["exp_avg"].dtype == torch.float32
    rounded, _ = bf16_run(stochastic_rounding=True)
    assert rounded.dtype == torch.bfloat16
    assert abs(rounded.float().mean().item() - exact) < 2e-4  # unbiased on average
    assert (rounded < 1.0).any()


def test_bf16_master_weights_state_round_trip():
    p, opt = bf16_run(steps=20, master_weights=True)
    sd = copy.deepcopy(opt.state_dict())  # as if saved to disk (torch shares live tensors otherwise)
    q = nn.Parameter(p.detach().clone())
    opt2 = decoupled(torch.optim.Adam)([q], lr=1e-3, weight_decay=1e-2, master_weights=True)
    opt2.load_state_dict(sd)
    assert opt2.state[q]["exp_avg"].dtype == torch.float32
    for o, t in ((opt, p), (opt2, q)):
        for _ in range(30):
            t.grad = torch.full_like(t, 1e-3)
            o.step()
    assert torch.equal(p, q)
    m1 = opt.state_dict()["reglab"]["master_weights"][0]
    m2 = opt2.state_dict()["reglab"]["master_weights"][0]
    assert torch.equal(m1, m2)


def test_stochastic_rounding_is_unbiased_and_exact_on_representable_values():
    g = torch.Generator().manual_seed(0)
    x = torch.full((20000,), 1.0 + 2.0**-10)  # a quarter of the way from 1.0 to the next bf16
    r = stochastic_round_to_bf16(x, g).float()
    assert set(r.unique().tolist()) == {1.0, 1.0 + 2.0**-7}
    assert abs(r.mean().item() - x[0].item()) < 2e-4
    y = torch.tensor([0.5, -3.0, float("inf"), 0.0])
    assert torch.equal(stochastic_round_to_bf16(y, g).float(), y)
    neg = stochastic_round_to_bf16(-x, g).float()
    assert abs(neg.mean().item() + x[0].item()) < 2e-4
    with pytest.raises(ValueError, match="x.dtype=torch.float64"):
        stochastic_round_to_bf16(x.double())


def test_optimizer_without_weight_decay_argument():
    p = zero_grad_param()
    opt = decoupled(torch.optim.Rprop)([p], lr=0.1, weight_decay=0.5)
    opt.step()
    assert p[0].item() == pytest.approx(0.95)


def test_parameter_without_gradient_is_not_decayed_like_adamw():
    p, q = zero_grad_param(), nn.Parameter(torch.ones(4))
    opt = decoupled(torch.optim.Adam)([p, q], lr=0.1, weight_decay=0.5)
    opt.step()
    assert p[0].item() == pytest.approx(0.95) and q[0].item() == 1.0


def test_bad_schedule_value_raises_before_anything_changes():
    p = zero_grad_param()
    opt = decoupled(torch.optim.SGD)([p], lr=0.1, weight_decay=lambda step: 0.1 if step == 0 else -1.0)
    opt.step()
    before = p.detach().clone()
    with pytest.raises(ValueError, match="returned -1.0 at step 1"):
        opt.step()
    assert torch.equal(p, before) and opt.param_groups[0]["decay_step"] == 1
