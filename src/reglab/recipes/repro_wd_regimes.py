"""Weight decay in its two regimes (D'Angelo, Andriushchenko, Varre, Flammarion, "Why Do We Need
Weight Decay in Modern Deep Learning?", NeurIPS 2024).

**(a) Many passes over the data, scale-invariant weights.** A weight followed by a normalization
layer does not change the function when scaled, so weight decay cannot act as a capacity
penalty on it; what it does is control the *effective* learning rate ``lr/‖w‖²``. With plain SGD
the norm settles where the gradient's growth and the decay balance, and the angle ``w`` turns
per step reaches ``sqrt(2·lr·λ)`` (van Laarhoven 2017; Wan et al., "Spherical Motion Dynamics",
2021). Here: an MLP ``64 → 128 → 128 → 10`` on digits whose two hidden Linear layers (no bias)
feed ``BatchNorm1d(affine=False)``, trained on an endless stream of synthetic batches, SGD with
``weight_decay=λ`` (coupled = decoupled for plain SGD), recorded with ``reglab.monitors.EffectiveLR``.

**(b) Few passes, large language models.** The paper finds that in LLM training weight decay
matters through optimization dynamics, in particular it keeps bfloat16 training stable. Here a
tiny character-level transformer is trained on text of Python's standard-library source (it
ships with every Python: nothing is downloaded) with AdamW at a high learning rate, under
``torch.autocast("cpu", dtype=torch.bfloat16)`` and in float32, with weight decay 0 and 0.1. The
report gives the weight norms, the largest attention logit and the bf16 − fp32 loss gap, and
claims only what the run shows.
"""

from __future__ import annotations

import math
import statistics
import sysconfig
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reglab.data import TensorLoader
from reglab.loop import fit
from reglab.recipes._repro import Check, Plot, Repro, ReproResult, Table, Ticker, fmt

__all__ = ["RECIPE", "CharTransformer", "run", "scale_invariant_run", "stdlib_text", "transformer_run"]

SI_CONFIGS = ((0.1, 0.01), (0.05, 0.01), (0.2, 0.005), (0.1, 0.02))  # (lr, λ)
STDLIB_FILES = ("textwrap.py", "heapq.py", "bisect.py", "functools.py", "string.py", "fnmatch.py", "glob.py",
                "shlex.py", "difflib.py", "calendar.py")


# ---------------------------------------------------------------------------------------------
# (a) scale-invariant network


def _si_model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, 128, bias=False), nn.BatchNorm1d(128, affine=False), nn.ReLU(),
        nn.Linear(128, 128, bias=False), nn.BatchNorm1d(128, affine=False), nn.ReLU(),
        nn.Linear(128, 10),
    )
    with torch.no_grad():  # the function does not depend on these norms; small ones equilibrate fast
        model[0].weight.mul_(0.05)
        model[3].weight.mul_(0.05)
    return model


