"""The converters of :mod:`lipcert.graph.onnx_import`, one per ONNX op type, in :data:`CONVERTERS`.

A converter takes the context, the node's inputs (:class:`Const`, :class:`Traced`, or None for an
absent optional input) and its attributes, and returns the node's first output, built with
``cx.call`` from plain torch functions; it raises :class:`Refused` for what it does not support.
At least one input is traced: nodes of constants never reach a converter.
"""
from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.nn.functional as F
from onnx import helper

from .onnx_import import Const, Context, Refused, Traced


def _get(ins: list, i: int):
    return ins[i] if i < len(ins) else None


def _data(v) -> Traced:
    if not isinstance(v, Traced):
        raise Refused("its data input must depend on the model input")
    return v


def _const_like(cx: Context, v: Const, array: np.ndarray, suffix: str):
    """``array``, computed from constant ``v``, as an operand: ``v`` itself (one shared buffer)
    when it is unchanged, else a new buffer."""
    if array.shape == np.shape(v.value) and np.array_equal(array, v.value):
        return v
    return cx.buffer(torch.from_numpy(array.copy()), v.name + suffix)


def _per_sample_axes(axes, rank: int) -> list[int]:
    """``axes`` made non-negative; refused when one of them is the batch dimension."""
    axes = [int(a) % rank for a in axes]
    if 0 in axes:
        raise Refused("it acts along the batch dimension (axis 0)")
    return axes


def _window(at: dict, n: int) -> tuple[tuple, tuple, tuple]:
    """``(strides, pads, dilations)`` of a Conv or pooling node with ``n`` spatial dimensions.

    auto_pad NOTSET (explicit pads) or VALID (none); pads must be symmetric."""
    auto = at.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise Refused(f"auto_pad={auto} is not supported; export with explicit pads")
    pads = [0] * (2 * n) if auto == "VALID" else list(at.get("pads", [0] * (2 * n)))
    if pads[:n] != pads[n:]:
        raise Refused(f"asymmetric pads {pads} (begins {pads[:n]}, ends {pads[n:]}) are not supported")
    return tuple(at.get("strides", [1] * n)), tuple(pads[:n]), tuple(at.get("dilations", [1] * n))


def _reshape_to(cx: Context, x: Traced, shape) -> Traced:
    """``torch.reshape(x, (-1, *per_sample))``, ``per_sample`` from reshaping the sample to ``shape``
    (so -1 and a hard-coded batch size in ``shape`` are resolved)."""
    try:
        out = x.sample.reshape(list(shape)).shape
    except RuntimeError as e:
        raise Refused(f"cannot reshape {list(x.sample.shape)} to {list(shape)}: {e}") from e
    return cx.call(torch.reshape, x, (-1, *out[1:]))


def _unary(fn):
    def convert(cx, ins, at):
        return cx.call(fn, _data(ins[0]))
    convert.__doc__ = f"-> {getattr(fn, '__name__', fn)}(x)."
    return convert


def _binary(fn):
    def convert(cx, ins, at):
        return cx.call(fn, ins[0], ins[1])
    convert.__doc__ = f"-> operator.{fn.__name__}(a, b), between tensors or with a constant."
    return convert


def _pairwise(fn):
    def convert(cx, ins, at):
        if len(ins) != 2:
            raise Refused(f"only two inputs are supported, not {len(ins)}")
        return cx.call(fn, ins[0], ins[1])
    convert.__doc__ = f"Max/Min of exactly two inputs -> torch.{fn.__name__}(a, b)."
    return convert


def _identity(cx, ins, at):
    """Identity, and Dropout in inference mode: the input itself."""
    if _get(ins, 2) is not None and cx.array(ins[2], "training_mode").any():
        raise Refused("Dropout in training mode")
    return _data(ins[0])


def _cast(cx, ins, at):
    """Cast of a float value to a float type: the input itself (capture computes in one float dtype)."""
    x = _data(ins[0])
    if not (x.sample.is_floating_point() and np.dtype(helper.tensor_dtype_to_np_dtype(at["to"])).kind == "f"):
        raise Refused("only casts between float types of input-dependent values are supported")
    return x


