"""Affine ops: forward, IBP (centre/radius form) and the exact backward of linear coefficients.

Backward: for ``y = M x + c`` and coefficients ``A [S, B, *y]``, ``A . y = (M^T A) . x + A . c``.
Conv layers use ``conv_transpose2d`` (and the transpose op uses ``conv2d``): no dense matrices.
Each hand-written backward is checked against ``torch.func.vjp`` in tests/test_rules_linear.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..graph import ops
from .base import Interval, LinearRule

__all__ = ["LINEAR_RULES"]


def _flat2(A):
    """``[S, B, *shape] -> [S*B, *shape]`` and the two leading sizes."""
    return A.reshape(A.shape[0] * A.shape[1], *A.shape[2:]), A.shape[0], A.shape[1]


class Linear(LinearRule):
    def forward(self, node, x):
        return F.linear(x, node.attrs["weight"], node.attrs.get("bias"))

    def ibp(self, node, iv):
        mid, rad = (iv.upper + iv.lower) / 2, (iv.upper - iv.lower) / 2
        W = node.attrs["weight"]
        m = F.linear(mid, W, node.attrs.get("bias"))
        r = F.linear(rad, W.abs())
        return Interval(m - r, m + r)

    def rounding(self, node, mags):
        W, b = node.attrs["weight"], node.attrs.get("bias")
        terms = [(max(W.shape) + 2, F.linear(mags[0], W.abs()))]  # A W / W x: sums over out / in
        if b is not None:
            terms.append((W.shape[0] + 2, b.abs().expand(mags[0].shape[0], -1)))
        return terms

    def backward(self, node, A, in_shapes):
        W, b = node.attrs["weight"], node.attrs.get("bias")
        A_in = A.matmul(W)  # [S, B, in]
        const = None if b is None else A.matmul(b)  # [S, B]
        return [A_in], const


class Conv2d(LinearRule):
    def _kw(self, node):
        a = node.attrs
        return dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"], groups=a.get("groups", 1))

    def forward(self, node, x):
        return F.conv2d(x, node.attrs["weight"], node.attrs.get("bias"), **self._kw(node))

    def ibp(self, node, iv):
        mid, rad = (iv.upper + iv.lower) / 2, (iv.upper - iv.lower) / 2
        m = F.conv2d(mid, node.attrs["weight"], node.attrs.get("bias"), **self._kw(node))
        r = F.conv2d(rad, node.attrs["weight"].abs(), None, **self._kw(node))
        return Interval(m - r, m + r)

    def rounding(self, node, mags):
        W, b, g = node.attrs["weight"], node.attrs.get("bias"), node.attrs.get("groups", 1)
        taps = W.shape[2] * W.shape[3]
        terms = [(max(W.shape[0] // g, W.shape[1]) * taps + 2,
                  F.conv2d(mags[0], W.abs(), None, **self._kw(node)))]
        if b is not None:
            terms.append((node.numel + 2, b.abs().reshape(-1, 1, 1).expand(mags[0].shape[0], *node.shape)))
        return terms

    def backward(self, node, A, in_shapes):
        a = node.attrs
        W, b = a["weight"], a.get("bias")
        flat, S, B = _flat2(A)
        out_pad = _output_padding(in_shapes[0][1:], node.shape[1:], W.shape[2:], a)
        A_in = F.conv_transpose2d(flat, W, None, stride=a["stride"], padding=a["padding"],
                                  output_padding=out_pad, groups=a.get("groups", 1), dilation=a["dilation"])
        A_in = A_in.reshape(S, B, *in_shapes[0])
        const = None if b is None else torch.einsum("sbchw,c->sb", A, b)
        return [A_in], const


def _output_padding(in_hw, out_hw, k_hw, a):
    """The ``output_padding`` that makes ``conv_transpose2d`` return exactly ``in_hw``."""
    pads = []
    for i in range(2):
        full = (out_hw[i] - 1) * a["stride"][i] - 2 * a["padding"][i] + a["dilation"][i] * (k_hw[i] - 1) + 1
        pads.append(in_hw[i] - full)
    return tuple(pads)


class ConvTranspose2d(LinearRule):
    """``y = conv_transpose2d(x)`` without bias: the transpose of a conv2d, used by the gradient graph."""

    def _kw(self, node):
        a = node.attrs
        return dict(stride=a["stride"], padding=a["padding"], output_padding=a["output_padding"],
                    groups=a.get("groups", 1), dilation=a["dilation"])

    def forward(self, node, x):
        return F.conv_transpose2d(x, node.attrs["weight"], None, **self._kw(node))

    def ibp(self, node, iv):
        mid, rad = (iv.upper + iv.lower) / 2, (iv.upper - iv.lower) / 2
        m = F.conv_transpose2d(mid, node.attrs["weight"], None, **self._kw(node))
        r = F.conv_transpose2d(rad, node.attrs["weight"].abs(), None, **self._kw(node))
        return Interval(m - r, m + r)

    def rounding(self, node, mags):
        W, g = node.attrs["weight"], node.attrs.get("groups", 1)
        taps = W.shape[2] * W.shape[3]
        return [(max(W.shape[0] // g, W.shape[1]) * taps + 2,
                 F.conv_transpose2d(mags[0], W.abs(), None, **self._kw(node)))]

    def backward(self, node, A, in_shapes):
        a = node.attrs
        flat, S, B = _flat2(A)
        A_in = F.conv2d(flat, a["weight"], None, stride=a["stride"], padding=a["padding"],
                        dilation=a["dilation"], groups=a.get("groups", 1))
        return [A_in.reshape(S, B, *in_shapes[0])], None


class Reshape(LinearRule):
    def forward(self, node, x):
        return x.reshape(x.shape[0], *node.shape)

    def ibp(self, node, iv):
        return Interval(self.forward(node, iv.lower), self.forward(node, iv.upper))

    def backward(self, node, A, in_shapes):
        return [A.reshape(A.shape[0], A.shape[1], *in_shapes[0])], None


class Add(LinearRule):
    """``y = sum_i coeffs[i] * x_i`` (inputs of equal shape)."""

    def forward(self, node, *xs):
        return sum(c * x for c, x in zip(node.attrs["coeffs"], xs))

    def ibp(self, node, *ivs):
        lo = sum(c * (iv.lower if c >= 0 else iv.upper) for c, iv in zip(node.attrs["coeffs"], ivs))
        up = sum(c * (iv.upper if c >= 0 else iv.lower) for c, iv in zip(node.attrs["coeffs"], ivs))
        return Interval(lo, up)

    def backward(self, node, A, in_shapes):
        return [A if c == 1 else c * A for c in node.attrs["coeffs"]], None

    def rounding(self, node, mags):
        coeffs = node.attrs["coeffs"]
        if len(coeffs) == 1 and abs(coeffs[0]) == 1:
            return []  # a copy or a negation: exact
        return [(len(coeffs) + 1, sum(abs(c) * m for c, m in zip(coeffs, mags)))]


class Affine(LinearRule):
    """Elementwise ``y = scale * x + shift`` (folded BatchNorm, input normalisation, constants)."""

    def forward(self, node, x):
        return x * node.attrs["scale"] + node.attrs["shift"]

    def ibp(self, node, iv):
        s, t = node.attrs["scale"], node.attrs["shift"]
        a, b = iv.lower * s + t, iv.upper * s + t
        return Interval(torch.minimum(a, b), torch.maximum(a, b))

    def backward(self, node, A, in_shapes):
        s, t = node.attrs["scale"], node.attrs["shift"]
        const = (A * t).flatten(2).sum(-1) if t is not None and bool((t != 0).any()) else None
        return [A * s], const

    def rounding(self, node, mags):
        s, t = node.attrs["scale"], node.attrs["shift"]
        terms = [(2, s.abs() * mags[0])]
        if t is not None:
            terms.append((node.numel + 2, torch.broadcast_to(t.abs(), mags[0].shape)))
        return terms


def _index(node, ndim_lead):
    """Index tuple selecting the slice on a tensor with ``ndim_lead`` leading (batch/spec) dims."""
    a = node.attrs
    idx = [slice(None)] * (ndim_lead + a["dim"]) + [slice(a["start"], a["stop"], a["step"])]
    return tuple(idx)


class Slice(LinearRule):
    """``y = x[start:stop:step]`` along one per-sample dimension (a selection: its transpose
    scatters into zeros)."""

    def forward(self, node, x):
        return x[_index(node, 1)]

    def ibp(self, node, iv):
        return Interval(self.forward(node, iv.lower), self.forward(node, iv.upper))

    def backward(self, node, A, in_shapes):
        A_in = A.new_zeros(A.shape[:2] + tuple(in_shapes[0]))
        A_in[_index(node, 2)] = A
        return [A_in], None


class SliceT(LinearRule):
    """Transpose of :class:`Slice`: ``y = zeros(node.shape)`` with ``y[slice] = x``."""

    def forward(self, node, x):
        y = x.new_zeros((x.shape[0],) + tuple(node.shape))
        y[_index(node, 1)] = x
        return y

    def ibp(self, node, iv):
        return Interval(self.forward(node, iv.lower), self.forward(node, iv.upper))

    def backward(self, node, A, in_shapes):
        return [A[_index(node, 2)]], None


class Concat(LinearRule):
    """``y = cat(x_1, ..., x_n)`` along one per-sample dimension."""

    def forward(self, node, *xs):
        return torch.cat(xs, dim=node.attrs["dim"] + 1)

    def ibp(self, node, *ivs):
        d = node.attrs["dim"] + 1
        return Interval(torch.cat([iv.lower for iv in ivs], d), torch.cat([iv.upper for iv in ivs], d))

    def backward(self, node, A, in_shapes):
        sizes = [s[node.attrs["dim"]] for s in in_shapes]
        return list(torch.split(A, sizes, dim=node.attrs["dim"] + 2)), None


LINEAR_RULES = {
    ops.SLICE: Slice(),
    ops.SLICE_T: SliceT(),
    ops.CONCAT: Concat(),
    ops.LINEAR: Linear(),
    ops.CONV2D: Conv2d(),
    ops.CONV_T2D: ConvTranspose2d(),
    ops.RESHAPE: Reshape(),
    ops.ADD: Add(),
    ops.AFFINE: Affine(),
}
