"""Backward linear bound propagation (CROWN) over a DAG.

``backward_bounds`` bounds ``spec . value(root)`` for ``S`` linear functions at once. It walks the
ancestors of ``root`` in reverse topological order carrying coefficients ``A [S, B, *node.shape]``
for the lower and the upper bound; a node with several inputs hands a coefficient to each of them
and coefficients meeting at a node are summed. At an input node the linear function is maximised
(minimised) over the input box in closed form.

Soundness: by induction over the reverse order, ``spec . root >= sum_n lA_n . value(n) + lbias``
holds for every point of the input box, because each step replaces a node by a valid lower
(upper) linear bound chosen by the sign of its coefficient; at the inputs the bound is concretised
by the exact extremum of a linear function over a box. In floating point each step is off by a
bounded amount that is accumulated and paid out of the bound (``lipcert.rounding``, step 3).
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import rounding
from ..graph import ops
from ..graph.ir import Graph
from ..rules import Interval, LinearRule, RelaxContext, lookup
from ..rules.passthrough import dot as _dot


def concretize(A: torch.Tensor, box: Interval, upper: bool) -> torch.Tensor:
    """max (upper) or min of ``A . x`` over ``x`` in the box; ``A [S, B, *shape]`` -> ``[S, B]``."""
    mid = ((box.upper + box.lower) / 2).unsqueeze(0)
    rad = ((box.upper - box.lower) / 2).unsqueeze(0)
    centre = (A * mid).flatten(2).sum(-1)
    spread = (A.abs() * rad).flatten(2).sum(-1)
    return centre + spread if upper else centre - spread


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
    # rounding (lipcert.rounding step 3): errors of the computed pass, per side, and the sum of
    # the constants' absolute values (their additions round too)
    err = {0: spec.new_zeros(S, B), 1: spec.new_zeros(S, B)}
    cabs = {0: spec.new_zeros(S, B), 1: spec.new_zeros(S, B)}
    mags: dict = {}

    def mag(n):
        if n not in mags:
            mags[n] = rounding.magnitude(bounds[n]) if n in bounds else None
        return mags[n]

    def add_error(side, A, v):
        if v is not None and not (isinstance(v, (int, float)) and v == 0):
            err[side] = err[side] + _dot(A.abs(), v)

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
            n = box.lower[0].numel()
            for A, side in ((la, 0), (ua, 1)):
                if A is None:
                    continue
                val = concretize(A, box, upper=(side == 1))
                cabs[side] = cabs[side] + val.abs()
                if side == 0:
                    lb = lb + val
                else:
                    ub = ub + val
                add_error(side, A, rounding.gamma(n + 3, A.dtype) * 2 * mag(name))
            continue
        rule = lookup(node)
        try:
            if rule.linear:
                in_shapes = [graph[i].shape for i in node.inputs]
                in_mags = [mag(i) for i in node.inputs]
                if any(m is None for m in in_mags) and type(rule).rounding is not LinearRule.rounding:
                    raise RuntimeError("internal: no bounds of the inputs of a linear node, needed for "
                                       "its rounding error")
                terms = rule.rounding(node, in_mags)
                v = sum(rounding.gamma(k, spec.dtype) * t for k, t in terms) if terms else None
                for A, acc, side in ((la, lA, 0), (ua, uA, 1)):
                    if A is None:
                        continue
                    As, const = rule.backward(node, A, in_shapes)
                    if const is not None:
                        cabs[side] = cabs[side] + const.abs()
                        if side == 0:
                            lb = lb + const
                        else:
                            ub = ub + const
                    add_error(side, A, v)
                    _accumulate(acc, node.inputs, As, err, side, mag)
            else:
                ivs = [bounds.get(i) for i in node.inputs]
                in_mags = [None if iv is None else mag(i) for i, iv in zip(node.inputs, ivs)]
                for A, acc, side in ((la, lA, 0), (ua, uA, 1)):
                    if A is None:
                        continue
                    a = None if alpha is None else alpha.get(name)
                    As, const, e = rule.linearize(node, A, ivs, in_mags, upper=(side == 1),
                                                  alpha=None if a is None else a[side], ctx=ctx, cache=relax_cache)
                    cabs[side] = cabs[side] + const.abs()
                    if side == 0:
                        lb = lb + const
                    else:
                        ub = ub + const
                    err[side] = err[side] + e
                    _accumulate(acc, node.inputs, As, err, side, mag)
        except Exception as e:  # name the node, as torch.fx's interpreter does
            if getattr(e, "_lipcert_node", False):
                raise
            e.args = (f"{e.args[0] if e.args else e!r}\n  while bounding {node.describe()}",) + tuple(e.args[1:])
            e._lipcert_node = True
            raise
    g_nodes = rounding.gamma(len(keep) + 2, spec.dtype)
    if lower:
        lb = lb - (err[0] + g_nodes * cabs[0]) * (1 + g_nodes)
    if upper:
        ub = ub + (err[1] + g_nodes * cabs[1]) * (1 + g_nodes)
    return (lb.transpose(0, 1) if lower else None), (ub.transpose(0, 1) if upper else None)


def _accumulate(acc: dict, names, As, err=None, side=0, mag=None):
    """Sum the coefficients meeting at a node; each addition is off by at most ``u`` times the
    computed sum (counted twice to cover the rounding of the count itself)."""
    for name, A in zip(names, As):
        if A is None:
            continue
        if name in acc:
            acc[name] = acc[name] + A
            m = None if mag is None else mag(name)
            if err is not None and m is not None:
                err[side] = err[side] + _dot(acc[name].abs(), 2 * rounding.unit(A.dtype) * m)
            elif err is not None:
                raise RuntimeError(f"internal: no bounds of node {name!r}, needed for its rounding error")
        else:
            acc[name] = A