def _gemm(cx, ins, at):
    """Gemm ``alpha * A @ op(B) + beta * C`` with transA = 0 and constant B, C -> ``F.linear``
    (alpha, beta folded into the constants); a C that is not one row is added after."""
    x = _data(ins[0])
    if at.get("transA", 0):
        raise Refused("transA = 1 is not supported")
    b = cx.array(ins[1], "B")
    weight = b if at.get("transB", 0) else b.T
    alpha, beta = at.get("alpha", 1.0), at.get("beta", 1.0)
    if alpha != 1.0:
        weight = (weight * alpha).astype(b.dtype)
    c = _get(ins, 2)
    if c is None:
        return cx.call(F.linear, x, _const_like(cx, ins[1], weight, "_weight"))
    bias = cx.array(c, "C")
    if beta != 1.0:
        bias = (bias * beta).astype(bias.dtype)
    if bias.ndim <= 1 or bias.shape[0] == 1:
        bias = np.broadcast_to(bias.reshape(-1), (weight.shape[0],))
        return cx.call(F.linear, x, _const_like(cx, ins[1], weight, "_weight"), _const_like(cx, c, bias, "_bias"))
    y = cx.call(F.linear, x, _const_like(cx, ins[1], weight, "_weight"))
    return cx.call(operator.add, y, _const_like(cx, c, bias, "_bias"))


def _matmul(cx, ins, at):
    """MatMul by a constant 2-D right operand -> ``F.linear(x, W.T)``; of two input-dependent
    operands -> ``torch.matmul``."""
    a, b = ins
    if isinstance(a, Traced) and isinstance(b, Traced):
        return cx.call(torch.matmul, a, b)
    x, w = _data(a), cx.array(b, "the right operand")
    if w.ndim != 2:
        raise Refused(f"the constant right operand must be a matrix, not of shape {list(w.shape)}")
    return cx.call(F.linear, x, _const_like(cx, b, w.T, "_T"))


def _conv(cx, ins, at):
    """Conv, 1-D or 2-D, constant weight and bias, strides, dilations, group, symmetric pads,
    auto_pad NOTSET/VALID -> ``F.conv1d`` / ``F.conv2d``."""
    x, w, b = _data(ins[0]), cx.array(ins[1], "the weight"), _get(ins, 2)
    fn = {3: F.conv1d, 4: F.conv2d}.get(w.ndim)
    if fn is None:
        raise Refused(f"only 1-D and 2-D convolutions are supported, not a weight of shape {list(w.shape)}")
    if b is not None:
        cx.array(b, "the bias")
    stride, pad, dilation = _window(at, w.ndim - 2)
    return cx.call(fn, x, ins[1], b, stride, pad, dilation, at.get("group", 1))


def _kernel(at: dict) -> tuple:
    k = tuple(at["kernel_shape"])
    if len(k) != 2:
        raise Refused(f"only 2-D pooling is supported, not kernel_shape {list(k)}")
    return k


def _max_pool(cx, ins, at):
    """MaxPool 2-D, symmetric pads, dilations, ceil_mode -> ``F.max_pool2d``."""
    k = _kernel(at)
    stride, pad, dilation = _window(at, 2)
    return cx.call(F.max_pool2d, _data(ins[0]), k, stride, pad, dilation, bool(at.get("ceil_mode", 0)))


def _average_pool(cx, ins, at):
    """AveragePool 2-D, symmetric pads, ceil_mode, count_include_pad (read as 1 when there is no
    padding, where it makes no difference) -> ``F.avg_pool2d``."""
    k = _kernel(at)
    stride, pad, dilation = _window(at, 2)
    if any(d != 1 for d in dilation):
        raise Refused(f"dilations {list(dilation)} are not supported")
    ceil = bool(at.get("ceil_mode", 0))
    include_pad = bool(at.get("count_include_pad", 0)) or (not any(pad) and not ceil)
    return cx.call(F.avg_pool2d, _data(ins[0]), k, stride, pad, ceil, include_pad)


