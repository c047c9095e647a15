"""Early stopping / EMA / checkpoint overheads against the usual hand-written ways.

Run: .venv/bin/python bench/bench_stopping.py [--write]

* best-weights snapshot: ``EarlyStopping`` copies into CPU buffers allocated once, against
  ``copy.deepcopy(model.state_dict())`` (the common recipe, and what Keras' ``get_weights`` does);
* EMA update: ``reglab.EMA`` (``AveragedModel`` + fused ``_foreach_lerp_``) against a Python loop
  of ``mul_``/``add_`` per parameter;
* checkpoint save/load: ``reglab.checkpoint`` (safetensors, SHA-256, fsync, atomic rename)
  against ``torch.save`` / ``torch.load(weights_only=True)`` of the same model + AdamW state.
"""

from __future__ import annotations

import copy
import datetime
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_time, write_section  # noqa: E402

from reglab import checkpoint  # noqa: E402
from reglab.stopping import EMA, EarlyStopping  # noqa: E402


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)])  # 4.2 M parameters, 16.8 MB


def main() -> str:
    torch.set_num_threads(1)
    model = _model()
    n_params = sum(p.numel() for p in model.parameters())
    rows = []

    stopper = EarlyStopping(patience=5)
    ours = median_time(lambda: stopper._snapshot(model))
    base = median_time(lambda: copy.deepcopy(model.state_dict()))
    rows.append(("best-weights snapshot", "`copy.deepcopy(state_dict())`", ours, base, "≥ 1x"))

    ema = EMA(model, decay=0.999)
    ema.update()
    shadow = [p.detach().clone() for p in model.parameters()]

    def naive_ema():
        with torch.no_grad():
            for e, p in zip(shadow, model.parameters()):
                e.mul_(0.999).add_(p, alpha=0.001)

    ours = median_time(ema.update)
    base = median_time(naive_ema)
    rows.append(("EMA update", "per-parameter `mul_`/`add_` loop", ours, base, "≥ 1x"))

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(8, 1024)).sum().backward()
    opt.step()
    with tempfile.TemporaryDirectory() as d:
        ours_path, base_path = Path(d) / "c.safetensors", Path(d) / "c.pt"
        ours = median_time(lambda: checkpoint.save(ours_path, model, opt, {"epoch": 1}), repeats=5, warmup=1)
        base = median_time(lambda: torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, base_path),
                           repeats=5, warmup=1)
        rows.append(("checkpoint save", "`torch.save` (no fsync, no hash, not atomic)", ours, base, "≥ 0.5x"))

        def torch_load():
            state = torch.load(base_path, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])

        ours = median_time(lambda: checkpoint.load(ours_path, model, opt), repeats=5, warmup=1)
        base = median_time(torch_load, repeats=5, warmup=1)
        rows.append(("checkpoint load + verify", "`torch.load(weights_only=True)`", ours, base, "≥ 0.5x"))

    lines = [
        f"Command: `.venv/bin/python bench/bench_stopping.py --write` — {datetime.date.today().isoformat()}",
        f"Machine: {machine()}",
        f"Workload: MLP 4 x Linear(1024, 1024) ({n_params / 1e6:.1f} M parameters, fp32), AdamW state.",
        "",
        "| operation | baseline | reglab (ms) | baseline (ms) | speed-up (baseline / reglab) | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, baseline, ours, base, target in rows:
        lines.append(f"| {name} | {baseline} | {ours * 1e3:.2f} | {base * 1e3:.2f} | {base / ours:.2f}x | {target} |")
    return "\n".join(lines)


if __name__ == "__main__":
    table = main()
    print(table)
    if "--write" in sys.argv:
        write_section("Early stopping, EMA and checkpoints", table)
