"""Smooth elementwise functions (tanh, sigmoid and their derivatives) and the bilinear product.

One relaxation serves every smooth unary ``f`` whose second derivative is bounded,
``|f''| <= M2``: for a candidate slope ``k``, the tightest parallel lines are
``k z + min_[l,u](f - k z)`` and ``k z + max_[l,u](f - k z)``. The min/max are taken on a grid of
``G + 1`` points with spacing ``h`` and corrected by ``M2 h^2 / 8``.

Proof sketch: ``phi = f - k z`` has ``phi'' = f''``. On a grid cell, ``phi`` differs from its
linear interpolant by at most ``M2 h^2 / 8`` (the interpolation error bound
``|phi(z) - L(z)| <= M2 (z - z_i)(z_{i+1} - z) / 2``), and the interpolant lies between the
cell's end values. So ``max phi <= max_grid phi + M2 h^2 / 8``, likewise for the min.
A rounding slack of a few ulps of the terms is added (``lipcert.rounding``). The slope of each line is chosen among a few candidates
(chord, tangents at the ends, middle and quarter points) by the smallest area between the line and
the function; any choice is sound.
"""
from __future__ import annotations

import math

import torch

from .. import rounding
from ..graph import ops
from .base import Interval, NonlinearRule, Relaxation

GRID = 32
CRIT_TOL = 1e-9  # every critical point given to Smooth is within this of the true one


def _tanh(z):
    return torch.tanh(z)


def _dtanh(z):
    # tanh' = 1 - tanh^2 = 4 s(2z) s(-2z): no cancellation when tanh saturates (1 - t^2 would be 0)
    return 4 * torch.sigmoid(2 * z) * torch.sigmoid(-2 * z)


def _d2tanh(z):  # used for candidate slopes only (any slope is sound)
    t = torch.tanh(z)
    return -2 * t * _dtanh(z)


def _sig(z):
    return torch.sigmoid(z)


def _dsig(z):
    # s (1 - s) = s(z) s(-z): accurate to a few ulps where s saturates (1 - s would round to 0)
    return torch.sigmoid(z) * torch.sigmoid(-z)


def _d2sig(z):  # used for candidate slopes only
    return _dsig(z) * (torch.sigmoid(-z) - torch.sigmoid(z))


