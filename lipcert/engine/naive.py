"""Region-free bound: per-node Lipschitz constants multiplied through the graph.

For every node a scalar ``L_n`` with ``||n(x) - n(y)||_p <= L_n ||x - y||_p`` for all inputs:
the input has 1; each op's rule gives its factor (``rule.lipschitz``): a linear op multiplies by
its operator norm ``||M||_{p->p}``; ``add`` sums ``|c_i| L_i``; an activation multiplies by
``sup |f'|`` (ReLU, tanh: 1; LeakyReLU: max(1, |a|); sigmoid: 1/4; GELU: 1.129). For output row ``c`` of the last linear op ``y = W h + b`` the constant is
``||W^T c||_q L_h`` (``q`` dual to ``p``): Hölder. This is the classic product of norms.
Operator norms: l_inf -> max abs row sum; l1 -> max abs column sum; l2 -> the exact spectral norm
of the dense matrix (SVD), or for a large conv ``sqrt(||M||_1 ||M||_inf)`` (sound, looser).
"""
from __future__ import annotations


import torch

from .. import rounding
from ..graph import ops
from ..graph.ir import Graph
from ..rules import lookup
from ..rules.operator_norms import op_norm  # noqa: F401  (re-exported)

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
            continue
        if node.name == graph.output and node.op == ops.LINEAR and len(graph[node.inputs[0]].shape) == 1:
            rows = C @ node.attrs["weight"]  # [K, in]: Hölder on the last layer's rows
            return rows.norm(p=q, dim=1) * L[node.inputs[0]]
        v = lookup(node).lipschitz(graph, node, p, [L[i] for i in node.inputs])
        if v is None:
            from ..errors import UnsupportedOperation
            raise UnsupportedOperation([(node.name, node.op)], detail="no region-free Lipschitz constant for this op")
        L[node.name] = float(v)
    # output is not a linear layer: |c . y| differences <= ||c||_q ||y diff||_p
    return C.norm(p=q, dim=1) * L[out.name]
