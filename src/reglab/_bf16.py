"""bfloat16 rounding helpers (private; used by :mod:`reglab.decay`).

bfloat16 keeps 8 significant bits, so ``w·(1 − lr·λ)`` rounds back to ``w`` whenever
``lr·λ·|w|`` is under half a unit in the last place (ulp) of ``w``: with ``lr=1e-3, λ=1e-2`` the
decay is lost for every weight. Stochastic rounding (Gupta et al., "Deep Learning with Limited
Numerical Precision", ICML 2015) rounds up with probability equal to the discarded fraction, so
the expected stored value equals the exact one and small updates survive on average.
"""

from __future__ import annotations

import torch

__all__ = ["LOW_PRECISION", "stochastic_round_to_bf16"]

LOW_PRECISION = (torch.bfloat16, torch.float16)


def stochastic_round_to_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round float32 ``x`` to bfloat16 stochastically (unbiased: ``E[result] = x``).

    bfloat16 is the upper 16 bits of float32, so adding uniform noise in ``[0, 2^16)`` to the
    float32 bit pattern and truncating the lower 16 bits rounds the magnitude up with probability
    equal to the discarded fraction; sign-magnitude encoding makes this correct for negative
    values too. Infinities and NaNs are kept; finite values within one bf16 ulp of the float32
    maximum may round to infinity, as any rounding to bfloat16 can.

    Args:
        x: float32 tensor.
        generator: optional ``torch.Generator`` (on ``x``'s device) for reproducible noise.

    Returns:
        A new bfloat16 tensor of ``x``'s shape.

    Raises:
        ValueError: if ``x`` is not float32.

    Example:
        >>> x = torch.full((10000,), 1.0 + 2.0**-10)
        >>> round(float(stochastic_round_to_bf16(x).float().mean()), 3)  # nearest rounding gives 1.0
        1.001
    """
    if x.dtype != torch.float32:
        raise ValueError(f"x must be float32; received x.dtype={x.dtype}")
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, device=x.device, generator=generator)
    rounded = (bits + noise) & -65536  # clear the lower 16 bits (~0xFFFF as int32)
    out = rounded.view(torch.float32)
    out = torch.where(torch.isfinite(x), out, x)
    return out.to(torch.bfloat16)  # exact: the lower 16 bits are zero
