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

Engines. When the model is a plain ``nn.Sequential`` of ``nn.Linear`` layers, elementwise
activations (ReLU, GELU, tanh, ...) and dropout sites, the default engine (``"bmm"``) skips
``vmap`` and runs the stacked ``(K, out, in)`` weights with explicit batched matrix products
(``torch.addmm`` for the first layer, whose input all copies share, then ``torch.baddbmm``),
activations kept feature-major ``(K, features, batch)`` so that every weight gradient comes out
in the weight's own layout. It computes the same function as the ``"vmap"`` engine (the general
fallback, used for any other model) to floating-point rounding; ``tests/test_batched.py`` checks
the two against each other to 1e-5, dropout and label smoothing included.

Exactness. The optimizers are elementwise (Adam, SGD with momentum), so one optimizer over the
stacked tensors is the same arithmetic as K optimizers over K models; gradients of the summed
per-copy losses are the per-copy gradients. Copy ``k`` therefore reproduces a separate run with
the same seed (the same initial weights from ``torch.manual_seed(seeds[k])``, the same batches,
``torch.optim.AdamW``/``Adam``/``SGD``) to floating-point rounding; ``tests/test_batched.py``
checks this to 1e-5. Dropout masks cannot come from PyTorch's global generator inside ``vmap``
reproducibly, so every dropout site is a :class:`RateDropout` whose uniform noise is drawn per
copy from that copy's own ``torch.Generator`` (seeded with ``dropout_seeds[k]``, default
``seeds[k]``), site by site in module order, once per batch (one draw per copy, into one
``(K, batch · Σ features)`` buffer). When every rate of every site is 0 no noise is drawn and the
generators do not advance (the masks would keep every unit anyway). A separate run that draws its
noise the same way (see :func:`draw_dropout_noise`) reproduces copy ``k`` exactly, masks included; a
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
from reglab.stochastic import _check_rate

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

    Args:
        feature_shapes: per-example shape of each site's input, in site order.
        batch_size: examples in the batch.
        generator: the generator to draw from (advanced by ``batch_size · Σ features`` values).

    Returns:
        One tensor of shape ``(batch_size, *features)`` per site, views into one draw.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> [tuple(t.shape) for t in draw_dropout_noise([(3,), (2, 2)], 4, g)]
        [(4, 3), (4, 2, 2)]
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


# Parameter-free activations that act elementwise, so the feature-major layout of the "bmm"
# engine does not change what they compute. Exact types only: a subclass may do anything.
_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid,
    nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity,
)


