"""Spellings of the affine layers: dense and convolutional layers, batch normalisation,
arithmetic with constants, sums of input-dependent tensors, means and sums over dimensions.

All lower to the linear IR ops of ``linear_ops.py`` (``linear`` on the last dimension,
``conv2d``, ``affine``, ``add``, ``permute``, ``reshape``): their relaxations are exact, their
gradient rules transposes, and BaB and the MILP take them as they are.
Conv1d is a conv2d over a height-1 image; a mean over dimensions is a permute that moves them
last, a reshape that merges them, and a ``linear`` with one row of ``1/n``.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InvalidModel
from ..graph import ops
from ..graph.emit import is_node, need_const, unsupported
from . import registry

_aten = torch.ops.aten


# --- dense ----------------------------------------------------------------------------------
def _linear_node(b, n, x, W, bias):
    b.emit(n, ops.LINEAR, [x], {"weight": W.detach().to(b.dtype),
                                "bias": None if bias is None else bias.detach().to(b.dtype)})


def _emit_linear(b, n, args, kwargs, m):
    if m is not None:
        return _linear_node(b, n, args[0], m.weight, m.bias)
    W = args[1] if len(args) > 1 else kwargs["weight"]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    need_const(n, W, bias)
    _linear_node(b, n, args[0], W, bias)


def _emit_matmul(b, n, args, kwargs, m):
    x, W = args[0], args[1]
    if is_node(x) and isinstance(W, torch.Tensor) and W.dim() == 2:
        return _linear_node(b, n, x, W.T.contiguous(), None)
    if is_node(W) and isinstance(x, torch.Tensor) and x.dim() == 2 and len(b.shape_of(W)) == 2:
        # c @ y with a constant c [p, q] on per-sample y [q, r]: y permuted, linear, permuted back
        q, r = b.shape_of(W)
        t = b.add(n, "t", ops.PERMUTE, [W], {"dims": (1, 0)}, (r, q))
        y = b.add(n, "lin", ops.LINEAR, [t], {"weight": x.to(b.dtype), "bias": None}, (r, x.shape[0]))
        b.emit(n, ops.PERMUTE, [y], {"dims": (1, 0)})
        return
    raise unsupported(n, "matmul", "matmul needs one constant 2-D operand; products of two input-dependent "
                                   "tensors are not supported")


registry.layer("Linear", emit=_emit_linear, modules=(nn.Linear,), functions=(F.linear,), lowers_to=(ops.LINEAR,))
registry.layer("matmul with a constant matrix", emit=_emit_matmul,
               functions=(torch.matmul, operator.matmul, torch.mm, _aten.mm.default, _aten.matmul.default),
               methods=("matmul", "mm"), lowers_to=(ops.LINEAR, ops.PERMUTE))


# --- convolutions ---------------------------------------------------------------------------
def _tuple(v, k):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * k


def _same_padding(n, weight, dilation, k):
    dil = _tuple(dilation, k)
    tot = [dil[i] * (weight.shape[2 + i] - 1) for i in range(k)]
    if any(t % 2 for t in tot):
        raise unsupported(n, "conv", "padding='same' with an even kernel (asymmetric padding)")
    return tuple(t // 2 for t in tot)


def conv_attrs(n, weight, bias, stride, padding, dilation, groups, dtype, k=2):
    """IR ``conv2d`` attributes (``k = 1``: a Conv1d as a height-1 conv2d)."""
    if isinstance(padding, str):
        padding = (0,) * k if padding == "valid" else _same_padding(n, weight, dilation, k)
    stride, padding, dilation = _tuple(stride, k), _tuple(padding, k), _tuple(dilation, k)
    W = weight.detach().to(dtype)
    if k == 1:
        W, stride, padding, dilation = W.unsqueeze(2), (1,) + stride, (0,) + padding, (1,) + dilation
    return {"weight": W, "bias": None if bias is None else bias.detach().to(dtype),
            "stride": stride, "padding": padding, "dilation": dilation, "groups": int(groups)}


def _conv_args(args, kwargs):
    names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
    a = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1, **dict(zip(names, args)), **kwargs}
    return a


def _emit_conv(k):
    def emit(b, n, args, kwargs, m):
        if m is not None:
            if m.padding_mode != "zeros":
                raise unsupported(n, type(m).__name__, f"padding_mode={m.padding_mode!r} (only 'zeros')")
            a = {"input": args[0], "weight": m.weight, "bias": m.bias, "stride": m.stride, "padding": m.padding,
                 "dilation": m.dilation, "groups": m.groups}
        else:
            a = _conv_args(args, kwargs)
            need_const(n, a["weight"], a["bias"])
        attrs = conv_attrs(n, a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], a["groups"], b.dtype, k)
        if k == 2:
            b.emit(n, ops.CONV2D, [a["input"]], attrs)
            return
        c, length = b.shape_of(a["input"])
        x = b.add(n, "h1", ops.RESHAPE, [a["input"]], {}, (c, 1, length))
        out = b.shape(n)
        y = b.add(n, "conv", ops.CONV2D, [x], attrs, (out[0], 1, out[1]))
        b.emit(n, ops.RESHAPE, [y], {})
    return emit


registry.layer("Conv2d (zero padding, any stride/dilation/groups)", emit=_emit_conv(2), modules=(nn.Conv2d,),
               functions=(F.conv2d,), lowers_to=(ops.CONV2D,))
registry.layer("Conv1d (zero padding, any stride/dilation/groups)", emit=_emit_conv(1), modules=(nn.Conv1d,),
               functions=(F.conv1d, _aten.conv1d.default), lowers_to=(ops.CONV2D, ops.RESHAPE))


# --- batch normalisation (eval) -------------------------------------------------------------
def bn_affine(name, weight, bias, mean, var, eps, shape, dt):
    """Eval-mode BatchNorm as ``scale * x + shift``, folded in float64."""
    if mean is None or var is None:
        raise InvalidModel(f"BatchNorm {name} has no running statistics (track_running_stats=False): it normalises "
                           "by the batch's own statistics, which is not a function of one input")
    v = var.detach().double() + eps
    if not bool((v > 0).all()) or not bool(torch.isfinite(v).all()):
        raise InvalidModel(f"BatchNorm {name} has running_var + eps <= 0 in some channel (zero variance with eps = 0, "
                           "or a negative variance): its scale is infinite or undefined")
    w = weight.detach().double() if weight is not None else 1.0
    scale = w / torch.sqrt(v)
    shift = (bias.detach().double() if bias is not None else 0) - mean.detach().double() * scale
    view = (-1,) + (1,) * (len(shape) - 1)
    return {"scale": torch.as_tensor(scale).reshape(view).expand(shape).to(dt).contiguous(),
            "shift": torch.as_tensor(shift).reshape(view).expand(shape).to(dt).contiguous()}


def _emit_bn(b, n, args, kwargs, m):
    if m is not None:
        attrs = bn_affine(str(m), m.weight if m.affine else None, m.bias if m.affine else None, m.running_mean,
                          m.running_var, m.eps, b.shape(n), b.dtype)
    else:
        names = ["input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"]
        a = {"weight": None, "bias": None, "training": False, "eps": 1e-5, **dict(zip(names, args)), **kwargs}
        if a["training"]:
            raise unsupported(n, "batch_norm(training=True)", "batch statistics are not a function of one input")
        need_const(n, a["running_mean"], a["running_var"], a["weight"], a["bias"])
        attrs = bn_affine(n.name, a["weight"], a["bias"], a["running_mean"], a["running_var"], float(a["eps"]),
                          b.shape(n), b.dtype)
    b.emit(n, ops.AFFINE, [args[0]], attrs)


registry.layer("BatchNorm1d/2d (eval)", emit=_emit_bn, modules=(nn.BatchNorm1d, nn.BatchNorm2d),
               functions=(F.batch_norm,), lowers_to=(ops.AFFINE,))


# --- arithmetic -----------------------------------------------------------------------------
def _arith(kind):
    def emit(b, n, args, kwargs, m):
        if kind == "neg":
            return b.emit(n, ops.AFFINE, [args[0]], b.affine_attrs(n, -1.0, 0.0))
        x = args[0]
        y = args[1] if len(args) > 1 else kwargs.get("other")
        alpha = kwargs.get("alpha", 1)
        if is_node(x) and is_node(y):
            if kind not in ("add", "sub"):
                raise unsupported(n, f"{kind} of two input-dependent tensors",
                                  "products of two input-dependent values are not supported")
            if b.shape_of(x) != b.shape_of(y):
                raise unsupported(n, f"{kind} with broadcasting",
                                  f"shapes {list(b.shape_of(x))} and {list(b.shape_of(y))} of two input-dependent "
                                  "tensors differ")
            return b.emit(n, ops.ADD, [x, y], {"coeffs": (1.0, float(alpha) if kind == "add" else -float(alpha))})
        if is_node(x):
            c = torch.as_tensor(y, dtype=torch.float64)
            scale, shift = {"add": (1.0, c * alpha), "sub": (1.0, -c * alpha), "mul": (c, 0.0),
                            "div": (1.0 / c, 0.0)}[kind]
            node_in = x
        else:
            if kind == "div":
                raise unsupported(n, "constant / tensor", "division by an input-dependent value is not supported")
            c = torch.as_tensor(x, dtype=torch.float64)
            scale, shift = {"add": (1.0, c), "sub": (-1.0, c), "mul": (c, 0.0)}[kind]
            node_in = y
        b.emit(n, ops.AFFINE, [node_in], b.affine_attrs(n, scale, shift))
    return emit


for _kind, _fns, _meths in (("add", (operator.add, torch.add), ("add",)),
                            ("sub", (operator.sub, torch.sub), ("sub",)),
                            ("mul", (operator.mul, torch.mul), ("mul",)),
                            ("div", (operator.truediv, torch.div), ("div",)),
                            ("neg", (operator.neg, torch.neg), ("neg",))):
    registry.layer({"add": "x + y", "sub": "x - y", "mul": "x * constant", "div": "x / constant",
                    "neg": "-x"}[_kind], emit=_arith(_kind), functions=_fns, methods=_meths,
                   lowers_to=(ops.ADD, ops.AFFINE))


# --- means and sums over dimensions ---------------------------------------------------------
def _reduce(kind):
    def emit(b, n, args, kwargs, m):
        x = args[0]
        shape = b.shape_of(x)
        nd = len(shape) + 1
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None:
            raise unsupported(n, f"{kind} over all dimensions", "the reduction would mix the batch: give dim=")
        dims = sorted({(d if d >= 0 else d + nd) for d in ((dims,) if isinstance(dims, int) else dims)})
        if 0 in dims:
            raise unsupported(n, f"{kind} over the batch dimension", "each sample must stay separate")
        red = [d - 1 for d in dims]
        kept = [d for d in range(len(shape)) if d not in red]
        cur = x
        if kept + red != list(range(len(shape))):
            perm_shape = tuple(shape[d] for d in kept + red)
            cur = b.add(n, "perm", ops.PERMUTE, [cur], {"dims": tuple(kept + red)}, perm_shape)
        k = math.prod(shape[d] for d in red)
        lead = tuple(shape[d] for d in kept)
        if len(red) != 1 or kept + red != list(range(len(shape))):
            cur = b.add(n, "merge", ops.RESHAPE, [cur], {}, lead + (k,))
        w = torch.full((1, k), 1.0 / k if kind == "mean" else 1.0, dtype=b.dtype)
        y = b.add(n, kind, ops.LINEAR, [cur], {"weight": w, "bias": None}, lead + (1,))
        b.emit(n, ops.RESHAPE, [y], {})
    return emit


registry.layer("mean over dimensions", emit=_reduce("mean"), functions=(torch.mean, _aten.mean.dim),
               methods=("mean",), lowers_to=(ops.PERMUTE, ops.RESHAPE, ops.LINEAR))
registry.layer("sum over dimensions", emit=_reduce("sum"), functions=(torch.sum, _aten.sum.dim_IntList),
               methods=("sum",), lowers_to=(ops.PERMUTE, ops.RESHAPE, ops.LINEAR))


