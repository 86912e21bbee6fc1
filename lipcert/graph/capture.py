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
from . import aten_compat, onnx_ops, ops
from .ir import Graph

from .emit import _ARITH, _ARITH_M, _DROP_F, _RELU_F, _RESHAPE_F, _RESHAPE_M, _SIG_F, _TANH_F, SUPPORTED, _Builder, _convert_node, _is_shape_node  # noqa: E501,F401


class _Props(ShapeProp):
    """ShapeProp that also keeps the values of non-tensor results (ints of ``x.shape``
    arithmetic, slice bounds) and of every node that does not depend on the input (constants,
    shape computations of exported ONNX graphs): capture folds those into constants."""

    def run_node(self, n):
        result = super().run_node(n)
        if not isinstance(result, torch.Tensor) or n.meta.get("static"):
            n.meta["value"] = result.detach() if isinstance(result, torch.Tensor) else result
        return result


def _mark_static(gm) -> None:
    """``meta['static']``: the node's value does not depend on the input."""
    dynamic = set()
    modules = dict(gm.named_modules())
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            dynamic.add(n.name)
            continue
        if n.op == "call_module" and type(modules.get(n.target)).__name__ == "OnnxShape":
            n.meta["static"] = True  # a shape depends on the input's shape only, not its values
            continue
        deps = [a for a in n.all_input_nodes]
        n.meta["static"] = n.op != "output" and not any(a.name in dynamic for a in deps)
        if not n.meta["static"]:
            dynamic.add(n.name)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return onnx_ops.is_onnx_module(m) or super().is_leaf_module(m, qualname)


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
    aten_compat.rewrite(gm)
    example = example_input.to(next(iter(model.parameters()), example_input).dtype)
    _mark_static(gm)
    bad = _unsupported(gm)
    if bad:
        raise UnsupportedOperation(bad, SUPPORTED)
    try:
        with torch.no_grad():
            _Props(gm).propagate(example)
    except Exception as e:
        raise InvalidInput(f"input of shape {list(example_input.shape)} does not run through the model: {e}") from e
    return _convert(gm, example.dtype)


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
                    {F.linear, F.conv2d, F.leaky_relu, F.avg_pool2d, getattr, operator.getitem, torch.maximum,
                     torch.minimum, torch.cat, torch.stack, torch.max, torch.min})
    ok_methods = _RESHAPE_M | set(_ARITH_M) | {"relu", "tanh", "sigmoid", "size", "maximum", "minimum"}
    bad = []
    for n in gm.graph.nodes:
        if _is_shape_node(n) or n.meta.get("static"):
            continue
        if n.op == "call_module":
            m = modules[n.target]
            good = isinstance(m, ok_modules)
            if onnx_ops.is_onnx_module(m):
                if onnx_ops.kind(m) is None:
                    bad.append((n.name, f"ONNX {type(m).__name__} ({n.target})"))
                continue
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
        elif n.meta.get("static") and n.op != "placeholder":
            v = n.meta.get("value")
            if isinstance(v, torch.Tensor):
                b.const[n.name] = v.to(b.dtype) if v.is_floating_point() else v
        else:
            _convert_node(b, n)
    if len(inputs) != 1:
        raise UnsupportedOperation([("inputs", f"{len(inputs)} inputs")], SUPPORTED,
                                   detail="the model must take exactly one tensor input")
    if isinstance(output, torch.Tensor):
        raise UnsupportedOperation([("output", "constant")], SUPPORTED, detail="the output does not depend on the input")
    return Graph(tuple(b.nodes), tuple(inputs), output)


