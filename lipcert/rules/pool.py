"""Pooling: average pooling (fixed and adaptive), max pooling (fixed and adaptive, 1-D and 2-D).

* Average pooling is linear. With ``count_include_pad`` and no ``ceil_mode`` it is a depthwise
  ``conv2d`` with weights ``1 / (kh kw)``; adaptive pooling whose sizes divide is the same. Every
  other case (``ceil_mode``, ``count_include_pad=False``, ``divisor_override``, adaptive pooling
  with uneven windows) is a ``linear`` map per channel whose matrix is read off PyTorch's own
  pooling of the unit vectors (exact: each entry is one division).
* Max pooling is ``max`` over each window: one ``gather`` per window tap (a selection; a tap that
  falls in the padding takes the window's first valid element instead, which leaves the max
  unchanged, PyTorch padding with ``-inf``), then a balanced tree of pairwise maxima
  ``max(a, b) = b + relu(a - b)``. So the forward relaxation, the gradient (routed to the max; at
  ties the Clarke set, here the convex hull over the tied taps' chain-rule products), BaB's splits
  and the MILP all come from the ReLU rules.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph import ops
from ..graph.emit import unsupported
from . import registry
from .affine_layers import _tuple, conv_attrs

_aten = torch.ops.aten


def _pair(v):
    return _tuple(v, 2)


# --- average pooling ------------------------------------------------------------------------
def _pool_matrix(fn, hw, dtype):
    """``P [out, in]`` with ``fn(x)`` (one channel) ``= P x`` on the flattened image."""
    h, w = hw
    eye = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    out = fn(eye)  # [in, 1, oh, ow]
    return out.reshape(h * w, -1).T.contiguous().to(dtype), tuple(out.shape[2:])


def _dense_pool(b, n, x, fn):
    c, h, w = b.shape_of(x)
    P, (oh, ow) = _pool_matrix(fn, (h, w), b.dtype)
    flat = b.add(n, "flat", ops.RESHAPE, [x], {}, (c, h * w))
    y = b.add(n, "pool", ops.LINEAR, [flat], {"weight": P, "bias": None}, (c, oh * ow))
    b.emit(n, ops.RESHAPE, [y], {})


def _conv_pool(b, n, x, kernel, stride, padding):
    c = b.shape_of(x)[0]
    k = _pair(kernel)
    w = torch.full((c, 1, k[0], k[1]), 1.0 / (k[0] * k[1]), dtype=torch.float64)
    b.emit(n, ops.CONV2D, [x], conv_attrs(n, w, None, stride, padding, 1, c, b.dtype))


def _avg_args(m, args, kwargs):
    if m is not None:
        return dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, ceil_mode=m.ceil_mode,
                    count_include_pad=m.count_include_pad, divisor_override=m.divisor_override)
    names = ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"]
    a = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None,
         **dict(zip(names, args)), **kwargs}
    a.pop("input", None)
    return a


def _emit_avg(b, n, args, kwargs, m):
    x = args[0]
    if len(b.shape_of(x)) != 3:
        raise unsupported(n, "avg_pool2d", "expects a batched [N, C, H, W] input")
    a = _avg_args(m, args, kwargs)
    stride = a["stride"] if a["stride"] not in (None, []) else a["kernel_size"]
    if not a["ceil_mode"] and a["count_include_pad"] and not a["divisor_override"]:
        return _conv_pool(b, n, x, a["kernel_size"], stride, a["padding"])
    _dense_pool(b, n, x, lambda t: F.avg_pool2d(t, a["kernel_size"], stride, a["padding"], a["ceil_mode"],
                                                a["count_include_pad"], a["divisor_override"]))


def _emit_adaptive_avg(b, n, args, kwargs, m):
    x = args[0]
    if len(b.shape_of(x)) != 3:
        raise unsupported(n, "adaptive_avg_pool2d", "expects a batched [N, C, H, W] input")
    _, h, w = b.shape_of(x)
    oh, ow = b.shape(n)[1:]
    if h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        return _conv_pool(b, n, x, k, k, 0)
    _dense_pool(b, n, x, lambda t: F.adaptive_avg_pool2d(t, (oh, ow)))


registry.layer("AvgPool2d (any kernel, stride, padding, ceil_mode, count_include_pad, divisor)", emit=_emit_avg,
               modules=(nn.AvgPool2d,), functions=(F.avg_pool2d,), lowers_to=(ops.CONV2D, ops.LINEAR))
registry.layer("AdaptiveAvgPool2d", emit=_emit_adaptive_avg, modules=(nn.AdaptiveAvgPool2d,),
               functions=(F.adaptive_avg_pool2d, _aten.adaptive_avg_pool2d.default, _aten._adaptive_avg_pool2d.default),
               lowers_to=(ops.CONV2D, ops.LINEAR))


# --- max pooling ----------------------------------------------------------------------------
def window_taps(hw, out_hw, starts, ends_or_k, dilation=(1, 1), adaptive=False):
    """Flat input indices ``[T, oh, ow]`` of every window tap (one channel); taps outside the image
    repeat the window's first valid one."""
    (h, w), (oh, ow) = hw, out_hw
    rows, cols = [], []
    for axis, (size, osize) in enumerate(((h, oh), (w, ow))):
        per = []
        for o in range(osize):
            if adaptive:
                lo, hi = (o * size) // osize, -(-((o + 1) * size) // osize)
                per.append(list(range(lo, hi)))
            else:
                s, k = starts[axis](o), ends_or_k[axis]
                per.append([s + i * dilation[axis] for i in range(k)])
        (rows if axis == 0 else cols).append(per)
    rows, cols = rows[0], cols[0]
    kmax_r = max(len(r) for r in rows)
    kmax_c = max(len(c) for c in cols)
    idx = torch.empty(kmax_r * kmax_c, oh, ow, dtype=torch.long)
    for oy in range(oh):
        for ox in range(ow):
            valid = [(r, c) for r in rows[oy] for c in cols[ox] if 0 <= r < h and 0 <= c < w]
            if not valid:
                raise AssertionError("a pooling window without any input element")
            flat = [r * w + c for r, c in valid]
            flat = flat + [flat[0]] * (kmax_r * kmax_c - len(flat))
            idx[:, oy, ox] = torch.tensor(flat)
    return idx


