"""Two CPU ranks (gloo) train with a Penalty fast path and decoupled Adam; parameters must agree."""

import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file
from torch import nn

from reglab.decay import decoupled
from reglab.groups import param_groups
from reglab.penalties import Penalty

STEPS = 5
WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from safetensors.torch import save_file
    from reglab.decay import decoupled
    from reglab.groups import param_groups
    from reglab.penalties import Penalty

    rank, world, store_path, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    torch.manual_seed(0)  # the same initial model everywhere (DDP also broadcasts rank 0's)
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = decoupled(torch.optim.Adam)(param_groups(ddp, weight_decay=0.5), lr=1e-2)
    pen = Penalty(l1=1e-3, l2=1e-2)
    g = torch.Generator().manual_seed(123)
    xs, ys = torch.randn({steps}, world * 8, 6, generator=g), torch.randn({steps}, world * 8, 3, generator=g)
    for step in range({steps}):
        x, y = xs[step, rank * 8:(rank + 1) * 8], ys[step, rank * 8:(rank + 1) * 8]  # each rank its shard
        opt.zero_grad()
        nn.functional.mse_loss(ddp(x), y).backward()  # gradients all-reduced (averaged) here
        pen.add_grad_(ddp)
        opt.step()
    save_file({{n: p.detach().contiguous() for n, p in model.named_parameters()}}, out)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    import os
    os._exit(0)  # skip the slow interpreter teardown of the gloo threads; everything is written
    """
).format(steps=STEPS)


def reference(world):
    """Single process, full batch: what DDP with averaged gradients must reproduce."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))
    opt = decoupled(torch.optim.Adam)(param_groups(model, weight_decay=0.5), lr=1e-2)
    pen = Penalty(l1=1e-3, l2=1e-2)
    g = torch.Generator().manual_seed(123)
    xs, ys = torch.randn(STEPS, world * 8, 6, generator=g), torch.randn(STEPS, world * 8, 3, generator=g)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(STEPS):
        opt.zero_grad()
        nn.functional.mse_loss(model(xs[step]), ys[step]).backward()
        pen.add_grad_(model)
        opt.step()
    return {n: p.detach() for n, p in model.named_parameters()}, init


def test_two_gloo_ranks_end_with_identical_parameters(tmp_path):
    world = 2
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    outs = [tmp_path / f"rank{r}.safetensors" for r in range(world)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(world), str(tmp_path / "store"), str(outs[r])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    logs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        logs.append(out.decode(errors="replace"))
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    r0, r1 = (load_file(str(o)) for o in outs)
    ref, init = reference(world)
    # DDP wraps the model, so the worker saved the inner model's names
    assert set(r0) == set(ref)
    for name in ref:
        assert torch.equal(r0[name], r1[name]), name  # bit-identical across ranks
        assert torch.allclose(r0[name], ref[name], atol=1e-5), name  # and what one process computes
    assert any(not torch.allclose(ref[n], init[n]) for n in ref)
