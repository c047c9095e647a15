import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reglab
from reglab.data import TensorLoader
from reglab.loop import fit
from reglab.stochastic import (
    DropPath,
    MaxNorm,
    ScheduledDropout,
    add_stochastic_depth,
    check_eval_dropout,
    drop_path,
    drop_path_rates,
    dropout_sites,
    set_dropout,
)


def _encoder(p=0.1):
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=p, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def _tiny_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return BertModel(cfg)


# --- public names --------------------------------------------------------------------------


def test_public_names_resolve():
    for name in ("set_dropout", "dropout_sites", "check_eval_dropout", "DropPath", "drop_path",
                 "drop_path_rates", "add_stochastic_depth", "MaxNorm"):
        assert getattr(reglab, name) is getattr(reglab.stochastic, name)


# --- dropout sites ---------------------------------------------------------------------------


def test_transformer_encoder_sites_found_and_set():
    enc = _encoder(0.1)
    sites = {s.name: s for s in dropout_sites(enc)}
    expected = {f"layers.{i}.{n}" for i in range(2) for n in ("dropout", "dropout1", "dropout2", "self_attn.dropout")}
    assert set(sites) == expected
    assert all(s.rate == 0.1 for s in sites.values())
    assert sites["layers.0.dropout1"].categories == {"attention"}
    assert sites["layers.0.self_attn.dropout"].categories == {"attention"}
    assert sites["layers.0.dropout"].categories == {"ffn"}
    assert set_dropout(enc, 0.25, where="ffn") == 4
    assert enc.layers[0].dropout.p == 0.25 and enc.layers[1].dropout2.p == 0.25
    assert enc.layers[0].dropout1.p == 0.1 and enc.layers[0].self_attn.dropout == 0.1
    assert set_dropout(enc, 0.25) == 4  # only the attention ones still differ
    assert all(s.rate == 0.25 for s in dropout_sites(enc))
    assert set_dropout(enc, 0.25) == 0
    enc.train()
    x = torch.randn(3, 5, 8)
    assert not torch.equal(enc(x), enc(x))  # dropout is really on in training
    assert check_eval_dropout(enc, x).ok


def test_hf_bert_sites_config_and_eval():
    model = _tiny_bert()
    sites = {s.name: s for s in dropout_sites(model)}
    modules = [n for n, s in sites.items() if s.kind == "module"]
    assert len(modules) == 1 + 2 * 3  # embeddings + (attention probs, attention output, FFN output) per layer
    assert sites["config.attention_probs_dropout_prob"].categories == {"attention"}
    # where="attention" leaves the shared hidden_dropout_prob (and the embeddings) alone
    assert set_dropout(model, 0.3, where="attention") == 4 + 1
    assert model.config.attention_probs_dropout_prob == 0.3
    assert model.config.hidden_dropout_prob == 0.1
    assert model.embeddings.dropout.p == 0.1
    assert model.encoder.layer[1].attention.self.dropout.p == 0.3
    # everything else
    assert set_dropout(model, 0.3) == 1 + 2 + 1  # embeddings, two FFN outputs, hidden_dropout_prob
    assert all(s.rate == 0.3 for s in dropout_sites(model))
    assert model.config.to_dict()["hidden_dropout_prob"] == 0.3  # persists with the config
    ids = torch.randint(0, 40, (2, 6))
    report = check_eval_dropout(model, {"input_ids": ids})
    assert report.ok and report.max_abs_diff == 0.0 and model.training  # mode restored


def test_peft_lora_sites():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_bert(), LoraConfig(r=2, target_modules=["query", "value"], lora_dropout=0.0))
    adapters = [s for s in dropout_sites(model) if s.categories == {"adapter"}]
    assert len(adapters) == 4 + 1  # query/value in two layers + peft_config.default.lora_dropout
    keys = set(model.state_dict())
    assert set_dropout(model, 0.2, where="adapter") == 5
    assert set(model.state_dict()) == keys
    layer = model.base_model.model.encoder.layer[0].attention.self.query
    assert isinstance(layer.lora_dropout["default"], nn.Dropout) and layer.lora_dropout["default"].p == 0.2
    assert model.peft_config["default"].lora_dropout == 0.2
    assert model.base_model.model.config.hidden_dropout_prob == 0.1  # base model untouched
    set_dropout(model, 0.4)
    assert all(s.rate == 0.4 for s in dropout_sites(model))
    assert check_eval_dropout(model, {"input_ids": torch.randint(0, 40, (2, 5))}).ok


def test_set_dropout_validates():
    enc = _encoder()
    with pytest.raises(ValueError, match=r"p=1\.0"):
        set_dropout(enc, 1.0)
    with pytest.raises(ValueError, match=r"p=-0\.1"):
        set_dropout(enc, -0.1)
    with pytest.raises(ValueError, match="where='mlp'"):
        set_dropout(enc, 0.1, where="mlp")


