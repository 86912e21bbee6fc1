"""ReLU and LeakyReLU (forward), and their Clarke-gradient product (gradient graph).

All three are piecewise linear with ``0 <= a <= 1`` the negative slope (ReLU: ``a = 0``).
"""
from __future__ import annotations

import torch

from ..graph import ops
from .base import Interval, NonlinearRule, Relaxation, chord


def _slope(node) -> float:
    return float(node.attrs.get("negative_slope", 0.0))


class LeakyReLU(NonlinearRule):
    """``y = max(z, a z)`` (convex since ``0 <= a <= 1``), ``z in [l, u]``.

    Stable: ``l >= 0`` gives ``y = z``; ``u <= 0`` gives ``y = a z`` (exact).
    Unstable (``l < 0 < u``):
      upper: the chord through ``(l, a l)`` and ``(u, u)``; valid as f is convex.
      lower: ``y >= k z`` for any ``k in [a, 1]`` (both pieces lie above a line through the origin
      with slope between them); ``k = a + alpha (1 - a)``, ``alpha in [0, 1]`` is optimisable.
      Default alpha (CROWN): 1 if ``u >= -l`` else 0 (the smaller-area choice).
    """

    optimizable = True
    piecewise_linear = True

    def forward(self, node, z):
        return torch.nn.functional.leaky_relu(z, _slope(node))

    def gradient(self, gb, node, g):
        x = node.inputs[0]
        gb.send(x, gb.emit(node.name, ops.RELU_GRAD, [x, g], {"negative_slope": _slope(node), "mode": gb.relu_mode},
                           gb.fwd[x].shape))

    def lipschitz(self, graph, node, p, Ls):
        return max(1.0, abs(_slope(node))) * Ls[0]

    def ibp(self, node, iv, ctx=None):
        return Interval(self.forward(node, iv.lower), self.forward(node, iv.upper))

    def init_alpha(self, node, ivs):
        l, u = ivs[0].lower, ivs[0].upper
        return (u >= -l).to(l.dtype)

    def needs_bounds(self, node, ivs, ctx=None):
        l, u = ivs[0].lower, ivs[0].upper
        return [(l < 0) & (u > 0)]

    def relax(self, node, ivs, alpha=None, ctx=None):
        a = _slope(node)
        l, u = ivs[0].lower, ivs[0].upper
        active, inactive = l >= 0, u <= 0
        unstable = ~(active | inactive)
        one, zero = torch.ones_like(l), torch.zeros_like(l)
        uk, ub = chord(l, u, a * l, u, upper=True)
        up_slope = torch.where(active, one, torch.where(inactive, a * one, uk))
        up_bias = torch.where(unstable, ub, zero)
        if alpha is None:
            alpha = self.init_alpha(node, ivs)
        lo_k = a + alpha * (1 - a)  # [S?, B, *shape]
        lo_slope = torch.where(active, one, torch.where(inactive, a * one, lo_k))
        return Relaxation((lo_slope,), zero, (up_slope,), up_bias)


class ReLUGrad(NonlinearRule):
    """Gradient product ``h = s(z) g`` with ``s`` in the Clarke set of ``leaky_relu'`` at ``z``:
    ``{1}`` for ``z > 0``, ``{a}`` for ``z < 0``, ``[a, 1]`` at ``z = 0``. Inputs ``(z, g)``.

    Stable (``l > 0`` or split +1: ``h = g``; ``u < 0`` or split -1: ``h = a g``): exact.
    (A split ``z >= 0`` uses ``s = 1`` only: the norm is convex in each ``s``, so its maximum over
    ``s in [a, 1]`` is at ``a`` or ``1``, and the sibling domain ``z <= 0`` covers ``s = a``.)
    Unstable: for every ``s in [a, 1]``, ``h`` lies between ``min(a g, g)`` and ``max(a g, g)``.
      mode "chord" (the paper's relaxation, optimal among linear bounds in ``g``):
        upper: chord of the convex ``max(a g, g)`` over ``[gl, gu]``;
        lower: chord of the concave ``min(a g, g)`` over ``[gl, gu]``.
      mode "constant" (RecurJac-style baseline): ``min(a gl, gl) <= h <= max(a gu, gu)``.
    The bounds never depend on ``z`` linearly: ``z`` enters only through its bounds.
    """

    piecewise_linear = True

    def forward(self, node, z, g):
        a = _slope(node)
        return torch.where(z > 0, g, a * g)

    def _phase(self, node, ivs, ctx):
        l, u = ivs[0].lower, ivs[0].upper
        active, inactive = l > 0, u < 0
        split = None if ctx is None else ctx.split_of(node.inputs[0])
        if split is not None:
            active = active | (split > 0)
            inactive = (inactive | (split < 0)) & ~active
        return active, inactive

    def ibp(self, node, zi, gi, ctx=None):
        a = _slope(node)
        active, inactive = self._phase(node, (zi, gi), ctx)
        gl, gu = gi.lower, gi.upper
        lo = torch.where(active, gl, torch.where(inactive, a * gl, torch.minimum(a * gl, gl)))
        up = torch.where(active, gu, torch.where(inactive, a * gu, torch.maximum(a * gu, gu)))
        return Interval(lo, up)

    def needs_bounds(self, node, ivs, ctx=None):
        active, inactive = self._phase(node, ivs, ctx)
        return [None, ~(active | inactive)]

    def relax(self, node, ivs, alpha=None, ctx=None):
        a = _slope(node)
        gl, gu = ivs[1].lower, ivs[1].upper
        active, inactive = self._phase(node, ivs, ctx)
        unstable = ~(active | inactive)
        one, zero = torch.ones_like(gl), torch.zeros_like(gl)
        stable_slope = torch.where(active, one, a * one)
        if node.attrs.get("mode", "chord") == "constant":
            up_k, up_b = zero, torch.maximum(a * gu, gu)
            lo_k, lo_b = zero, torch.minimum(a * gl, gl)
        else:
            up_k, up_b = chord(gl, gu, torch.maximum(a * gl, gl), torch.maximum(a * gu, gu), upper=True)
            lo_k, lo_b = chord(gl, gu, torch.minimum(a * gl, gl), torch.minimum(a * gu, gu), upper=False)
        up_slope = torch.where(unstable, up_k, stable_slope)
        lo_slope = torch.where(unstable, lo_k, stable_slope)
        return Relaxation((None, lo_slope), torch.where(unstable, lo_b, zero),
                          (None, up_slope), torch.where(unstable, up_b, zero))


ACTIVATION_RULES = {
    ops.RELU: LeakyReLU(),
    ops.LEAKY_RELU: LeakyReLU(),
    ops.RELU_GRAD: ReLUGrad(),
}
