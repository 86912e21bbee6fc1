"""Operator norms ``||M||_{p->p}`` of the weighted linear ops (``linear``, ``conv2d``), the
factor their rules give the naive bound: l_inf -> max abs row sum; l1 -> max abs column sum; l2 ->
the exact spectral norm of the dense matrix (SVD), or for a large conv ``sqrt(||M||_1 ||M||_inf)``
(sound, looser). (The naive bound raises the product by the rounding of these computations.)"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..graph import ops

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
    from .linear_ops import _output_padding
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
        M = _forward(node, eye) - (0 if node.attrs.get("bias") is None else
                                              _forward(node, torch.zeros((1,) + in_shape, dtype=dt, device=dev)))
        return float(torch.linalg.matrix_norm(M.reshape(n_in, -1), ord=2))
    return math.sqrt(op_norm(graph, node, "inf") * op_norm(graph, node, "1"))




def _forward(node, x):
    from . import RULES
    return RULES[node.op].forward(node, x)
