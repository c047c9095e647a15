"""Fit regime from learning curves: underfitting, good fit or overfitting, with the evidence.

:func:`diagnose` reads per-epoch training and validation losses (any loop, any framework) and
returns a :class:`Diagnosis`: the regime, the best epoch, the generalization gap and its trend,
the numbers every rule used, and short advice. :func:`read_curves` reads the histories people
already have on disk: reglab's :class:`~reglab.loop.History` (CSV/JSON), Lightning's
``CSVLogger`` ``metrics.csv`` and a Keras ``History.history`` dict saved as JSON.

The rules
---------
Curves are first smoothed with a centred running median over ``SMOOTH_WINDOW = 5`` epochs, so a
one- or two-epoch spike (a bad batch, a learning-rate warm restart) cannot decide the verdict;
``noise`` is the robust epoch-to-epoch spread of the raw validation loss (from second
differences, which cancel a locally linear trend: ``1.4826 · median|d| / √1.5``). ``best_epoch``
is the epoch of the lowest *smoothed* validation loss. The rules are tried in this order:

1. **insufficient_data** — fewer than ``MIN_EPOCHS = 5`` epochs with finite losses: no curve
   shape can be told from noise.
2. **overfitting, validation loss rising** — the smoothed validation loss ends at least
   ``RISE_REL = 10 %`` above its minimum *and* at least ``3 · noise`` above it, and the training
   loss did not rise after the best epoch (a rising training loss means unstable optimization,
   not overfitting), and the final validation loss lies above the training loss (a model whose
   training loss is still the higher one cannot be fitting its training set too well: a
   high-bias model on a small, noisy validation split can see its validation loss wander up). This is the classic early-stopping signal (Prechelt, "Early Stopping — But
   When?", 1998, uses the same "generalization loss" ``100·(E_va/E_opt − 1)``; 10 % is a
   conservative value of his GL threshold family, large enough that noise rarely reaches it).
3. **overfitting, widening gap** — the validation loss has not (yet) risen, but the final gap
   ``val − train`` is at least ``GAP_REL = 50 %`` of the validation loss (validation at least
   twice the training loss), at least ``GAP_BASELINE = 10 %`` of the baseline loss, and it grew by
   at least ``TREND_REL = 5 %`` of the validation loss over the last third of the run: the model
   keeps fitting the training set faster than anything that carries over.
4. **overfitting, validation stalled** — the best epoch lies at least a quarter of the run (and
   ``STALL_EPOCHS = 5`` epochs) back, the training loss fell by at least ``STALL_TRAIN_REL = 20 %``
   since then, and the gap is widening: whatever the model learns now does not carry over.
   This catches memorization of noisy labels whose validation loss rises only slowly, before the
   training loss is low enough for rule 3 (and before rule 5 would blame capacity).
5. **underfitting, training loss high** — the smoothed final training loss is still at least
   ``UNDERFIT_RATIO = 20 %`` of the baseline loss (the loss of a trivial predictor): the model
   removed less than four fifths of what predicting the mean / the class prior leaves (for squared
   error: a training R² below 0.8; straight lines fitted to D2L's cubic reach R² of 0.52 to 0.76
   depending on the sample, and are underfitting in every case). Label
   noise raises the attainable floor (20 % symmetric noise on 10 classes puts it at 0.94 nats,
   41 % of ln 10): pass a ``baseline_loss`` measured from the floor if you know it.
6. **underfitting, still improving** — the smoothed validation *and* training losses both fell
   by at least ``IMPROVING_REL = 5 %`` over the last fifth of the run (at least 3 epochs): there
   is room left on the training data, so train longer (the TensorFlow "Overfit and underfit"
   tutorial calls this case underfitting too).
7. otherwise **good_fit**.

``baseline_loss`` is the loss of a trivial predictor: ``ln K`` for cross-entropy on ``K``
balanced classes, the variance of the targets for mean squared error (``var/2`` for a loss
``½(y−ŷ)²``). When it is not given, the larger of the first-epoch training and validation
losses is used instead and the assumption is written to :attr:`Diagnosis.assumptions` (after one
epoch a model is rarely far below the trivial predictor, but it can be: the underfitting rule is
then less sensitive).

Optional metrics (``train_metric`` / ``val_metric``, higher is better, e.g. accuracy) do not
change the regime; they add evidence (final metric gap, the epoch of the best validation metric)
and one piece of advice when the validation metric keeps improving while the validation loss
rises (the model grows over-confident rather than wrong: label smoothing or calibration helps).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "Diagnosis",
    "REGIMES",
    "diagnose",
    "read_curves",
]

REGIMES = ("underfitting", "good_fit", "overfitting", "insufficient_data")

MIN_EPOCHS = 5
SMOOTH_WINDOW = 5
RISE_REL = 0.10
RISE_NOISE = 3.0
GAP_REL = 0.50
GAP_BASELINE = 0.10
TREND_REL = 0.05
TREND_NOISE = 2.0
UNDERFIT_RATIO = 0.20
STALL_EPOCHS = 5
STALL_TRAIN_REL = 0.20
IMPROVING_REL = 0.05
SPIKE_NOISE = 6.0
SPIKE_REL = 0.25
SPIKE_RANGE = 0.05


@dataclass
class Diagnosis:
    """The verdict of :func:`diagnose` and the numbers behind it.

    Attributes:
        regime: ``"underfitting"``, ``"good_fit"``, ``"overfitting"`` or ``"insufficient_data"``.
        rule: short name of the rule that decided (see the module docstring).
        epochs: number of epochs used (finite losses only).
        best_epoch: 1-based epoch of the lowest smoothed validation loss (``None`` if too short).
        gap_final: smoothed ``val − train`` loss at the last epoch.
        gap_at_best: smoothed ``val − train`` loss at ``best_epoch``.
        gap_trend: ``"widening"``, ``"stable"`` or ``"narrowing"`` over the last third of the run.
        gap_slope: least-squares slope of the smoothed gap over that window, per epoch.
        baseline_loss: the trivial-predictor loss used (given or assumed).
        evidence: every number a rule looked at, by name.
        advice: short, concrete suggestions.
        assumptions: what was assumed because it was not given.
    """

    regime: str
    rule: str
    epochs: int
    best_epoch: int | None = None
    gap_final: float | None = None
    gap_at_best: float | None = None
    gap_trend: str | None = None
    gap_slope: float | None = None
    baseline_loss: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float | None:
        """The final generalization gap (same as :attr:`gap_final`)."""
        return self.gap_final

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return {
            "regime": self.regime,
            "rule": self.rule,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "gap_final": self.gap_final,
            "gap_at_best": self.gap_at_best,
            "gap_trend": self.gap_trend,
            "gap_slope": self.gap_slope,
            "baseline_loss": self.baseline_loss,
            "evidence": dict(self.evidence),
            "advice": list(self.advice),
            "assumptions": list(self.assumptions),
        }

    def __str__(self) -> str:
        lines = [f"{self.regime} ({self.rule}), {self.epochs} epochs"]
        if self.best_epoch is not None:
            lines[0] += f", best epoch {self.best_epoch}, final gap {self.gap_final:.4g} ({self.gap_trend})"
        lines += [f"- {a}" for a in self.advice]
        lines += [f"(assumed) {a}" for a in self.assumptions]
        return "\n".join(lines)


def _as_floats(name: str, values: Sequence[Any] | None) -> list[float] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} must be a sequence of numbers; received {name}={values!r}")
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold numbers; received {name} containing {v!r}") from None
    return out


def _running_median(values: list[float], window: int) -> list[float]:
    half = window // 2
    n = len(values)
    return [statistics.median(values[max(0, i - half) : min(n, i + half + 1)]) for i in range(n)]


def _noise(values: list[float]) -> float:
    """Robust standard deviation of epoch-to-epoch noise, from second differences.

    ``d_i = v_i − (v_{i−1} + v_{i+1})/2`` removes any locally linear trend; for white noise of
    standard deviation σ it has variance ``1.5·σ²``, and ``1.4826·median|d|`` estimates its
    standard deviation robustly (spikes do not inflate it).
    """
    if len(values) < 3:
        return 0.0
    d = [abs(values[i] - (values[i - 1] + values[i + 1]) / 2) for i in range(1, len(values) - 1)]
    return 1.4826 * statistics.median(d) / math.sqrt(1.5)


def _slope(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    xm = (n - 1) / 2
    ym = statistics.fmean(values)
    num = sum((i - xm) * (v - ym) for i, v in enumerate(values))
    den = sum((i - xm) ** 2 for i in range(n))
    return num / den


def diagnose(
    train_loss: Sequence[float],
    val_loss: Sequence[float],
    *,
    baseline_loss: float | None = None,
    train_metric: Sequence[float] | None = None,
    val_metric: Sequence[float] | None = None,
) -> Diagnosis:
    """Classify a run as underfitting, good fit or overfitting from its per-epoch curves.

    The rules, their thresholds and why are listed in this module's docstring; every number they
    used is in :attr:`Diagnosis.evidence`. Losses should be comparable: ideally both measured in
    eval mode on the data loss alone (reglab's ``fit(..., eval_train=...)`` does that); a
    training loss averaged during an epoch with dropout on is higher, which shrinks the gap.

    Args:
        train_loss: training loss per epoch.
        val_loss: validation loss per epoch, same length. Epochs where either is NaN or infinite
            are dropped (noted in ``assumptions``).
        baseline_loss: loss of a trivial predictor (``ln K`` for ``K`` balanced classes under
            cross-entropy; the target variance under mean squared error). Must be > 0.
        train_metric: optional higher-is-better metric per epoch (e.g. accuracy), same length.
        val_metric: the same metric on validation data.

    Returns:
        A :class:`Diagnosis`.

    Raises:
        ValueError: if the sequences differ in length or hold non-numbers, or
            ``baseline_loss <= 0``.

    Example:
        >>> import math
        >>> train = [2.0 * 0.8**e for e in range(40)]
        >>> val = [max(2.0 * 0.8**e, 0.3) + 0.02 * max(0, e - 15) for e in range(40)]
        >>> d = diagnose(train, val, baseline_loss=math.log(10))
        >>> d.regime, d.best_epoch
        ('overfitting', 10)
    """
    train = _as_floats("train_loss", train_loss)
    val = _as_floats("val_loss", val_loss)
    if len(train) != len(val):
        raise ValueError(
            f"train_loss and val_loss must have the same length; received {len(train)} and {len(val)}"
        )
    tm = _as_floats("train_metric", train_metric)
    vm = _as_floats("val_metric", val_metric)
    for name, seq in (("train_metric", tm), ("val_metric", vm)):
        if seq is not None and len(seq) != len(train):
            raise ValueError(f"{name} must have one value per epoch ({len(train)}); received {len(seq)} values")
    if baseline_loss is not None:
        try:
            ok = float(baseline_loss) > 0 and math.isfinite(float(baseline_loss))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"baseline_loss must be a finite number > 0; received baseline_loss={baseline_loss!r}")
        baseline_loss = float(baseline_loss)

    assumptions: list[str] = []
    keep = [i for i in range(len(train)) if math.isfinite(train[i]) and math.isfinite(val[i])]
    if len(keep) < len(train):
        dropped = [i + 1 for i in range(len(train)) if i not in set(keep)]
        assumptions.append(f"dropped {len(dropped)} epoch(s) with non-finite losses: {dropped[:10]}")
    epoch_of = [i + 1 for i in keep]
    train = [train[i] for i in keep]
    val = [val[i] for i in keep]
    tm = [tm[i] for i in keep] if tm is not None else None
    vm = [vm[i] for i in keep] if vm is not None else None
    n = len(train)

    if n < MIN_EPOCHS:
        return Diagnosis(
            regime="insufficient_data",
            rule="too_few_epochs",
            epochs=n,
            baseline_loss=baseline_loss,
            evidence={"epochs": n, "min_epochs": MIN_EPOCHS},
            advice=[f"record at least {MIN_EPOCHS} epochs of training and validation loss to diagnose the run"],
            assumptions=assumptions,
        )

    if baseline_loss is None:
        baseline_loss = max(train[0], val[0])
        assumptions.append(
            f"no baseline_loss given: used the larger first-epoch loss ({baseline_loss:.4g}) as the loss of a "
            "trivial predictor; pass ln K (K balanced classes) or the target variance (regression)"
        )

    window = min(SMOOTH_WINDOW, n if n % 2 else n - 1)
    ts = _running_median(train, window)
    vs = _running_median(val, window)
    noise = _noise(val)
    best = min(range(n), key=vs.__getitem__)
    gaps = [v - t for v, t in zip(vs, ts)]
    tail = max(3, n // 3)
    gap_slope = _slope(gaps[-tail:])
    gap_change = gap_slope * (tail - 1)
    scale = max(abs(vs[-1]), 1e-12)
    trend_tol = max(TREND_REL * scale, TREND_NOISE * noise)
    trend = "widening" if gap_change >= trend_tol else "narrowing" if gap_change <= -trend_tol else "stable"
    rise = vs[-1] - vs[best]
    rise_rel = rise / max(abs(vs[best]), 1e-12)
    after = n - 1 - best
    train_change = ts[-1] - ts[best]
    k = max(3, n // 5)
    k = min(k, n - 1)
    val_impr = (vs[-1 - k] - vs[-1]) / max(abs(vs[-1]), 1e-12)
    train_impr = (ts[-1 - k] - ts[-1]) / max(abs(ts[-1]), 1e-12)
    train_ratio = ts[-1] / baseline_loss
    spikes = []
    for series, name in ((train, "train"), (val, "val")):
        smooth = ts if name == "train" else vs
        floor = max(SPIKE_NOISE * _noise(series), SPIKE_RANGE * (max(smooth) - min(smooth)))
        for i in range(1, n - 1):
            v, s = series[i], smooth[i]
            local_max = v > series[i - 1] and v > series[i + 1]
            if local_max and v - s > max(floor, SPIKE_REL * abs(s)):
                spikes.append((name, epoch_of[i], v / s if s else math.inf))

    best_epoch = epoch_of[best]
    evidence: dict[str, Any] = {
        "epochs": n,
        "smooth_window": window,
        "best_epoch": best_epoch,
        "raw_best_epoch": epoch_of[min(range(n), key=val.__getitem__)],
        "val_loss_best": vs[best],
        "val_loss_final": vs[-1],
        "train_loss_final": ts[-1],
        "val_noise": noise,
        "val_rise": rise,
        "val_rise_rel": rise_rel,
        "epochs_after_best": after,
        "train_change_after_best": train_change,
        "gap_final": gaps[-1],
        "gap_at_best": gaps[best],
        "gap_rel_final": gaps[-1] / scale,
        "gap_change_last_third": gap_change,
        "train_to_baseline": train_ratio,
        "val_improvement_last_fifth": val_impr,
        "train_improvement_last_fifth": train_impr,
        "spikes": [f"{name} epoch {e} ({r:.2f}x)" for name, e, r in spikes],
    }
    advice: list[str] = []

    if (
        rise >= RISE_REL * abs(vs[best])
        and rise >= RISE_NOISE * noise
        and train_change <= 0.02 * abs(ts[best]) + noise
        and gaps[-1] > 0
    ):
        regime, rule = "overfitting", "val_loss_rising"
        advice.append(
            f"validation loss rose for {after} epochs after epoch {best_epoch} "
            f"({100 * rise_rel:.0f}% above its minimum) while training loss fell: stop at {best_epoch} "
            "(early stopping with best weights restored) or add weight decay / dropout"
        )
    elif (
        gaps[-1] >= GAP_REL * scale
        and gaps[-1] >= GAP_BASELINE * baseline_loss
        and trend == "widening"
    ):
        regime, rule = "overfitting", "gap_widening"
        advice.append(
            f"the validation loss is {vs[-1] / max(ts[-1], 1e-12):.1f}x the training loss and the gap is still "
            "widening: add weight decay, dropout or data augmentation, or use more data"
        )
    elif after >= max(STALL_EPOCHS, n // 4) and train_change <= -STALL_TRAIN_REL * abs(ts[best]) and trend == "widening":
        regime, rule = "overfitting", "val_stalled"
        advice.append(
            f"validation loss has not improved for {after} epochs after epoch {best_epoch} while training loss "
            f"fell {100 * -train_change / max(abs(ts[best]), 1e-12):.0f}% and the gap widened: stop at {best_epoch} "
            "or add weight decay / dropout"
        )
    elif train_ratio >= UNDERFIT_RATIO:
        regime, rule = "underfitting", "train_loss_high"
        advice.append(
            f"training loss is still {100 * train_ratio:.0f}% of the trivial predictor's ({baseline_loss:.3g}): "
            "use a larger model or better features, train longer or with a larger learning rate, "
            "and reduce regularization"
        )
    elif val_impr >= IMPROVING_REL and train_impr >= IMPROVING_REL:
        regime, rule = "underfitting", "still_improving"
        advice.append(
            f"validation loss fell {100 * val_impr:.0f}% over the last {k} epochs: train longer "
            "(or with a larger learning rate) before adding regularization"
        )
    else:
        regime, rule = "good_fit", "no_rule_fired"
        advice.append(
            f"training and validation loss have settled with a {trend} gap of {gaps[-1]:.3g}: "
            f"keep the weights of epoch {best_epoch}; more regularization is not needed"
        )
    if regime != "overfitting" and after >= max(3, n // 10) and rise > 0:
        advice.append(
            f"validation loss has not improved since epoch {best_epoch} ({after} epochs): "
            "training longer will not help at this setting"
        )
    if spikes:
        first = spikes[0]
        advice.append(
            f"the {first[0]} loss spiked at epoch {first[1]} ({first[2]:.1f}x its running median"
            + (f", and {len(spikes) - 1} more" if len(spikes) > 1 else "")
            + "): consider gradient clipping, a learning-rate warm-up or a lower learning rate"
        )

    if tm is not None and vm is not None:
        evidence["metric_gap_final"] = tm[-1] - vm[-1]
    if vm is not None:
        vms = _running_median(vm, window)
        best_m = max(range(n), key=vms.__getitem__)
        evidence["val_metric_best_epoch"] = epoch_of[best_m]
        evidence["val_metric_final"] = vm[-1]
        if rule == "val_loss_rising" and best_m > best + max(2, after // 2):
            advice.append(
                f"validation metric kept improving until epoch {epoch_of[best_m]} while the loss rose: the "
                "model grows over-confident more than wrong; label smoothing or temperature scaling helps"
            )

    return Diagnosis(
        regime=regime,
        rule=rule,
        epochs=n,
        best_epoch=best_epoch,
        gap_final=gaps[-1],
        gap_at_best=gaps[best],
        gap_trend=trend,
        gap_slope=gap_slope,
        baseline_loss=baseline_loss,
        evidence=evidence,
        advice=advice,
        assumptions=assumptions,
    )


# --- reading histories from disk ------------------------------------------------------------

_TRAIN_KEYS = ("train_loss", "train_loss_epoch", "loss", "training_loss")
_VAL_KEYS = ("val_loss", "val_loss_epoch", "valid_loss", "validation_loss", "eval_loss")
_TRAIN_METRIC_KEYS = ("train_acc", "train_acc_epoch", "accuracy", "acc", "train_accuracy")
_VAL_METRIC_KEYS = ("val_acc", "val_acc_epoch", "val_accuracy", "valid_acc", "eval_accuracy")


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rows_to_epochs(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Merge rows sharing an ``epoch`` (Lightning logs train and val on separate rows) by mean."""
    if not rows or not any("epoch" in r for r in rows):
        return [{k: v for k, v in ((k, _number(v)) for k, v in r.items()) if v is not None} for r in rows]
    merged: dict[float, dict[str, list[float]]] = {}
    order: list[float] = []
    for r in rows:
        epoch = _number(r.get("epoch"))
        if epoch is None:
            continue
        if epoch not in merged:
            merged[epoch] = {}
            order.append(epoch)
        for key, value in r.items():
            x = _number(value)
            if x is not None and key != "epoch":
                merged[epoch].setdefault(key, []).append(x)
    return [{"epoch": e, **{k: statistics.fmean(v) for k, v in merged[e].items()}} for e in order]


def _pick(columns: Mapping[str, list[float]], keys: tuple[str, ...], explicit: str | None) -> str | None:
    if explicit is not None:
        if explicit not in columns:
            raise ValueError(f"column {explicit!r} not found; columns are {sorted(columns)}")
        return explicit
    return next((k for k in keys if k in columns), None)


def read_curves(
    path: str | Path, *, train_key: str | None = None, val_key: str | None = None
) -> dict[str, list[float] | None]:
    """Read per-epoch curves from a history file for :func:`diagnose`.

    Understood formats: reglab's :meth:`History.save <reglab.loop.History.save>` output (JSON
    ``{"meta", "records"}`` or CSV), Lightning's ``CSVLogger`` ``metrics.csv`` (rows with empty
    cells, train and validation logged on different rows, possibly per step: rows are merged per
    ``epoch`` by their mean), and a Keras ``History.history`` dict saved as JSON
    (``{"loss": [...], "val_loss": [...]}``). Column names tried, in order: ``train_loss``,
    ``train_loss_epoch``, ``loss``; ``val_loss``, ``val_loss_epoch``, ``valid_loss``,
    ``validation_loss``, ``eval_loss``; and accuracy-like metrics likewise.

    Args:
        path: a ``.json`` or ``.csv`` file.
        train_key: column of the training loss (default: the first known name present).
        val_key: column of the validation loss.

    Returns:
        ``{"train_loss", "val_loss", "train_metric", "val_metric", "train_key", "val_key"}``;
        metric lists are ``None`` when absent; epochs lacking a value hold ``nan``.

    Raises:
        ValueError: for an unknown suffix, an unreadable layout, or no usable loss columns.

    Example:
        >>> import json, tempfile
        >>> path = Path(tempfile.mkdtemp()) / "keras.json"
        >>> _ = path.write_text(json.dumps({"loss": [1.0, 0.6], "val_loss": [1.1, 0.8]}))
        >>> c = read_curves(path)
        >>> c["train_key"], c["train_loss"], c["val_loss"]
        ('loss', [1.0, 0.6], [1.1, 0.8])
    """
    path = Path(path)
    if path.suffix not in (".json", ".csv"):
        raise ValueError(f"path must end in .json or .csv; received path={str(path)!r}")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "records" in data and isinstance(data["records"], list):
            rows = [dict(r) for r in data["records"]]
        elif isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
            length = max(len(v) for v in data.values())
            rows = [{k: v[i] for k, v in data.items() if i < len(v)} for i in range(length)]
        elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
            rows = [dict(r) for r in data]
        else:
            raise ValueError(
                f"{path} is neither a reglab history ({{'records': [...]}}), a Keras history "
                "({'loss': [...], 'val_loss': [...]}) nor a list of per-epoch records"
            )
    else:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    epochs = _rows_to_epochs(rows)
    names: list[str] = []
    for r in epochs:
        names.extend(k for k in r if k not in names)
    columns = {k: [r.get(k, math.nan) for r in epochs] for k in names}
    tk = _pick(columns, _TRAIN_KEYS, train_key)
    vk = _pick(columns, _VAL_KEYS, val_key)
    if tk is None or vk is None:
        raise ValueError(
            f"{path}: need a training and a validation loss column; found {sorted(columns)} "
            "(name them with train_key= / val_key=, or --train-col / --val-col)"
        )
    tmk = _pick(columns, _TRAIN_METRIC_KEYS, None)
    vmk = _pick(columns, _VAL_METRIC_KEYS, None)
    # Lightning logs validation before the first training epoch ends (sanity check rows are not
    # logged, but a val-only first or last row is common): drop epochs lacking either loss.
    keep = [i for i in range(len(epochs)) if math.isfinite(columns[tk][i]) and math.isfinite(columns[vk][i])]

    def sel(key: str | None) -> list[float] | None:
        return None if key is None else [columns[key][i] for i in keep]

    metrics_ok = tmk is not None and vmk is not None
    return {
        "train_loss": sel(tk),
        "val_loss": sel(vk),
        "train_metric": sel(tmk) if metrics_ok else None,
        "val_metric": sel(vmk) if metrics_ok else None,
        "train_key": tk,
        "val_key": vk,
    }
