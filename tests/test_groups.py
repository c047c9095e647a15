import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from reglab.groups import DecayPlan, decay_plan, is_norm_module, param_groups


class MyRMSNorm(nn.Module):
    """A custom norm class, recognised by its name only."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm2 = MyRMSNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.proj(torch.relu(self.fc(self.norm2(x))))


class TinyTransformer(nn.Module):
    def __init__(self, vocab=11, d=8, n=2):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied

    def forward(self, idx):
        x = self.wte(idx)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def reasons(plan):
    return {e.name: (e.decay, e.reason) for e in plan.entries}


def assert_partition(model, groups):
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    for g in groups:
        assert len(g["names"]) == len(g["params"])


def test_transformer_with_layernorm_and_custom_rmsnorm():
    model = TinyTransformer()
    plan = decay_plan(model, weight_decay=0.1)
    r = reasons(plan)
    assert r["wte.weight"] == (True, "default (ndim=2)")
    assert r["blocks.0.ln_1.weight"] == (False, "norm module LayerNorm")
    assert r["blocks.0.ln_1.bias"] == (False, "norm module LayerNorm")
    assert r["blocks.1.norm2.scale"] == (False, "norm module MyRMSNorm")
    assert r["blocks.0.attn.in_proj_weight"][0] is True
    assert r["blocks.0.attn.in_proj_bias"] == (False, "bias")
    assert r["blocks.0.attn.out_proj.weight"][0] is True
    assert r["blocks.0.fc.bias"] == (False, "bias")
    assert r["ln_f.weight"][0] is False
    # the tied head appears once, under its first name, with its alias recorded
    assert "head.weight" not in r
    entry = next(e for e in plan.entries if e.name == "wte.weight")
    assert entry.aliases == ("head.weight",)
    groups = param_groups(model, weight_decay=0.1)
    assert_partition(model, groups)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [g["decay"] for g in groups] == [True, False]
    assert set(groups[0]["names"]) == {
        "wte.weight",
        *(f"blocks.{i}.{n}" for i in range(2) for n in ("attn.in_proj_weight", "attn.out_proj.weight", "fc.weight", "proj.weight")),
    }
    torch.optim.AdamW(groups, lr=1e-3)  # accepted by a stock optimizer


def test_decay_embeddings_false_exempts_embeddings():
    model = TinyTransformer()
    r = reasons(decay_plan(model, weight_decay=0.1, decay_embeddings=False))
    assert r["wte.weight"] == (False, "embedding (Embedding)")
    assert r["blocks.0.fc.weight"][0] is True


def test_is_norm_module():
    for m in (nn.LayerNorm(3), nn.GroupNorm(1, 2), nn.BatchNorm1d(2), nn.InstanceNorm2d(2, affine=True), nn.RMSNorm(3), MyRMSNorm(2)):
        assert is_norm_module(m), m
    for m in (nn.Linear(2, 2), nn.Conv2d(1, 1, 1), nn.Embedding(2, 2)):
        assert not is_norm_module(m), m


def resnet():
    def block(c):
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())

    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), block(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    )


def test_resnet_style_cnn_with_batchnorm():
    model = resnet()
    plan = decay_plan(model, weight_decay=5e-4)
    r = reasons(plan)
    assert r["0.weight"] == (True, "default (ndim=4)")
    assert r["0.bias"] == (False, "bias")
    assert r["1.weight"] == (False, "norm module BatchNorm2d")
    assert r["3.0.weight"][0] is True
    assert r["3.1.bias"] == (False, "norm module BatchNorm2d")
    assert r["6.weight"] == (True, "default (ndim=2)")
    assert r["6.bias"] == (False, "bias")
    assert plan.decayed_names == ["0.weight", "3.0.weight", "6.weight"]
    t = plan.totals()
    assert t["decay_numel"] == 4 * 3 * 9 + 4 * 4 * 9 + 40
    assert t["decay_numel"] + t["no_decay_numel"] == sum(p.numel() for p in model.parameters())
    text = str(plan)
    assert "decayed (weight_decay=0.0005): 3 tensors, 292 parameters" in text
    assert "norm module BatchNorm2d" in text
    assert_partition(model, plan.groups())


class ViTish(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))  # 3-D: the ndim rule alone would decay it
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.proj = nn.Linear(8, 8)
        self.rel = nn.Parameter(torch.zeros(3, 3))

    def no_weight_decay(self):
        return {"pos_embed", "cls_token", "dist_token"}

    def no_weight_decay_keywords(self):
        return {"rel"}


def test_model_no_weight_decay_hook_with_3d_pos_embed():
    plan = decay_plan(ViTish(), weight_decay=0.05)
    r = reasons(plan)
    assert r["pos_embed"] == (False, "model no_weight_decay()")
    assert r["cls_token"] == (False, "model no_weight_decay()")
    assert r["rel"] == (False, "model no_weight_decay_keywords() 'rel'")
    assert r["proj.weight"][0] is True
    assert plan.unmatched_hooks == ["dist_token"]
    off = reasons(decay_plan(ViTish(), weight_decay=0.05, use_model_hooks=False))
    assert off["pos_embed"] == (True, "default (ndim=3)")


def test_hook_of_a_submodule_is_prefixed():
    model = nn.Sequential(nn.Linear(2, 2), ViTish())
    r = reasons(decay_plan(model, weight_decay=0.05))
    assert r["1.pos_embed"] == (False, "model no_weight_decay()")


def test_frozen_layers_are_left_out():
    model = resnet()
    for p in model[0].parameters():
        p.requires_grad_(False)
    plan = decay_plan(model, weight_decay=0.1)
    assert plan.frozen_names == ["0.weight", "0.bias"]
    assert "0.weight" not in plan.decayed_names + plan.no_decay_names
    entry = plan.entries[0]
    assert not entry.trainable and entry.reason == "frozen (requires_grad=False)"
    groups = plan.groups()
    assert_partition(model, groups)
    assert "frozen (in no group): 2 tensors" in str(plan)


def test_patterns_fnmatch_and_regex_and_precedence():
    model = resnet()
    r = reasons(decay_plan(model, weight_decay=0.1, no_decay="6.*", decay=[re.compile(r"1\.weight")]))
    assert r["6.weight"] == (False, "no_decay pattern '6.*'")
    assert r["1.weight"] == (True, "decay pattern re:'1\\\\.weight'")
    assert r["1.bias"][0] is False  # regex matches the whole name only


def test_lr_multipliers_make_groups_with_lr():
    model = resnet()
    groups = param_groups(model, weight_decay=0.1, lr=0.01, lr_mult={"6.*": 10.0})
    assert_partition(model, groups)
    by_key = {(g["decay"], g["lr_mult"]): g for g in groups}
    assert set(by_key) == {(True, 1.0), (False, 1.0), (True, 10.0), (False, 10.0)}
    assert by_key[(True, 10.0)]["names"] == ["6.weight"]
    assert by_key[(True, 10.0)]["lr"] == pytest.approx(0.1)
    assert by_key[(False, 1.0)]["lr"] == pytest.approx(0.01)
    opt = torch.optim.SGD(groups, lr=0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.01, 0.01, 0.1, 0.1])


def test_plan_to_dict_is_json_ready():
    import json

    d = decay_plan(resnet(), weight_decay=0.1).to_dict()
    json.dumps(d)
    assert d["entries"][0]["name"] == "0.weight" and d["entries"][0]["shape"] == [4, 3, 3, 3]


def test_schedule_strength_is_carried():
    def schedule(step):
        return 0.1 * step

    groups = param_groups(resnet(), weight_decay=schedule)
    assert groups[0]["weight_decay"] is schedule and groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"weight_decay": -0.1}, "weight_decay=-0.1"),
        ({"weight_decay": math.nan}, "weight_decay=nan"),
        ({"weight_decay": "0.1"}, "weight_decay='0.1'"),
        ({"weight_decay": 0.1, "lr_mult": {"6.*": 2.0}}, "lr=None"),
        ({"weight_decay": 0.1, "lr": 0.1, "lr_mult": {"6.*": 0.0}}, "lr_mult="),
        ({"weight_decay": 0.1, "no_decay": [3]}, "no_decay=[3]"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        decay_plan(resnet(), **kwargs)
    assert fragment in str(err.value)


def test_non_model_and_empty_model_raise():
    with pytest.raises(ValueError, match="model must be a torch.nn.Module; received model=\\[1, 2\\]"):
        param_groups([1, 2], weight_decay=0.1)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        param_groups(frozen, weight_decay=0.1)
    with pytest.raises(ValueError, match="no trainable parameter"):
        param_groups(nn.ReLU(), weight_decay=0.1)


def test_plan_is_a_decayplan_with_consistent_views():
    plan = decay_plan(TinyTransformer(), weight_decay=0.1)
    assert isinstance(plan, DecayPlan)
    assert set(plan.decayed_names).isdisjoint(plan.no_decay_names)
    assert [id(p) for p in plan.decayed_params] == [id(p) for p in plan.groups()[0]["params"]]
    assert "DecayPlan(decay=" in repr(plan)


def test_peft_lora_model():
    peft = pytest.importorskip("peft")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            return self.out(self.norm(self.q(x)))

    model = peft.get_peft_model(Net(), peft.LoraConfig(r=2, target_modules=["q"], lora_alpha=4))
    plan = decay_plan(model, weight_decay=0.1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(plan.decayed_names) == sorted(trainable)
    assert all("lora_" in n for n in plan.decayed_names) and len(plan.decayed_names) == 2
    assert not plan.no_decay_names
    assert any(n.endswith("q.base_layer.weight") for n in plan.frozen_names)
    assert_partition(model, plan.groups())

LAYERS = [
    lambda: nn.Linear(3, 3),
    lambda: nn.Linear(3, 3, bias=False),
    lambda: nn.LayerNorm(3),
    lambda: nn.BatchNorm1d(3),
    lambda: MyRMSNorm(3),
    lambda: nn.Embedding(4, 3),
    lambda: nn.Conv1d(3, 3, 1),
    lambda: ViTish(),
]


@settings(max_examples=30, deadline=None)
@given(
    kinds=st.lists(st.integers(0, len(LAYERS) - 1), min_size=1, max_size=6),
    frozen=st.lists(st.booleans(), min_size=6, max_size=6),
    decay_embeddings=st.booleans(),
)
def test_every_trainable_parameter_is_in_exactly_one_group(kinds, frozen, decay_embeddings):
    model = nn.Sequential(*(LAYERS[k]() for k in kinds))
    for layer, f in zip(model, frozen):
        if f:
            layer.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        with pytest.raises(ValueError, match="no trainable parameter"):
            decay_plan(model, weight_decay=0.1)
        return
    plan = decay_plan(model, weight_decay=0.1, decay_embeddings=decay_embeddings)
    assert_partition(model, plan.groups())
    for e in plan.entries:
        if e.trainable and e.decay:
            assert len(e.shape) >= 2 and not e.reason.startswith(("bias", "norm"))
        if e.module in ("LayerNorm", "BatchNorm1d", "MyRMSNorm"):
            assert not e.decay