def _global_average_pool(cx, ins, at):
    """GlobalAveragePool -> ``F.adaptive_avg_pool2d(x, 1)`` (2-D), else ``torch.mean`` over the
    spatial dimensions."""
    x = _data(ins[0])
    if x.sample.dim() == 4:
        return cx.call(F.adaptive_avg_pool2d, x, 1)
    return cx.call(torch.mean, x, dim=tuple(range(2, x.sample.dim())), keepdim=True)


def _reduce(fn):
    def convert(cx, ins, at):
        x = _data(ins[0])
        axes = cx.ints(ins[1], "axes") if _get(ins, 1) is not None else at.get("axes", [])
        if not axes and at.get("noop_with_empty_axes", 0):
            return x
        axes = _per_sample_axes(axes or range(x.sample.dim()), x.sample.dim())
        return cx.call(fn, x, dim=tuple(axes), keepdim=bool(at.get("keepdims", 1)))
    convert.__doc__ = (f"Reduce over constant per-sample axes (attribute, or input from opset 13/18) -> "
                       f"torch.{fn.__name__}(x, dim=axes, keepdim=keepdims).")
    return convert


def _batch_norm(cx, ins, at):
    """BatchNormalization in inference mode, constant scale, bias, mean, variance -> ``F.batch_norm``."""
    x = _data(ins[0])
    if at.get("training_mode", 0):
        raise Refused("BatchNormalization in training mode")
    scale, bias, mean, var = ins[1:5]
    for v, what in ((scale, "scale"), (bias, "bias"), (mean, "mean"), (var, "var")):
        cx.array(v, what)
    return cx.call(F.batch_norm, x, mean, var, scale, bias, False, 0.0, at.get("epsilon", 1e-5))


def _leaky_relu(cx, ins, at):
    """LeakyRelu -> ``F.leaky_relu(x, alpha)``."""
    return cx.call(F.leaky_relu, _data(ins[0]), at.get("alpha", 0.01))


def _elu(cx, ins, at):
    """Elu -> ``F.elu(x, alpha)``."""
    return cx.call(F.elu, _data(ins[0]), at.get("alpha", 1.0))


def _gelu(cx, ins, at):
    """Gelu (opset 20), exact or tanh -> ``F.gelu(x, approximate=...)``."""
    return cx.call(F.gelu, _data(ins[0]), approximate=at.get("approximate", "none"))


def _softplus(cx, ins, at):
    """Softplus -> ``F.softplus(x)``; with a threshold as second input (made by
    :func:`fuse_softplus_threshold`) -> ``F.softplus(x, beta=1.0, threshold=t)``."""
    x = _data(ins[0])
    if _get(ins, 1) is None:
        return cx.call(F.softplus, x)
    return cx.call(F.softplus, x, beta=1.0, threshold=cx.scalar(ins[1], "the threshold"))


def _prelu(cx, ins, at):
    """PRelu with a constant slope, one number or one per channel (dimension 1) -> ``F.prelu``."""
    x = _data(ins[0])
    slope = cx.array(ins[1], "the slope")
    full = np.broadcast_to(slope, tuple(x.sample.shape))[0]  # [*per_sample]
    per_channel = full.reshape(full.shape[0] if full.ndim else 1, -1)
    if (full == full.reshape(-1)[0]).all():
        weight = full.reshape(-1)[:1]
    elif (per_channel == per_channel[:, :1]).all():
        weight = per_channel[:, 0]
    else:
        raise Refused(f"the slope of shape {list(slope.shape)} varies within a channel")
    return cx.call(F.prelu, x, _const_like(cx, ins[1], weight, "_weight"))


