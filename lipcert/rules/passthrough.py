"""How a coefficient on a node's output passes to its inputs through a relaxation (the default
``NonlinearRule.linearize``), and the rounding of doing so (``lipcert.rounding``, steps 3-4).
Shapes: ``A [S, B, *node.shape]``; ``S`` spec rows, ``B`` batch."""
from __future__ import annotations

import torch

from .. import rounding
from .base import Relaxation

def dot(A: torch.Tensor, b) -> torch.Tensor:
    """``sum over the node's positions of A * b`` -> ``[S, B]``; a bias without a spec dimension is
    contracted without materialising ``A * b`` (one read of ``A``)."""
    if not torch.is_tensor(b):
        return A.flatten(2).sum(-1) * b
    if b.dim() == A.dim():                       # per-spec bias (optimised slopes)
        return (A * b).flatten(2).sum(-1)
    bb = torch.broadcast_to(b, A.shape[1:]).reshape(A.shape[1], -1).to(A.dtype)
    return torch.einsum("sbn,bn->sb", A.flatten(2), bb)


def with_margin(relax, ivs, mags, rule, node):
    """The relaxation with its offsets moved outward by the rounding of computing it
    (``lipcert.rounding`` step 4): ``8 u (|offset| + sum_i |slope_i| |x_i|max + scale) + tiny``."""
    ref = relax.lower_bias if torch.is_tensor(relax.lower_bias) else relax.upper_bias
    un, tn = rounding.unit(ref.dtype), rounding.tiny(ref.dtype)
    scale = rule.rounding_scale(node, ivs)
    terms = [] if scale is None else [scale]
    for ls, us, m in zip(relax.lower_slopes, relax.upper_slopes, mags):
        if m is None:
            continue
        for sl in (ls, us):
            if sl is not None:
                terms.append(sl.abs() * m)
    base = sum(terms) if terms else 0
    lo = relax.lower_bias - (8 * un * (relax.lower_bias.abs() + base) + tn)
    up = relax.upper_bias + (8 * un * (relax.upper_bias.abs() + base) + tn)
    return Relaxation(relax.lower_slopes, lo, relax.upper_slopes, up)


def pass_error(relax, mags):
    """``v`` with ``|computed - exact pass-through| <= gamma . |A| . v`` (slopes times input
    magnitudes, plus the offsets)."""
    terms = [relax.lower_bias.abs(), relax.upper_bias.abs()]
    for ls, us, m in zip(relax.lower_slopes, relax.upper_slopes, mags):
        for sl in (ls, us):
            if sl is not None and m is not None:
                terms.append(sl.abs() * m)
    return sum(terms)


def pass_through(A, relax, upper: bool):
    """Coefficients for a node's inputs and the constant term, from its relaxation.

    For an upper bound a positive coefficient takes the upper relaxation and a negative one the
    lower relaxation; for a lower bound the reverse. Written as
    ``A * other + max(A, 0) * (main - other)`` (one clamp; ``other`` is the slope a negative
    coefficient takes), which is the same sum; the constant is contracted the same way."""
    pos = A.clamp(min=0)
    if upper:
        main_s, main_b, other_s, other_b = relax.upper_slopes, relax.upper_bias, relax.lower_slopes, relax.lower_bias
    else:
        main_s, main_b, other_s, other_b = relax.lower_slopes, relax.lower_bias, relax.upper_slopes, relax.upper_bias
    outs = []
    for ms, os_ in zip(main_s, other_s):
        if ms is None and os_ is None:
            outs.append(None)
            continue
        if os_ is None:
            outs.append(pos * ms)
            continue
        out = A * os_
        out.addcmul_(pos, os_.neg() if ms is None else ms - os_)
        outs.append(out)
    const = dot(A, other_b) + dot(pos, main_b - other_b)
    return outs, const
