"""Per-node emitters of the torch.fx capture: one fx node -> IR node(s).

Split from ``capture.py`` (tracing, checks, the walk over the fx graph); this file knows how each
supported torch / onnx2torch spelling becomes canonical ops.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InvalidModel, UnsupportedOperation
from . import onnx_ops, ops
from .ir import Node

SUPPORTED = [
    "nn.Linear", "nn.Conv2d", "nn.BatchNorm1d/2d (eval)", "nn.AvgPool2d", "nn.Flatten", "nn.ReLU",
    "nn.LeakyReLU", "nn.Tanh", "nn.Sigmoid", "nn.Dropout", "nn.Identity",
    "F.linear", "F.conv2d", "F.relu", "F.leaky_relu", "F.avg_pool2d", "torch.relu", "torch.tanh",
    "torch.sigmoid", "torch.flatten", "torch.reshape", "x.view/reshape/flatten", "x + y", "x - y",
    "x +-*/ constant",
]

_RELU_F = {F.relu, torch.relu, torch.nn.functional.relu}
_TANH_F = {torch.tanh, F.tanh}
_SIG_F = {torch.sigmoid, F.sigmoid}
_RESHAPE_F = {torch.flatten, torch.reshape}
_RESHAPE_M = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze"}
_DROP_F = {F.dropout}
_ARITH = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub",
          operator.mul: "mul", torch.mul: "mul", operator.truediv: "div", torch.div: "div",
          operator.neg: "neg", torch.neg: "neg"}
_ARITH_M = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "neg": "neg"}


_INT_ARITH = {operator.floordiv, operator.mul, operator.add, operator.sub, operator.mod}


def _is_shape_node(n: fx.Node) -> bool:
    """``x.shape``, ``x.size(...)``, indexing into them and integer arithmetic on them: integers,
    not tensors (they only feed reshape/slice arguments; their values come from ShapeProp)."""
    if n.op == "call_method" and n.target == "size":
        return True
    if n.op == "call_function" and n.target is getattr:
        return len(n.args) > 1 and n.args[1] == "shape"
    if n.op == "call_function" and n.target is operator.getitem:
        return isinstance(n.args[0], fx.Node) and _is_shape_node(n.args[0])
    if n.op == "call_function" and n.target in _INT_ARITH:
        nodes = [a for a in n.args if isinstance(a, fx.Node)]
        return bool(nodes) and all(_is_shape_node(a) for a in nodes)
    return False


class _Builder:
    def __init__(self, gm, dtype):
        self.gm, self.dtype = gm, dtype
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}   # fx name -> our node name (identity ops)
        self.const: dict[str, torch.Tensor] = {}  # fx name -> constant tensor (get_attr)

    def shape(self, n):
        return tuple(n.meta["tensor_meta"].shape[1:])

    def ref(self, a):
        if isinstance(a, fx.Node):
            if a.name in self.const:
                return self.const[a.name]
            return self.alias.get(a.name, a.name)
        return a

    def emit(self, n: fx.Node, op, inputs, attrs, source=""):
        src = source or (n.meta.get("stack_trace") or "").strip().splitlines()[-1:] or [n.format_node()]
        if isinstance(src, list):
            src = src[0].strip()
        self.nodes.append(Node(n.name, op, tuple(inputs), attrs, self.shape(n), src))


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _conv_attrs(weight, bias, stride, padding, dilation, groups, dtype, in_hw=None):
    if isinstance(padding, str):  # 'same' / 'valid'
        if padding == "valid":
            padding = 0
        else:
            k = weight.shape[2:]
            dil = _pair(dilation)
            tot = [dil[i] * (k[i] - 1) for i in range(2)]
            if any(t % 2 for t in tot):
                raise UnsupportedOperation([("conv2d", "padding='same' with asymmetric padding")], SUPPORTED)
            padding = (tot[0] // 2, tot[1] // 2)
    return {"weight": weight.detach().to(dtype), "bias": None if bias is None else bias.detach().to(dtype),
            "stride": _pair(stride), "padding": _pair(padding), "dilation": _pair(dilation), "groups": int(groups)}


def _avgpool_attrs(channels, kernel_size, stride, padding, dtype):
    k = _pair(kernel_size)
    s = _pair(stride if stride not in (None, []) else kernel_size)
    w = torch.full((channels, 1, k[0], k[1]), 1.0 / (k[0] * k[1]), dtype=dtype)
    return {"weight": w, "bias": None, "stride": s, "padding": _pair(padding), "dilation": (1, 1), "groups": channels}


def _convert_node(b: _Builder, n: fx.Node):
    dt = b.dtype
    args = [b.ref(a) for a in n.args]
    kwargs = {k: b.ref(v) for k, v in n.kwargs.items()}
    x = args[0] if args else None
    if n.op == "call_module":
        m = b.modules[n.target]
        src = f"{n.target} ({type(m).__name__})"
        if onnx_ops.is_onnx_module(m):
            _convert_onnx(b, n, m, args, src)
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            b.alias[n.name] = x
        elif isinstance(m, nn.Linear):
            b.emit(n, ops.LINEAR, [x], {"weight": m.weight.detach().to(dt),
                                         "bias": None if m.bias is None else m.bias.detach().to(dt)}, src)
        elif isinstance(m, nn.Conv2d):
            b.emit(n, ops.CONV2D, [x], _conv_attrs(m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, dt), src)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            b.emit(n, ops.AFFINE, [x], _bn_affine(m, b.shape(n), dt), src)
        elif isinstance(m, nn.AvgPool2d):
            c = b.shape(n)[0]
            b.emit(n, ops.CONV2D, [x], _avgpool_attrs(c, m.kernel_size, m.stride, m.padding, dt), src)
        elif isinstance(m, nn.ReLU):
            b.emit(n, ops.RELU, [x], {"negative_slope": 0.0}, src)
        elif isinstance(m, nn.LeakyReLU):
            b.emit(n, ops.LEAKY_RELU, [x], {"negative_slope": float(m.negative_slope)}, src)
        elif isinstance(m, nn.Tanh):
            b.emit(n, ops.TANH, [x], {}, src)
        elif isinstance(m, nn.Sigmoid):
            b.emit(n, ops.SIGMOID, [x], {}, src)
        elif isinstance(m, nn.Flatten):
            b.emit(n, ops.RESHAPE, [x], {}, src)
        return
    target = n.target
    if n.op == "call_method":
        if target in _RESHAPE_M:
            b.emit(n, ops.RESHAPE, [x], {})
        elif target in ("maximum", "minimum"):
            _maxmin(b, n, args[0], args[1], target[:3])
        elif target in ("relu", "tanh", "sigmoid"):
            b.emit(n, {"relu": ops.RELU, "tanh": ops.TANH, "sigmoid": ops.SIGMOID}[target], [x],
                   {"negative_slope": 0.0} if target == "relu" else {})
        else:
            _arith(b, n, _ARITH_M[target], args, kwargs)
        return
    if target is operator.getitem:
        _slice(b, n, x, n.args[1])
    elif target in (torch.maximum, torch.minimum, torch.max, torch.min):
        if len(args) != 2 or not (isinstance(args[0], str) and isinstance(args[1], str)):
            raise UnsupportedOperation([(n.name, getattr(target, "__name__", str(target)))], SUPPORTED,
                                       detail="max/min is supported elementwise between two input-dependent tensors")
        _maxmin(b, n, args[0], args[1], "max" if target in (torch.maximum, torch.max) else "min")
    elif target in (torch.cat, torch.stack):
        parts = [b.ref(a) for a in (n.args[0] if n.args else n.kwargs["tensors"])]
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        _concat(b, n, parts, dim, stack=target is torch.stack)
    elif target in _DROP_F:
        b.alias[n.name] = x
    elif target in _RELU_F:
        b.emit(n, ops.RELU, [x], {"negative_slope": 0.0})
    elif target is F.leaky_relu:
        slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
        if not 0 <= slope <= 1:
            raise UnsupportedOperation([(n.name, f"leaky_relu(negative_slope={slope})")], SUPPORTED,
                                       detail="negative_slope must be in [0, 1]")
        b.emit(n, ops.LEAKY_RELU, [x], {"negative_slope": float(slope)})
    elif target in _TANH_F:
        b.emit(n, ops.TANH, [x], {})
    elif target in _SIG_F:
        b.emit(n, ops.SIGMOID, [x], {})
    elif target in _RESHAPE_F:
        b.emit(n, ops.RESHAPE, [x], {})
    elif target is F.linear:
        w = args[1] if len(args) > 1 else kwargs["weight"]
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        _need_const(n, w, bias)
        b.emit(n, ops.LINEAR, [x], {"weight": w.to(dt), "bias": None if bias is None else bias.to(dt)})
    elif target is F.conv2d:
        names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
        defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
        a = {**defaults, **dict(zip(names, args)), **kwargs}
        _need_const(n, a["weight"], a["bias"])
        b.emit(n, ops.CONV2D, [x], _conv_attrs(a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"],
                                                a["groups"], dt))
    elif target is F.avg_pool2d:
        names = ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"]
        a = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None,
             **dict(zip(names, args)), **kwargs}
        if a["ceil_mode"] or not a["count_include_pad"] or a["divisor_override"]:
            raise UnsupportedOperation([(n.name, "avg_pool2d(ceil_mode/count_include_pad/divisor_override)")], SUPPORTED)
        b.emit(n, ops.CONV2D, [x], _avgpool_attrs(b.shape(n)[0], a["kernel_size"], a["stride"], a["padding"], dt))
    else:
        _arith(b, n, _ARITH[target], args, kwargs)


def _need_const(n, *ts):
    for t in ts:
        if t is not None and not isinstance(t, torch.Tensor):
            raise UnsupportedOperation([(n.name, getattr(n.target, "__name__", str(n.target)))], SUPPORTED,
                                       detail="weights must be constant tensors (parameters or buffers)")


def _bn_affine(m, shape, dt):
    """Eval-mode BatchNorm as ``scale * x + shift``, folded in float64."""
    if m.running_var is None:
        raise InvalidModel(f"BatchNorm {m} has no running statistics (track_running_stats=False): it normalises "
                           "by the batch's own statistics, which is not a function of one input")
    var = m.running_var.detach().double() + m.eps
    if not bool((var > 0).all()) or not bool(torch.isfinite(var).all()):
        raise InvalidModel(f"BatchNorm {m} has running_var + eps <= 0 in some channel (zero variance with eps = 0, "
                           "or a negative variance): its scale is infinite or undefined")
    w = m.weight.detach().double() if m.affine else 1.0
    scale = w / torch.sqrt(var)
    mean = m.running_mean.detach().double()
    shift = (m.bias.detach().double() if m.affine else 0) - mean * scale
    view = (-1,) + (1,) * (len(shape) - 1)
    return {"scale": scale.reshape(view).expand(shape).to(dt).contiguous(),
            "shift": shift.reshape(view).expand(shape).to(dt).contiguous()}


def _arith(b: _Builder, n, kind, args, kwargs):
    """``x + y``, ``x - y`` between graph values -> add; with a constant -> affine."""
    shape = b.shape(n)
    dt = b.dtype
    if kind == "neg":
        b.emit(n, ops.AFFINE, [args[0]], {"scale": -torch.ones(shape, dtype=dt), "shift": torch.zeros(shape, dtype=dt)})
        return
    x, y = args[0], args[1] if len(args) > 1 else kwargs.get("other")
    alpha = kwargs.get("alpha", 1)
    is_node = lambda v: isinstance(v, str)  # noqa: E731
    if is_node(x) and is_node(y):
        if kind == "add":
            b.emit(n, ops.ADD, [x, y], {"coeffs": (1.0, float(alpha))})
        elif kind == "sub":
            b.emit(n, ops.ADD, [x, y], {"coeffs": (1.0, -float(alpha))})
        else:
            raise UnsupportedOperation([(n.name, f"{kind} of two input-dependent tensors")], SUPPORTED,
                                       detail="products of two input-dependent values are not supported")
        return
    if not is_node(x):  # constant op node
        if kind in ("div",):
            raise UnsupportedOperation([(n.name, "constant / tensor")], SUPPORTED)
        c = torch.as_tensor(x, dtype=dt)
        node_in = y
        if kind == "add":
            scale, shift = 1.0, c
        elif kind == "sub":
            scale, shift = -1.0, c
        else:
            scale, shift = c, 0.0
    else:
        c = torch.as_tensor(y, dtype=dt)
        node_in = x
        if kind == "add":
            scale, shift = 1.0, c * alpha
        elif kind == "sub":
            scale, shift = 1.0, -c * alpha
        elif kind == "mul":
            scale, shift = c, 0.0
        else:
            scale, shift = 1.0 / c, 0.0
    scale = torch.broadcast_to(_per_sample(torch.as_tensor(scale, dtype=dt), shape), shape).contiguous()
    shift = torch.broadcast_to(_per_sample(torch.as_tensor(shift, dtype=dt), shape), shape).contiguous()
    if not (torch.isfinite(scale).all() and torch.isfinite(shift).all()):
        raise InvalidModel(f"node '{n.name}': constant arithmetic gives non-finite values")
    b.emit(n, ops.AFFINE, [node_in], {"scale": scale, "shift": shift})


def _per_sample(c: torch.Tensor, shape) -> torch.Tensor:
    """Drop leading size-1 (batch) dimensions of a constant so it broadcasts to a sample."""
    while c.dim() > len(shape) and c.shape[0] == 1:
        c = c[0]
    return c


def _convert_onnx(b: _Builder, n, m, args, src):
    k = onnx_ops.kind(m)
    if k == "const":
        b.const[n.name] = onnx_ops.constant_value(m).to(b.dtype) if onnx_ops.constant_value(m).is_floating_point() \
            else onnx_ops.constant_value(m)
    elif k == "reshape":
        b.emit(n, ops.RESHAPE, [args[0]], {}, src)
    elif k in ("max", "min"):
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            raise UnsupportedOperation([(n.name, f"ONNX {k.title()} ({n.target})")], SUPPORTED,
                                       detail="Max/Min is supported between two input-dependent tensors")
        _maxmin(b, n, args[0], args[1], k)
    elif k == "concat":
        _concat(b, n, list(args), m.axis)
    elif k in ("tanh", "sigmoid", "relu"):
        b.emit(n, {"tanh": ops.TANH, "sigmoid": ops.SIGMOID, "relu": ops.RELU}[k], [args[0]],
               {"negative_slope": 0.0} if k == "relu" else {}, src)
    elif k == "batchnorm":
        weight, bias, mean, var = (a if isinstance(a, torch.Tensor) else None for a in args[1:5])
        if any(t is None for t in (weight, bias, mean, var)):
            raise UnsupportedOperation([(n.name, f"ONNX BatchNormalization ({n.target})")], SUPPORTED,
                                       detail="BatchNormalization needs constant parameters")
        scale = weight / torch.sqrt(var + m.epsilon)
        shift = bias - mean * scale
        shape = b.shape(n)
        view = (-1,) + (1,) * (len(shape) - 1)
        b.emit(n, ops.AFFINE, [args[0]], {"scale": scale.reshape(view).expand(shape).to(b.dtype).contiguous(),
                                          "shift": shift.reshape(view).expand(shape).to(b.dtype).contiguous()}, src)
    elif k == "slice":
        x, starts, ends = args[0], args[1], args[2]
        axes = args[3] if len(args) > 3 and args[3] is not None else torch.arange(len(starts))
        steps = args[4] if len(args) > 4 and args[4] is not None else torch.ones(len(starts), dtype=torch.long)
        ndim = len(_shape_of(b, x)) + 1
        index = [slice(None)] * ndim
        for st_, en, ax, sp in zip(starts.tolist(), ends.tolist(), axes.tolist(), steps.tolist()):
            if sp <= 0:
                raise UnsupportedOperation([(n.name, f"ONNX Slice ({n.target})")], SUPPORTED, detail="negative steps")
            index[ax % ndim] = slice(st_, min(en, 2**62), sp)
        _slice(b, n, x, tuple(index))
    elif k == "matmul":
        x, w = args[0], args[1]
        if not isinstance(x, str) or not isinstance(w, torch.Tensor) or w.dim() != 2:
            raise UnsupportedOperation([(n.name, f"ONNX MatMul ({n.target})")], SUPPORTED,
                                       detail="MatMul needs an input-dependent left and a constant 2-D right operand")
        b.emit(n, ops.LINEAR, [x], {"weight": w.T.contiguous().to(b.dtype), "bias": None}, src)
    else:
        _arith(b, n, k, args, {})


def _value(a):
    """Concrete value of a slice bound / dim argument (an int or a shape node's recorded value)."""
    if isinstance(a, fx.Node):
        return a.meta["value"]
    return a


def _slice(b: _Builder, n, x, index):
    """``x[:, a:b:c, ...]``: one SLICE node per sliced per-sample dimension."""
    if not isinstance(index, tuple):
        index = (index,)
    if not isinstance(x, str) or not index or not all(isinstance(i, slice) for i in index):
        raise UnsupportedOperation([(n.name, "getitem")], SUPPORTED, detail="only slicing with ':' ranges is supported")
    if index[0] != slice(None):
        raise UnsupportedOperation([(n.name, "getitem")], SUPPORTED, detail="the batch dimension cannot be sliced")
    cur = x
    shape = list(_shape_of(b, x))
    todo = [(d - 1, i) for d, i in enumerate(index) if d > 0 and i != slice(None)]
    if not todo:
        b.alias[n.name] = x
        return
    for k, (dim, sl) in enumerate(todo):
        start, stop, step = (_value(sl.start), _value(sl.stop), _value(sl.step))
        start, stop, step = slice(start, stop, step).indices(shape[dim])
        shape[dim] = len(range(start, stop, step))
        name = n.name if k == len(todo) - 1 else f"{n.name}::s{k}"
        b.nodes.append(Node(name, ops.SLICE, (cur,), {"dim": dim, "start": start, "stop": stop, "step": step},
                            tuple(shape), n.format_node()))
        cur = name


def _shape_of(b: _Builder, name):
    for node in b.nodes:
        if node.name == name:
            return node.shape
    raise KeyError(name)


def _maxmin(b: _Builder, n, x, y, kind):
    """``max(x, y) = y + relu(x - y)``, ``min(x, y) = x - relu(x - y)``: exact, one ReLU per pair
    (shared by the max and the min of the same pair, so that ``max + min = x + y`` stays exact)."""
    key = ("relu_of_diff", x, y)
    if key not in b.const:
        shape = b.shape(n)
        d, r = f"{n.name}::diff", f"{n.name}::relu"
        b.nodes.append(Node(d, ops.ADD, (x, y), {"coeffs": (1.0, -1.0)}, shape, n.format_node()))
        b.nodes.append(Node(r, ops.RELU, (d,), {"negative_slope": 0.0}, shape, n.format_node()))
        b.const[key] = r
    r = b.const[key]
    if kind == "max":
        b.emit(n, ops.ADD, [y, r], {"coeffs": (1.0, 1.0)})
    else:
        b.emit(n, ops.ADD, [x, r], {"coeffs": (1.0, -1.0)})


def _concat(b: _Builder, n, parts, dim, stack=False):
    if not all(isinstance(p, str) for p in parts):
        raise UnsupportedOperation([(n.name, "cat/stack of constants")], SUPPORTED)
    ndim = len(b.shape(n))
    dim = dim % (ndim + 1) if dim < 0 else dim
    if dim == 0:
        raise UnsupportedOperation([(n.name, "cat/stack along the batch dimension")], SUPPORTED)
    if stack:
        ins = []
        for i, p in enumerate(parts):
            shp = list(_shape_of(b, p))
            shp.insert(dim - 1, 1)
            name = f"{n.name}::u{i}"
            b.nodes.append(Node(name, ops.RESHAPE, (p,), {}, tuple(shp), n.format_node()))
            ins.append(name)
        parts = ins
    b.emit(n, ops.CONCAT, parts, {"dim": dim - 1})