def _clip(cx, ins, at):
    """Clip with constant scalar bounds (inputs from opset 11, attributes before), either
    possibly absent -> ``torch.clamp(x, min, max)``."""
    x = _data(ins[0])
    lo = cx.scalar(ins[1], "min") if _get(ins, 1) is not None else at.get("min")
    hi = cx.scalar(ins[2], "max") if _get(ins, 2) is not None else at.get("max")
    if lo is None and hi is None:
        return x
    return cx.call(torch.clamp, x, lo, hi)


def _softmax(cx, ins, at):
    """Softmax along a per-sample axis -> ``F.softmax(x, dim)``; before opset 13 (which normalises
    over all dimensions from axis on) only along the last."""
    x = _data(ins[0])
    rank = x.sample.dim()
    axis = int(at.get("axis", -1 if cx.opset >= 13 else 1)) % rank
    if cx.opset < 13 and axis != rank - 1:
        raise Refused(f"Softmax before opset 13 along axis {axis} of {rank} (only the last is supported)")
    return cx.call(F.softmax, x, _per_sample_axes([axis], rank)[0])


def _layer_norm(cx, ins, at):
    """LayerNormalization over the dimensions from a per-sample axis on, constant scale and bias
    -> ``F.layer_norm``."""
    x = _data(ins[0])
    rank = x.sample.dim()
    shape = tuple(x.sample.shape[_per_sample_axes([at.get("axis", -1)], rank)[0]:])
    scale = _const_like(cx, ins[1], np.broadcast_to(cx.array(ins[1], "Scale"), shape), "_weight")
    b = _get(ins, 2)
    bias = None if b is None else _const_like(cx, b, np.broadcast_to(cx.array(b, "B"), shape), "_bias")
    return cx.call(F.layer_norm, x, shape, scale, bias, at.get("epsilon", 1e-5))


