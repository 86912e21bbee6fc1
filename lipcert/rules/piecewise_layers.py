"""Spellings of the piecewise-linear activations. All lower to ReLUs and affine ops, by exact
identities, so their relaxations, Clarke gradients, BaB splits and MILP encodings are the ReLU's:

  ReLU, LeakyReLU(a), a in [0, 1]          relu / leaky_relu (one op)
  LeakyReLU(a) otherwise, PReLU(a)         a z + (1 - a) relu(z)            (a per channel for PReLU)
  clamp(z, lo, hi), Hardtanh, ReLU6        lo + relu(z - lo) - relu(z - hi)
  clamp(z, min=lo)                         lo + relu(z - lo)
  clamp(z, max=hi)                         hi - relu(hi - z)
  Hardsigmoid                              clamp(z / 6 + 1/2, 0, 1)
  abs(z)                                   relu(z) + relu(-z)
  Softshrink(l)                            relu(z - l) - relu(-z - l)
  maximum(x, y), minimum(x, y)             y + relu(x - y), x - relu(x - y)
Each identity holds on each linear piece, so the functions are equal; where pieces meet the
gradient graph's chain rule gives a superset of the Clarke gradient (sound for upper bounds).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph import ops
from ..graph.emit import is_node, unsupported
from . import registry

_aten = torch.ops.aten


def _relu_emit(b, n, args, kwargs, m):
    b.emit(n, ops.RELU, [args[0]], {"negative_slope": 0.0})


def _prelu_nodes(b, n, x, a):
    """``a z + (1 - a) relu(z)``; a scalar ``a`` in [0, 1] is one leaky_relu node."""
    if a.numel() == 1 and 0 <= float(a) <= 1:
        return b.emit(n, ops.LEAKY_RELU, [x], {"negative_slope": float(a)})
    shape = b.shape_of(x)
    view = a.reshape(-1, *([1] * (len(shape) - 1))) if a.numel() > 1 else a.reshape(())
    r = b.relu(n, x)
    if a.numel() == 1:
        return b.emit(n, ops.ADD, [x, r], {"coeffs": (float(a), 1.0 - float(a))})
    ax = b.scale(n, x, view, "az")
    br = b.scale(n, r, 1 - view, "br")
    b.emit(n, ops.ADD, [ax, br], {"coeffs": (1.0, 1.0)})


def _leaky_emit(b, n, args, kwargs, m):
    slope = m.negative_slope if m is not None else (args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01))
    _prelu_nodes(b, n, args[0], torch.tensor(float(slope), dtype=torch.float64))


def _prelu_emit(b, n, args, kwargs, m):
    w = m.weight if m is not None else (args[1] if len(args) > 1 else kwargs["weight"])
    if not isinstance(w, torch.Tensor):
        raise unsupported(n, "prelu", "the slope must be a constant")
    _prelu_nodes(b, n, args[0], w.detach().double())


registry.layer("ReLU", emit=_relu_emit, modules=(nn.ReLU,), functions=(F.relu, torch.relu, torch.relu_, F.relu_),
               methods=("relu", "relu_"), lowers_to=(ops.RELU,))
registry.layer("LeakyReLU (any slope)", emit=_leaky_emit, modules=(nn.LeakyReLU,), functions=(F.leaky_relu,),
               lowers_to=(ops.LEAKY_RELU, ops.RELU))
registry.layer("PReLU (one or per-channel slopes)", emit=_prelu_emit, modules=(nn.PReLU,),
               functions=(F.prelu, torch.prelu, _aten.prelu.default, _aten._prelu_kernel.default),
               lowers_to=(ops.LEAKY_RELU, ops.RELU, ops.AFFINE))


def _const(b, v):
    return None if v is None else torch.as_tensor(v, dtype=torch.float64)


def clamp_nodes(b, n, x, lo, hi):
    """``clamp(x, lo, hi)`` as ReLUs (``lo``/``hi`` None, numbers or constant tensors)."""
    if lo is not None and hi is not None:
        if bool((lo > hi).any()):
            raise unsupported(n, "clamp(min > max)", "the result would not depend on the input there")
        r1 = b.relu(n, b.scale(n, x, 1.0, "lo", shift=-lo), "r_lo")
        r2 = b.relu(n, b.scale(n, x, 1.0, "hi", shift=-hi), "r_hi")
        d = b.add(n, "d", ops.ADD, [r1, r2], {"coeffs": (1.0, -1.0)}, b.shape_of(x))
        b.emit(n, ops.AFFINE, [d], b.affine_attrs(n, 1.0, lo))
    elif lo is not None:
        r = b.relu(n, b.scale(n, x, 1.0, "lo", shift=-lo))
        b.emit(n, ops.AFFINE, [r], b.affine_attrs(n, 1.0, lo))
    elif hi is not None:
        r = b.relu(n, b.scale(n, x, -1.0, "hi", shift=hi))
        b.emit(n, ops.AFFINE, [r], b.affine_attrs(n, -1.0, hi))
    else:
        b.alias_to(n, x)


def _clamp_emit(b, n, args, kwargs, m):
    lo = args[1] if len(args) > 1 else kwargs.get("min")
    hi = args[2] if len(args) > 2 else kwargs.get("max")
    if is_node(lo) or is_node(hi):
        raise unsupported(n, "clamp with input-dependent bounds")
    clamp_nodes(b, n, args[0], _const(b, lo), _const(b, hi))


def _hardtanh_emit(b, n, args, kwargs, m):
    if m is not None:
        lo, hi = m.min_val, m.max_val
    else:
        lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
    clamp_nodes(b, n, args[0], _const(b, lo), _const(b, hi))


def _relu6_emit(b, n, args, kwargs, m):
    clamp_nodes(b, n, args[0], _const(b, 0.0), _const(b, 6.0))


def _hardsigmoid_emit(b, n, args, kwargs, m):
    t = b.scale(n, args[0], 1.0 / 6.0, "in", shift=0.5)
    clamp_nodes(b, n, t, _const(b, 0.0), _const(b, 1.0))


def _abs_emit(b, n, args, kwargs, m):
    x = args[0]
    r1 = b.relu(n, x, "pos")
    r2 = b.relu(n, b.scale(n, x, -1.0, "neg"), "negr")
    b.emit(n, ops.ADD, [r1, r2], {"coeffs": (1.0, 1.0)})


def _softshrink_emit(b, n, args, kwargs, m):
    lam = m.lambd if m is not None else (args[1] if len(args) > 1 else kwargs.get("lambd", 0.5))
    if lam < 0:
        raise unsupported(n, f"softshrink(lambd={lam})", "lambd must be >= 0")
    x = args[0]
    r1 = b.relu(n, b.scale(n, x, 1.0, "p", shift=-lam), "rp")
    r2 = b.relu(n, b.scale(n, x, -1.0, "m", shift=-lam), "rm")
    b.emit(n, ops.ADD, [r1, r2], {"coeffs": (1.0, -1.0)})


def _maxmin_emit(kind):
    def emit(b, n, args, kwargs, m):
        x, y = args[0], (args[1] if len(args) > 1 else kwargs.get("other"))
        if y is None or (n.target in (torch.max, torch.min) and isinstance(y, int) and not isinstance(y, bool)):
            raise unsupported(n, f"{kind} over a dimension", "use a pooling layer, or torch.maximum of two tensors")
        if is_node(x) and is_node(y):
            if b.shape_of(x) != b.shape_of(y):
                raise unsupported(n, f"{kind} with broadcasting", "the two tensors must have the same shape")
            b.maxmin(n, x, y, kind)
            return
        if not is_node(x):
            x, y = y, x
        c = _const(b, y)
        clamp_nodes(b, n, x, c if kind == "max" else None, c if kind == "min" else None)
    return emit


registry.layer("clamp / clip (constant bounds)", emit=_clamp_emit, functions=(torch.clamp, torch.clip,
                                                                               _aten.clamp.default),
               methods=("clamp", "clip"), lowers_to=(ops.RELU, ops.AFFINE, ops.ADD))
registry.layer("Hardtanh", emit=_hardtanh_emit, modules=(nn.Hardtanh,), functions=(F.hardtanh, _aten.hardtanh.default),
               lowers_to=(ops.RELU, ops.AFFINE, ops.ADD))
registry.layer("ReLU6", emit=_relu6_emit, modules=(nn.ReLU6,), functions=(F.relu6,),
               lowers_to=(ops.RELU, ops.AFFINE, ops.ADD))
registry.layer("Hardsigmoid", emit=_hardsigmoid_emit, modules=(nn.Hardsigmoid,),
               functions=(F.hardsigmoid, _aten.hardsigmoid.default), lowers_to=(ops.RELU, ops.AFFINE, ops.ADD))
registry.layer("abs", emit=_abs_emit, functions=(torch.abs, torch.absolute, _aten.abs.default), methods=("abs",),
               lowers_to=(ops.RELU, ops.AFFINE, ops.ADD))
registry.layer("Softshrink", emit=_softshrink_emit, modules=(nn.Softshrink,), functions=(F.softshrink,),
               lowers_to=(ops.RELU, ops.AFFINE, ops.ADD))
registry.layer("maximum of two tensors (or with a constant)", emit=_maxmin_emit("max"),
               functions=(torch.maximum, torch.max, torch.fmax, _aten.maximum.default), methods=("maximum",),
               lowers_to=(ops.ADD, ops.RELU))
registry.layer("minimum of two tensors (or with a constant)", emit=_maxmin_emit("min"),
               functions=(torch.minimum, torch.min, torch.fmin, _aten.minimum.default), methods=("minimum",),
               lowers_to=(ops.ADD, ops.RELU))