def scale_invariant_run(lr: float, lam: float, steps: int, seed: int = 0) -> dict[str, Any]:
    """Train the scale-invariant MLP with SGD(lr, weight_decay=λ) for ``steps`` steps.

    The data is an endless stream (a fresh batch of 64 every step: ``x ~ N(0, I)``, labels of a
    fixed random linear teacher, 20 % of them replaced at random), so the gradient statistics are
    stationary and an equilibrium exists; on a small fixed training set the gradients vanish as it
    is memorized and the equilibrium keeps moving.

    Returns:
        the :class:`~reglab.monitors.EffectiveLR` series of the first hidden weight
        (``steps``, ``angular_update``, ``effective_lr``, ``weight_norm``), the steady-state angular
        update (median over the last 30 % of the records, both hidden weights) and its prediction.
    """
    from reglab.monitors import EffectiveLR

    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(64, 10, generator=g)
    model = _si_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=lam)
    monitor = EffectiveLR(model, ["0.weight", "3.weight"], every=5)
    for step in range(steps):
        x = torch.randn(64, 64, generator=g)
        y = (x @ teacher).argmax(1)
        noisy = torch.rand(64, generator=g) < 0.2
        y = torch.where(noisy, torch.randint(0, 10, (64,), generator=g), y)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        monitor.before_step(optimizer, step)
        optimizer.step()
        monitor.after_step(optimizer, step + 1)
    rec = {name: [r for r in monitor.records if r["group"] == name] for name in monitor.weights}
    tail = [r["angular_update"] for recs in rec.values() for r in recs[int(0.7 * len(recs)):]]
    first = rec["0.weight"]
    return {
        "steps": [r["step"] for r in first],
        "angular_update": [r["angular_update"] for r in first],
        "effective_lr": [r["effective_lr"] for r in first],
        "weight_norm": [r["weight_norm"] for r in first],
        "steady_angular_update": statistics.median(tail),
        "predicted": math.sqrt(2 * lr * lam) if lam > 0 else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# (b) tiny character-level transformer


def stdlib_text(max_chars: int = 200_000) -> str:
    """ASCII text of a fixed list of modules of Python's standard library (shipped with Python)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in STDLIB_FILES:
        path = root / name
        if path.exists():
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    text = "".join(parts).encode("ascii", errors="replace").decode("ascii")
    if len(text) < 10_000:
        raise RuntimeError(f"the standard-library source under {root} is missing or too short ({len(text)} chars)")
    return text[:max_chars]


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.max_logit = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        self.max_logit = float(logits.detach().abs().max())
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        attn = logits.masked_fill(mask, float("-inf")).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class CharTransformer(nn.Module):
    """A pre-norm decoder-only transformer over 128 ASCII codes; records its largest attention logit.

    Args:
        d: model width; heads: attention heads; layers: blocks; context: maximum sequence length.
    """

    def __init__(self, d: int = 64, heads: int = 4, layers: int = 2, context: int = 64) -> None:
        super().__init__()
        self.tok = nn.Embedding(128, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(nn.ModuleDict({
                "ln1": nn.LayerNorm(d), "attn": _Attention(d, heads), "ln2": nn.LayerNorm(d),
                "mlp": nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)),
            }))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 128)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = x + block["attn"](block["ln1"](x))
            x = x + block["mlp"](block["ln2"](x))
        return self.head(self.ln(x))

    def max_attention_logit(self) -> float:
        return max(block["attn"].max_logit for block in self.blocks)


def _lm_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))


def _windows(text: str, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    codes = torch.tensor([min(ord(c), 127) for c in text], dtype=torch.long)
    n = (len(codes) - 1) // context
    x = codes[: n * context].view(n, context)
    y = codes[1 : n * context + 1].view(n, context)
    return x, y


def transformer_run(weight_decay: float, bf16: bool, steps: int, *, lr: float = 3e-3, seed: int = 0,
                    text: str | None = None) -> dict[str, Any]:
    """Train :class:`CharTransformer` with AdamW (``reglab.param_groups``: no decay on norms, biases).

    Returns:
        per-epoch train and validation loss (validation in float32, held-out last 10 % of the text),
        final norm of all matrices (embeddings included), largest attention logit on a validation batch.
    """
    from reglab.groups import param_groups

    text = text if text is not None else stdlib_text()
    context = 64
    x, y = _windows(text, context)
    split = int(0.9 * len(x))
    torch.manual_seed(seed)
    model = CharTransformer(context=context)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=weight_decay), lr=lr, betas=(0.9, 0.95))
    # ``epochs`` passes over ``steps // epochs`` batches of windows drawn from the training text
    epochs = min(10, steps)
    pick = torch.randint(0, split, ((steps // epochs) * 32,), generator=torch.Generator().manual_seed(seed))
    loader = TensorLoader(x[pick], y[pick], batch_size=32, shuffle=True, seed=seed)
    history = fit(
        model, loader, optimizer=optimizer, loss_fn=_lm_loss,
        epochs=epochs,
        eval_sets={"val": TensorLoader(x[split:], y[split:], batch_size=256)},
        autocast_dtype=torch.bfloat16 if bf16 else None,
        clip_grad_norm=1.0,
    )
    model.eval()
    with torch.no_grad():
        model(x[split : split + 64])
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    return {
        "train_loss": history["train_loss"],
        "val_loss": history["val_loss"],
        "weight_norm": float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in matrices))),
        "max_attention_logit": model.max_attention_logit(),
        "steps": int(history.last["step"]),
    }


# ---------------------------------------------------------------------------------------------


def run(*, fast: bool = False, seeds: int | None = None, progress=None) -> ReproResult:
    """Part (a): four (lr, λ) settings and λ = 0; part (b): {fp32, bf16} × {λ = 0, 0.1}.

    Args:
        fast: 1000 SGD steps and one (lr, λ) for (a), 8 AdamW steps for (b), instead of 3000 steps
            and four settings, and 200 steps (bf16 matrix products are slow on CPUs without native
            bf16 support, so part (b) stays short).
        seeds: not used (one seed; the equilibrium is a per-run law).
        progress: optional ``progress(completed, total, description)`` sink.
    """
    si_steps, configs, lm_steps = (1000, SI_CONFIGS[:1], 8) if fast else (3000, SI_CONFIGS, 200)
    tick = Ticker(len(configs) + 1 + 4, progress)
    si = {}
    for lr, lam in configs + ((0.1, 0.0),):
        si[(lr, lam)] = scale_invariant_run(lr, lam, si_steps)
        tick(f"scale-invariant lr={lr:g} λ={lam:g}")
    text = stdlib_text()
    lm = {}
    for wd in (0.0, 0.1):
        for bf16 in (False, True):
            lm[(wd, bf16)] = transformer_run(wd, bf16, lm_steps, text=text)
            tick(f"transformer wd={wd:g} {'bf16' if bf16 else 'fp32'}")
    ratios = {k: v["steady_angular_update"] / v["predicted"] for k, v in si.items() if k[1] > 0}
    no_decay = si[(0.1, 0.0)]
    lm_final = {k: v["val_loss"][-1] for k, v in lm.items()}
    gap = {wd: lm_final[(wd, True)] - lm_final[(wd, False)] for wd in (0.0, 0.1)}
    checks = [
        Check("steady-state angular update within 20 % of sqrt(2·lr·λ) for every (lr, λ)",
              all(abs(r - 1) <= 0.2 for r in ratios.values()),
              "; ".join(f"lr={lr:g}, λ={lam:g}: {si[(lr, lam)]['steady_angular_update']:.4f} vs "
                        f"{si[(lr, lam)]['predicted']:.4f}" for lr, lam in ratios)),
        Check("without decay the scale-invariant weight norm only grows and the effective lr falls",
              no_decay["weight_norm"][-1] > no_decay["weight_norm"][0]
              and no_decay["effective_lr"][-1] < no_decay["effective_lr"][0],
              f"‖w‖ {no_decay['weight_norm'][0]:.2f} → {no_decay['weight_norm'][-1]:.2f}; effective lr "
              f"{no_decay['effective_lr'][0]:.2e} → {no_decay['effective_lr'][-1]:.2e}"),
        Check("transformer: weight decay 0.1 ends with smaller weights than 0 (fp32 and bf16)",
              all(lm[(0.1, b)]["weight_norm"] < lm[(0.0, b)]["weight_norm"] for b in (False, True)),
              ", ".join(f"{'bf16' if b else 'fp32'}: {lm[(0.0, b)]['weight_norm']:.1f} → {lm[(0.1, b)]['weight_norm']:.1f}"
                        for b in (False, True))),
    ]
    published = [
        ["steady-state angular update (SGD, scale-invariant)", "sqrt(2·lr·λ)",
         ", ".join(f"{v:.2f}×" for v in ratios.values()) + " the prediction"],
        ["LLM regime: weight decay and bf16", "decay stabilises bf16 training, smaller loss gap to fp32",
         f"bf16 − fp32 validation loss: λ=0: {gap[0.0]:+.4f}, λ=0.1: {gap[0.1]:+.4f}"],
    ]
    first = next(iter(ratios))
    plots = [
        Plot("Angular update per step (first hidden layer)", x_label="step", y_label="radians", log_y=True,
             series={f"lr={lr:g}, λ={lam:g}": [v["steps"], v["angular_update"]] for (lr, lam), v in si.items()},
             hlines={f"sqrt(2·lr·λ), lr={first[0]:g}, λ={first[1]:g}": si[first]["predicted"]},
             caption="With decay the angle per step levels off at the predicted value; without it, it keeps shrinking."),
        Plot("Effective learning rate lr/‖w‖²", x_label="step", y_label="lr/‖w‖²", log_y=True,
             series={f"lr={lr:g}, λ={lam:g}": [v["steps"], v["effective_lr"]] for (lr, lam), v in si.items()}),
        Plot("Character transformer: validation loss (fp32 evaluation)", x_label="evaluation (every 1/10 of the run)", y_label="cross-entropy (nats)",
             series={f"λ={wd:g}, {'bf16' if b else 'fp32'}": [list(range(1, len(v["val_loss"]) + 1)), v["val_loss"]]
                     for (wd, b), v in lm.items()}),
    ]
    tables = [
        Table("Scale-invariant MLP (SGD): steady state", ["lr", "λ", "angular update", "sqrt(2·lr·λ)", "ratio", "final ‖w‖"],
              [[lr, lam, fmt(v["steady_angular_update"]), fmt(v["predicted"]) if lam else "—",
                fmt(v["steady_angular_update"] / v["predicted"]) if lam else "—", fmt(v["weight_norm"][-1])]
               for (lr, lam), v in si.items()]),
        Table("Character transformer (AdamW, lr 3e-3)", ["weight decay", "precision", "final val loss", "weight norm",
                                                          "max attention logit"],
              [[wd, "bf16" if b else "fp32", fmt(v["val_loss"][-1], 4), fmt(v["weight_norm"]), fmt(v["max_attention_logit"])]
               for (wd, b), v in lm.items()]),
    ]
    logit = {k: v["max_attention_logit"] for k, v in lm.items()}
    diagnosis = (
        "Scale-invariant regime: the measured steady-state angular updates are "
        + ", ".join(f"{r:.2f}" for r in ratios.values())
        + " times sqrt(2·lr·λ); without decay the norm grows and the effective learning rate decays. "
        f"Transformer ({lm[(0.0, False)]['steps']} AdamW steps): weight decay 0.1 shrinks the weight norm "
        f"({lm[(0.0, False)]['weight_norm']:.1f} → {lm[(0.1, False)]['weight_norm']:.1f} in fp32) and the largest attention "
        f"logit goes {logit[(0.0, False)]:.1f} → {logit[(0.1, False)]:.1f}; the bf16 − fp32 validation-loss gap is "
        f"{gap[0.0]:+.4f} without decay and {gap[0.1]:+.4f} with it. A run this short and small measures how decay moves the "
        "weights; it is not evidence about the stability of long bf16 LLM runs either way."
    )
    return ReproResult(
        name="wd_regimes",
        title="Weight decay in the two regimes",
        source="D'Angelo, Andriushchenko, Varre, Flammarion — Why Do We Need Weight Decay in Modern Deep Learning? "
        "(NeurIPS 2024); van Laarhoven 2017; Wan et al. 2021",
        setup=f"(a) digits, MLP with BatchNorm(affine=False) after bias-free hidden Linears, SGD batch 32, {si_steps} steps, "
        f"(lr, λ) ∈ {{{', '.join(f'({a:g}, {b:g})' for a, b in configs)}}} and (0.1, 0). (b) character transformer "
        f"(2 layers, width 64, 4 heads, context 64) on {len(text)} characters of standard-library source, AdamW lr 3e-3, "
        f"betas (0.9, 0.95), gradient clipping 1, batch 32, {lm_steps} steps, bf16 autocast vs fp32, λ ∈ {{0, 0.1}}.",
        published=published,
        checks=checks,
        diagnosis=diagnosis,
        tables=tables,
        plots=plots,
        metrics={
            "scale_invariant": {f"lr={lr:g},wd={lam:g}": {k: v[k] for k in ("steady_angular_update", "predicted")}
                                for (lr, lam), v in si.items()},
            "transformer": {f"wd={wd:g},{'bf16' if b else 'fp32'}": {k: v[k] for k in ("weight_norm", "max_attention_logit", "steps")}
                            | {"final_val_loss": v["val_loss"][-1]} for (wd, b), v in lm.items()},
            "bf16_minus_fp32_val_loss": {str(k): v for k, v in gap.items()},
        },
    )


RECIPE = Repro(
    name="wd_regimes",
    title="Weight decay in the two regimes (D'Angelo et al. 2024)",
    order=80,
    run=run,
    requires=("reglab.monitors", "reglab.groups"),
)
