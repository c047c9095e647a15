"""The batched regularization path: train K copies of a small model at once, one strength each.

A regularization path (Friedman, Hastie & Tibshirani, 2010, "Regularization Paths for
Generalized Linear Models via Coordinate Descent") is the family of solutions obtained for a
range of regularization strengths. For small networks one training step is dominated by Python
and kernel-launch overhead, not arithmetic, so training K copies one after the other wastes most
of the machine. :class:`BatchedPath` stacks the K copies' parameters
(``torch.func.stack_module_state``), runs them with ``torch.func.functional_call`` under
``torch.func.vmap`` (one batched kernel per layer instead of K small ones), and gives every copy
its own:

* decoupled weight decay ``weight_decay=λ``: ``w ← w − lr·λ·w`` before each optimizer step
  (PyTorch ``AdamW`` convention, Loshchilov & Hutter, 2019);
* coupled L2 ``l2=λ``: adds ``λ/2·Σw²`` to the loss (gradient ``λ·w``, the same as
  ``torch.optim.Adam(weight_decay=λ)`` or ``torch.optim.SGD(weight_decay=λ)``);
* dropout rate (Srivastava et al., 2014), applied at every dropout site of the model;
* label smoothing ``ε`` (Szegedy et al., 2016): targets ``(1−ε)·onehot + ε/K``.

Decay and penalties apply to the parameters chosen by ``decay_filter`` (default: ``ndim >= 2``,
i.e. weight matrices and kernels, not biases or norm scales).

Exactness. The optimizers are elementwise (Adam, SGD with momentum), so one optimizer over the
stacked tensors is the same arithmetic as K optimizers over K models; gradients of the summed
per-copy losses are the per-copy gradients. Copy ``k`` therefore reproduces a separate run with
the same seed (the same initial weights from ``torch.manual_seed(seeds[k])``, the same batches,
``torch.optim.AdamW``/``Adam``/``SGD``) to floating-point rounding; ``tests/test_batched.py``
checks this to 1e-5. Dropout masks cannot come from PyTorch's global generator inside ``vmap``
reproducibly, so every dropout site is a :class:`RateDropout` whose uniform noise is drawn per
copy from that copy's own ``torch.Generator`` (seeded with ``dropout_seeds[k]``, default
``seeds[k]``), site by site in module order, once per batch. A separate run that draws its noise
the same way (see :func:`draw_dropout_noise`) reproduces copy ``k`` exactly, masks included; a
separate run using ``nn.Dropout`` agrees only in distribution.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from reglab.loop import History

__all__ = ["BatchedPath", "RateDropout", "draw_dropout_noise", "swap_dropout"]


class RateDropout(nn.Module):
    """Inverted dropout whose rate is a buffer and whose noise may be supplied by the caller.

    ``y = x · 1[u ≥ p] / (1 − p)`` in training mode, with ``u ~ U[0, 1)`` either drawn from the
    global generator (``torch.rand_like``) or taken from the ``noise`` buffer when it is set (same
    shape as ``x``); the identity in eval mode. Keeping the rate in a buffer lets
    ``torch.func.stack_module_state`` give each stacked copy its own rate, and supplied noise makes
    the masks reproducible per copy. The module exists at every rate (``p = 0`` included), so the
    state_dict keys never depend on the rate.

    Args:
        p: drop probability in ``[0, 1)``.

    Raises:
        ValueError: if ``p`` is outside ``[0, 1)``.

    Example:
        >>> layer = RateDropout(0.5).train()
        >>> layer.noise = torch.tensor([[0.1, 0.7]])
        >>> layer(torch.ones(1, 2))
        tensor([[0., 2.]])
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        _check_rate("p", p)
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("noise", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        u = self.noise if self.noise.numel() > 0 else torch.rand_like(x)
        return x * ((u >= self.p).to(x.dtype) / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={float(self.p):g}"


def _check_rate(name: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1); received {name}={value!r}")


def swap_dropout(model: nn.Module, p: float | None = None) -> nn.Module:
    """Replace every ``nn.Dropout`` of ``model`` (in place) by a :class:`RateDropout`.

    Args:
        model: the module to change; pass a fresh or copied module, since it is modified.
        p: the new rate of every site (existing :class:`RateDropout` sites included); ``None``
            keeps each ``nn.Dropout``'s own rate.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: if ``p`` is outside ``[0, 1)``.
    """
    if p is not None:
        _check_rate("p", p)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Dropout):
            setattr(model, name, RateDropout(child.p if p is None else p))
        elif isinstance(child, RateDropout):
            if p is not None:
                child.p.fill_(float(p))
        else:
            swap_dropout(child, p)
    return model


def _dropout_sites(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, RateDropout)]


