import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reglab import checkpoint
from reglab.checkpoint import CheckpointError, Checkpointer

WORKER = Path(__file__).with_name("_ckpt_worker.py")


def _trained(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(16, 4)), torch.randint(0, 3, (16,))).backward()
        opt.step()
    return model, opt


def _fresh():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    return model, torch.optim.AdamW(model.parameters(), lr=1.0, betas=(0.5, 0.5), weight_decay=0.0)


@pytest.fixture
def no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    class Refused:  # still subclassable by modules imported later
        def __init__(self, *args, **kwargs):
            refuse()

    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Pickler", Refused)
    monkeypatch.setattr(pickle, "Unpickler", Refused)


def test_model_and_optimizer_round_trip_without_pickle(tmp_path, no_pickle):
    model, opt = _trained()
    path = checkpoint.save(tmp_path / "c.safetensors", model, opt, {"epoch": 3})
    model2, opt2 = _fresh()
    ckpt = checkpoint.load(path, model2, opt2)
    assert ckpt.extra == {"epoch": 3}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)  # tuples survive
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["weight_decay"] == 0.1
    # both continue bit-identically (moments and step counts restored)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_file_is_plain_safetensors_with_json_metadata(tmp_path):
    from safetensors import safe_open

    model, opt = _trained()
    path = checkpoint.save(tmp_path / "c.safetensors", model, opt)
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["reglab"])
        keys = set(f.keys())
    assert header["format"] == "reglab.checkpoint" and header["version"] == 1
    assert len(keys) == len(model.state_dict()) + 3 * len(list(model.parameters()))  # + step, exp_avg, exp_avg_sq


