"""Data carriers shared by rules and engine, and the two rule protocols.

Shapes: ``B`` batch, ``S`` spec (number of linear functions bounded at once).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .. import rounding

Tensor = torch.Tensor


@dataclass(frozen=True)
class Interval:
    """Elementwise bounds ``lower <= value <= upper``, each ``[B, *shape]``."""

    lower: Tensor
    upper: Tensor

    @staticmethod
    def point(x: Tensor) -> "Interval":
        return Interval(x, x)

    def intersect(self, other: "Interval") -> "Interval":
        return Interval(torch.maximum(self.lower, other.lower), torch.minimum(self.upper, other.upper))

    def repeat_interleave(self, k: int) -> "Interval":
        return Interval(self.lower.repeat_interleave(k, 0), self.upper.repeat_interleave(k, 0))

    def detach(self) -> "Interval":
        return Interval(self.lower.detach(), self.upper.detach())

    @property
    def width(self) -> Tensor:
        return self.upper - self.lower


@dataclass(frozen=True)
class Relaxation:
    """Linear bounds of a node's output in terms of its inputs, valid on the inputs' box:

        sum_i lower_slopes[i] * x_i + lower_bias  <=  y  <=  sum_i upper_slopes[i] * x_i + upper_bias

    Slopes are elementwise (the ops relaxed this way are elementwise) and broadcast to
    ``[S, B, *shape]`` (a leading spec dimension appears when slopes are optimised per spec);
    ``None`` means a zero slope (the input does not appear), which lets the engine skip it.
    """

    lower_slopes: tuple[Optional[Tensor], ...]
    lower_bias: Tensor
    upper_slopes: tuple[Optional[Tensor], ...]
    upper_bias: Tensor


@dataclass(frozen=True)
class RelaxContext:
    """Per-call information a rule may read: BaB split decisions per forward pre-activation node.

    ``splits[name]`` is an int8 tensor ``[B, *shape]``: +1 (z >= 0 branch), -1 (z <= 0), 0 (free).
    """

    splits: Optional[dict] = None

    def split_of(self, name: str) -> Optional[Tensor]:
        return None if self.splits is None else self.splits.get(name)


class LinearRule:
    """An affine op: exact forward, exact IBP, exact backward of linear coefficients.

    Besides bounding, a rule says how the gradient graph differentiates it (``gradient``) and its
    region-free Lipschitz factor for the naive bound (``lipschitz``)."""

    linear = True
    piecewise_linear = True
    exact_move = False   # only moves values (reshape, slice, permute, gather): exact in floating point

    def gradient(self, gb, node, g: str) -> None:
        """Emit the gradient nodes of ``node`` through ``gb`` (``lipcert.gradient.GradBuilder``),
        given the name ``g`` of the gradient reaching its output: ``gb.send(input, name)`` for each
        input's share."""
        from ..errors import UnsupportedOperation
        raise UnsupportedOperation([(node.name, node.op)], detail="no gradient rule for this op")

    def lipschitz(self, graph, node, p: str, Ls: Sequence[float]) -> Optional[float]:
        """``L`` with ``||y(x) - y(x')||_p <= L ||x - x'||_p`` given the inputs' constants ``Ls``
        (p in "inf", "2", "1"); None when the op has no such bound."""
        return None

    def forward(self, node, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    def ibp(self, node, *ivs: Interval) -> Interval:
        raise NotImplementedError

    def backward(self, node, A: Tensor, in_shapes: Sequence[tuple]) -> tuple[list[Optional[Tensor]], Optional[Tensor]]:
        """Given ``A [S, B, *node.shape]``, return ``A_i [S, B, *in_shape_i]`` per input and the
        constant term ``[S, B]`` such that ``A . y = sum_i A_i . x_i + const``."""
        raise NotImplementedError

    def rounding(self, node, mags: Sequence[Tensor]) -> list[tuple[int, Tensor]]:
        """Rounding terms ``[(k, v)]`` of the node's floating-point arithmetic, ``v [B, *node.shape]``:
        with coefficients ``A`` on the output, the computed ``backward`` (and ``ibp``) is off from
        the exact one by at most ``sum gamma_k |A| . v`` (``mags`` bound the inputs' absolute
        values; see ``lipcert.rounding``). Empty for ops that only move values (exact)."""
        return []


class NonlinearRule:
    """An elementwise nonlinear op, relaxed by a :class:`Relaxation` over its inputs' box."""

    linear = False
    piecewise_linear = False
    exact_move = False
    optimizable = False  # has a free parameter in [0, 1] (alpha) that the engine may optimise

    def gradient(self, gb, node, g: str) -> None:
        """As :meth:`LinearRule.gradient`."""
        from ..errors import UnsupportedOperation
        raise UnsupportedOperation([(node.name, node.op)], detail="no gradient rule for this op")

    def lipschitz(self, graph, node, p: str, Ls: Sequence[float]) -> Optional[float]:
        """As :meth:`LinearRule.lipschitz` (elementwise ops: ``sup |f'|`` times the input's)."""
        return None

    def forward(self, node, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    def ibp(self, node, *ivs: Interval, ctx: RelaxContext | None = None) -> Interval:
        raise NotImplementedError

    def relax(self, node, ivs: Sequence[Interval], alpha: Tensor | None = None,
              ctx: RelaxContext | None = None) -> Relaxation:
        raise NotImplementedError

    def init_alpha(self, node, ivs: Sequence[Interval]) -> Tensor:
        raise NotImplementedError

    def rounding_scale(self, node, ivs: Sequence[Interval]) -> Optional[Tensor]:
        """Magnitude of the terms the relaxation's slopes and offsets are computed from, where it
        exceeds ``|offset| + sum |slope| |x|max`` (cancellation); None otherwise."""
        return None

    def linearize(self, node, A: Tensor, ivs: Sequence[Interval], mags: Sequence[Optional[Tensor]], *, upper: bool,
                  alpha: Optional[Tensor] = None, ctx: RelaxContext | None = None, cache: Optional[dict] = None):
        """How ``A . y`` (``A [S, B, *node.shape]``) is bounded from above (``upper``) or below by a
        linear function of the inputs over their box: ``(A_i per input or None, const [S, B],
        err [S, B])`` with ``A . y <= sum_i A_i . x_i + const`` (``>=`` for a lower bound) in exact
        arithmetic, and ``err`` bounding how far the computed coefficients and constant are from
        exact ones (``lipcert.rounding``). The default relaxes elementwise (``relax``); an op
        whose relaxation couples positions (a product of tensors, softmax, a norm) overrides this.
        ``cache`` memoises the relaxation without ``alpha`` while the input bounds stay."""
        from . import passthrough
        if alpha is None and cache is not None and node.name in cache:
            relax = cache[node.name]
        else:
            relax = passthrough.with_margin(self.relax(node, ivs, alpha=alpha, ctx=ctx), ivs, mags, self, node)
            if alpha is None and cache is not None:
                cache[node.name] = relax
        As, const = passthrough.pass_through(A, relax, upper=upper)
        err = passthrough.dot(A.abs(), rounding.gamma(node.numel + 4, A.dtype) * passthrough.pass_error(relax, mags))
        return As, const, err

    def needs_bounds(self, node, ivs: Sequence[Interval], ctx: RelaxContext | None = None) -> list[Optional[Tensor]]:
        """Per input: a bool mask ``[B, *shape]`` of positions whose bounds the relaxation uses
        (tighter bounds there can help), or None when the input's bounds are not needed."""
        ref = next(iv for iv in ivs if iv is not None)  # elementwise ops: inputs share a shape
        return [torch.ones_like(ref.lower, dtype=torch.bool) for _ in ivs]


def chord(xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor, upper: bool) -> tuple[Tensor, Tensor]:
    """Slope and intercept of the line through ``(xl, yl)`` and ``(xu, yu)``.

    Used as an upper bound of a convex function (``upper=True``) or a lower bound of a concave one.
    For a degenerate interval (``xu - xl`` tiny) the constant ``max(yl, yu)`` (``min`` for a lower
    bound) with slope 0 is returned: a convex function's max over an interval is at an endpoint."""
    w = xu - xl
    ok = w > 1e-12
    safe = torch.where(ok, w, torch.ones_like(w))
    slope = torch.where(ok, (yu - yl) / safe, torch.zeros_like(w))
    bias = torch.where(ok, yl - slope * xl, torch.maximum(yl, yu) if upper else torch.minimum(yl, yu))
    return slope, bias
