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


def build_gradient_graph(fwd: Graph, relu_mode: str = "chord") -> GradientGraph:
    """Joint forward + backward graph of ``fwd``; ``relu_mode`` selects the unstable-ReLU
    gradient relaxation ("chord": the paper's; "constant": RecurJac-style)."""
    nodes = list(fwd.nodes)
    out = fwd[fwd.output]
    spec = Node(SPEC, ops.INPUT, (), {}, out.shape, "output spec")
    nodes.append(spec)
    pending: dict[str, list[str]] = {fwd.output: [SPEC]}
    counter = [0]

    def emit(base, op, inputs, attrs, shape):
        counter[0] += 1
        name = f"grad::{base}::{counter[0]}"
        nodes.append(Node(name, op, tuple(inputs), attrs, tuple(shape), f"gradient of {base}"))
        return name

    def send(target, gname):
        pending.setdefault(target, []).append(gname)

    jac = None
    for node in reversed(fwd.nodes):
        if node.name not in pending:
            continue
        parts = pending.pop(node.name)
        g = parts[0] if len(parts) == 1 else emit(node.name, ops.ADD, parts, {"coeffs": (1.0,) * len(parts)}, node.shape)
        if node.op == ops.INPUT:
            jac = g
            continue
        a = node.attrs
        x = node.inputs[0]
        xshape = fwd[x].shape
        if node.op == ops.LINEAR:
            send(x, emit(node.name, ops.LINEAR, [g], {"weight": a["weight"].T.contiguous(), "bias": None}, xshape))
        elif node.op == ops.CONV2D:
            out_pad = _output_padding(xshape[1:], node.shape[1:], a["weight"].shape[2:], a)
            attrs = {"weight": a["weight"], "stride": a["stride"], "padding": a["padding"],
                     "dilation": a["dilation"], "groups": a.get("groups", 1), "output_padding": out_pad}
            send(x, emit(node.name, ops.CONV_T2D, [g], attrs, xshape))
        elif node.op == ops.RESHAPE:
            send(x, emit(node.name, ops.RESHAPE, [g], {}, xshape))
        elif node.op == ops.ADD:
            for inp, c in zip(node.inputs, a["coeffs"]):
                if c == 1:
                    send(inp, g)
                else:
                    sc = torch.full(fwd[inp].shape, float(c), dtype=_dtype(fwd), device=_device(fwd))
                    send(inp, emit(node.name, ops.AFFINE, [g], {"scale": sc, "shift": torch.zeros_like(sc)}, fwd[inp].shape))
        elif node.op == ops.SLICE:
            send(x, emit(node.name, ops.SLICE_T, [g], dict(node.attrs), xshape))
        elif node.op == ops.CONCAT:
            start = 0
            dim = node.attrs["dim"]
            for inp in node.inputs:
                n = fwd[inp].shape[dim]
                send(inp, emit(node.name, ops.SLICE, [g], {"dim": dim, "start": start, "stop": start + n, "step": 1},
                               fwd[inp].shape))
                start += n
        elif node.op == ops.AFFINE:
            send(x, emit(node.name, ops.AFFINE, [g], {"scale": a["scale"], "shift": torch.zeros_like(a["shift"])}, xshape))
        elif node.op in (ops.RELU, ops.LEAKY_RELU):
            send(x, emit(node.name, ops.RELU_GRAD, [x, g],
                         {"negative_slope": float(a.get("negative_slope", 0.0)), "mode": relu_mode}, xshape))
        elif node.op in (ops.TANH, ops.SIGMOID):
            dop = ops.TANH_DERIV if node.op == ops.TANH else ops.SIGMOID_DERIV
            d = emit(node.name, dop, [x], {}, xshape)
            send(x, emit(node.name, ops.MUL, [d, g], {}, xshape))
        else:
            raise UnsupportedOperation([(node.name, node.op)], detail="no gradient rule for this op")
    if jac is None:
        raise UnsupportedOperation([(fwd.output, "output")], detail="the output does not depend on the input")
    graph = Graph(tuple(nodes), (fwd.input, SPEC), jac)
    return GradientGraph(graph, fwd, SPEC, jac)


def _dtype(g: Graph):
    for n in g.nodes:
        for v in n.attrs.values():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                return v.dtype
    return torch.get_default_dtype()


def _device(g: Graph):
    for n in g.nodes:
        for v in n.attrs.values():
            if isinstance(v, torch.Tensor):
                return v.device
    return torch.device("cpu")


def _output_padding(in_hw, out_hw, k_hw, a):
    from ..rules.linear_ops import _output_padding as op
    return op(in_hw, out_hw, k_hw, a)