def test_extra_values_round_trip(tmp_path):
    rs = np.random.RandomState(3)
    extra = {
        "tuple": (1, (2.5, "x"), None),
        "int_keys": {0: "a", 7: [1, 2]},
        "floats": [float("nan"), float("inf"), -float("inf"), 0.1 + 0.2],
        "numpy_state": rs.get_state(),
        "python_state": random.Random(5).getstate(),
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "np_scalar": np.float64(1.5),
        "dtype": torch.bfloat16,
        "bf16": torch.randn(3, dtype=torch.bfloat16),
        "scalar": torch.tensor(4, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "__tensor__": "a key that looks like a tag",
    }
    path = checkpoint.save(tmp_path / "c.safetensors", extra=extra)
    back = checkpoint.read(path).extra
    assert back["tuple"] == (1, (2.5, "x"), None)
    assert back["int_keys"] == {0: "a", 7: [1, 2]}
    assert np.isnan(back["floats"][0]) and back["floats"][1:] == [float("inf"), -float("inf"), 0.1 + 0.2]
    rs2 = np.random.RandomState()
    rs2.set_state(back["numpy_state"])
    assert rs2.randint(0, 10**9) == rs.randint(0, 10**9)
    r = random.Random()
    r.setstate(back["python_state"])
    assert r.random() == random.Random(5).random()
    assert back["array"].dtype == np.float32 and np.array_equal(back["array"], extra["array"])
    assert back["np_scalar"] == 1.5 and back["dtype"] is torch.bfloat16
    assert torch.equal(back["bf16"], extra["bf16"]) and back["bf16"].dtype == torch.bfloat16
    assert back["scalar"].shape == () and int(back["scalar"]) == 4
    assert back["empty"].shape == (0, 3)
    assert back["__tensor__"] == "a key that looks like a tag"


def test_tied_and_non_contiguous_tensors(tmp_path):
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied
    model = nn.ModuleDict({"emb": emb, "head": head})
    path = checkpoint.save(tmp_path / "c.safetensors", model, extra={"t": torch.randn(4, 6).t()})
    model2 = nn.ModuleDict({"emb": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
    model2["head"].weight = model2["emb"].weight
    checkpoint.load(path, model2)
    assert torch.equal(model2["emb"].weight, emb.weight)
    assert model2["head"].weight is model2["emb"].weight
    assert checkpoint.read(path).extra["t"].shape == (6, 4)


def test_unstorable_object_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"extra\.fn"):
        checkpoint.save(tmp_path / "c.safetensors", extra={"fn": lambda: 0})
    assert not (tmp_path / "c.safetensors").exists()


def _corrupt_data_byte(path):
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_validation_errors(tmp_path):
    model, opt = _trained()
    good = checkpoint.save(tmp_path / "good.safetensors", model, opt)

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        checkpoint.load(junk)

    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="safetensors"):
        checkpoint.load(truncated)

    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a reglab checkpoint"):
        checkpoint.load(plain)

    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(good.read_bytes())
    _corrupt_data_byte(flipped)
    with pytest.raises(CheckpointError, match="SHA-256"):
        checkpoint.load(flipped)

    with pytest.raises(CheckpointError, match="does not fit this model"):
        checkpoint.load(good, nn.Linear(4, 3))
    with pytest.raises(CheckpointError, match="no optimizer state"):
        checkpoint.load(checkpoint.save(tmp_path / "m.safetensors", model), optimizer=opt)
    with pytest.raises(FileNotFoundError, match="missing"):
        checkpoint.load(tmp_path / "missing.safetensors")


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    model, opt = _trained()
    path = checkpoint.save(tmp_path / "c.safetensors", model, opt, {"i": 1})

    def torn_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", torn_write)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, model, opt, {"i": 2})
    assert checkpoint.read(path).extra == {"i": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]  # temp file removed


def test_kill_9_never_leaves_a_broken_latest_checkpoint(tmp_path):
    """A worker saves in a loop and is SIGKILLed at random moments; the file always loads whole."""
    path = tmp_path / "latest.safetensors"
    rng = random.Random(1234)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    seen = set()
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, str(WORKER), str(path)], stdout=subprocess.PIPE, env=env, text=True)
        try:
            first = proc.stdout.readline()  # at least one save completed
            assert first.strip().isdigit(), first
            time.sleep(rng.uniform(0.0, 0.25))
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        printed = [int(first)] + [int(line) for line in proc.stdout.read().split()]
        proc.stdout.close()
        ckpt = checkpoint.read(path)
        i = ckpt.extra["i"]
        # the file holds the last announced save or the one in flight, and is self-consistent
        assert printed[-1] <= i <= printed[-1] + 1
        model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        checkpoint.load(path, model, opt)
        assert all(bool((p == float(i)).all()) for p in model.parameters())
        assert all(bool((opt.state[p]["momentum_buffer"] == float(i)).all()) for p in model.parameters())
        seen.add(i)
        stray = [p for p in tmp_path.iterdir() if p.name != path.name]
        assert all(p.is_dir() and p.name.startswith(".latest.safetensors.") and p.suffix == ".tmp" for p in stray)
    assert len(seen) >= 2  # the kills did land at different moments


def test_checkpointer_every_keep_and_latest(tmp_path):
    from reglab.data import TensorLoader
    from reglab.loop import fit

    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    model = nn.Linear(4, 3)
    ck = Checkpointer(tmp_path / "ck", every=2, keep=2)
    fit(model, TensorLoader(x, y, batch_size=8), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=nn.functional.cross_entropy, epochs=7, callbacks=[ck])
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["epoch-000004.safetensors", "epoch-000006.safetensors"]
    assert checkpoint.latest(tmp_path / "ck").name == "epoch-000006.safetensors"
    assert checkpoint.latest(tmp_path / "nothing") is None
    loop = checkpoint.read(checkpoint.latest(tmp_path / "ck")).extra["loop"]
    assert loop["epoch"] == 6 and loop["step"] == 24 and len(loop["history"]["records"]) == 6
    assert ck.state_dict() == {"every": 2, "keep": 2}


@pytest.mark.parametrize("kwargs, name", [({"every": 0}, "every=0"), ({"keep": 0}, "keep=0"), ({"every": 1.5}, "every=1.5")])
def test_checkpointer_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        Checkpointer(tmp_path, **kwargs)
