"""torch.fx capture: an eval-mode ``nn.Module`` -> :class:`Graph`.

Module calls, ``torch.*``/``F.*`` functions, tensor methods and ATen overloads are looked up in
the op registry (``lipcert.rules.registry``), whose emitters write the IR nodes; constant
subgraphs (parameters, arithmetic on them, shape computations) are folded. Every unsupported
node is collected and reported at once, with the reason when the op is known but refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import InvalidInput, InvalidModel, UnsupportedOperation
from . import aten_compat, ops
from .emit import Builder, is_shape_node
from .ir import Graph


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
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            dynamic.add(n.name)
            continue
        deps = [a for a in n.all_input_nodes]
        n.meta["static"] = n.op != "output" and not any(a.name in dynamic for a in deps)
        if not n.meta["static"]:
            dynamic.add(n.name)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        from ..rules.registry import find_module
        return find_module(m) is not None or super().is_leaf_module(m, qualname)


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


def _trace(model: nn.Module):
    check_model(model)
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:
        raise UnsupportedOperation([(type(model).__name__, "symbolic trace")], supported(),
                                   detail=f"torch.fx could not trace the model: {e}") from e
    aten_compat.rewrite(gm)
    _mark_static(gm)
    return gm


def _propagate(gm, model, example_input):
    example = example_input.to(next(iter(model.parameters()), example_input).dtype)
    try:
        with torch.no_grad():
            _Props(gm).propagate(example)
    except Exception as e:
        raise InvalidInput(f"input of shape {list(example_input.shape)} does not run through the model: {e}") from e
    return example


def supported() -> list[str]:
    from ..rules.registry import supported_names
    return supported_names()


@dataclass(frozen=True)
class OpStatus:
    """One fx node of the user's model and what lipcert does with it (``lipcert check``)."""

    node: str          # fx node name
    target: str        # what the user wrote (module type, function, method)
    layer: str         # the registry's name for it ("" when unknown)
    status: str        # "supported" | "unsupported" | "refused"
    reason: str = ""   # why not, when not


def capture(model: nn.Module, example_input: torch.Tensor) -> Graph:
    """Trace ``model`` (eval mode) on ``example_input`` (``[B, *input_shape]``) into a Graph.

    Raises:
        InvalidModel: training mode or non-finite weights.
        InvalidInput: the example does not run through the model.
        UnsupportedOperation: every node without a rule, named (with the reason, if known).
    """
    graph, statuses = _capture(model, example_input)
    bad = [s for s in statuses if s.status != "supported"]
    if bad:
        reasons = sorted({f"{s.target}: {s.reason}" for s in bad if s.reason})
        raise UnsupportedOperation([(s.node, s.target) for s in bad], supported(), detail="; ".join(reasons))
    return graph


def inspect(model: nn.Module, example_input: torch.Tensor) -> list[OpStatus]:
    """Every op of ``model`` with its status; never raises UnsupportedOperation."""
    try:
        return _capture(model, example_input)[1]
    except UnsupportedOperation as e:  # the model could not be traced at all
        return [OpStatus(name, target, "", "unsupported", str(e)) for name, target in e.ops]


def _target_name(n: fx.Node, modules) -> str:
    if n.op == "call_module":
        return f"{type(modules[n.target]).__name__} ({n.target})"
    if n.op == "call_function":
        from ..rules.registry import _function_name
        return _function_name(n.target)
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    return str(n.target)


def _find(n: fx.Node, modules):
    from ..rules import registry
    if n.op == "call_module":
        return registry.find_module(modules[n.target])
    if n.op == "call_function":
        return registry.find_function(n.target)
    if n.op == "call_method":
        return registry.find_method(n.target)
    return None


def _capture(model, example_input):
    gm = _trace(model)
    modules = dict(gm.named_modules())
    statuses: dict[str, OpStatus] = {}
    for n in gm.graph.nodes:
        if n.op in ("placeholder", "output", "get_attr") or is_shape_node(n) or n.meta.get("static"):
            continue
        lay = _find(n, modules)
        target = _target_name(n, modules)
        if lay is None:
            statuses[n.name] = OpStatus(n.name, target, "", "unsupported", "")
        elif lay.refuse:
            statuses[n.name] = OpStatus(n.name, target, lay.name, "refused", lay.refuse)
        else:
            statuses[n.name] = OpStatus(n.name, target, lay.name, "supported")
    example = _propagate(gm, model, example_input)
    graph = _convert(gm, example.dtype, statuses, modules)
    return graph, list(statuses.values())


def _convert(gm, dtype, statuses, modules):
    b = Builder(gm, dtype)
    inputs, output, failed = [], None, set()
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            b.emit(n, ops.INPUT, [], {})
            inputs.append(n.name)
        elif n.op == "get_attr":
            t = gm
            for part in n.target.split("."):
                t = getattr(t, part)
            b.const[n.name] = t.detach().to(dtype) if t.is_floating_point() else t.detach()
        elif n.op == "output":
            out = n.args[0]
            if isinstance(out, (tuple, list)) and len(out) == 1:
                out = out[0]
            if not isinstance(out, fx.Node):
                raise UnsupportedOperation([("output", type(out).__name__)], supported(),
                                           detail="the model must return a single tensor")
            output = b.ref(out)
        elif is_shape_node(n):
            continue  # x.shape / x.size() / their items only feed reshape arguments; ShapeProp has the shapes
        elif n.meta.get("static"):
            v = n.meta.get("value")
            if isinstance(v, torch.Tensor):
                b.const[n.name] = v.to(b.dtype) if v.is_floating_point() else v
        elif any(a.name in failed for a in n.all_input_nodes) or statuses[n.name].status != "supported":
            failed.add(n.name)  # unknown, or follows from an op already reported
        else:
            st = statuses[n.name]
            lay = _find(n, modules)
            try:
                args = [b.ref(a) for a in n.args]
                kwargs = {k: b.ref(v) for k, v in n.kwargs.items()}
                lay.emit(b, n, args, kwargs, modules.get(n.target) if n.op == "call_module" else None)
            except UnsupportedOperation as e:
                statuses[n.name] = OpStatus(n.name, st.target, st.layer,
                                            "refused" if getattr(e, "refused", False) else "unsupported",
                                            e.detail or str(e))
                failed.add(n.name)
    if failed:
        return None
    if len(inputs) != 1:
        raise UnsupportedOperation([("inputs", f"{len(inputs)} inputs")], supported(),
                                   detail="the model must take exactly one tensor input")
    if not isinstance(output, str):
        raise UnsupportedOperation([("output", "constant")], supported(), detail="the output does not depend on the input")
    return Graph(tuple(b.nodes), tuple(inputs), output)