def _reshape(cx, ins, at):
    """Reshape to a constant shape (0 copies the input's size unless allowzero); its batch entry,
    hard-coded, -1 or computed from a Shape, becomes -1."""
    x = _data(ins[0])
    shape = cx.ints(ins[1], "the shape", batch_ok=True)
    if not at.get("allowzero", 0):
        shape = [x.sample.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return _reshape_to(cx, x, shape)


def _flatten(cx, ins, at):
    """Flatten(axis) -> ``torch.reshape`` to ``(-1, prod(shape[axis:]))``."""
    x = _data(ins[0])
    shape = list(x.sample.shape)
    axis = int(at.get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    return _reshape_to(cx, x, [math.prod(shape[:axis]), math.prod(shape[axis:])])


def _squeeze(cx, ins, at):
    """Squeeze constant axes (input from opset 13, attribute before); without axes, the per-sample
    dimensions of size 1 -> ``torch.reshape``."""
    x = _data(ins[0])
    shape = list(x.sample.shape)
    axes = cx.ints(ins[1], "axes") if _get(ins, 1) is not None else at.get("axes")
    drop = set(_per_sample_axes(axes, len(shape))) if axes else {i for i in range(1, len(shape)) if shape[i] == 1}
    return _reshape_to(cx, x, [d for i, d in enumerate(shape) if i not in drop])


def _unsqueeze(cx, ins, at):
    """Unsqueeze constant axes (input from opset 13, attribute before) -> ``torch.reshape``."""
    x = _data(ins[0])
    axes = cx.ints(ins[1], "axes") if _get(ins, 1) is not None else at["axes"]
    shape = list(x.sample.shape)
    for a in sorted(_per_sample_axes(axes, len(shape) + len(axes))):
        shape.insert(a, 1)
    return _reshape_to(cx, x, shape)


def _transpose(cx, ins, at):
    """Transpose keeping the batch dimension first -> ``torch.permute(x, perm)``."""
    x = _data(ins[0])
    perm = tuple(at.get("perm", range(x.sample.dim() - 1, -1, -1)))
    if perm[0] != 0:
        raise Refused(f"perm {list(perm)} moves the batch dimension")
    return cx.call(torch.permute, x, perm)


def _concat(cx, ins, at):
    """Concat along a per-sample axis -> ``torch.cat(parts, dim)``."""
    rank = next(v.sample.dim() for v in ins if isinstance(v, Traced))
    return cx.call(torch.cat, list(ins), _per_sample_axes([at["axis"]], rank)[0])


def _slice(cx, ins, at):
    """Slice with constant starts, ends, axes, steps (inputs, or attributes before opset 10),
    positive steps, the batch dimension whole -> ``operator.getitem(x, (slice, ...))``."""
    x = _data(ins[0])
    shape = list(x.sample.shape)
    if len(ins) > 1:
        starts, ends = cx.ints(ins[1], "starts"), cx.ints(ins[2], "ends")
        axes = cx.ints(ins[3], "axes") if _get(ins, 3) is not None else range(len(starts))
        steps = cx.ints(ins[4], "steps") if _get(ins, 4) is not None else [1] * len(starts)
    else:
        starts, ends = at["starts"], at["ends"]
        axes, steps = at.get("axes", range(len(starts))), [1] * len(starts)
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis % len(shape)
        if step <= 0:
            raise Refused(f"step {step} is not supported (only positive steps)")
        if axis == 0:
            whole = start == 0 and step == 1 and (end >= 2**31 or (not cx.symbolic_batch and end >= shape[0]))
            if not whole:
                raise Refused("it slices the batch dimension")
            continue
        index[axis] = slice(*slice(start, end, step).indices(shape[axis]))
    return cx.call(operator.getitem, x, tuple(index))


def _shape(cx, ins, at):
    """Shape of an input-dependent value (start, end from opset 15): a constant, marked as
    depending on the batch when it holds a symbolic batch size."""
    x = ins[0]
    dims = list(range(x.sample.dim()))[at.get("start", 0):at.get("end")]
    value = np.array([x.sample.shape[d] for d in dims], dtype=np.int64)
    return Const(value, cx.name, cx.symbolic_batch and 0 in dims)


def _size(cx, ins, at):
    """Size of an input-dependent value: a constant, depending on a symbolic batch size."""
    return Const(np.array(ins[0].sample.numel(), dtype=np.int64), cx.name, cx.symbolic_batch)


CONVERTERS = {
    "Abs": _unary(torch.abs),
    "Add": _binary(operator.add),
    "AveragePool": _average_pool,
    "BatchNormalization": _batch_norm,
    "Cast": _cast,
    "Clip": _clip,
    "Concat": _concat,
    "Conv": _conv,
    "Div": _binary(operator.truediv),
    "Dropout": _identity,
    "Elu": _elu,
    "Exp": _unary(torch.exp),
    "Flatten": _flatten,
    "Gelu": _gelu,
    "Gemm": _gemm,
    "GlobalAveragePool": _global_average_pool,
    "Identity": _identity,
    "LayerNormalization": _layer_norm,
    "LeakyRelu": _leaky_relu,
    "MatMul": _matmul,
    "Max": _pairwise(torch.maximum),
    "MaxPool": _max_pool,
    "Min": _pairwise(torch.minimum),
    "Mul": _binary(operator.mul),
    "Neg": _unary(operator.neg),
    "PRelu": _prelu,
    "ReduceMean": _reduce(torch.mean),
    "ReduceSum": _reduce(torch.sum),
    "Relu": _unary(torch.relu),
    "Reshape": _reshape,
    "Shape": _shape,
    "Sigmoid": _unary(torch.sigmoid),
    "SiLU": _unary(F.silu),
    "Size": _size,
    "Slice": _slice,
    "Softmax": _softmax,
    "Softplus": _softplus,
    "Sqrt": _unary(torch.sqrt),
    "Squeeze": _squeeze,
    "Sub": _binary(operator.sub),
    "Tanh": _unary(torch.tanh),
    "Transpose": _transpose,
    "Unsqueeze": _unsqueeze,
}
"""ONNX op type -> converter."""

SUPPORTED_OPS = sorted(CONVERTERS)
