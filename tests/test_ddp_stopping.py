"""Under DDP every rank takes the same stop decision at the same epoch (2 CPU ranks, gloo)."""

import datetime
import json
import math
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from reglab.stopping import EarlyStopping, StopReason

# Local validation values differ per rank: rank 0 keeps improving, rank 1 gets worse from epoch 2.
LOCAL = {
    0: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
    1: [1.0, 1.2, 1.4, 1.6, 1.8, 2.0],
}
WITH_NAN = {0: [1.0, 0.9, 0.8], 1: [1.0, math.nan, 0.5]}


def _feed(stopper, values):
    for t, v in enumerate(values, 1):
        if stopper.step(v):
            return t
    return None


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        result = {}
        for sync in ("mean", "rank0", "none"):
            s = EarlyStopping(patience=2, sync=sync)
            result[sync] = [_feed(s, LOCAL[rank]), s.best, s.best_epoch]
        s = EarlyStopping(patience=2)
        result["nan"] = [_feed(s, WITH_NAN[rank]), s.reason.name if s.reason else None]
        result["fit"] = _fit_with_ddp(rank)
    finally:
        dist.destroy_process_group()
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(result, f)


def _fit_with_ddp(rank):
    from reglab.data import TensorLoader
    from reglab.loop import fit

    torch.manual_seed(0)  # same initial weights on both ranks
    g = torch.Generator().manual_seed(10 + rank)  # different training and validation shards
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.ones(4, 1)
    vx = torch.randn(32, 4, generator=g)
    vy = vx @ torch.ones(4, 1) * (1.0 if rank == 0 else -1.0)  # rank 1's validation disagrees
    model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
    stopper = EarlyStopping(monitor="val_loss", patience=2)
    hist = fit(model, TensorLoader(x, y, batch_size=16), optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
               loss_fn=nn.functional.mse_loss, epochs=40, eval_sets={"val": TensorLoader(vx, vy, batch_size=32)},
               callbacks=[stopper])
    return {
        "epochs": len(hist),
        "stopped": stopper.stopped_epoch,
        "best_epoch": stopper.best_epoch,
        "local_val": hist["val_loss"],
        "weight": model.module.weight.detach().flatten().tolist(),
    }


def test_ranks_agree_on_the_stop_epoch(tmp_path):
    # fork reuses the imported torch (a spawned rank pays the full import, several seconds on a
    # busy 2-core machine); the parent never initialises a process group, so forking is safe here
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                             join=False, start_method=method)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish (a rank is probably waiting for the other)")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    # mean: the decision uses the all-reduced mean, the same on both ranks, and equals a
    # single-process stopper fed the mean values
    mean_values = [(a + b) / 2 for a, b in zip(LOCAL[0], LOCAL[1])]
    ref = EarlyStopping(patience=2)
    assert r0["mean"] == r1["mean"] == [_feed(ref, mean_values), ref.best, ref.best_epoch] == [3, 1.0, 1]
    # rank0: rank 0's values are broadcast; rank 1 alone would have stopped at epoch 3
    assert r0["rank0"] == r1["rank0"] == [None, 0.5, 6]
    # none: each rank decides alone, so they disagree (this is what the synchronisation prevents)
    assert r0["none"][0] is None and r1["none"][0] == 3
    # a NaN on one rank stops every rank at once
    assert r0["nan"] == r1["nan"] == [2, StopReason.NON_FINITE.name]
    # inside fit with DDP: same epoch count and same restored weights although local losses differ
    f0, f1 = r0["fit"], r1["fit"]
    assert f0["local_val"] != f1["local_val"]
    assert f0["epochs"] == f1["epochs"] == f0["stopped"] == f1["stopped"] < 40
    assert f0["best_epoch"] == f1["best_epoch"] and f0["weight"] == f1["weight"]
