"""The batched regularization path reproduces K separate runs made with torch's own optimizers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reglab.batched import BatchedPath, RateDropout, draw_dropout_noise, swap_dropout
from reglab.data import TensorLoader, load_digits
from reglab.loop import fit

TOL = 1e-5


def mlp(hidden: int = 16, p: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, 10)
    )


@pytest.fixture(scope="module")
def digits():
    return load_digits(n_train=96, n_val=64, noise=0.2, seed=1)


def loader(d, seed=3):
    return TensorLoader(d.train.x, d.train.y, batch_size=16, shuffle=True, seed=seed)


def groups(model, decay_key, value):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, decay_key: value}, {"params": rest, decay_key: 0.0}]


def assert_same_weights(path: BatchedPath, index: int, model: nn.Module) -> None:
    got = path.model(index).state_dict()
    for name, ref in model.state_dict().items():
        if name.endswith(".noise"):
            continue
        assert torch.allclose(got[name], ref, atol=TOL, rtol=0), (index, name, (got[name] - ref).abs().max())


def test_decoupled_decay_matches_separate_adamw_runs(digits):
    wds = [0.0, 0.1, 1.0, 5.0]
    seeds = [0, 1, 0, 2]
    val = [(digits.val.x, digits.val.y)]
    path = BatchedPath(lambda: mlp(), seeds=seeds, weight_decay=wds, lr=3e-3)
    hists = path.fit(loader(digits), epochs=3, eval_sets={"val": val})
    for i, (seed, wd) in enumerate(zip(seeds, wds)):
        torch.manual_seed(seed)
        model = mlp()
        opt = torch.optim.AdamW(groups(model, "weight_decay", wd), lr=3e-3)
        ref = fit(model, loader(digits), optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=3, eval_sets={"val": val})
        assert_same_weights(path, i, model)
        for key in ("train_loss", "val_loss", "val_acc"):
            assert hists[i][key] == pytest.approx(ref[key], abs=TOL)
    # the strengths made a difference: copies with the same seed ended apart
    assert not torch.allclose(path.model(0)[0].weight, path.model(2)[0].weight, atol=1e-3)


def test_coupled_l2_and_label_smoothing_match_torch_adam_and_cross_entropy(digits):
    l2s = [0.0, 0.05, 0.5]
    eps = [0.0, 0.1, 0.3]
    path = BatchedPath(lambda: mlp(), seeds=[4, 4, 4], l2=l2s, label_smoothing=eps, lr=3e-3)
    path.fit(loader(digits), epochs=2)
    for i in range(3):
        torch.manual_seed(4)
        model = mlp()
        opt = torch.optim.Adam(groups(model, "weight_decay", l2s[i]), lr=3e-3)  # coupled: grad + λ·w
        fit(model, loader(digits), optimizer=opt, loss_fn=nn.CrossEntropyLoss(label_smoothing=eps[i]), epochs=2)
        assert_same_weights(path, i, model)


def test_sgd_regression_matches_torch_sgd():
    x, y = torch.randn(40, 8), torch.randn(40, 1)
    data = TensorLoader(x, y, batch_size=8, shuffle=True, seed=0)
    lams = [0.0, 0.3, 2.0]
    path = BatchedPath(lambda: nn.Linear(8, 1), seeds=[0] * 3, l2=lams, optimizer="sgd", lr=0.05, momentum=0.9, loss="mse")
    hists = path.fit(data, epochs=3)
    for i, lam in enumerate(lams):
        torch.manual_seed(0)
        model = nn.Linear(8, 1)
        opt = torch.optim.SGD(groups(model, "weight_decay", lam), lr=0.05, momentum=0.9)
        ref = fit(model, TensorLoader(x, y, batch_size=8, shuffle=True, seed=0), optimizer=opt, loss_fn=nn.functional.mse_loss, epochs=3)
        assert_same_weights(path, i, model)
        assert hists[i]["train_loss"] == pytest.approx(ref["train_loss"], abs=TOL)


def test_dropout_copies_reproduce_separate_runs_with_the_same_noise(digits):
    """Exact with dropout: the separate run draws its masks from its own generator the same way."""
    rates = [0.0, 0.2, 0.5]
    wds = [0.0, 0.5, 0.5]
    path = BatchedPath(lambda: mlp(p=0.9), seeds=[7, 7, 8], dropout=rates, weight_decay=wds, dropout_seeds=[11, 12, 13], lr=3e-3)
    path.fit(loader(digits), epochs=2)
    for i in range(3):
        torch.manual_seed([7, 7, 8][i])
        model = swap_dropout(mlp(p=0.9), rates[i])
        sites = [m for m in model.modules() if isinstance(m, RateDropout)]
        opt = torch.optim.AdamW(groups(model, "weight_decay", wds[i]), lr=3e-3)
        gen = torch.Generator().manual_seed([11, 12, 13][i])
        model.train()
        data = loader(digits)
        for _ in range(2):
            for x, y in data:
                for site, noise in zip(sites, draw_dropout_noise([(16,), (16,)], x.shape[0], gen)):
                    site.noise = noise
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        assert_same_weights(path, i, model)
    # dropout changed the result of copy 1 compared with copy 0 (same seed, same decay otherwise 0)
    assert not torch.allclose(path.model(0)[0].weight, path.model(1)[0].weight, atol=1e-4)


def test_rate_dropout_statistics_agree_with_nn_dropout():
    torch.manual_seed(0)
    x = torch.ones(400, 500)
    for p in (0.1, 0.5, 0.8):
        ours = RateDropout(p).train()(x)
        theirs = nn.Dropout(p).train()(x)
        assert (ours == 0).float().mean().item() == pytest.approx(p, abs=0.01)
        assert ours.mean().item() == pytest.approx(theirs.mean().item(), abs=0.02)  # both ≈ 1 (inverted)
        values = sorted(ours.unique().tolist())
        assert values == pytest.approx([0.0, 1 / (1 - p)])
        assert torch.equal(RateDropout(p).eval()(x), x)
    assert torch.equal(RateDropout(0.0).train()(x), x)


def test_rate_dropout_in_vmap_uses_each_copy_rate(digits):
    path = BatchedPath(lambda: mlp(hidden=64), seeds=[0, 0], dropout=[0.0, 0.6], lr=1e-3)
    x = digits.train.x[:32]
    out = path._forward(x, train=True)
    ref = path._forward(x, train=False)
    assert torch.allclose(out[0], ref[0])  # rate 0: dropout is the identity
    assert not torch.allclose(out[1], ref[1])


def test_state_dict_round_trip_resumes_exactly(digits):
    def make():
        return BatchedPath(lambda: mlp(), seeds=[0, 1], weight_decay=[0.1, 1.0], dropout=[0.3, 0.1], lr=3e-3)

    full = make()
    data = loader(digits, seed=5)
    full.fit(data, epochs=3)

    first = make()
    data1 = loader(digits, seed=5)
    first.fit(data1, epochs=2)
    state = first.state_dict()
    loader_state = data1.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    data2 = loader(digits, seed=0)
    data2.load_state_dict(loader_state)
    resumed.fit(data2, epochs=1)
    assert resumed.epoch == 3 and resumed.step == full.step
    for name, p in full.params.items():
        assert torch.allclose(resumed.params[name], p, atol=TOL, rtol=0), name


def assert_same_paths(a: BatchedPath, b: BatchedPath) -> None:
    for name, p in a.params.items():
        assert torch.allclose(p, b.params[name], atol=TOL, rtol=0), (name, (p - b.params[name]).abs().max())


@pytest.mark.parametrize("with_dropout", [False, True])
def test_bmm_engine_matches_vmap_engine(digits, with_dropout):
    """The explicit batched-matmul engine computes what vmap over functional_call computes."""
    val = [(digits.val.x, digits.val.y)]
    kwargs = dict(
        seeds=[0, 1, 0, 2],
        weight_decay=[0.0, 0.5, 0.1, 0.0],
        l2=[0.0, 0.0, 0.05, 0.2],
        label_smoothing=[0.0, 0.1, 0.3, 0.05],
        dropout=[0.0, 0.2, 0.5, 0.3] if with_dropout else None,
        lr=3e-3,
    )
    fast = BatchedPath(lambda: mlp(hidden=32), engine="auto", **kwargs)
    slow = BatchedPath(lambda: mlp(hidden=32), engine="vmap", **kwargs)
    assert (fast.engine, slow.engine) == ("bmm", "vmap")
    h_fast = fast.fit(loader(digits), epochs=2, eval_sets={"val": val})
    h_slow = slow.fit(loader(digits), epochs=2, eval_sets={"val": val})
    assert_same_paths(fast, slow)
    for a, b in zip(h_fast, h_slow):
        for key in ("train_loss", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], abs=TOL)
    for a, b in zip(fast.generators, slow.generators):
        assert torch.equal(a.get_state(), b.get_state())  # the same noise was drawn


def test_bmm_engine_handles_input_dropout_no_bias_and_other_activations():
    torch.manual_seed(0)
    x, y = torch.randn(24, 6), torch.randn(24, 2)

    def model():
        return nn.Sequential(nn.Dropout(0.2), nn.Linear(6, 12, bias=False), nn.Tanh(), nn.Dropout(0.1), nn.Linear(12, 2), nn.GELU())

    kwargs = dict(seeds=[0, 1, 2], l2=[0.0, 0.1, 1.0], dropout=[0.0, 0.3, 0.6], loss="mse", lr=1e-2)
    fast = BatchedPath(model, engine="bmm", **kwargs)
    slow = BatchedPath(model, engine="vmap", **kwargs)
    for _ in range(2):
        for xb, yb in TensorLoader(x, y, batch_size=8, shuffle=True, seed=1):
            assert torch.allclose(fast.train_step(xb, yb), slow.train_step(xb, yb), atol=TOL, rtol=0)
    assert_same_paths(fast, slow)
    assert torch.allclose(fast._forward(x, train=False), slow._forward(x, train=False), atol=TOL, rtol=0)


def test_engine_choice_falls_back_to_vmap_or_fails_by_name():
    norm = lambda: nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))  # noqa: E731
    assert BatchedPath(norm, seeds=[0, 1]).engine == "vmap"
    assert BatchedPath(lambda: nn.Linear(4, 3), seeds=[0, 1]).engine == "vmap"  # not a Sequential
    with pytest.raises(ValueError, match="LayerNorm"):
        BatchedPath(norm, seeds=[0], engine="bmm")
    with pytest.raises(ValueError, match="engine='jit'"):
        BatchedPath(mlp, seeds=[0], engine="jit")


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="weight_decay"):
        BatchedPath(mlp, seeds=[0, 1], weight_decay=[0.1])
    with pytest.raises(ValueError, match="l2=-1"):
        BatchedPath(mlp, seeds=[0], l2=-1.0)
    with pytest.raises(ValueError, match="dropout"):
        BatchedPath(mlp, seeds=[0], dropout=[1.0])
    with pytest.raises(ValueError, match="seeds"):
        BatchedPath(mlp, seeds=[])
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        BatchedPath(mlp, seeds=[0], optimizer="rmsprop")
    with pytest.raises(ValueError, match="label_smoothing"):
        BatchedPath(lambda: nn.Linear(2, 1), seeds=[0], loss="mse", label_smoothing=0.1)
    with pytest.raises(ValueError, match="p=1.5"):
        RateDropout(1.5)
    path = BatchedPath(mlp, seeds=[0])
    with pytest.raises(ValueError, match="epochs=-1"):
        path.fit([], epochs=-1)
    with pytest.raises(ValueError, match="index=3"):
        path.model(3)


def test_global_generator_is_left_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    BatchedPath(mlp, seeds=[5, 6])
    assert torch.equal(torch.rand(3), expected)
