"""Region-free bound: per-node Lipschitz constants multiplied through the graph.

For every node a scalar ``L_n`` with ``||n(x) - n(y)||_p <= L_n ||x - y||_p`` for all inputs:
the input has 1; a linear op multiplies by its operator norm ``||M||_{p->p}``; ``add`` sums
``|c_i| L_i``; an activation multiplies by its slope bound (ReLU, tanh: 1; LeakyReLU: max(1, a);
sigmoid: 1/4). For output row ``c`` of the last linear op ``y = W h + b`` the constant is
``||W^T c||_q L_h`` (``q`` dual to ``p``): Hölder. This is the classic product of norms.
Operator norms: l_inf -> max abs row sum; l1 -> max abs column sum; l2 -> the exact spectral norm
of the dense matrix (SVD), or for a large conv ``sqrt(||M||_1 ||M||_inf)`` (sound, looser).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import rounding
from ..graph import ops
from ..graph.ir import Graph
from ..rules import lookup

ACT_LIP = {ops.RELU: 1.0, ops.TANH: 1.0, ops.SIGMOID: 0.25}
DENSE_LIMIT = 4096


def _abs_apply(node, v: torch.Tensor) -> torch.Tensor:
    """``|M| v`` for a linear op ``M`` (no bias), ``v [1, *in_shape]``."""
    a = node.attrs
    if node.op == ops.LINEAR:
        return F.linear(v, a["weight"].abs())
    if node.op == ops.CONV2D:
        return F.conv2d(v, a["weight"].abs(), None, a["stride"], a["padding"], a["dilation"], a.get("groups", 1))
    raise AssertionError(node.op)


def _abs_apply_t(node, v: torch.Tensor, in_shape) -> torch.Tensor:
    """``|M|^T v``."""
    a = node.attrs
    if node.op == ops.LINEAR:
        return v @ a["weight"].abs()
    from ..rules.linear_ops import _output_padding
    pad = _output_padding(in_shape[1:], node.shape[1:], a["weight"].shape[2:], a)
    return F.conv_transpose2d(v, a["weight"].abs(), None, a["stride"], a["padding"], pad, a.get("groups", 1), a["dilation"])


def op_norm(graph: Graph, node, p: str) -> float:
    """``||M||_{p->p}`` of a linear op (LINEAR or CONV2D, bias ignored)."""
    in_shape = graph[node.inputs[0]].shape
    dt = node.attrs["weight"].dtype
    dev = node.attrs["weight"].device
    if p == "inf":
        return float(_abs_apply(node, torch.ones((1,) + in_shape, dtype=dt, device=dev)).max())
    if p == "1":
        return float(_abs_apply_t(node, torch.ones((1,) + node.shape, dtype=dt, device=dev), in_shape).max())
    if node.op == ops.LINEAR:
        return float(torch.linalg.matrix_norm(node.attrs["weight"], ord=2))
    n_in = math.prod(in_shape)
    if n_in <= DENSE_LIMIT:
        eye = torch.eye(n_in, dtype=dt, device=dev).reshape(n_in, *in_shape)
        M = lookup(node).forward(node, eye) - (0 if node.attrs.get("bias") is None else
                                              lookup(node).forward(node, torch.zeros((1,) + in_shape, dtype=dt, device=dev)))
        return float(torch.linalg.matrix_norm(M.reshape(n_in, -1), ord=2))
    return math.sqrt(op_norm(graph, node, "inf") * op_norm(graph, node, "1"))


def naive_bound(graph: Graph, C: torch.Tensor, p: str) -> torch.Tensor:
    """Region-free upper bounds ``[K]`` of the Lipschitz constants of ``C @ f`` (norm ``p`` on inputs),
    raised by the rounding of the norms (sums, SVD) and of their product (``lipcert.rounding``)."""
    bound = _naive_bound(graph, C, p)
    k = sum(n.numel + 2 for n in graph.nodes) + C.shape[1]
    return bound * (1 + rounding.gamma(k, bound.dtype)) + rounding.tiny(bound.dtype)


def _naive_bound(graph: Graph, C: torch.Tensor, p: str) -> torch.Tensor:
    q = {"inf": 1, "2": 2, "1": float("inf")}[p]
    L: dict[str, float] = {}
    out = graph[graph.output]
    for node in graph.nodes:
        if node.op == ops.INPUT:
            L[node.name] = 1.0
        elif node.name == graph.output and node.op == ops.LINEAR:
            rows = C @ node.attrs["weight"]  # [K, in]
            return rows.norm(p=q, dim=1) * L[node.inputs[0]]
        elif node.op in (ops.LINEAR, ops.CONV2D):
            L[node.name] = op_norm(graph, node, p) * L[node.inputs[0]]
        elif node.op in (ops.RESHAPE, ops.SLICE):
            L[node.name] = L[node.inputs[0]]
        elif node.op == ops.CONCAT:
            parts = [L[i] for i in node.inputs]
            L[node.name] = {"inf": max(parts), "2": math.sqrt(sum(v * v for v in parts)), "1": sum(parts)}[p]
        elif node.op == ops.ADD:
            L[node.name] = sum(abs(c) * L[i] for c, i in zip(node.attrs["coeffs"], node.inputs))
        elif node.op == ops.AFFINE:
            L[node.name] = float(node.attrs["scale"].abs().max()) * L[node.inputs[0]]
        elif node.op == ops.LEAKY_RELU:
            L[node.name] = max(1.0, abs(float(node.attrs["negative_slope"]))) * L[node.inputs[0]]
        elif node.op in ACT_LIP:
            L[node.name] = ACT_LIP[node.op] * L[node.inputs[0]]
        else:
            from ..errors import UnsupportedOperation
            raise UnsupportedOperation([(node.name, node.op)], detail="no naive Lipschitz rule")
    # output is not a linear layer: |c . y| differences <= ||c||_q ||y diff||_p
    return C.norm(p=q, dim=1) * L[out.name]
