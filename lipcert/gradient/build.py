"""The gradient (backward) graph: autodiff run symbolically on the IR.

From a forward graph ``f`` and a spec input ``c`` (one row per output class), build the joint
graph whose output ``J`` is the input gradient of ``c . f(x)``, with the Clarke chain rule:

  forward op                 backward node(s) for its input's gradient
  y = W x + b                g_x = W^T g_y                        (linear, no bias)
  y = conv2d(x)              g_x = conv_transpose2d(g_y)          (same weight, stride, ...)
  y = reshape(x)             g_x = reshape(g_y)
  y = sum_i c_i x_i          g_{x_i} = c_i g_y                    (affine or the same node)
  y = s * x + t              g_x = s * g_y                        (affine, no shift)
  y = x[slice]               g_x = zeros with g_y in the slice    (slice_t)
  y = cat(x_1, ..., x_n)     g_{x_i} = g_y[part i]                (slice)
  y = relu / leaky_relu(z)   h = relu_grad(z, g_y)                (Clarke set at z = 0)
  y = tanh / sigmoid(z)      d = sigma'(z); h = d * g_y           (mul, a bilinear product)

(each rule's ``gradient`` method, in ``lipcert.rules``, says which; this file only walks the graph.)

A node feeding several consumers gets the sum of their gradients (an ``add`` node). The joint
graph has two inputs: ``x`` (the perturbed input) and ``c`` (the spec, an exact input); its
forward nodes keep their names, backward nodes are named ``grad::<forward name>[::k]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UnsupportedOperation
from ..graph import ops
from ..graph.ir import Graph, Node

SPEC = "spec::c"


@dataclass(frozen=True)
class GradientGraph:
    graph: Graph          # joint graph, output = J (input gradient)
    forward: Graph        # the forward graph it was built from
    spec_input: str       # name of the spec input node
    jacobian: str         # name of J


class GradBuilder:
    """What a rule's ``gradient`` sees: the forward graph, ``emit`` for new backward nodes and
    ``send`` to hand a gradient to a forward node's input."""

    def __init__(self, fwd: Graph, relu_mode: str):
        self.fwd, self.relu_mode = fwd, relu_mode
        self.nodes: list = list(fwd.nodes)
        self.pending: dict[str, list[str]] = {}
        self._count = 0
        self.dtype, self.device = _dtype(fwd), _device(fwd)

    def emit(self, base: str, op: str, inputs, attrs, shape) -> str:
        self._count += 1
        name = f"grad::{base}::{self._count}"
        self.nodes.append(Node(name, op, tuple(inputs), attrs, tuple(shape), f"gradient of {base}"))
        return name

    def send(self, target: str, gname: str) -> None:
        self.pending.setdefault(target, []).append(gname)

    def scaled(self, base: str, g: str, c: float, shape) -> str:
        """``c * g`` (``g`` itself for ``c == 1``)."""
        if c == 1:
            return g
        sc = torch.full(tuple(shape), float(c), dtype=self.dtype, device=self.device)
        return self.emit(base, ops.AFFINE, [g], {"scale": sc, "shift": torch.zeros_like(sc)}, shape)


def build_gradient_graph(fwd: Graph, relu_mode: str = "chord") -> GradientGraph:
    """Joint forward + backward graph of ``fwd``; ``relu_mode`` selects the unstable-ReLU
    gradient relaxation ("chord": the paper's; "constant": RecurJac-style). Each op's rule emits
    its own backward nodes (``rule.gradient``)."""
    from ..rules import lookup
    out = fwd[fwd.output]
    gb = GradBuilder(fwd, relu_mode)
    gb.nodes.append(Node(SPEC, ops.INPUT, (), {}, out.shape, "output spec"))
    gb.send(fwd.output, SPEC)
    jac = None
    for node in reversed(fwd.nodes):
        if node.name not in gb.pending:
            continue
        parts = gb.pending.pop(node.name)
        g = parts[0] if len(parts) == 1 else gb.emit(node.name, ops.ADD, parts, {"coeffs": (1.0,) * len(parts)},
                                                      node.shape)
        if node.op == ops.INPUT:
            jac = g
            continue
        lookup(node).gradient(gb, node, g)
    if jac is None:
        raise UnsupportedOperation([(fwd.output, "output")], detail="the output does not depend on the input")
    graph = Graph(tuple(gb.nodes), (fwd.input, SPEC), jac)
    return GradientGraph(graph, fwd, SPEC, jac)


def _dtype(g: Graph):
    return g.float_dtype(torch.get_default_dtype())


def _device(g: Graph):
    for n in g.nodes:
        for v in n.attrs.values():
            if isinstance(v, torch.Tensor):
                return v.device
    return torch.device("cpu")
