"""Affine ops: forward, IBP (centre/radius form) and the exact backward of linear coefficients.

Backward: for ``y = M x + c`` and coefficients ``A [S, B, *y]``, ``A . y = (M^T A) . x + A . c``.
Conv layers use ``conv_transpose2d`` (and the transpose op uses ``conv2d``): no dense matrices.
Each hand-written backward is checked against ``torch.func.vjp`` in tests/test_rules_linear.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..graph import ops
from .base import Interval, LinearRule

__all__ = ["LINEAR_RULES"]


def _flat2(A):
    """``[S, B, *shape] -> [S*B, *shape]`` and the two leading sizes."""
    return A.reshape(A.shape[0] * A.shape[1], *A.shape[2:]), A.shape[0], A.shape[1]


class Linear(LinearRule):
    """``y = x W^T + b`` on the last dimension (leading per-sample dimensions, if any, are kept)."""

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
        if b is not None:  # A . b sums over every output position
            terms.append((node.numel + 2, torch.broadcast_to(b.abs(), (mags[0].shape[0], *node.shape))))
        return terms

    def backward(self, node, A, in_shapes):
        W, b = node.attrs["weight"], node.attrs.get("bias")
        A_in = A.matmul(W)  # [S, B, *lead, in]: W acts on the last dimension
        const = None if b is None else A.matmul(b)  # [S, B, *lead]
        if const is not None and const.dim() > 2:
            const = const.flatten(2).sum(-1)
        return [A_in], const

    def gradient(self, gb, node, g):
        x = node.inputs[0]
        gb.send(x, gb.emit(node.name, ops.LINEAR, [g], {"weight": node.attrs["weight"].T.contiguous(), "bias": None},
                           gb.fwd[x].shape))

    def lipschitz(self, graph, node, p, Ls):
        from .operator_norms import op_norm
        return op_norm(graph, node, p) * Ls[0]


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

    def gradient(self, gb, node, g):
        a = node.attrs
        x = node.inputs[0]
        xshape = gb.fwd[x].shape
        out_pad = _output_padding(xshape[1:], node.shape[1:], a["weight"].shape[2:], a)
        attrs = {"weight": a["weight"], "stride": a["stride"], "padding": a["padding"],
                 "dilation": a["dilation"], "groups": a.get("groups", 1), "output_padding": out_pad}
        gb.send(x, gb.emit(node.name, ops.CONV_T2D, [g], attrs, xshape))

    def lipschitz(self, graph, node, p, Ls):
        from .operator_norms import op_norm
        return op_norm(graph, node, p) * Ls[0]


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

    exact_move = True

    def gradient(self, gb, node, g):
        x = node.inputs[0]
        gb.send(x, gb.emit(node.name, ops.RESHAPE, [g], {}, gb.fwd[x].shape))

    def lipschitz(self, graph, node, p, Ls):
        return Ls[0]


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

    def gradient(self, gb, node, g):
        for inp, c in zip(node.inputs, node.attrs["coeffs"]):
            gb.send(inp, gb.scaled(node.name, g, c, gb.fwd[inp].shape))

    def lipschitz(self, graph, node, p, Ls):
        return sum(abs(c) * L for c, L in zip(node.attrs["coeffs"], Ls))


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

    def gradient(self, gb, node, g):
        x = node.inputs[0]
        a = node.attrs
        gb.send(x, gb.emit(node.name, ops.AFFINE, [g], {"scale": a["scale"], "shift": torch.zeros_like(a["shift"])},
                           gb.fwd[x].shape))

    def lipschitz(self, graph, node, p, Ls):
        return float(node.attrs["scale"].abs().max()) * Ls[0]


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

    exact_move = True

    def gradient(self, gb, node, g):
        x = node.inputs[0]
        gb.send(x, gb.emit(node.name, ops.SLICE_T, [g], dict(node.attrs), gb.fwd[x].shape))

    def lipschitz(self, graph, node, p, Ls):
        return Ls[0]


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

    exact_move = True


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

    exact_move = True

    def gradient(self, gb, node, g):
        start, dim = 0, node.attrs["dim"]
        for inp in node.inputs:
            n = gb.fwd[inp].shape[dim]
            gb.send(inp, gb.emit(node.name, ops.SLICE, [g], {"dim": dim, "start": start, "stop": start + n, "step": 1},
                                 gb.fwd[inp].shape))
            start += n

    def lipschitz(self, graph, node, p, Ls):
        return {"inf": max(Ls), "2": math.sqrt(sum(v * v for v in Ls)), "1": sum(Ls)}[p]


class Permute(LinearRule):
    """``y = x.permute(dims)`` of the per-sample dimensions (a move: exact)."""

    exact_move = True

    def forward(self, node, x):
        return x.permute(0, *[d + 1 for d in node.attrs["dims"]])

    def ibp(self, node, iv):
        return Interval(self.forward(node, iv.lower), self.forward(node, iv.upper))

    def backward(self, node, A, in_shapes):
        inv = _inverse(node.attrs["dims"])
        return [A.permute(0, 1, *[d + 2 for d in inv])], None

    def gradient(self, gb, node, g):
        x = node.inputs[0]
        gb.send(x, gb.emit(node.name, ops.PERMUTE, [g], {"dims": _inverse(node.attrs["dims"])}, gb.fwd[x].shape))

    def lipschitz(self, graph, node, p, Ls):
        return Ls[0]


def _inverse(dims):
    inv = [0] * len(dims)
    for i, d in enumerate(dims):
        inv[d] = i
    return tuple(inv)


def _multiplicity(index: torch.Tensor, n: int) -> int:
    return int(torch.bincount(index.flatten(), minlength=n).max()) if index.numel() else 0


class Gather(LinearRule):
    """``y[i] = x.flat[index[i]]`` (``index`` a LongTensor of ``node.shape``): a selection that may
    repeat entries (max pooling's windows). Forward and IBP only move values; the backward map
    scatter-adds coefficients, so an input read ``m > 1`` times rounds (``gamma_m``)."""

    exact_move = True

    def forward(self, node, x):
        idx = node.attrs["index"].flatten().to(x.device)
        return x.flatten(1).index_select(1, idx).reshape(x.shape[0], *node.shape)

    def ibp(self, node, iv):
        return Interval(self.forward(node, iv.lower), self.forward(node, iv.upper))

    def backward(self, node, A, in_shapes):
        n_in = math.prod(in_shapes[0])
        out = A.new_zeros(A.shape[0], A.shape[1], n_in)
        out.index_add_(2, node.attrs["index"].flatten().to(A.device), A.flatten(2))
        return [out.reshape(A.shape[0], A.shape[1], *in_shapes[0])], None

    def rounding(self, node, mags):
        m = _multiplicity(node.attrs["index"], mags[0][0].numel())
        return [] if m <= 1 else [(m + 1, self.forward(node, mags[0]))]

    def gradient(self, gb, node, g):
        x = node.inputs[0]
        gb.send(x, gb.emit(node.name, ops.SCATTER, [g], {"index": node.attrs["index"]}, gb.fwd[x].shape))

    def lipschitz(self, graph, node, p, Ls):
        m = _multiplicity(node.attrs["index"], graph[node.inputs[0]].numel)
        return {"inf": 1.0, "2": math.sqrt(m), "1": float(m)}[p] * Ls[0]


class Scatter(LinearRule):
    """Transpose of :class:`Gather`: ``y = zeros(node.shape)``, ``y.flat[index[i]] += x[i]``
    (the gradient graph's adjoint of a gather). Nonnegative coefficients: IBP maps the ends; sums
    of up to ``m`` entries round (``gamma_m``); the backward map is a gather (exact)."""

    def forward(self, node, x):
        n_out = node.numel
        out = x.new_zeros(x.shape[0], n_out)
        out.index_add_(1, node.attrs["index"].flatten().to(x.device), x.flatten(1))
        return out.reshape(x.shape[0], *node.shape)

    def ibp(self, node, iv):
        return Interval(self.forward(node, iv.lower), self.forward(node, iv.upper))

    def backward(self, node, A, in_shapes):
        idx = node.attrs["index"].flatten().to(A.device)
        return [A.flatten(2).index_select(2, idx).reshape(A.shape[0], A.shape[1], *in_shapes[0])], None

    def rounding(self, node, mags):
        m = _multiplicity(node.attrs["index"], node.numel)
        return [] if m <= 1 else [(m + 1, self.forward(node, mags[0]))]


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
    ops.PERMUTE: Permute(),
    ops.GATHER: Gather(),
    ops.SCATTER: Scatter(),
}