class _LeakyAttention(nn.Module):
    """Calls SDPA with a dropout rate without checking self.training (the known trap)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.p = 0.5

    def forward(self, x):
        q = self.proj(x)
        return F.scaled_dot_product_attention(q, q, q, dropout_p=self.p)


def test_check_eval_dropout_names_the_source():
    model = nn.Sequential(nn.Linear(8, 8), _LeakyAttention(), nn.Linear(8, 2))
    report = check_eval_dropout(model, torch.randn(2, 4, 8))
    assert not report.ok and report.max_abs_diff > 0
    assert report.culprits == ("1",)
    assert "1" in str(report)


def test_check_eval_dropout_positional_tuple():
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    assert check_eval_dropout(Two(), (torch.ones(2), torch.ones(2))).ok


def test_scheduled_dropout_callback_and_state():
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    sched = ScheduledDropout(lambda step: 0.0 if step < 2 else 0.2)
    loader = TensorLoader(torch.randn(8, 4), torch.randint(0, 2, (8,)), batch_size=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    fit(net, loader, optimizer=opt, loss_fn=F.cross_entropy, epochs=1, callbacks=[sched])
    assert net[1].p == 0.2 and sched.last_rate == 0.2
    other = ScheduledDropout(0.1)
    other.load_state_dict(sched.state_dict())
    assert other.state_dict() == sched.state_dict()
    with pytest.raises(ValueError, match="schedule=1.5"):
        ScheduledDropout(1.5)
    with pytest.raises(ValueError, match="where="):
        ScheduledDropout(0.1, where="nope")


# --- DropPath ----------------------------------------------------------------------------------


def test_drop_path_zero_or_scaled_and_unbiased():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(20000, 3)
    y = drop_path(x, 0.3, True, generator=g)
    rows = y[:, 0]
    assert torch.all((rows == 0) | torch.isclose(rows, torch.tensor(1 / 0.7)))
    assert torch.all(y == y[:, :1])  # one draw per sample
    kept = float((rows != 0).float().mean())
    # binomial std of the kept fraction: sqrt(0.7*0.3/20000) ~ 0.0032; allow 5 sigma
    assert abs(kept - 0.7) < 0.017
    assert abs(float(y.mean()) - 1.0) < 0.025


def test_drop_path_identity_when_inactive_and_batch_dim():
    x = torch.randn(4, 6)
    assert drop_path(x, 0.5, False) is x
    assert drop_path(x, 0.0, True) is x
    g = torch.Generator().manual_seed(1)
    seq_first = torch.ones(5, 64, 2)  # (S, N, E)
    out = drop_path(seq_first, 0.5, True, batch_dim=1, generator=g)
    assert torch.all(out == out[:1, :, :1])  # constant over S and E, varies over N
    assert 0 < int((out[0, :, 0] == 0).sum()) < 64


def test_droppath_module_modes_and_reproducible():
    dp = DropPath(0.5, generator=torch.Generator().manual_seed(3))
    x = torch.ones(16, 2)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    a = dp(x)
    dp.generator.manual_seed(3)
    assert torch.equal(dp(x), a)
    assert "p=0.5" in repr(dp)
    with pytest.raises(ValueError, match="p=1"):
        DropPath(1)
    with pytest.raises(ValueError, match="p=-0.2"):
        drop_path(x, -0.2, True)


def test_drop_path_rates_rules():
    assert drop_path_rates(4, 0.2) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert drop_path_rates(1, 0.5) == [0.5]
    assert drop_path_rates(3, 0.1, rule="uniform") == [0.1, 0.1, 0.1]
    rates = drop_path_rates(12, 0.5)
    assert all(math.isclose(r, (i + 1) / 12 * 0.5) for i, r in enumerate(rates))
    for kwargs, msg in (
        (dict(num_blocks=0, max_rate=0.1), "num_blocks=0"),
        (dict(num_blocks=3, max_rate=1.0), "max_rate=1.0"),
        (dict(num_blocks=3, max_rate=0.1, rule="cosine"), "rule='cosine'"),
    ):
        with pytest.raises(ValueError, match=msg):
            drop_path_rates(**kwargs)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.attn = nn.Linear(4, 4)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


def test_add_stochastic_depth_same_keys_at_every_rate():
    torch.manual_seed(0)
    nets = [nn.Sequential(*[_Block() for _ in range(3)]) for _ in range(2)]
    keys = set(nets[0].state_dict())
    dps0 = add_stochastic_depth(nets[0], 0.0, "*.mlp")
    dps1 = add_stochastic_depth(nets[1], 0.3, ["0.mlp", "0.attn", "1.mlp", "1.attn", "2.mlp", "2.attn"])
    assert [d.p for d in dps0] == [0.0, 0.0, 0.0]
    assert [d.p for d in dps1] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    assert set(nets[0].state_dict()) == keys == set(nets[1].state_dict())
    assert isinstance(nets[0][0].mlp[-1], DropPath) and isinstance(nets[1][0].attn.drop_path, DropPath)
    # calling again updates the rates, no second DropPath
    again = add_stochastic_depth(nets[0], 0.6, "*.mlp")
    assert again[0] is dps0[0] and [d.p for d in again] == pytest.approx([0.2, 0.4, 0.6])
    assert sum(isinstance(m, DropPath) for m in nets[0].modules()) == 3


def test_add_stochastic_depth_behaviour():
    torch.manual_seed(0)
    net = nn.Sequential(*[_Block() for _ in range(2)])
    x = torch.randn(64, 4)
    ref = net(x)
    add_stochastic_depth(net, 0.5, "*.attn", rule="uniform")
    net.eval()
    assert torch.allclose(net(x), ref)  # identity in eval mode
    net.train()
    outs = net(x)
    assert not torch.allclose(outs, ref)
    # with the attention branches all dropped the block is x + mlp(x)
    for m in net.modules():
        if isinstance(m, DropPath):
            m.p = 0.999999
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, DropPath):
            m.generator = g
    y = x
    for blk in net:
        y = y + blk.mlp(y)
    # almost surely every sample is dropped at p ~ 1
    assert torch.allclose(net(x), y)


def test_add_stochastic_depth_on_transformer_layers():
    enc = _encoder(0.0)
    dps = add_stochastic_depth(enc, 0.2, ["layers.0.dropout1", "layers.0.dropout2", "layers.1.dropout1", "layers.1.dropout2"])
    assert [d.p for d in dps] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    x = torch.randn(6, 3, 8)
    enc.train()
    assert not torch.equal(enc(x), enc(x))
    assert check_eval_dropout(enc, x).ok


def test_add_stochastic_depth_validates():
    net = nn.Sequential(_Block())
    with pytest.raises(ValueError, match="max_rate=1.5"):
        add_stochastic_depth(net, 1.5, "*.mlp")
    with pytest.raises(ValueError, match="unknown paths"):
        add_stochastic_depth(net, 0.1, ["0.nope"])
    with pytest.raises(ValueError, match=r"blocks='\*\.zzz'"):
        add_stochastic_depth(net, 0.1, "*.zzz")


# --- MaxNorm ----------------------------------------------------------------------------------


def test_maxnorm_closed_form_linear_and_conv():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 5), nn.ConvTranspose1d(4, 6, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(10)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    c = 1.5
    clipped = MaxNorm(c)(net)

    def expected(w, dim):
        wt = w.transpose(0, dim)
        norms = wt.flatten(1).norm(dim=1)
        scale = torch.where(norms > c, c / norms, torch.ones_like(norms))
        return (wt * scale.view(-1, *[1] * (wt.ndim - 1))).transpose(0, dim), int((norms > c).sum())

    total = 0
    for name, dim in (("0.weight", 0), ("2.weight", 0), ("3.weight", 1)):
        want, n = expected(before[name], dim)
        total += n
        assert torch.allclose(dict(net.named_parameters())[name], want, rtol=1e-5, atol=1e-6)
    assert clipped == total > 0
    for name in ("0.bias", "2.bias", "3.bias"):
        assert torch.equal(dict(net.named_parameters())[name], before[name])
    # units under the bound are untouched
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, 0.0, 0.0], [3.0, 4.0, 0.0]]))
    assert MaxNorm(2.0).apply(lin) == 1
    assert torch.equal(lin.weight[0], torch.tensor([0.1, 0.0, 0.0]))
    assert torch.allclose(lin.weight[1], torch.tensor([1.2, 1.6, 0.0]), atol=1e-5)


def test_maxnorm_as_fit_callback():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    loader = TensorLoader(torch.randn(32, 4) * 5, torch.randint(0, 2, (32,)), batch_size=8)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    fit(net, loader, optimizer=opt, loss_fn=F.cross_entropy, epochs=2, callbacks=[MaxNorm(0.5)])
    for m in (net[0], net[2]):
        assert float(m.weight.detach().norm(dim=1).max()) <= 0.5 + 1e-5


def test_maxnorm_modules_state_and_validation():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    with torch.no_grad():
        net[0].weight.fill_(5.0)
        net[1].weight.fill_(5.0)
    MaxNorm(1.0, modules=["1"])(net)
    assert float(net[0].weight.detach().norm(dim=1).max()) > 5
    assert float(net[1].weight.detach().norm(dim=1).max()) <= 1.0 + 1e-5
    a = MaxNorm(2.0, modules=["1"])
    b = MaxNorm(9.0)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() == {"c": 2.0, "modules": ["1"]}
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="c="):
            MaxNorm(bad)
    with pytest.raises(ValueError, match="modules="):
        MaxNorm(1.0, modules=[])


def test_gpt2_sites_categories():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30, n_positions=16,
                                       bos_token_id=0, eos_token_id=0))
    cats = {s.name: s.categories for s in dropout_sites(model)}
    assert cats["transformer.drop"] == {"embeddings"}
    assert cats["transformer.h.0.attn.attn_dropout"] == {"attention"}
    assert cats["transformer.h.0.mlp.dropout"] == {"ffn"}
    assert cats["config.resid_pdrop"] == {"attention", "ffn"}
    assert set_dropout(model, 0.0, where="embeddings") == 2  # transformer.drop and config.embd_pdrop
    assert model.config.embd_pdrop == 0.0 and model.config.attn_pdrop == 0.1
