"""The reproduction framework: a registry of recipes and the result every recipe returns.

A reproduction recipe is one short module ``reglab/recipes/repro_NAME.py`` that defines a
module-level ``RECIPE = Repro(...)``. Its ``run(fast=..., seeds=..., progress=...)`` trains what the
paper or textbook trained and returns a :class:`ReproResult`: the published numbers beside ours,
the claims checked with an honest pass/fail, tables, plot data and a plain-language diagnosis.
Results hold only JSON-friendly data (numbers, strings, lists); the HTML report
(:mod:`reglab.report.repro`) draws the plots, so recipes never import matplotlib.

``fast=True`` is the shortened version the test-suite runs (same claim, less training);
``fast=False`` is the full version behind ``reglab repro NAME``.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

__all__ = [
    "Check",
    "Plot",
    "Progress",
    "Repro",
    "ReproResult",
    "Table",
    "Ticker",
    "available",
    "fmt",
    "get",
    "load_results",
    "mean_std",
    "pm",
    "run_repro",
    "save_results",
]


class Progress(Protocol):
    """Progress sink: ``progress(completed, total, description)``; units are the recipe's own."""

    def __call__(self, completed: int, total: int, description: str) -> None: ...


@dataclass
class Check:
    """One claim of the paper and whether this run reproduced it.

    Attributes:
        claim: the statement tested, with its threshold (e.g. ``"λ=3: ‖w‖ in [0.02, 0.06]"``).
        passed: whether the measured value satisfies it.
        measured: what was measured, as text (e.g. ``"‖w‖ = 0.034 (mean of 3 seeds)"``).
    """

    claim: str
    passed: bool
    measured: str

    def __post_init__(self) -> None:
        self.passed = bool(self.passed)


@dataclass
class Table:
    """A table of the report: ``rows`` are lists of cells (numbers are formatted by the report)."""

    title: str
    headers: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Plot:
    """Plot data the report draws with matplotlib.

    Attributes:
        title: figure title.
        kind: ``"line"`` (``series`` maps a label to ``[xs, ys]``), ``"bar"`` (``series`` maps a
            label to ``[mean, std]``) or ``"heatmap"`` (``matrix`` with ``x_ticks``/``y_ticks``).
        x_label / y_label: axis labels.
        series: the data of line and bar plots.
        matrix: rows × columns values of a heatmap (row ``i`` is ``y_ticks[i]``).
        x_ticks / y_ticks: tick labels of a heatmap.
        log_x / log_y: logarithmic axes (line plots).
        caption: what to look at in the figure.
        hlines: horizontal reference lines, label -> y (e.g. a published value).
    """

    title: str
    kind: str = "line"
    x_label: str = ""
    y_label: str = ""
    series: dict[str, list[Any]] = field(default_factory=dict)
    matrix: list[list[float]] = field(default_factory=list)
    x_ticks: list[str] = field(default_factory=list)
    y_ticks: list[str] = field(default_factory=list)
    log_x: bool = False
    log_y: bool = False
    caption: str = ""
    hlines: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("line", "bar", "heatmap"):
            raise ValueError(f"kind must be 'line', 'bar' or 'heatmap'; received kind={self.kind!r}")


@dataclass
class ReproResult:
    """What one reproduction produced.

    Attributes:
        name: registry name (``reglab repro NAME``).
        title: human title of the result.
        source: the paper or textbook section reproduced.
        setup: one paragraph describing data, model and training as run.
        published: rows ``[quantity, published value, our value]`` (text cells).
        checks: the claims tested, each passed or not.
        diagnosis: what the run shows, in plain language (no more than the numbers support).
        tables / plots: supporting material for the report.
        metrics: every number measured, JSON-friendly, for ``results.json``.
        fast: whether this was the shortened (test) version.
        seconds: wall time of the run.
    """

    name: str
    title: str
    source: str
    setup: str
    published: list[list[str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    diagnosis: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    fast: bool = False
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every check passed (and there is at least one)."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return _finite(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReproResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. one entry of ``results.json``)."""
        fields_ = dict(data)
        fields_.pop("passed", None)
        fields_["checks"] = [Check(**c) for c in fields_.get("checks", [])]
        fields_["tables"] = [Table(**t) for t in fields_.get("tables", [])]
        fields_["plots"] = [Plot(**p) for p in fields_.get("plots", [])]
        return cls(**fields_)


def _finite(obj: Any) -> Any:
    """Replace NaN/inf by None (strict JSON) recursively; convert tensors/numpy scalars."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _finite(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


RunFn = Callable[..., ReproResult]


@dataclass(frozen=True)
class Repro:
    """A registered reproduction.

    Attributes:
        name: the ``reglab repro NAME`` name (letters, digits, underscores).
        title: one-line title.
        order: position in the ``--all`` report (textbook basics first).
        run: ``run(*, fast=False, seeds=None, progress=None) -> ReproResult``.
        requires: modules the recipe needs besides the loop and data (listed in the report when
            missing).
    """

    name: str
    title: str
    order: int
    run: RunFn
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"name must be letters, digits and underscores; received name={self.name!r}")


def available() -> dict[str, Repro]:
    """Every reproduction found in ``reglab/recipes/repro_*.py``, in report order.

    A recipe module that fails to import (e.g. a component it needs is missing) is left out.
    """
    import reglab.recipes as package

    found: dict[str, Repro] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("repro_"):
            continue
        try:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
        except ImportError:
            continue
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Repro):
            found[recipe.name] = recipe
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


def get(name: str) -> Repro:
    """The reproduction called ``name``.

    Raises:
        ValueError: if no recipe has that name (the message lists the available ones).
    """
    recipes = available()
    if name not in recipes:
        raise ValueError(f"unknown reproduction name={name!r}; choose from {', '.join(recipes)}")
    return recipes[name]


def run_repro(
    name: str, *, fast: bool = False, seeds: int | None = None, progress: Progress | None = None
) -> ReproResult:
    """Run one reproduction by name and time it.

    Args:
        name: a name from :func:`available`.
        fast: the shortened version (the one the tests run).
        seeds: number of seeds, where the recipe repeats over seeds (``None``: the recipe's default).
        progress: optional ``progress(completed, total, description)`` sink.

    Raises:
        ValueError: for an unknown name or ``seeds < 1``.
    """
    import time

    if seeds is not None and (not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"seeds must be an int >= 1; received seeds={seeds!r}")
    recipe = get(name)
    t0 = time.perf_counter()
    result = recipe.run(fast=fast, seeds=seeds, progress=progress)
    result.seconds = time.perf_counter() - t0
    result.fast = fast
    return result


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(value: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, for report text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def pm(values: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    """``mean ± std`` of ``values`` (times ``scale``) as text."""
    m, s = mean_std([scale * v for v in values])
    return f"{m:.{digits}g} ± {s:.2g}"


class Ticker:
    """Counts progress units for a recipe and forwards them to a :class:`Progress` sink."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = int(total)
        self.done = 0
        self.progress = progress

    def __call__(self, description: str, units: int = 1) -> None:
        self.done += units
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total, description)


def load_results(path: str | Path) -> list[ReproResult]:
    """Read the results written by :func:`save_results` (``reglab repro`` writes ``results.json``)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"{path} is not a reglab repro results file (no 'results' key)")
    return [ReproResult.from_dict(r) for r in data["results"]]


def save_results(results: Sequence[ReproResult], path: str | Path) -> Path:
    """Write ``{"results": [...]}`` as strict JSON."""
    path = Path(path)
    path.write_text(json.dumps({"results": [r.to_dict() for r in results]}, indent=1, allow_nan=False))
    return path
