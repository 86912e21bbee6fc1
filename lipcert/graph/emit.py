"""The builder the registry's emitters write IR nodes through (one fx node -> IR node(s)).

``capture.py`` walks the fx graph; for each node it finds the layer in ``lipcert.rules.registry``
and calls its emitter with this builder. Helpers shared by several emitters live here.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ..errors import InvalidModel, UnsupportedOperation
from . import ops
from .ir import Node

_INT_ARITH = {operator.floordiv, operator.mul, operator.add, operator.sub, operator.mod}


def is_shape_node(n: fx.Node) -> bool:
    """``x.shape``, ``x.size(...)``, ``x.dim()``, indexing into them and integer arithmetic on them:
    integers, not tensors (they only feed reshape/slice arguments; their values come from ShapeProp)."""
    if n.op == "call_method" and n.target in ("size", "dim"):
        return True
    if n.op == "call_function" and n.target is getattr:
        return len(n.args) > 1 and n.args[1] in ("shape", "ndim")
    if n.op == "call_function" and n.target is operator.getitem:
        return isinstance(n.args[0], fx.Node) and is_shape_node(n.args[0])
    if n.op == "call_function" and n.target in _INT_ARITH:
        nodes = [a for a in n.args if isinstance(a, fx.Node)]
        return bool(nodes) and all(is_shape_node(a) for a in nodes)
    return False


def unsupported(n, what: str, detail: str = "", refused: bool = False) -> UnsupportedOperation:
    """The error an emitter raises for a configuration it has no sound rule for (``refused``: one
    that has no Lipschitz constant at all)."""
    return UnsupportedOperation([(n.name, what)], detail=detail, refused=refused)


class Builder:
    """Collects IR nodes while capture walks an fx graph.

    ``ref`` maps an fx argument to what emitters see: the name of an IR node (a ``str``), a
    constant tensor (parameters, folded input-independent values) or a Python value."""

    def __init__(self, gm, dtype):
        self.gm, self.dtype = gm, dtype
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self._shapes: dict[str, tuple] = {}
        self.alias: dict[str, str] = {}   # fx name -> our node name (identity ops)
        self.const: dict = {}             # fx name -> constant tensor; also emitter memo keys

    # --- reading fx nodes -------------------------------------------------------------------
    def shape(self, n) -> tuple:
        """Per-sample output shape of fx node ``n`` (from ShapeProp); a per-sample scalar is
        ``(1,)`` in the IR."""
        return tuple(n.meta["tensor_meta"].shape[1:]) or (1,)

    def shape_of(self, name: str) -> tuple:
        """Per-sample shape of the IR node ``name``."""
        return self._shapes[name]

    def ref(self, a):
        if isinstance(a, fx.Node):
            if a.name in self.const:
                return self.const[a.name]
            if a.op != "placeholder" and a.name not in self.alias and a.name not in self._shapes:
                return a.meta.get("value", a.name)  # an integer of shape arithmetic
            return self.alias.get(a.name, a.name)
        if isinstance(a, (list, tuple)):
            return type(a)(self.ref(v) for v in a)
        return a

    def value(self, a):
        """Concrete value of a shape/slice argument (ints, or a shape node's recorded value)."""
        if isinstance(a, fx.Node):
            return a.meta["value"]
        return a

    def source(self, n) -> str:
        src = (n.meta.get("stack_trace") or "").strip().splitlines()[-1:] or [n.format_node()]
        return src[0].strip()

    # --- writing IR nodes -------------------------------------------------------------------
    def _append(self, node: Node) -> str:
        self.nodes.append(node)
        self._shapes[node.name] = tuple(node.shape)
        return node.name

    def emit(self, n: fx.Node, op, inputs, attrs, source: str = "", shape=None) -> str:
        """The IR node that stands for fx node ``n`` (named like it)."""
        src = source or self.source(n)
        return self._append(Node(n.name, op, tuple(inputs), attrs, tuple(self.shape(n) if shape is None else shape), src))

    def add(self, n: fx.Node, suffix: str, op, inputs, attrs, shape) -> str:
        """An intermediate IR node on the way to ``n``'s value (``<n>::<suffix>[k]``)."""
        k = 0
        name = f"{n.name}::{suffix}"
        while name in self._shapes:
            k += 1
            name = f"{n.name}::{suffix}{k}"
        return self._append(Node(name, op, tuple(inputs), attrs, tuple(shape), self.source(n)))

    def alias_to(self, n: fx.Node, name: str) -> None:
        """``n`` is the IR node ``name`` (identity ops)."""
        self.alias[n.name] = name

    def affine_attrs(self, n, scale, shift, shape=None) -> dict:
        """``{"scale", "shift"}`` broadcast to the per-sample ``shape`` (default: ``n``'s)."""
        shape = self.shape(n) if shape is None else tuple(shape)
        s = torch.broadcast_to(per_sample(torch.as_tensor(scale, dtype=self.dtype), shape), shape).contiguous()
        t = torch.broadcast_to(per_sample(torch.as_tensor(shift, dtype=self.dtype), shape), shape).contiguous()
        if not (torch.isfinite(s).all() and torch.isfinite(t).all()):
            raise InvalidModel(f"node '{n.name}': constant arithmetic gives non-finite values")
        return {"scale": s, "shift": t}

    def scale(self, n, x: str, c, suffix: str = "scale", shift=0.0) -> str:
        """An affine node ``c * x + shift`` (elementwise, broadcast) on the way to ``n``."""
        shape = self.shape_of(x)
        return self.add(n, suffix, ops.AFFINE, [x], self.affine_attrs(n, c, shift, shape), shape)

    def relu(self, n, x: str, suffix: str = "relu") -> str:
        return self.add(n, suffix, ops.RELU, [x], {"negative_slope": 0.0}, self.shape_of(x))

    def maxmin(self, n, x: str, y: str, kind: str, out: bool = True):
        """``max(x, y) = y + relu(x - y)``, ``min(x, y) = x - relu(x - y)``: exact, one ReLU per pair
        (shared by the max and the min of the same pair, so that ``max + min = x + y`` stays exact).
        ``out``: the node stands for ``n``; else an intermediate, whose name is returned."""
        key = ("relu_of_diff", x, y)
        shape = self.shape_of(x)
        if key not in self.const:
            d = self.add(n, "diff", ops.ADD, [x, y], {"coeffs": (1.0, -1.0)}, shape)
            self.const[key] = self.relu(n, d)
        r = self.const[key]
        ins, coeffs = ([y, r], (1.0, 1.0)) if kind == "max" else ([x, r], (1.0, -1.0))
        if out:
            return self.emit(n, ops.ADD, ins, {"coeffs": coeffs})
        return self.add(n, kind, ops.ADD, ins, {"coeffs": coeffs}, shape)


def per_sample(c: torch.Tensor, shape) -> torch.Tensor:
    """Drop leading size-1 (batch) dimensions of a constant so it broadcasts to a sample."""
    while c.dim() > len(shape) and c.shape[0] == 1:
        c = c[0]
    return c


def is_node(v) -> bool:
    """An emitter argument that is an input-dependent IR node (not a constant)."""
    return isinstance(v, str)


def need_const(n, *ts):
    for t in ts:
        if t is not None and not isinstance(t, torch.Tensor):
            raise unsupported(n, getattr(n.target, "__name__", str(n.target)),
                              "weights must be constant tensors (parameters or buffers)")