class Smooth(NonlinearRule):
    """A continuous unary function ``f``, twice differentiable between its ``kinks``, with
    ``sup |f''| <= m2`` there.

    Args:
        f: the function (evaluated accurately: within a few ulps of ``scale(z)``).
        df: its derivative (used to choose candidate slopes only: any slope is sound).
        m2: a bound of ``|f''|`` on every piece between kinks.
        crit: every point where ``f'`` changes sign (the interior extrema), each within
            ``CRIT_TOL`` of a float given here.
        kinks: points where ``f'`` jumps (``f`` itself continuous); they join the grid.
        scale: magnitude of the terms ``f(z)`` is computed from (default ``|f(z)|``), for the
            rounding slack where they cancel.
        deriv: the IR op of ``f'`` for the gradient graph (``d = f'(z); h = d * g``), or None.
        lip: ``sup |f'|`` (region-free constant for the naive bound), or None.

    IBP: ``f`` over ``[l, u]`` attains its extremes at ``l``, ``u``, a kink or a critical point
    inside; a critical point known to ``CRIT_TOL`` moves the value by at most
    ``m2 CRIT_TOL^2`` (``|f'| <= m2 |z - c|`` near it). A kink is a grid point of the relaxation,
    so every grid cell lies in one piece.
    """

    def __init__(self, f, df, m2: float, *, crit=(), kinks=(), scale=None, deriv=None, lip=None):
        self.f, self.df, self.m2 = f, df, m2
        self.crit, self.kinks = tuple(crit), tuple(kinks)
        self.scale = scale or (lambda z: self.f(z).abs())
        self.deriv, self.lip = deriv, lip

    def forward(self, node, z):
        return self.f(z)

    def gradient(self, gb, node, g):
        if self.deriv is None:
            return super().gradient(gb, node, g)
        x = node.inputs[0]
        shape = gb.fwd[x].shape
        d = gb.emit(node.name, self.deriv, [x], {}, shape)
        gb.send(x, gb.emit(node.name, ops.MUL, [d, g], {}, shape))

    def lipschitz(self, graph, node, p, Ls):
        return None if self.lip is None else self.lip * Ls[0]

    def _points(self, l, u):
        """The points of ``[l, u]`` where an extreme of ``f`` can be: ends, kinks, critical points."""
        pts = [l, u] + [torch.clamp(torch.full_like(l, c), l, u) for c in self.crit + self.kinks]
        return torch.stack(pts, -1)

    def ibp(self, node, iv, ctx=None):
        l, u = iv.lower, iv.upper
        pts = self._points(l, u)
        fp = self.f(pts)
        un = rounding.unit(l.dtype)
        slack = 16 * un * self.scale(pts).amax(-1) + rounding.tiny(l.dtype)
        if self.crit:
            slack = slack + self.m2 * CRIT_TOL ** 2
        return Interval(fp.amin(-1) - slack, fp.amax(-1) + slack)

    def relax(self, node, ivs, alpha=None, ctx=None):
        l, u = ivs[0].lower, ivs[0].upper
        w = (u - l).clamp(min=0)
        mid = (l + u) / 2
        fl, fu = self.f(l), self.f(u)
        safe = torch.where(w > 0, w, torch.ones_like(w))
        k_chord = torch.where(w > 0, (fu - fl) / safe, self.df(mid))
        cands = torch.stack([k_chord, self.df(l), self.df(u), self.df(mid),
                             self.df(l + w / 4), self.df(u - w / 4)])  # [C, B, *shape]
        t = torch.linspace(0, 1, GRID + 1, dtype=l.dtype, device=l.device)
        grid = l.unsqueeze(-1) + w.unsqueeze(-1) * t  # [B, *shape, G+1]
        grid[..., 0], grid[..., -1] = l, u  # the ends exactly, so the grid covers [l, u]
        if self.kinks:  # kinks join the grid: every cell then lies in one smooth piece
            grid = torch.cat([grid] + [torch.clamp(torch.full_like(l, c), l, u).unsqueeze(-1) for c in self.kinks], -1)
        fg = self.f(grid)
        phi = fg.unsqueeze(0) - cands.unsqueeze(-1) * grid.unsqueeze(0)  # [C, B, *shape, G+1]
        un = rounding.unit(l.dtype)
        xmax = torch.maximum(l.abs(), u.abs())
        h = w / GRID * (1 + 8 * un) + 8 * un * xmax  # covers the rounding of the grid's spacing
        # f(grid) is accurate to a few ulps of its terms; phi's two terms to one ulp each (lipcert.rounding)
        slack = 16 * un * (self.scale(grid).amax(-1) + phi.abs().amax(-1) + cands.abs() * xmax) + rounding.tiny(l.dtype)
        corr = self.m2 * h * h / 8 + slack  # [C, B, *shape]
        b_up = phi.amax(-1) + corr
        b_lo = phi.amin(-1) - corr
        # area under a line over [l, u] is w * (k mid + b): pick the smallest upper, largest lower
        i_up = (cands * mid + b_up).argmin(0, keepdim=True)
        i_lo = (cands * mid + b_lo).argmax(0, keepdim=True)
        up_k, up_b = cands.gather(0, i_up)[0], b_up.gather(0, i_up)[0]
        lo_k, lo_b = cands.gather(0, i_lo)[0], b_lo.gather(0, i_lo)[0]
        return Relaxation((lo_k,), lo_b, (up_k,), up_b)


