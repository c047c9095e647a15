import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reglab.linting import RULES, Finding, lint


def _ids(findings):
    return {f.id for f in findings}


def _split_groups(model, weight_decay, lr=1e-3):
    decay, rest = [], []
    for name, p in model.named_parameters():
        (rest if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr": lr}, {"params": rest, "weight_decay": 0.0, "lr": lr}]


def _mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))


def test_decay_on_norm_or_bias():
    model = _mlp()
    bad = lint(model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01))
    (f,) = [f for f in bad if f.id == "decay-on-norm-or-bias"]
    assert f.severity == "warning"
    assert set(f.objects) == {"0.bias", "1.weight", "1.bias", "3.bias"}
    assert "param_groups" in f.fix and f.reference
    good = lint(model, torch.optim.AdamW(_split_groups(model, 0.01)))
    assert "decay-on-norm-or-bias" not in _ids(good)


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.RMSprop, torch.optim.Adagrad])
def test_coupled_l2_in_adaptive_optimizer(cls):
    model = nn.Linear(4, 2, bias=False)
    (f,) = lint(model, cls(model.parameters(), lr=1e-3, weight_decay=1e-2))
    assert (f.id, f.severity) == ("coupled-l2-adaptive", "warning")
    assert "AdamW" in f.fix
    for opt in (
        torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2),
        torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.0),
        torch.optim.SGD(model.parameters(), lr=1e-1, weight_decay=1e-2),
    ):
        assert "coupled-l2-adaptive" not in _ids(lint(model, opt))


def test_coupled_l2_not_reported_for_reglab_decoupled():
    from reglab.decay import decoupled

    model = nn.Linear(4, 2, bias=False)
    opt = decoupled(torch.optim.Adam)(model.parameters(), lr=1e-3, weight_decay=1e-2)
    assert lint(model, opt) == []


def test_dropout_active_in_eval():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.eval()
    assert lint(model) == []
    model[1].train()
    (f,) = lint(model)
    assert (f.id, f.severity, f.objects) == ("dropout-active-in-eval", "error", ("1",))

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return F.dropout(self.fc(x), 0.5)  # training=True by default: a bug

    fm = Functional().train()
    x = torch.randn(3, 4)
    state = torch.get_rng_state()
    (f,) = lint(fm, inputs=x)
    assert f.id == "dropout-active-in-eval" and "different outputs" in f.message
    assert torch.equal(torch.get_rng_state(), state) and fm.training
    fixed = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    assert lint(fixed, inputs=x) == []


def test_double_label_smoothing():
    from reglab.targets import SoftTargets

    model = nn.Linear(4, 3)
    data = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    mix = SoftTargets(data, 3, label_smoothing=0.1)
    (f,) = lint(model, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1), mixup=mix)
    assert (f.id, f.severity) == ("double-label-smoothing", "warning")
    assert "0.19" in f.message
    partial = functools.partial(F.cross_entropy, label_smoothing=0.2)
    assert _ids(lint(model, loss_fn=partial, mixup=mix)) == {"double-label-smoothing"}
    assert lint(model, loss_fn=nn.CrossEntropyLoss(), mixup=mix) == []
    assert lint(model, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1), mixup=SoftTargets(data, 3)) == []


def test_decay_on_frozen():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    model[0].weight.requires_grad_(False)
    found = lint(model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01))
    (f,) = [f for f in found if f.id == "decay-on-frozen"]
    assert f.objects == ("0.weight",)
    ok = lint(model, torch.optim.AdamW([model[1].weight], lr=1e-3, weight_decay=0.01))
    assert "decay-on-frozen" not in _ids(ok)


def test_decay_on_scale_invariant_weight():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    groups = _split_groups(model, 1e-4, lr=0.1)
    (f,) = lint(model, torch.optim.SGD(groups, momentum=0.9))
    assert (f.id, f.severity, f.objects) == ("decay-scale-invariant", "info", ("0.weight",))
    assert "lr/‖w‖²" in f.message
    groups[0]["scale_invariant"] = True  # acknowledged
    assert lint(model, torch.optim.SGD(groups, momentum=0.9)) == []
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU())
    assert lint(plain, torch.optim.SGD(_split_groups(plain, 1e-4, lr=0.1))) == []


