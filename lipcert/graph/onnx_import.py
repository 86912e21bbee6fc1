"""ONNX -> ``torch.fx.GraphModule`` of plain torch functions, without onnx2torch.

One pass over the (topologically sorted) ONNX nodes. Every value is either

- a constant (:class:`Const`): an initializer, or the output of a node whose inputs are all
  constants, evaluated at import by onnx's reference evaluator (``Constant``, ``Gather`` on a
  shape, ``Range``, ...), and ``Shape``/``Size`` of a traced value; or
- traced (:class:`Traced`): an fx node plus its value on a sample input of the model's declared
  shape, from which ``Shape`` nodes and ``Reshape`` targets are resolved.

A traced node is converted by the converter of its op type in
:data:`lipcert.graph.onnx_converters.CONVERTERS`; every node without one, or that its converter
refuses, is collected and reported at once. The graph keeps the batch as dimension 0: reshapes
write it as ``-1``, and a node that would move or mix it is refused.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from onnx import helper, inliner, numpy_helper
from onnx.reference import ReferenceEvaluator
from torch.fx.node import map_aggregate

from ..errors import InvalidInput, InvalidModel, UnsupportedOperation


@dataclass(frozen=True)
class Const:
    """A value known at import.

    ``batch``: it was computed from the batch size of a model whose batch is symbolic, so it
    holds only for the sample's batch size; only a ``Reshape`` target may use it.
    """

    value: np.ndarray
    name: str
    batch: bool = False


@dataclass(frozen=True)
class Traced:
    """An input-dependent value: its fx node and its value on the sample input."""

    node: fx.Node
    sample: torch.Tensor


_UNKNOWN = object()  # the output of a node that was not converted


class Refused(Exception):
    """A converter cannot import this node; ``detail`` says why."""

    def __init__(self, detail: str = ""):
        super().__init__(detail)
        self.detail = detail


class Context:
    """The fx graph under construction, its constants, and the sample batch size."""

    def __init__(self, opsets: dict[str, int], sample_batch: int, symbolic_batch: bool):
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.opsets = opsets
        self.opset = opsets.get("", 1)
        self.sample_batch = sample_batch
        self.symbolic_batch = symbolic_batch
        self.name = "x"  # the ONNX output being converted, the name of the fx nodes made for it
        self.used: set[str] = set()  # the values some node or the graph output reads
        self.per_sample: tuple[int, ...] = ()  # the input's declared shape after the batch
        self._buffers: dict[str, Traced] = {}

    def buffer(self, value: torch.Tensor, hint: str) -> Traced:
        """``value`` as a buffer of the root module and a ``get_attr`` node reading it."""
        base = "c_" + re.sub(r"\W", "_", hint)
        name, k = base, 1
        while hasattr(self.root, name):
            name, k = f"{base}_{k}", k + 1
        self.root.register_buffer(name, value)
        return Traced(self.graph.get_attr(name), value)

    def tensor(self, v) -> Traced:
        """A tensor operand: a traced value as is, a constant as a (shared) buffer."""
        if isinstance(v, Traced):
            return v
        if v.name not in self._buffers:
            self._buffers[v.name] = self.buffer(torch.from_numpy(self.array(v, v.name).copy()), v.name)
        return self._buffers[v.name]

    def array(self, v, what: str, batch_ok: bool = False) -> np.ndarray:
        """The value of constant ``v``; refused when it is input-dependent."""
        if not isinstance(v, Const):
            raise Refused(f"{what} must be a constant")
        if v.batch and not batch_ok:
            raise Refused(f"{what} depends on the batch size of a model exported with a symbolic batch")
        return np.asarray(v.value)

    def ints(self, v, what: str, batch_ok: bool = False) -> list[int]:
        return [int(i) for i in self.array(v, what, batch_ok).reshape(-1)]

    def scalar(self, v, what: str) -> float:
        a = self.array(v, what)
        if a.size != 1:
            raise Refused(f"{what} must be a scalar, not of shape {list(a.shape)}")
        return float(a.reshape(-1)[0])

    def call(self, fn, *args, **kwargs) -> Traced:
        """The fx node ``fn(*args, **kwargs)`` (constants become buffers) and its sample value."""
        args, kwargs = map_aggregate((args, kwargs), lambda a: self.tensor(a) if isinstance(a, Const) else a)
        to_node = lambda a: a.node if isinstance(a, Traced) else a  # noqa: E731
        to_sample = lambda a: a.sample if isinstance(a, Traced) else a  # noqa: E731
        node = self.graph.create_node("call_function", fn, map_aggregate(args, to_node),
                                      map_aggregate(kwargs, to_node), name=self.name)
        fname = getattr(fn, "__name__", str(fn))
        try:
            sample = fn(*map_aggregate(args, to_sample), **map_aggregate(kwargs, to_sample))
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise Refused(f"{fname} fails on the sample input: {e}") from e
        if not isinstance(sample, torch.Tensor) or sample.dim() == 0 or sample.shape[0] != self.sample_batch:
            shape = list(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise Refused(f"{fname} gives {shape} from a batch of {self.sample_batch}: it moves or mixes "
                          "the batch dimension")
        return Traced(node, sample)


def onnx_to_module(model) -> fx.GraphModule:
    """An eval-mode ``GraphModule`` computing the ONNX ``model``.

    Its graph has one placeholder (the model's one non-initializer input), one output,
    ``get_attr`` nodes reading constants (buffers, in their ONNX dtype) and ``call_function``
    nodes of plain torch functions (``F.linear``, ``F.conv2d``, ``torch.relu``, ``operator.add``,
    ...). Nodes whose inputs are all constants are evaluated at import. Calling it with an input
    that is not ``[B, *declared per-sample shape]`` raises :class:`InvalidInput`.

    Raises:
        UnsupportedOperation: naming every node that cannot be imported, or the model has more
            than one input or output, or its output does not depend on its input.
        InvalidModel: a node reads a value that nothing computes.
    """
    from .onnx_converters import SUPPORTED_OPS

    if model.functions:
        model = inliner.inline_local_functions(model)
    graph = model.graph
    cx, env = _start(model)
    bad, details = _convert_all(cx, env, graph)
    out = env.get(graph.output[0].name, _UNKNOWN)
    if isinstance(out, Const):
        bad.append((graph.output[0].name, "constant output"))
        details.append("the output does not depend on the input")
    if bad:
        details.append("any op whose inputs are all constants is evaluated at import")
        raise UnsupportedOperation(bad, SUPPORTED_OPS, detail="; ".join(details))
    cx.graph.output(out.node)
    cx.graph.eliminate_dead_code()
    gm = fx.GraphModule(cx.root, cx.graph).eval()
    gm.register_forward_pre_hook(functools.partial(_check_input, cx.per_sample))
    return gm


def _convert_all(cx: Context, env: dict, graph) -> tuple[list, list]:
    """Converts the nodes in order into ``env``; returns the ``(node, op)`` pairs that could not be,
    and the reasons given."""
    from .onnx_converters import CONVERTERS
    from .onnx_fusions import fuse_silu, fuse_softplus_threshold

    cx.used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    bad, details = [], []
    for node in fuse_silu(fuse_softplus_threshold(list(graph.node))):
        label = node.name or node.output[0]
        ins = [_read(env, i, label) if i else None for i in node.input]
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        outs = [_UNKNOWN] * len(node.output)
        if any(v is _UNKNOWN for v in ins):  # downstream of a failed node: only an unknown op is news
            if key not in CONVERTERS:
                bad.append((label, key))
        else:
            cx.name = node.output[0] or key
            try:
                outs = _convert(cx, node, key, ins, CONVERTERS)
            except Refused as e:
                bad.append((label, key))
                if e.detail:
                    details.append(f"{label} ({key}): {e.detail}")
        env.update((name, v) for name, v in zip(node.output, outs) if name)
    return bad, details


def _check_input(per_sample: tuple, module, args) -> None:
    """Forward pre-hook: the input must be ``[B, *per_sample]``, as the ONNX model declares (torch's
    conv and pool functions would also take one unbatched sample, and give another answer)."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != per_sample or x.dim() != len(per_sample) + 1:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidInput(f"the ONNX model takes inputs of shape [batch, {', '.join(map(str, per_sample))}], "
                           f"not {got}")