def draw_dropout_noise(
    feature_shapes: Sequence[tuple[int, ...]], batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Uniform noise for each dropout site of one batch, in site order, from one generator.

    One ``torch.rand`` call of ``batch_size · Σ features`` values is split site by site (each
    site's block reshaped to ``(batch_size, *features)``). This is how :class:`BatchedPath` draws
    copy ``k``'s noise (with copy ``k``'s generator); a separate run that assigns these tensors to
    its :class:`RateDropout` sites' ``noise`` reproduces the copy's masks exactly.
    """
    sizes = [batch_size * math.prod(shape) for shape in feature_shapes]
    flat = torch.rand(sum(sizes), generator=generator)
    return [block.view(batch_size, *shape) for block, shape in zip(flat.split(sizes), feature_shapes)]


def _per_copy(name: str, value: Any, k: int, *, check: Callable[[str, float], None]) -> torch.Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [float(value)] * k
    else:
        try:
            values = [float(v) for v in value]
        except TypeError:
            raise ValueError(f"{name} must be a number or a sequence of {k} numbers; received {name}={value!r}") from None
        if len(values) != k:
            raise ValueError(f"{name} must have one value per copy ({k}); received {name}={value!r}")
    for v in values:
        check(name, v)
    return torch.tensor(values)


def _nonneg(name: str, v: float) -> None:
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0; received {name}={v!r}")


def _default_decay_filter(name: str, p: torch.Tensor) -> bool:
    return p.ndim >= 2


class BatchedPath:
    """K copies of one model trained together, each with its own regularization strength.

    Args:
        model_fn: builds one copy, called as ``model_fn()`` right after
            ``torch.manual_seed(seeds[k])`` (inside ``torch.random.fork_rng``, so the caller's
            global generator is left untouched). Its ``nn.Dropout`` sites become
            :class:`RateDropout` sites.
        seeds: one seed per copy; ``K = len(seeds)``. Equal seeds give equal initial weights
            (the usual choice for a path: only the strength differs).
        weight_decay: decoupled decay ``λ`` per copy (number or K numbers): ``w ← w − lr·λ·w``.
        l2: coupled penalty ``λ`` per copy: adds ``λ/2·Σw²`` to the loss.
        dropout: rate per copy applied at every dropout site; ``None`` keeps the model's rates.
        label_smoothing: ``ε`` per copy (classification only).
        optimizer: ``"adam"`` (``torch.optim.Adam``) or ``"sgd"`` (``torch.optim.SGD``).
        lr, betas, eps: Adam hyperparameters, shared by every copy.
        momentum: SGD momentum, shared by every copy.
        loss: ``"cross_entropy"`` (class-index targets) or ``"mse"``.
        decay_filter: ``(name, parameter) -> bool``: which parameters are decayed/penalized;
            default ``parameter.ndim >= 2``.
        dropout_seeds: seeds of the per-copy dropout generators (default ``seeds``).

    Raises:
        ValueError: for an empty ``seeds``, a strength that is negative, not finite, or of the
            wrong length, a rate outside ``[0, 1)``, an unknown ``optimizer`` or ``loss``, label
            smoothing with ``loss="mse"``, or ``lr <= 0``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> path = BatchedPath(lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
        ...                    seeds=[0, 0, 0], weight_decay=[0.0, 0.1, 1.0], lr=1e-2)
        >>> histories = path.fit([(x, y)], epochs=2, eval_sets={"val": [(x, y)]})
        >>> len(histories), len(histories[0])
        (3, 2)
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        *,
        seeds: Sequence[int],
        weight_decay: float | Sequence[float] = 0.0,
        l2: float | Sequence[float] = 0.0,
        dropout: float | Sequence[float] | None = None,
        label_smoothing: float | Sequence[float] = 0.0,
        optimizer: str = "adam",
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        momentum: float = 0.0,
        loss: str = "cross_entropy",
        decay_filter: Callable[[str, torch.Tensor], bool] | None = None,
        dropout_seeds: Sequence[int] | None = None,
    ) -> None:
        seeds = list(seeds)
        if not seeds or not all(isinstance(s, int) for s in seeds):
            raise ValueError(f"seeds must be a non-empty sequence of ints; received seeds={seeds!r}")
        k = len(seeds)
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; received optimizer={optimizer!r}")
        if loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss must be 'cross_entropy' or 'mse'; received loss={loss!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0; received lr={lr!r}")
        self.k = k
        self.seeds = seeds
        self.lr = float(lr)
        self.loss = loss
        self.optimizer_name = optimizer
        self.weight_decay = _per_copy("weight_decay", weight_decay, k, check=_nonneg)
        self.l2 = _per_copy("l2", l2, k, check=_nonneg)
        self.label_smoothing = _per_copy("label_smoothing", label_smoothing, k, check=_check_rate)
        self.dropout = None if dropout is None else _per_copy("dropout", dropout, k, check=_check_rate)
        if loss == "mse" and bool((self.label_smoothing > 0).any()):
            raise ValueError(
                f"label_smoothing needs loss='cross_entropy'; received label_smoothing={label_smoothing!r} with loss='mse'"
            )
        dropout_seeds = list(dropout_seeds) if dropout_seeds is not None else seeds
        if len(dropout_seeds) != k:
            raise ValueError(f"dropout_seeds must have {k} seeds; received dropout_seeds={dropout_seeds!r}")

        models = []
        for i, seed in enumerate(seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                m = model_fn()
            swap_dropout(m, None if self.dropout is None else float(self.dropout[i]))
            models.append(m)
        self._template = copy.deepcopy(models[0])
        self._base = copy.deepcopy(models[0]).to("meta")
        self.params, self.buffers = stack_module_state(models)
        self._sites = _dropout_sites(models[0])
        self._site_shapes: list[tuple[int, ...]] | None = None
        self.generators = [torch.Generator().manual_seed(int(s)) for s in dropout_seeds]
        flt = decay_filter or _default_decay_filter
        self.decayed = [n for n, p in models[0].named_parameters() if flt(n, p)]
        plist = list(self.params.values())
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(plist, lr=lr, betas=betas, eps=eps, fused=True)
        else:
            self.optimizer = torch.optim.SGD(plist, lr=lr, momentum=momentum)
        self.epoch = 0
        self.step = 0

    # ----------------------------------------------------------------------------------------
    def _shape(self, name: str) -> tuple[int, ...]:
        return (self.k,) + (1,) * (self.params[name].ndim - 1)

    def _probe(self, x: torch.Tensor) -> None:
        shapes: dict[str, tuple[int, ...]] = {}
        model = self._template
        hooks = []
        for name, m in model.named_modules():
            if isinstance(m, RateDropout):
                hooks.append(m.register_forward_pre_hook(lambda mod, inp, name=name: shapes.__setitem__(name, tuple(inp[0].shape[1:]))))
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(x[:1])
        finally:
            model.train(was)
            for h in hooks:
                h.remove()
        self._site_shapes = [shapes[s] for s in self._sites]

    def _forward(self, x: torch.Tensor, *, train: bool) -> torch.Tensor:
        buffers = dict(self.buffers)
        if train and self._sites:
            if self._site_shapes is None:
                self._probe(x)
            if self.dropout is not None and not bool((self.dropout > 0).any()):
                # every rate is 0: u >= 0 keeps everything, so no noise needs to be drawn
                for site, shape in zip(self._sites, self._site_shapes):
                    buffers[f"{site}.noise"] = torch.zeros(()).expand(self.k, x.shape[0], *shape)
            else:
                per_copy = [draw_dropout_noise(self._site_shapes, x.shape[0], g) for g in self.generators]
                for j, site in enumerate(self._sites):
                    buffers[f"{site}.noise"] = torch.stack([noise[j] for noise in per_copy])
        self._base.train(train)

        def one(params, bufs, inp):
            return functional_call(self._base, (params, bufs), (inp,))

        return vmap(one, in_dims=(0, 0, None))(self.params, buffers, x)

    def _losses(self, out: torch.Tensor, y: torch.Tensor, *, smoothing: bool) -> torch.Tensor:
        """Per-copy mean loss, shape ``(K,)``."""
        if self.loss == "mse":
            return (out - y.unsqueeze(0)).pow(2).flatten(1).mean(1)
        logp = torch.log_softmax(out, dim=-1)
        nll = -logp.gather(-1, y.view(1, -1, 1).expand(self.k, -1, 1)).squeeze(-1).mean(1)
        if not smoothing:
            return nll
        uniform = -logp.mean(-1).mean(1)
        eps = self.label_smoothing
        return (1 - eps) * nll + eps * uniform

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step of every copy on the batch ``(x, y)``; returns the K data losses."""
        out = self._forward(x, train=True)
        losses = self._losses(out, y, smoothing=True)
        total = losses.sum()
        if bool((self.l2 > 0).any()):
            for name in self.decayed:
                p = self.params[name]
                total = total + (self.l2 / 2 * p.pow(2).flatten(1).sum(1)).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if bool((self.weight_decay > 0).any()):
            with torch.no_grad():
                for name in self.decayed:
                    p = self.params[name]
                    p.mul_(1 - self.lr * self.weight_decay.view(self._shape(name)))
        self.optimizer.step()
        self.step += 1
        return losses.detach()

    @torch.no_grad()
    def evaluate(self, data: Iterable[Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Per-copy mean loss (and accuracy for class targets) in eval mode, tensors of shape ``(K,)``.

        The loss is plain cross-entropy (no smoothing) or MSE, as ``reglab.fit`` evaluates with
        ``eval_loss_fn=cross_entropy``.
        """
        loss_sum = torch.zeros(self.k)
        correct = torch.zeros(self.k)
        total = 0
        for x, y in data:
            out = self._forward(x, train=False)
            n = y.shape[0]
            loss_sum += self._losses(out, y, smoothing=False) * n
            if self.loss == "cross_entropy":
                correct += (out.argmax(-1) == y.unsqueeze(0)).sum(1).to(correct.dtype)
            total += n
        if total == 0:
            raise ValueError("data must yield at least one batch; received an empty iterable")
        result = {"loss": loss_sum / total}
        if self.loss == "cross_entropy":
            result["acc"] = correct / total
        return result

    def fit(
        self,
        train_data: Iterable[Sequence[torch.Tensor]],
        *,
        epochs: int,
        eval_sets: Mapping[str, Iterable[Sequence[torch.Tensor]]] | None = None,
        eval_train: Iterable[Sequence[torch.Tensor]] | None = None,
        histories: list[History] | None = None,
        on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> list[History]:
        """Train every copy for ``epochs`` epochs; one :class:`~reglab.loop.History` per copy.

        Rows hold the same columns as ``reglab.fit``: ``epoch``, ``step``, ``lr``, ``train_loss``
        (running mean of the batch data losses, or the eval-mode loss over ``eval_train`` when
        given, the running mean then kept as ``train_loss_running``), ``train_acc``,
        ``{name}_loss`` / ``{name}_acc`` for each evaluation set, and ``time`` (the batched epoch's
        seconds, the same for every copy).

        Args:
            train_data: iterable of ``(x, y)`` batches, iterated once per epoch, shared by all copies.
            epochs: number of epochs (>= 0).
            eval_sets: named evaluation iterables.
            eval_train: training data evaluated in eval mode after each epoch.
            histories: K histories to continue (e.g. after :meth:`load_state_dict`).
            on_epoch: called after each epoch with the K new rows.

        Raises:
            ValueError: for ``epochs < 0`` or ``histories`` of the wrong length.
        """
        import time

        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0; received epochs={epochs!r}")
        if histories is None:
            histories = [History(meta={"seed": s}) for s in self.seeds]
        elif len(histories) != self.k:
            raise ValueError(f"histories must hold {self.k} histories; received {len(histories)}")
        eval_sets = dict(eval_sets or {})
        for _ in range(epochs):
            t0 = time.perf_counter()
            loss_sum = torch.zeros(self.k)
            correct = torch.zeros(self.k)
            n_seen = 0
            for x, y in train_data:
                losses = self.train_step(x, y)
                n = y.shape[0]
                loss_sum += losses * n
                n_seen += n
            if n_seen == 0:
                break
            self.epoch += 1
            cols: dict[str, torch.Tensor] = {"train_loss": loss_sum / n_seen}
            if eval_train is not None:
                cols["train_loss_running"] = cols.pop("train_loss")
                for key, value in self.evaluate(eval_train).items():
                    cols[f"train_{key}"] = value
            for name, data in eval_sets.items():
                for key, value in self.evaluate(data).items():
                    cols[f"{name}_{key}"] = value
            elapsed = time.perf_counter() - t0
            rows = []
            for i, h in enumerate(histories):
                row: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "lr": self.lr}
                row.update({key: float(v[i]) for key, v in cols.items()})
                row["time"] = elapsed
                h.append(row)
                rows.append(row)
            if on_epoch is not None:
                on_epoch(rows)
        return histories

    # ----------------------------------------------------------------------------------------
    def model(self, index: int) -> nn.Module:
        """A standalone copy of model ``index`` (its own tensors, with :class:`RateDropout` sites)."""
        if not (isinstance(index, int) and 0 <= index < self.k):
            raise ValueError(f"index must be an int in [0, {self.k}); received index={index!r}")
        m = copy.deepcopy(self._template)
        state = {n: p[index].detach().clone() for n, p in self.params.items()}
        state.update({n: b[index].clone() for n, b in self.buffers.items() if not n.endswith(".noise")})
        m.load_state_dict(state, strict=False)
        return m

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: stacked weights, optimizer, dropout generators, counters."""
        return {
            "params": {n: p.detach().clone() for n, p in self.params.items()},
            "buffers": {n: b.clone() for n, b in self.buffers.items() if not n.endswith(".noise")},
            "optimizer": self.optimizer.state_dict(),
            "generators": [g.get_state() for g in self.generators],
            "epoch": self.epoch,
            "step": self.step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into a path built with the same model, seeds count and options."""
        if set(state["params"]) != set(self.params):
            raise ValueError(
                f"state_dict params do not match this path; received keys {sorted(state['params'])}, "
                f"expected {sorted(self.params)}"
            )
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state["params"][n])
            for n, b in state["buffers"].items():
                self.buffers[n].copy_(b)
        self.optimizer.load_state_dict(state["optimizer"])
        if len(state["generators"]) != self.k:
            raise ValueError(f"state_dict holds {len(state['generators'])} generators; this path has {self.k} copies")
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])

    def __repr__(self) -> str:
        return f"BatchedPath(k={self.k}, optimizer={self.optimizer_name!r}, loss={self.loss!r}, sites={len(self._sites)})"
