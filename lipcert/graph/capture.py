"""torch.fx capture: an eval-mode ``nn.Module`` -> :class:`Graph`.

The only module that knows torch spellings of ops. Module calls, ``torch.*``/``F.*`` functions
and tensor methods map to the canonical ops of ``lipcert.graph.ops``; BatchNorm (eval) and
constant arithmetic become ``affine``; AvgPool2d becomes a depthwise ``conv2d``; Dropout and
Identity disappear. Every unsupported node is collected and reported at once.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import InvalidInput, InvalidModel, UnsupportedOperation
from . import ops
from .ir import Graph, Node

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


class _Tracer(fx.Tracer):
    pass


def check_model(model: nn.Module) -> None:
    """Raise :class:`InvalidModel` for a model in training mode or with non-finite weights."""
    if not isinstance(model, nn.Module):
        raise InvalidModel(f"expected a torch.nn.Module, got {type(model).__name__}")
    training = [n or "<root>" for n, m in model.named_modules() if m.training]
    if training:
        raise InvalidModel(f"model is in training mode (modules {training[:5]}); call model.eval() first: "
                           "BatchNorm and Dropout behave differently in training mode")
    for n, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InvalidModel(f"model tensor '{n}' has NaN or infinite entries")


def capture(model: nn.Module, example_input: torch.Tensor) -> Graph:
    """Trace ``model`` (eval mode) on ``example_input`` (``[B, *input_shape]``) into a Graph.

    Raises:
        InvalidModel: training mode or non-finite weights.
        InvalidInput: the example does not run through the model.
        UnsupportedOperation: every node without a rule, named.
    """
    check_model(model)
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:
        raise UnsupportedOperation([(type(model).__name__, "symbolic trace")], SUPPORTED,
                                   detail=f"torch.fx could not trace the model: {e}") from e
    example = example_input.to(next(iter(model.parameters()), example_input).dtype)
    bad = _unsupported(gm)
    if bad:
        raise UnsupportedOperation(bad, SUPPORTED)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as e:
        raise InvalidInput(f"input of shape {list(example_input.shape)} does not run through the model: {e}") from e
    return _convert(gm, example.dtype)


def _is_shape_node(n: fx.Node) -> bool:
    """``x.shape``, ``x.size(...)`` and indexing into them: integers, not tensors."""
    if n.op == "call_method" and n.target == "size":
        return True
    if n.op == "call_function" and n.target is getattr:
        return len(n.args) > 1 and n.args[1] == "shape"
    if n.op == "call_function" and n.target is operator.getitem:
        return isinstance(n.args[0], fx.Node) and _is_shape_node(n.args[0])
    return False


def _target_name(n: fx.Node, modules) -> str:
    if n.op == "call_module":
        return f"{type(modules[n.target]).__name__} ({n.target})"
    if n.op == "call_function":
        return getattr(n.target, "__name__", str(n.target))
    return str(n.target)


def _unsupported(gm) -> list:
    modules = dict(gm.named_modules())
    ok_modules = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.Tanh,
                  nn.Sigmoid, nn.Flatten, nn.Dropout, nn.Identity, nn.AvgPool2d)
    ok_functions = (_RELU_F | _TANH_F | _SIG_F | _RESHAPE_F | _DROP_F | set(_ARITH) |
                    {F.linear, F.conv2d, F.leaky_relu, F.avg_pool2d, getattr})
    ok_methods = _RESHAPE_M | set(_ARITH_M) | {"relu", "tanh", "sigmoid", "size"}
    bad = []
    for n in gm.graph.nodes:
        if _is_shape_node(n):
            continue
        if n.op == "call_module":
            m = modules[n.target]
            good = isinstance(m, ok_modules)
            if isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
                good = isinstance(m.padding, str) and m.padding_mode == "zeros"
            if isinstance(m, nn.LeakyReLU) and not 0 <= m.negative_slope <= 1:
                good = False
            if isinstance(m, nn.AvgPool2d) and (m.ceil_mode or not m.count_include_pad or m.divisor_override):
                good = False
            if not good:
                bad.append((n.name, _target_name(n, modules)))
        elif n.op == "call_function" and n.target not in ok_functions:
            bad.append((n.name, _target_name(n, modules)))
        elif n.op == "call_method" and n.target not in ok_methods:
            bad.append((n.name, f"Tensor.{n.target}"))
    return bad


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


def _convert(gm, dtype) -> Graph:
    b = _Builder(gm, dtype)
    inputs, output = [], None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            b.emit(n, ops.INPUT, [], {})
            inputs.append(n.name)
        elif n.op == "get_attr":
            t = gm
            for part in n.target.split("."):
                t = getattr(t, part)
            b.const[n.name] = t.detach().to(dtype)
        elif n.op == "output":
            out = n.args[0]
            if not isinstance(out, fx.Node):
                raise UnsupportedOperation([("output", type(out).__name__)], SUPPORTED,
                                           detail="the model must return a single tensor")
            output = b.ref(out)
        elif _is_shape_node(n):
            continue  # x.shape / x.size() / their items only feed reshape arguments; ShapeProp has the shapes
        else:
            _convert_node(b, n)
    if len(inputs) != 1:
        raise UnsupportedOperation([("inputs", f"{len(inputs)} inputs")], SUPPORTED,
                                   detail="the model must take exactly one tensor input")
    if isinstance(output, torch.Tensor):
        raise UnsupportedOperation([("output", "constant")], SUPPORTED, detail="the output does not depend on the input")
    return Graph(tuple(b.nodes), tuple(inputs), output)


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
        if isinstance(m, (nn.Dropout, nn.Identity)):
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
        elif target in ("relu", "tanh", "sigmoid"):
            b.emit(n, {"relu": ops.RELU, "tanh": ops.TANH, "sigmoid": ops.SIGMOID}[target], [x],
                   {"negative_slope": 0.0} if target == "relu" else {})
        else:
            _arith(b, n, _ARITH_M[target], args, kwargs)
        return
    if target in _DROP_F:
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
    scale = m.weight.detach() / torch.sqrt(m.running_var + m.eps) if m.affine else 1 / torch.sqrt(m.running_var + m.eps)
    shift = (m.bias.detach() if m.affine else 0) - m.running_mean * scale
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
