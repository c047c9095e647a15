import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

from reglab.integrations.transformers import BestWeightsEarlyStopping
from reglab.stopping import StopReason


def _tiny_model():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=24, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(config)  # built from a config: nothing is downloaded


def _dataset(n, seed, flip_fraction):
    """Label = whether token 3 occurs; a fraction of the labels is flipped."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 24, (n, 8), generator=g)
    has = torch.rand(n, generator=g) < 0.5
    ids[has, torch.randint(0, 8, (int(has.sum()),), generator=g)] = 3
    labels = has.long()
    flip = torch.rand(n, generator=g) < flip_fraction
    labels[flip] = 1 - labels[flip]
    return [{"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": labels[i]}
            for i in range(n)]


class WeightSpy(TrainerCallback):
    def __init__(self):
        self.states, self.losses = [], []

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        self.losses.append(metrics["eval_loss"])
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def _args(tmp_path, **kwargs):
    base = dict(output_dir=str(tmp_path), report_to=[], save_strategy="no", use_cpu=True, eval_strategy="steps",
                eval_steps=2, max_steps=80, per_device_train_batch_size=16, per_device_eval_batch_size=64,
                learning_rate=1e-2, logging_strategy="no", disable_tqdm=True, seed=0)
    base.update(kwargs)
    return TrainingArguments(**base)


def test_trainer_stops_and_restores_best_weights_without_disk_checkpoints(tmp_path):
    model, spy = _tiny_model(), WeightSpy()
    cb = BestWeightsEarlyStopping(monitor="loss", patience=3)  # "eval_" is prefixed
    # the evaluation labels disagree with training on 45% of examples: fitting training
    # confidently makes the evaluation loss worse after a while
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=_dataset(128, 0, 0.0),
                      eval_dataset=_dataset(64, 1, 0.45), callbacks=[spy, cb])
    trainer.train()
    s = cb.stopper
    assert s.monitor == "eval_loss"
    assert s.reason is StopReason.PATIENCE
    assert trainer.state.global_step < 80
    assert len(spy.losses) == s.stopped_epoch == s.best_epoch + 3
    assert s.best == min(spy.losses) == spy.losses[s.best_epoch - 1]
    best = spy.states[s.best_epoch - 1]
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, best[k]), k
    assert not all(torch.equal(v, spy.states[-1][k]) for k, v in trainer.model.state_dict().items())
    assert not list(tmp_path.glob("checkpoint-*"))  # nothing was written to disk
    assert all(t.device.type == "cpu" for t in s.best_state.values())


def test_requires_evaluation(tmp_path):
    cb = BestWeightsEarlyStopping()
    trainer = Trainer(model=_tiny_model(), args=_args(tmp_path, eval_strategy="no", max_steps=1),
                      train_dataset=_dataset(16, 0, 0.0), callbacks=[cb])
    with pytest.raises(ValueError, match="eval_strategy='no'"):
        trainer.train()


def test_state_round_trip_and_bad_arguments():
    a = BestWeightsEarlyStopping(patience=2)
    model = _tiny_model()
    a.stopper.step(0.5, model)
    a.stopper.step(0.7, model)
    b = BestWeightsEarlyStopping(patience=2)
    b.load_state_dict(a.state_dict())
    assert (b.stopper.best, b.stopper.wait) == (0.5, 1)
    assert b.stopper.step(0.9) and b.stopper.stopped_epoch == 3
    with pytest.raises(ValueError, match="min_delta=-1"):
        BestWeightsEarlyStopping(min_delta=-1)