class Mul(NonlinearRule):
    """Bilinear ``h = d g`` with ``d in [dl, du]``, ``g in [gl, gu]`` (McCormick envelopes).

    ``(d - dl)(g - gl) >= 0`` gives ``h >= dl g + gl d - dl gl`` (P1); ``(du - d)(gu - g) >= 0``
    gives ``h >= du g + gu d - du gu`` (P2); ``(du - d)(g - gl) >= 0`` gives
    ``h <= du g + gl d - du gl`` (Q1); ``(d - dl)(gu - g) >= 0`` gives ``h <= dl g + gu d - dl gu``
    (Q2). Any convex combination of two valid bounds is valid: the lower bound is
    ``alpha P1 + (1 - alpha) P2`` and the upper ``alpha Q1 + (1 - alpha) Q2``, ``alpha in [0, 1]``
    optimisable, 0.5 by default (the two planes agree at the box centre).
    """

    optimizable = True

    def forward(self, node, d, g):
        return d * g

    def ibp(self, node, di, gi, ctx=None):
        p = torch.stack([di.lower * gi.lower, di.lower * gi.upper, di.upper * gi.lower, di.upper * gi.upper])
        return Interval(p.amin(0), p.amax(0))

    def init_alpha(self, node, ivs):
        return torch.full_like(ivs[0].lower, 0.5)

    def rounding_scale(self, node, ivs):
        return rounding.magnitude(ivs[0]) * rounding.magnitude(ivs[1])

    def relax(self, node, ivs, alpha=None, ctx=None):
        dl, du, gl, gu = ivs[0].lower, ivs[0].upper, ivs[1].lower, ivs[1].upper
        a = 0.5 if alpha is None else alpha
        lo_d, lo_g = a * gl + (1 - a) * gu, a * dl + (1 - a) * du
        lo_b = -a * dl * gl - (1 - a) * du * gu
        up_d, up_g = a * gl + (1 - a) * gu, a * du + (1 - a) * dl
        up_b = -a * du * gl - (1 - a) * dl * gu
        return Relaxation((lo_d, lo_g), lo_b, (up_d, up_g), up_b)


SMOOTH_RULES = {
    ops.TANH: Smooth(_tanh, _dtanh, 4 / (3 * math.sqrt(3)) + 1e-6, deriv=ops.TANH_DERIV, lip=1.0),
    ops.SIGMOID: Smooth(_sig, _dsig, 1 / (6 * math.sqrt(3)) + 1e-6, deriv=ops.SIGMOID_DERIV, lip=0.25),
    ops.TANH_DERIV: Smooth(_dtanh, _d2tanh, 2.0 + 1e-6, crit=(0.0,)),
    ops.SIGMOID_DERIV: Smooth(_dsig, _d2sig, 0.125 + 1e-6, crit=(0.0,)),
}
SMOOTH_RULES[ops.MUL] = Mul()


def critical_point(fprime, lo: float, hi: float) -> float:
    """The zero of ``fprime`` in ``[lo, hi]`` (a sign change there), by bisection in float64,
    checked to lie within ``CRIT_TOL`` of the returned point (``fprime`` changes sign across
    ``[c - CRIT_TOL, c + CRIT_TOL]``)."""
    f = lambda v: float(fprime(torch.tensor(v, dtype=torch.float64)))  # noqa: E731
    flo = f(lo)
    if not flo * f(hi) < 0:
        raise AssertionError(f"no sign change of f' on [{lo}, {hi}]")
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if (f(mid) < 0) == (flo < 0):
            lo, flo = mid, f(mid)
        else:
            hi = mid
    c = (lo + hi) / 2
    if not f(c - CRIT_TOL) * f(c + CRIT_TOL) < 0:
        raise AssertionError(f"critical point {c} not isolated to {CRIT_TOL}")
    return c


def _emit_unary(op):
    def emit(b, n, args, kwargs, m):
        b.emit(n, op, [args[0]], {})
    return emit


def _emit_tanhshrink(b, n, args, kwargs, m):
    t = b.add(n, "tanh", ops.TANH, [args[0]], {}, b.shape_of(args[0]))
    b.emit(n, ops.ADD, [args[0], t], {"coeffs": (1.0, -1.0)})


def _register_layers():
    import torch.nn as nn
    import torch.nn.functional as F

    from . import registry
    note = "all but exact (not piecewise linear)"
    registry.layer("Tanh", emit=_emit_unary(ops.TANH), modules=(nn.Tanh,), functions=(torch.tanh, F.tanh),
                   methods=("tanh",), lowers_to=(ops.TANH,), methods_note=note)
    registry.layer("Sigmoid", emit=_emit_unary(ops.SIGMOID), modules=(nn.Sigmoid,),
                   functions=(torch.sigmoid, F.sigmoid), methods=("sigmoid",), lowers_to=(ops.SIGMOID,),
                   methods_note=note)
    registry.layer("Tanhshrink", emit=_emit_tanhshrink, modules=(nn.Tanhshrink,), functions=(F.tanhshrink,),
                   lowers_to=(ops.TANH, ops.ADD), methods_note=note)