def _bmm_plan(model: nn.Module) -> tuple[list[tuple[str, Any]], str | None]:
    """The layers of a plain Sequential for the "bmm" engine, or the reason it does not apply.

    Returns ``(plan, None)`` with plan entries ``("linear", (weight_name, bias_name or None))``,
    ``("act", module)`` or ``("dropout", site_name)``; or ``([], reason)``.
    """
    if type(model) is not nn.Sequential:
        return [], f"the model is a {type(model).__name__}, not a plain nn.Sequential"
    plan: list[tuple[str, Any]] = []
    for name, m in model.named_children():
        if type(m) is nn.Linear:
            plan.append(("linear", (f"{name}.weight", None if m.bias is None else f"{name}.bias")))
        elif type(m) is RateDropout:
            plan.append(("dropout", name))
        elif type(m) in _ELEMENTWISE:
            plan.append(("act", m))
        else:
            return [], f"layer {name!r} is a {type(m).__name__} (supported: Linear, dropout, elementwise activations)"
    if not any(kind == "linear" for kind, _ in plan):
        return [], "the model has no nn.Linear layer"
    return plan, None


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
        engine: ``"auto"`` (``"bmm"`` when the model is a plain ``nn.Sequential`` of
            ``nn.Linear``, elementwise activations and dropout; ``"vmap"`` otherwise), ``"bmm"``
            (explicit batched matrix products; fails for other models) or ``"vmap"``
            (``torch.func.vmap`` over ``functional_call``, any model). The chosen engine is the
            attribute ``engine``; the two compute the same results to rounding. Under ``"bmm"``,
            batches whose inputs are not ``(batch, features)`` still go through ``vmap``.

    Raises:
        ValueError: for an empty ``seeds``, a strength that is negative, not finite, or of the
            wrong length, a rate outside ``[0, 1)``, an unknown ``optimizer``, ``loss`` or
            ``engine``, ``engine="bmm"`` for a model it does not support, label smoothing with
            ``loss="mse"``, or ``lr <= 0``.

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
        engine: str = "auto",
    ) -> None:
        seeds = list(seeds)
        if not seeds or not all(isinstance(s, int) for s in seeds):
            raise ValueError(f"seeds must be a non-empty sequence of ints; received seeds={seeds!r}")
        k = len(seeds)
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; received optimizer={optimizer!r}")
        if loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss must be 'cross_entropy' or 'mse'; received loss={loss!r}")
        if engine not in ("auto", "bmm", "vmap"):
            raise ValueError(f"engine must be 'auto', 'bmm' or 'vmap'; received engine={engine!r}")
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
        self._noise: torch.Tensor | None = None
        self.generators = [torch.Generator().manual_seed(int(s)) for s in dropout_seeds]
        flt = decay_filter or _default_decay_filter
        self.decayed = [n for n, p in models[0].named_parameters() if flt(n, p)]
        plan, reason = _bmm_plan(models[0])
        if engine == "bmm" and reason is not None:
            raise ValueError(f"engine='bmm' needs a plain Sequential of Linear/activation/dropout layers; {reason}")
        self.engine = "vmap" if engine == "vmap" or reason is not None else "bmm"
        self._plan = plan
        plist = list(self.params.values())
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(plist, lr=lr, betas=betas, eps=eps, fused=True)
        else:
            self.optimizer = torch.optim.SGD(plist, lr=lr, momentum=momentum)
        # Per-copy strengths as broadcastable (K, 1, ...) views, and which parts of the step are
        # needed at all, decided once here so that the step never syncs on a tensor value.
        self._decay_factor = {
            n: (1 - self.lr * self.weight_decay).view(self._shape(n)) for n in self.decayed
        } if bool((self.weight_decay > 0).any()) else {}
        self._l2 = {n: self.l2.view(self._shape(n)) for n in self.decayed} if bool((self.l2 > 0).any()) else {}
        self._smoothing = bool((self.label_smoothing > 0).any())
        self._refresh_rates()
        self.epoch = 0
        self.step = 0

    # ----------------------------------------------------------------------------------------
    def _shape(self, name: str) -> tuple[int, ...]:
        return (self.k,) + (1,) * (self.params[name].ndim - 1)

    def _refresh_rates(self) -> None:
        """Cache, per dropout site, its rates as ``(K, 1, 1)`` tensors and whether any is > 0."""
        self._rates: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
        for site in self._sites:
            p = self.buffers[f"{site}.p"]
            self._rates[site] = (p.view(-1, 1, 1), (1.0 / (1.0 - p)).view(-1, 1, 1)) if bool((p > 0).any()) else None
        self._draw = any(r is not None for r in self._rates.values())

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

    def _draw_noise(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """This batch's noise per site, shape ``(K, batch, *features)``: copy ``k``'s rows are
        :func:`draw_dropout_noise` with generator ``k`` (one draw per copy into one buffer)."""
        shapes = self._feature_shapes(x)
        b = x.shape[0]
        sizes = [b * math.prod(shape) for shape in shapes]
        total = sum(sizes)
        if self._noise is None or self._noise.shape[1] != total:
            self._noise = torch.empty(self.k, total)
        noise = self._noise
        for row, g in zip(noise, self.generators):
            row.uniform_(generator=g)
        return {
            site: block.view(self.k, b, *shape)
            for site, block, shape in zip(self._sites, noise.split(sizes, dim=1), shapes)
        }

    def _feature_shapes(self, x: torch.Tensor) -> list[tuple[int, ...]]:
        if self._site_shapes is None:
            self._probe(x)
        return self._site_shapes  # type: ignore[return-value]

    def _forward(self, x: torch.Tensor, *, train: bool) -> torch.Tensor:
        """Outputs of every copy, shape ``(K, batch, ...)``."""
        noise = self._draw_noise(x) if train and self._draw else {}
        if self.engine == "bmm" and x.ndim == 2:
            return self._forward_bmm(x, noise, train=train)
        buffers = dict(self.buffers)
        for site, u in noise.items():
            buffers[f"{site}.noise"] = u
        if train and self._sites and not self._draw:
            # every rate is 0: u >= 0 keeps everything, so no noise needs to be drawn
            for site, shape in zip(self._sites, self._feature_shapes(x)):
                buffers[f"{site}.noise"] = torch.zeros(()).expand(self.k, x.shape[0], *shape)
        self._base.train(train)

        def one(params, bufs, inp):
            return functional_call(self._base, (params, bufs), (inp,))

        return vmap(one, in_dims=(0, 0, None))(self.params, buffers, x)

    def _forward_bmm(self, x: torch.Tensor, noise: Mapping[str, torch.Tensor], *, train: bool) -> torch.Tensor:
        """The "bmm" engine: activations feature-major, ``(K, features, batch)``.

        Until the first Linear the activation is the shared ``(batch, features)`` input; the
        first Linear multiplies it by all K weight matrices at once (one ``addmm`` over the
        ``(K·out, in)`` stack), later ones use ``baddbmm``. Weight gradients therefore come out
        contiguous in the ``(K, out, in)`` layout of the stacked parameters (no copies).
        """
        k = self.k
        h = x  # shared (batch, features) until it becomes per-copy
        shared = True
        for kind, item in self._plan:
            if kind == "linear":
                w = self.params[item[0]]
                bias = None if item[1] is None else self.params[item[1]]
                if shared:
                    w2 = w.view(-1, w.shape[-1])
                    z = torch.mm(w2, h.t()) if bias is None else torch.addmm(bias.view(-1, 1), w2, h.t())
                    h = z.view(k, w.shape[1], -1)
                    shared = False
                else:
                    h = torch.bmm(w, h) if bias is None else torch.baddbmm(bias.unsqueeze(-1), w, h)
            elif kind == "act":
                h = item(h)
            elif train:
                rates = self._rates[item]
                if rates is None:
                    continue  # every copy's rate is 0 at this site: the identity
                if shared:
                    h = h.t().unsqueeze(0).expand(k, -1, -1)
                    shared = False
                p, scale = rates
                # the same mask values as RateDropout: 1[u >= p] / (1 - p)
                h = h * ((noise[item].transpose(1, 2) >= p) * scale)
        if shared:
            h = h.t().unsqueeze(0).expand(k, -1, -1)
        return h.transpose(1, 2)

    def _losses(self, out: torch.Tensor, y: torch.Tensor, *, smoothing: bool) -> torch.Tensor:
        """Per-copy mean loss, shape ``(K,)``."""
        if self.loss == "mse":
            return (out - y.unsqueeze(0)).pow(2).flatten(1).mean(1)
        logp = torch.log_softmax(out, dim=-1)
        nll = -logp.gather(-1, y.view(1, -1, 1).expand(self.k, -1, 1)).squeeze(-1).mean(1)
        if not (smoothing and self._smoothing):
            return nll
        uniform = -logp.mean(-1).mean(1)
        eps = self.label_smoothing
        return (1 - eps) * nll + eps * uniform

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step of every copy on the batch ``(x, y)``; returns the K data losses.

        The coupled L2 gradient ``λ·w`` is added to the gradient after the backward pass (what
        the ``λ/2·Σw²`` term would contribute, as ``torch.optim.Adam(weight_decay=λ)`` does), and
        the decoupled decay multiplies the weights before the optimizer step: one in-place op
        per stacked tensor, never a loop over the copies.
        """
        out = self._forward(x, train=True)
        losses = self._losses(out, y, smoothing=True)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        with torch.no_grad():
            for name, lam in self._l2.items():
                p = self.params[name]
                if p.grad is None:  # not used by the forward pass: the penalty's gradient alone
                    p.grad = p * lam
                else:
                    p.grad.addcmul_(p, lam)
            for name, factor in self._decay_factor.items():
                self.params[name].mul_(factor)
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
        self._refresh_rates()
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])

    def __repr__(self) -> str:
        return (
            f"BatchedPath(k={self.k}, engine={self.engine!r}, optimizer={self.optimizer_name!r}, "
            f"loss={self.loss!r}, sites={len(self._sites)})"
        )