def _start(model) -> tuple[Context, dict]:
    """The context and the environment holding the initializers and the traced input."""
    graph = model.graph
    env = {t.name: Const(numpy_helper.to_array(t), t.name) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in env]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedOperation([("graph", f"{len(inputs)} inputs, {len(graph.output)} outputs")],
                                   detail="the model must take one tensor input and return one tensor")
    x = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in x.type.tensor_type.shape.dim]
    if not dims or None in dims[1:]:
        raise UnsupportedOperation([(x.name, f"input shape {dims}")],
                                   detail="the input needs a batch dimension and fixed sizes after it")
    symbolic = dims[0] is None
    cx = Context({d.domain: d.version for d in model.opset_import}, 1 if symbolic else dims[0], symbolic)
    cx.per_sample = tuple(dims[1:])
    dtype = torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(x.type.tensor_type.elem_type))).dtype
    sample = torch.zeros([cx.sample_batch, *dims[1:]], dtype=dtype)
    env[x.name] = Traced(cx.graph.placeholder("x"), sample)
    return cx, env


def _read(env: dict, name: str, label: str):
    if name not in env:
        raise InvalidModel(f"ONNX node '{label}' reads '{name}', which no node computes")
    return env[name]


def _convert(cx: Context, node, key: str, ins: list, converters: dict) -> list:
    """The node's outputs: evaluated when its inputs are constants, else by its converter."""
    if all(v is None or isinstance(v, Const) for v in ins):
        return _fold(cx, node, ins)
    if key not in converters:
        raise Refused()
    extra = [o for o in node.output[1:] if o in cx.used]
    if extra:
        raise Refused(f"only its first output is supported; the model uses {extra}")
    attrs = {a.name: _attr(helper.get_attribute_value(a)) for a in node.attribute}
    return [converters[key](cx, ins, attrs)]


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode() for s in v]
    return v


def _fold(cx: Context, node, ins: list) -> list[Const]:
    """Evaluates a node of constant inputs with ``onnx.reference`` on a one-node graph."""
    feeds = {name: v.value for name, v in zip(node.input, ins) if name}
    outputs = [o for o in node.output if o]
    graph = helper.make_graph([node], "fold", [helper.make_empty_tensor_value_info(n) for n in feeds],
                              [helper.make_empty_tensor_value_info(o) for o in outputs])
    try:
        values = ReferenceEvaluator(graph, opsets=cx.opsets).run(None, feeds)
    except Exception as e:  # any failure of the evaluator means: cannot fold this node
        raise Refused(f"cannot evaluate it on its constant inputs: {e}") from e
    batch = any(v.batch for v in ins if v is not None)
    by_name = dict(zip(outputs, values))
    return [Const(np.asarray(by_name[o]), o, batch) if o else None for o in node.output]
