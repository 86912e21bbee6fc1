"""Backward linear bound propagation (CROWN) over a DAG.

``backward_bounds`` bounds ``spec . value(root)`` for ``S`` linear functions at once. It walks the
ancestors of ``root`` in reverse topological order carrying coefficients ``A [S, B, *node.shape]``
for the lower and the upper bound; a node with several inputs hands a coefficient to each of them
and coefficients meeting at a node are summed. At an input node the linear function is maximised
(minimised) over the input box in closed form.

Soundness: by induction over the reverse order, ``spec . root >= sum_n lA_n . value(n) + lbias``
holds for every point of the input box, because each step replaces a node by a valid lower
(upper) linear bound chosen by the sign of its coefficient; at the inputs the bound is concretised
by the exact extremum of a linear function over a box.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..graph import ops
from ..graph.ir import Graph
from ..rules import Interval, RelaxContext, lookup


def concretize(A: torch.Tensor, box: Interval, upper: bool) -> torch.Tensor:
    """max (upper) or min of ``A . x`` over ``x`` in the box; ``A [S, B, *shape]`` -> ``[S, B]``."""
    mid = ((box.upper + box.lower) / 2).unsqueeze(0)
    rad = ((box.upper - box.lower) / 2).unsqueeze(0)
    centre = (A * mid).flatten(2).sum(-1)
    spread = (A.abs() * rad).flatten(2).sum(-1)
    return centre + spread if upper else centre - spread


def _dot(A: torch.Tensor, b) -> torch.Tensor:
    """``sum over the node's positions of A * b`` -> ``[S, B]``; a bias without a spec dimension is
    contracted without materialising ``A * b`` (one read of ``A``)."""
    if not torch.is_tensor(b):
        return A.flatten(2).sum(-1) * b
    if b.dim() == A.dim():                       # per-spec bias (optimised slopes)
        return (A * b).flatten(2).sum(-1)
    bb = torch.broadcast_to(b, A.shape[1:]).reshape(A.shape[1], -1).to(A.dtype)
    return torch.einsum("sbn,bn->sb", A.flatten(2), bb)


def _pass_through(A, relax, upper: bool):
    """Coefficients for a node's inputs and the constant term, from its relaxation.

    For an upper bound a positive coefficient takes the upper relaxation and a negative one the
    lower relaxation; for a lower bound the reverse. Written as
    ``A * other + max(A, 0) * (main - other)`` (one clamp; ``other`` is the slope a negative
    coefficient takes), which is the same sum; the constant is contracted the same way."""
    pos = A.clamp(min=0)
    if upper:
        main_s, main_b, other_s, other_b = relax.upper_slopes, relax.upper_bias, relax.lower_slopes, relax.lower_bias
    else:
        main_s, main_b, other_s, other_b = relax.lower_slopes, relax.lower_bias, relax.upper_slopes, relax.upper_bias
    outs = []
    for ms, os_ in zip(main_s, other_s):
        if ms is None and os_ is None:
            outs.append(None)
            continue
        if os_ is None:
            outs.append(pos * ms)
            continue
        out = A * os_
        out.addcmul_(pos, os_.neg() if ms is None else ms - os_)
        outs.append(out)
    const = _dot(A, other_b) + _dot(pos, main_b - other_b)
    return outs, const


def backward_bounds(graph: Graph, root: str, spec: torch.Tensor, bounds: dict, *,
                    lower: bool = True, upper: bool = True, alpha: Optional[dict] = None,
                    ctx: Optional[RelaxContext] = None, relax_cache: Optional[dict] = None,
                    record: Optional[dict] = None):
    """Bounds of ``spec . value(root)`` over the input boxes.

    Args:
        graph: the DAG.
        root: node whose value is bounded.
        spec: ``[S, B, *root.shape]`` coefficients.
        bounds: ``name -> Interval`` for every input node (its box) and for every nonlinear node's
            inputs among the ancestors of ``root``.
        lower, upper: which side to compute.
        alpha: optional ``name -> Tensor [2, S, B, *shape]`` of optimisable parameters for the
            lower (index 0) and upper (index 1) pass.
        ctx: BaB split decisions.
        relax_cache: optional dict used to memoise relaxations without ``alpha`` across calls
            (valid while ``bounds`` of the relaxed nodes' inputs do not change).
        record: optional dict; for each of its keys that is a node name, the upper-bound
            coefficient reaching that node is stored under it (used by BaB branching scores).

    Returns:
        ``(lower [B, S] | None, upper [B, S] | None)``; holds for every point of the input boxes.
    """
    S, B = spec.shape[0], spec.shape[1]
    keep = graph.ancestors(root)
    lA = {root: spec} if lower else {}
    uA = {root: spec} if upper else {}
    lb = spec.new_zeros(S, B)
    ub = spec.new_zeros(S, B)
    for node in reversed(graph.nodes):
        name = node.name
        if name not in keep:
            continue
        la, ua = lA.pop(name, None), uA.pop(name, None)
        if la is None and ua is None:
            continue
        if record is not None and name in record:
            record[name] = ua
        if node.op == ops.INPUT:
            box = bounds[name]
            if la is not None:
                lb = lb + concretize(la, box, upper=False)
            if ua is not None:
                ub = ub + concretize(ua, box, upper=True)
            continue
        rule = lookup(node)
        try:
            if rule.linear:
                in_shapes = [graph[i].shape for i in node.inputs]
                for A, acc, side in ((la, lA, 0), (ua, uA, 1)):
                    if A is None:
                        continue
                    As, const = rule.backward(node, A, in_shapes)
                    if const is not None:
                        if side == 0:
                            lb = lb + const
                        else:
                            ub = ub + const
                    _accumulate(acc, node.inputs, As)
            else:
                ivs = [bounds.get(i) for i in node.inputs]
                for A, acc, side in ((la, lA, 0), (ua, uA, 1)):
                    if A is None:
                        continue
                    a = None if alpha is None else alpha.get(name)
                    if a is not None:
                        relax = rule.relax(node, ivs, alpha=a[side], ctx=ctx)
                    elif relax_cache is not None and name in relax_cache:
                        relax = relax_cache[name]
                    else:
                        relax = rule.relax(node, ivs, ctx=ctx)
                        if relax_cache is not None:
                            relax_cache[name] = relax
                    As, const = _pass_through(A, relax, upper=(side == 1))
                    if side == 0:
                        lb = lb + const
                    else:
                        ub = ub + const
                    _accumulate(acc, node.inputs, As)
        except Exception as e:  # name the node, as torch.fx's interpreter does
            if getattr(e, "_lipcert_node", False):
                raise
            e.args = (f"{e.args[0] if e.args else e!r}\n  while bounding {node.describe()}",) + tuple(e.args[1:])
            e._lipcert_node = True
            raise
    return (lb.transpose(0, 1) if lower else None), (ub.transpose(0, 1) if upper else None)


def _accumulate(acc: dict, names, As):
    for name, A in zip(names, As):
        if A is None:
            continue
        acc[name] = acc[name] + A if name in acc else A