def test_dropout_before_batchnorm():
    bad = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.BatchNorm1d(8))
    (f,) = lint(bad)
    assert (f.id, f.severity, f.objects) == ("dropout-before-batchnorm", "warning", ("1 -> 2",))

    class Custom(nn.Module):  # not a Sequential: found by the traced pass
        def __init__(self):
            super().__init__()
            self.fc, self.drop, self.bn = nn.Linear(4, 8), nn.Dropout(0.3), nn.BatchNorm1d(8)

        def forward(self, x):
            return self.bn(self.drop(self.fc(x)))

    custom = Custom()
    assert lint(custom) == []
    assert _ids(lint(custom, inputs=torch.randn(3, 4))) == {"dropout-before-batchnorm"}
    assert custom.training and custom.bn.num_batches_tracked.item() == 0
    good = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3))
    assert lint(good, inputs=torch.randn(3, 4)) == []


def test_bf16_decay_below_resolution():
    model = nn.Linear(8, 8, bias=False).to(torch.bfloat16)
    (f,) = lint(model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01))
    assert (f.id, f.severity, f.objects) == ("bf16-decay-lost", "warning", ("weight",))
    # the claim is true: one decay step leaves bf16 weights unchanged
    w = model.weight.detach().clone()
    assert torch.equal(w * (1 - 1e-3 * 0.01), w)
    assert lint(model, torch.optim.AdamW(model.parameters(), lr=1e-1, weight_decay=0.1)) == []
    fp32 = nn.Linear(8, 8, bias=False)
    assert lint(fp32, torch.optim.AdamW(fp32.parameters(), lr=1e-3, weight_decay=0.01)) == []


def test_no_decay_on_fine_tuning():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    model[0].weight.requires_grad_(False)  # partly frozen: fine-tuning a head
    (f,) = lint(model, torch.optim.AdamW([model[1].weight], lr=1e-3, weight_decay=0.0))
    assert (f.id, f.severity) == ("no-decay-fine-tuning", "info")
    assert "0.01–0.1" in f.fix
    assert lint(model, torch.optim.AdamW([model[1].weight], lr=1e-3, weight_decay=0.01)) == []
    scratch = nn.Linear(4, 2, bias=False)
    opt = torch.optim.AdamW(scratch.parameters(), lr=1e-3, weight_decay=0.0)
    assert lint(scratch, opt) == []
    assert _ids(lint(scratch, opt, fine_tuning=True)) == {"no-decay-fine-tuning"}


def test_decay_too_large():
    model = nn.Linear(4, 2, bias=False)
    (f,) = lint(model, torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=10.0))
    assert (f.id, f.severity) == ("decay-too-large", "error")
    assert lint(model, torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=5.0)) == []
    sched = torch.optim.SGD([{"params": model.parameters(), "weight_decay": lambda step: 20.0}], lr=0.1)
    assert _ids(lint(model, sched)) == {"decay-too-large"}


def test_findings_are_sorted_and_serializable():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.BatchNorm1d(8)).eval()
    model[1].train()
    found = lint(model, torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.01))
    assert [f.severity for f in found] == sorted((f.severity for f in found), key=["error", "warning", "info"].index)
    assert found[0].id == "dropout-active-in-eval"
    assert {f.id for f in found} <= set(RULES)
    d = found[0].to_dict()
    assert Finding(d["id"], d["severity"], d["message"], tuple(d["objects"]), d["fix"], d["reference"]) == found[0]
    assert "[error]" in str(found[0])
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        lint("not a model")
    with pytest.raises(ValueError, match="optimizer must be"):
        lint(nn.Linear(2, 2), optimizer="sgd")


def test_hugging_face_bert_correct_setup_has_no_warnings():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=2e-5)
    inputs = {"input_ids": torch.randint(0, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    for mode in (model.train, model.eval):
        mode()
        found = lint(model, opt, nn.CrossEntropyLoss(), inputs)
        assert [f for f in found if f.severity in ("error", "warning")] == []
    # the same model with the usual mistake is caught
    naive = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    assert "decay-on-norm-or-bias" in _ids(lint(model, naive, nn.CrossEntropyLoss(), inputs))


def test_reglab_lint_is_the_function_after_importing_its_module():
    import reglab
    import reglab.linting  # noqa: F401

    model = nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.1)
    assert reglab.lint is lint
    assert reglab.lint(model, opt) == lint(model, opt) != []