def _max_tree(b, n, x, taps):
    """``max`` over the taps ``[T, oh, ow]`` (per channel) of ``x [C, H, W]``."""
    c, h, w = b.shape_of(x)
    T, oh, ow = taps.shape
    offs = (torch.arange(c) * h * w).reshape(c, 1, 1)
    nodes = []
    for t in range(T):
        idx = taps[t].unsqueeze(0) + offs  # [C, oh, ow]
        nodes.append(b.add(n, "tap", ops.GATHER, [x], {"index": idx}, (c, oh, ow)))
    while len(nodes) > 2 or (len(nodes) == 2 and b.shape(n) != (c, oh, ow)):
        nxt = [b.maxmin(n, nodes[i], nodes[i + 1], "max", out=False) for i in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    if len(nodes) == 1:
        b.emit(n, ops.RESHAPE, [nodes[0]], {})
    else:
        b.maxmin(n, nodes[0], nodes[1], "max", out=True)


def _max_args(m, args, kwargs):
    if m is not None:
        if m.return_indices:
            return None
        return dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation)
    names = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
    a = {"stride": None, "padding": 0, "dilation": 1, **dict(zip(names, args)), **kwargs}
    if a.get("return_indices"):
        return None
    return dict(kernel_size=a["kernel_size"], stride=a["stride"], padding=a["padding"], dilation=a["dilation"])


def _emit_max(dim):
    def emit(b, n, args, kwargs, m):
        x = args[0]
        a = _max_args(m, args, kwargs)
        if a is None:
            raise unsupported(n, "max_pool(return_indices=True)", "indices are not a continuous function")
        shape = b.shape_of(x)
        if len(shape) != dim + 1:
            raise unsupported(n, f"max_pool{dim}d", f"expects a batched input with {dim} spatial dimensions")
        k = _pair(a["kernel_size"]) if dim == 2 else (1, _pair(a["kernel_size"])[0])
        s = a["stride"] if a["stride"] not in (None, []) else a["kernel_size"]
        s = _pair(s) if dim == 2 else (1, _pair(s)[0])
        p = _pair(a["padding"]) if dim == 2 else (0, _pair(a["padding"])[0])
        d = _pair(a["dilation"]) if dim == 2 else (1, _pair(a["dilation"])[0])
        if dim == 1:
            x = b.add(n, "h1", ops.RESHAPE, [x], {}, (shape[0], 1, shape[1]))
        c, h, w = b.shape_of(x)
        out = b.shape(n)
        oh, ow = (out[1], out[2]) if dim == 2 else (1, out[1])
        taps = window_taps((h, w), (oh, ow), (lambda o: o * s[0] - p[0], lambda o: o * s[1] - p[1]), k, d)
        _max_tree(b, n, x, taps)
    return emit


def _emit_adaptive_max(b, n, args, kwargs, m):
    x = args[0]
    if m is not None and m.return_indices or (len(args) > 2 and args[2]):
        raise unsupported(n, "adaptive_max_pool2d(return_indices=True)", "indices are not a continuous function")
    c, h, w = b.shape_of(x)
    oh, ow = b.shape(n)[1:]
    _max_tree(b, n, x, window_taps((h, w), (oh, ow), None, None, adaptive=True))


registry.layer("MaxPool2d (any kernel, stride, padding, dilation, ceil_mode)", emit=_emit_max(2),
               modules=(nn.MaxPool2d,), functions=(F.max_pool2d, _aten.max_pool2d.default), lowers_to=(ops.GATHER, ops.ADD, ops.RELU))
registry.layer("MaxPool1d", emit=_emit_max(1), modules=(nn.MaxPool1d,), functions=(F.max_pool1d,),
               lowers_to=(ops.GATHER, ops.ADD, ops.RELU))
registry.layer("AdaptiveMaxPool2d", emit=_emit_adaptive_max, modules=(nn.AdaptiveMaxPool2d,),
               functions=(F.adaptive_max_pool2d,), lowers_to=(ops.GATHER, ops.ADD, ops.RELU))
