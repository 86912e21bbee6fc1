"""The IR: a DAG of nodes in topological order, each with a per-sample output shape.

Values of a node are tensors ``[batch, *node.shape]``. A graph has one or more input nodes
(op ``input``) and one output node. Nodes are frozen; transformations build new graphs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from . import ops


@dataclass(frozen=True)
class Node:
    """One operation.

    Attributes:
        name: unique id in its graph.
        op: a constant of ``lipcert.graph.ops``.
        inputs: names of the nodes it reads, in the op's argument order.
        attrs: op attributes (weights as tensors, strides, slopes, ...).
        shape: per-sample output shape (no batch dimension).
        source: where it came from (user module path / source line), for error messages.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    shape: tuple[int, ...]
    source: str = ""

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def describe(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"node '{self.name}' ({self.op}, shape {list(self.shape)}){where}"


@dataclass(frozen=True)
class Graph:
    """Nodes in topological order; ``inputs`` are the names of the ``input`` nodes."""

    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    output: str
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self._index.update({n.name: n for n in self.nodes})
        seen = set()
        for n in self.nodes:
            assert all(i in seen for i in n.inputs), f"graph not topologically sorted at {n.name}"
            seen.add(n.name)

    def __getitem__(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: str) -> bool:
        return name in self._index

    @property
    def input(self) -> str:
        """The (first) perturbed input."""
        return self.inputs[0]

    def ancestors(self, name: str) -> set[str]:
        """Names of all nodes ``name`` depends on, itself included."""
        out, stack = set(), [name]
        while stack:
            n = stack.pop()
            if n in out:
                continue
            out.add(n)
            stack.extend(self[n].inputs)
        return out

    def consumers(self) -> dict[str, list[str]]:
        cons: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                cons[i].append(n.name)
        return cons

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def float_dtype(self, default=None):
        """The dtype of the graph's floating-point constants (``default`` when it has none)."""
        for n in self.nodes:
            for v in n.attrs.values():
                if getattr(v, "is_floating_point", lambda: False)():
                    return v.dtype
        return default

    def first_not_piecewise_linear(self):
        """The first node whose op is not piecewise linear (None: the graph is)."""
        from ..rules import lookup
        return next((n for n in self.nodes if n.op != ops.INPUT and not lookup(n).piecewise_linear), None)

    def is_piecewise_linear(self) -> bool:
        return self.first_not_piecewise_linear() is None

    def to(self, dtype=None, device=None) -> "Graph":
        """A copy with every tensor attribute cast to ``dtype``/moved to ``device``."""
        import torch

        def cast(v):
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                return v.to(dtype=dtype or v.dtype, device=device or v.device)
            return v

        nodes = tuple(Node(n.name, n.op, n.inputs, {k: cast(v) for k, v in n.attrs.items()}, n.shape, n.source)
                      for n in self.nodes)
        return Graph(nodes, self.inputs, self.output)
