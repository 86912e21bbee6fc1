"""From elementwise Jacobian bounds ``J in [jl, ju]`` to an upper bound of the dual norm ``||J||_q``.

q = 1 (l_inf inputs): ``|t| <= chord of |t| on [jl, ju]`` (|t| is convex), a linear function of
  J that the engine maximises over the region (tighter than summing interval maxima); the result
  is also capped by ``sum_i max(|jl_i|, |ju_i|)``.
q = 2 (l2 inputs): ``||J||_2 <= sqrt(sum_i max(jl_i^2, ju_i^2))``, and ``t^2 <= (jl + ju) t - jl ju``
  on ``[jl, ju]`` (chord of the convex ``t^2``) gives a linear bound of ``sum_i J_i^2``.
q = inf (l1 inputs): ``max_i max(|jl_i|, |ju_i|)``.
"""
from __future__ import annotations

import torch

from .. import rounding
from ..rules.base import chord

DUAL = {"inf": 1, "2": 2, "1": float("inf")}


def parse_norm(norm) -> str:
    s = str(norm).lower().replace("l", "")
    if s in ("inf", "infinity", "linf"):
        return "inf"
    if s in ("2", "2.0"):
        return "2"
    if s in ("1", "1.0"):
        return "1"
    from ..errors import InvalidInput
    raise InvalidInput(f"unknown norm {norm!r}; use 'inf', 2 or 1")


def interval_norm(jl: torch.Tensor, ju: torch.Tensor, norm: str) -> torch.Tensor:
    """Upper bound ``[N]`` of the dual norm over the box ``[jl, ju]`` (``[N, *shape]``); sums are
    rounded up (``lipcert.rounding`` step 6)."""
    m = torch.maximum(jl.abs(), ju.abs()).flatten(1)
    n = m.shape[1]
    if norm == "inf":
        return rounding.sum_up(m.sum(-1), n)
    if norm == "2":
        return _sqrt_up(rounding.sum_up(m.pow(2).sum(-1), n + 1))
    return m.amax(-1)


def linear_norm_spec(jl: torch.Tensor, ju: torch.Tensor, norm: str):
    """Coefficients ``a [N, *shape]`` and constant ``b [N]`` with ``phi(J) <= a . J + b`` on the box,
    where ``phi = ||J||_1`` (norm "inf") or ``||J||_2^2`` (norm "2"); None for norm "1". The
    chords' offsets are raised by their rounding, and so is their sum."""
    if norm == "inf":
        a, b = chord(jl, ju, jl.abs(), ju.abs(), upper=True)
    elif norm == "2":
        a, b = chord(jl, ju, jl * jl, ju * ju, upper=True)
    else:
        return None
    un, tn = rounding.unit(b.dtype), rounding.tiny(b.dtype)
    mag = torch.maximum(jl.abs(), ju.abs())
    b = b + 8 * un * (b.abs() + a.abs() * mag + mag * mag) + tn
    flat = b.flatten(1)
    return a, flat.sum(-1) + rounding.gamma(flat.shape[1] + 1, b.dtype) * flat.abs().sum(-1)


def finish(value: torch.Tensor, norm: str) -> torch.Tensor:
    """Turn the bound of ``phi`` (a computed sum of two terms) into a bound of the norm (sqrt for
    l2), rounded up."""
    value = value + rounding.gamma(2, value.dtype) * value.abs()
    return _sqrt_up(value.clamp(min=0)) if norm == "2" else value


def _sqrt_up(v: torch.Tensor) -> torch.Tensor:
    return v.sqrt() * (1 + 2 * rounding.unit(v.dtype)) + rounding.tiny(v.dtype)
