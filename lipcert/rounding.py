"""Floating-point rounding: the one module that decides how every bound stays sound when computed
in float32 or float64.

What is certified is the model's function in exact (real) arithmetic, with its weights as stored,
on the region as requested. Every step that forms a bound rounds *outward* with respect to that
function; the argument for each step, with ``u`` the unit roundoff of the working dtype
(``2^-24`` in float32, ``2^-53`` in float64) and ``gamma_k = k u / (1 - k u)`` (Higham, *Accuracy
and Stability of Numerical Algorithms*, ch. 3: a computed sum of ``k`` products differs from the
exact one by at most ``gamma_k`` times the sum of the products' absolute values):

1. **The region** (``outward_box``): ``x0 - eps`` and ``x0 + eps`` are formed in float64 with
   the exact sign of their rounding error (TwoSum) and moved one ulp outward (``nextafter``) where
   they fell inside, so the float64 box contains the exact one; cast to float32 the ends are rounded down/up (a cast that went the
   wrong way is moved one float32 ulp outward). Domain ends are rounded the same way before the
   box is clipped (clipping by ``max``/``min`` is exact). Witness points are drawn from the
   *inward*-rounded box (``inward_box``) so that they lie in the exact region.
2. **Folded constants**: capture always runs in float64 (a float32 model is promoted exactly), so
   BatchNorm folding and constant arithmetic are done once, in float64. The graph is cast to
   float32 only when every float constant survives the cast exactly (``exactly_representable``);
   otherwise the bound is computed in float64 and the certificate says so.
3. **Linear bound propagation** (``engine/crown.py``): the engine carries, for each side, an
   absolute error ``err [S, B]``. A linear node ``y = W x + b`` passes ``A`` to ``A W`` with a
   computed product whose error is at most ``gamma_k |A| |W|`` (``k`` the reduction length), so
   the identity ``A . y = (A W) . x + A . b`` used by CROWN is off by at most
   ``gamma_k |A| . (|W| |x|max + |b|)``, where ``|x|max`` comes from the node's interval bounds
   (``magnitude``). A nonlinear node's pass-through (a few elementwise products and one
   contraction of length ``n``) is off by at most ``gamma_(n+4) |A| . ((|s_lo| + |s_up|) |x|max
   + |b_lo| + |b_up|)``; the concretisation over the box by ``gamma_(n+3) |A| . 2|x|max``; the sum
   of the per-node constants by ``gamma_N`` times the sum of their absolute values. The total is
   subtracted from the lower and added to the upper bound. Terms of order ``u^2`` are covered by
   evaluating every ``gamma`` at twice its ``k``.
4. **Relaxations**: each rule derives its lines in exact arithmetic (the proof sketches in
   ``rules/``); computing slopes and offsets in floating point moves a line by at most a few
   rounding errors of its terms, so the engine lowers every lower offset and raises every upper
   offset by ``8 u (|offset| + sum_i |slope_i| |x_i|max + scale)`` plus an absolute ``tiny``
   (``scale`` is the rule's own magnitude where its slopes suffer cancellation, e.g. McCormick's
   ``|d|max |g|max``) — absolute as well as relative, so a saturated ``1 - s`` can never make an
   offset exactly 0. Derivatives of saturating functions are evaluated in cancellation-free
   forms (``sigmoid' = s(z) s(-z)``, ``tanh' = 4 s(2z) s(-2z)``), accurate to a few ulps.
5. **Interval arithmetic**: a linear node's IBP interval is widened by
   ``gamma_k (|W| |x|max + |b|)``; a nonlinear elementwise node's by ``8 u |value| + tiny``
   (elementwise functions of torch are accurate to a few ulps).
6. **Norms**: sums of ``n`` nonnegative terms are raised by ``gamma_n`` relatively, square roots
   by ``2u``; products of operator norms (naive bound) by ``gamma`` of the number of factors and
   of the SVD's backward error.
Lower bounds are never rounded this way: a witness pair is evaluated with the same outward
interval arithmetic on points (``engine.schedule.evaluate_enclosure``), so the reported quotient
is a lower bound of the exact one.
"""
from __future__ import annotations

import torch


def unit(dtype) -> float:
    """Unit roundoff ``u`` of ``dtype``."""
    return torch.finfo(dtype).eps / 2


def tiny(dtype) -> float:
    """Smallest positive normal number of ``dtype``: the absolute floor of every margin."""
    return torch.finfo(dtype).tiny


def higham_gamma(k: int, dtype=torch.float64) -> float:
    """``gamma_k = k u / (1 - k u)`` (Higham, Accuracy and Stability, Lemma 3.1)."""
    ku = max(int(k), 1) * unit(dtype)
    return ku / (1 - ku)


def gamma(k: int, dtype) -> float:
    """``gamma_(2k)``: bound on the relative error of a sum of ``k`` products (doubled to cover
    second-order terms and the rounding of the error estimate itself)."""
    return higham_gamma(2 * max(int(k), 1), dtype)


def magnitude(iv) -> torch.Tensor:
    """``max(|lower|, |upper|)``: a bound on the absolute value of every point of an interval."""
    return torch.maximum(iv.lower.abs(), iv.upper.abs())


def down(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, -float("inf")))


def up(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, float("inf")))


def cast_down(x: torch.Tensor, dtype) -> torch.Tensor:
    """Largest ``dtype`` value ``<= x`` (``x`` in a wider or equal type)."""
    y = x.to(dtype)
    bad = y.to(x.dtype) > x
    return torch.where(bad, down(y), y)


def cast_up(x: torch.Tensor, dtype) -> torch.Tensor:
    """Smallest ``dtype`` value ``>= x``."""
    y = x.to(dtype)
    bad = y.to(x.dtype) < x
    return torch.where(bad, up(y), y)


def two_sum(a: torch.Tensor, b: torch.Tensor):
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _ends(x0, eps):
    """``x0 - eps`` and ``x0 + eps`` rounded to nearest, with the signs of their rounding errors:
    ``lo + lo_err`` and ``hi + hi_err`` are the exact ends."""
    lo, lo_err = two_sum(x0, -eps.expand_as(x0))
    hi, hi_err = two_sum(x0, eps.expand_as(x0))
    return lo, lo_err, hi, hi_err


def outward_box(x0: torch.Tensor, eps: torch.Tensor, dlo, dhi, dtype):
    """``(lower, upper)`` in ``dtype`` containing ``{x : |x - x0| <= eps} ∩ [dlo, dhi]`` exactly.

    ``x0``/``eps`` are float64 (exact copies of the user's values); ``dlo``/``dhi`` are float64
    or None."""
    lo, lo_err, hi, hi_err = _ends(x0, eps)
    lo = torch.where(lo_err < 0, down(lo), lo)  # the computed end lies inside the exact one: step out
    hi = torch.where(hi_err > 0, up(hi), hi)
    if dlo is not None:
        lo, hi = torch.maximum(lo, dlo), torch.minimum(hi, dhi)
    return cast_down(lo, dtype), cast_up(hi, dtype)


def inward_box(x0: torch.Tensor, eps: torch.Tensor, dlo, dhi, dtype):
    """``(lower, upper)`` in ``dtype`` inside the exact region (witness points are drawn from it);
    None when some coordinate of the region holds no ``dtype`` value (a radius below the dtype's
    resolution around a value it cannot represent)."""
    lo, lo_err, hi, hi_err = _ends(x0, eps)
    lo = torch.minimum(torch.where(lo_err > 0, up(lo), lo), x0)   # outside the exact end: step in
    hi = torch.maximum(torch.where(hi_err < 0, down(hi), hi), x0)  # (x0 itself is in the ball)
    if dlo is not None:
        lo, hi = torch.maximum(lo, dlo), torch.minimum(hi, dhi)
    lo_t, hi_t = cast_up(lo, dtype), cast_down(hi, dtype)
    if bool((lo_t > hi_t).any()):
        return None
    return lo_t, hi_t


def exactly_representable(t: torch.Tensor, dtype) -> bool:
    """Whether casting ``t`` to ``dtype`` loses nothing."""
    if not t.is_floating_point():
        return True
    return bool(torch.equal(t.to(dtype).to(t.dtype), t))


def sum_up(total: torch.Tensor, n: int) -> torch.Tensor:
    """A computed sum of ``n`` nonnegative terms, raised to bound the exact sum."""
    return total * (1 + gamma(n, total.dtype)) + tiny(total.dtype)
