"""Which node gets which bounds, in which order.

One topological sweep: every node gets IBP bounds from its inputs' current bounds; a node that
feeds a nonlinear node is then tightened by CROWN (spec = one-hot rows, only at the positions its
consumers' relaxations read, e.g. unstable ReLUs) and intersected with IBP; with alpha-crown the
slopes of the optimisable relaxations among its ancestors are then optimised for that node.
Intersections of sound bounds are sound, so each node keeps the best of everything computed.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import rounding
from ..graph.ir import Graph
from ..rules import Interval, RelaxContext, lookup
from .alpha import optimize_alpha
from .config import BoundConfig
from .crown import backward_bounds


def ibp_node(graph: Graph, node, bounds: dict, ctx: Optional[RelaxContext]) -> Interval:
    """Interval bounds of ``node`` from its inputs', widened by the rounding of computing them
    (``lipcert.rounding`` step 5)."""
    rule = lookup(node)
    ivs = [bounds[i] for i in node.inputs]
    try:
        if rule.linear:
            iv = rule.ibp(node, *ivs)
            terms = rule.rounding(node, [rounding.magnitude(v) for v in ivs])
            if not terms:
                return iv
            r = sum(2 * rounding.gamma(k, iv.lower.dtype) * t for k, t in terms)
            return Interval(iv.lower - r, iv.upper + r)
        iv = rule.ibp(node, *ivs, ctx=ctx)
        un, tn = rounding.unit(iv.lower.dtype), rounding.tiny(iv.lower.dtype)
        return Interval(iv.lower - (16 * un * iv.lower.abs() + tn), iv.upper + (16 * un * iv.upper.abs() + tn))
    except Exception as e:
        e.args = (f"{e.args[0] if e.args else e!r}\n  while bounding {node.describe()}",) + tuple(e.args[1:])
        raise


def needed_positions(graph: Graph, name: str, consumers: list, bounds: dict, ctx):
    """``(idx, mask)``: flat indices of the positions of ``name`` whose bounds some consumer's
    relaxation reads (union over the batch) and the per-sample need mask ``[B, n]``; None when no
    consumer needs any. Samples are updated only where they need it, so a sample's bounds do not
    depend on which other samples share its batch."""
    mask = None
    for c in consumers:
        cnode = graph[c]
        rule = lookup(cnode)
        if rule.linear:
            continue
        ivs = [bounds.get(i) for i in cnode.inputs]
        masks = rule.needs_bounds(cnode, ivs, ctx=ctx)
        for inp, m in zip(cnode.inputs, masks):
            if inp == name and m is not None:
                m = m.reshape(m.shape[0], -1)
                mask = m if mask is None else (mask | m)
    if mask is None or not bool(mask.any()):
        return None
    return mask.any(0).nonzero().flatten(), mask


def one_hot_spec(idx: torch.Tensor, batch: int, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    spec = like.new_zeros(idx.numel(), batch, n)
    spec[torch.arange(idx.numel(), device=idx.device), :, idx] = 1
    return spec.reshape(idx.numel(), batch, *shape)


def chunked_backward(graph, root, spec_fn, n_rows, bounds, cfg: BoundConfig, **kw):
    """Run ``backward_bounds`` over spec rows in chunks that fit ``cfg.max_memory_gb``."""
    batch = next(iter(bounds[graph.input].lower.shape[:1]))
    itemsize = bounds[graph.input].lower.element_size()
    biggest = max(graph[n].numel for n in graph.ancestors(root))
    per_row = 6 * batch * biggest * itemsize
    chunk = max(1, int(cfg.max_memory_gb * 2**30 // per_row))
    lows, ups = [], []
    for start in range(0, n_rows, chunk):
        rows = torch.arange(start, min(n_rows, start + chunk))
        lo, up = backward_bounds(graph, root, spec_fn(rows), bounds, **kw)
        lows.append(lo)
        ups.append(up)
    cat = (lambda xs: None if xs[0] is None else torch.cat(xs, dim=1))
    return cat(lows), cat(ups)


def compute_bounds(graph: Graph, boxes: dict, cfg: BoundConfig, *, known: Optional[dict] = None,
                   ctx: Optional[RelaxContext] = None, skip_refine: frozenset = frozenset(),
                   stop_at: Optional[str] = None, intersect_with: Optional[dict] = None) -> dict:
    """Bounds of every node of ``graph`` (up to ``stop_at``) over the input ``boxes``.

    Args:
        boxes: ``input name -> Interval [B, *shape]``.
        known: bounds already computed elsewhere (kept as they are, not recomputed).
        skip_refine: names never tightened beyond IBP.
        intersect_with: sound bounds from another run, intersected into each node as soon as it is
            bounded (so that later nodes are computed from the tighter ones).
    Returns:
        ``name -> Interval``; holds for every point of the boxes (and every BaB split in ``ctx``).
    """
    bounds = dict(boxes)
    known = known or {}
    consumers = graph.consumers()
    relax_cache: dict = {}
    for node in graph.nodes:
        name = node.name
        if name in bounds:
            continue
        if name in known:
            bounds[name] = known[name]
            continue
        bounds[name] = _apply_split(ibp_node(graph, node, bounds, ctx), ctx, name)
        if intersect_with is not None and name in intersect_with:
            bounds[name] = bounds[name].intersect(intersect_with[name])
        if cfg.refines and name not in skip_refine:
            need = needed_positions(graph, name, consumers[name], bounds, ctx)
            if need is not None:
                bounds[name] = _apply_split(refine(graph, name, need, bounds, cfg, ctx, relax_cache), ctx, name)
                if intersect_with is not None and name in intersect_with:
                    bounds[name] = bounds[name].intersect(intersect_with[name])
        if name == stop_at:
            break
    return bounds


def refine(graph, name, need, bounds, cfg, ctx, relax_cache) -> Interval:
    """CROWN (and alpha-CROWN) bounds of ``name`` at flat positions ``idx`` (where each sample
    needs them), intersected with the current bounds."""
    idx, mask = need
    node = graph[name]
    cur = bounds[name]
    B = cur.lower.shape[0]
    spec_fn = lambda rows: one_hot_spec(idx[rows], B, node.shape, cur.lower)  # noqa: E731
    lo, up = chunked_backward(graph, name, spec_fn, idx.numel(), bounds, cfg, ctx=ctx, relax_cache=relax_cache)
    if cfg.optimizes:
        res = optimize_alpha(graph, name, spec_fn(torch.arange(idx.numel())), bounds, cfg, ctx,
                             init=(lo, up), objective=cfg.objective)
        if res is not None:
            lo, up = res
    flat_l = cur.lower.reshape(B, -1).clone()
    flat_u = cur.upper.reshape(B, -1).clone()
    use = mask[:, idx]
    flat_l[:, idx] = torch.where(use, torch.maximum(flat_l[:, idx], lo), flat_l[:, idx])
    flat_u[:, idx] = torch.where(use, torch.minimum(flat_u[:, idx], up), flat_u[:, idx])
    return Interval(flat_l.reshape(cur.lower.shape), flat_u.reshape(cur.upper.shape))


def spec_bounds(graph: Graph, root: str, spec: torch.Tensor, bounds: dict, cfg: BoundConfig, *,
                ctx=None, lower=True, upper=True, record=None):
    """Bounds ``[B, S]`` of ``spec . value(root)`` (spec ``[S, B, *root.shape]``), given all
    intermediate ``bounds``; alpha-crown optimises the slopes for this objective too."""
    S = spec.shape[0]
    lo, up = chunked_backward(graph, root, lambda rows: spec[rows], S, bounds, cfg, ctx=ctx,
                              lower=lower, upper=upper, record=record)
    if cfg.optimizes and cfg.optimize_output:
        res = optimize_alpha(graph, root, spec, bounds, cfg, ctx, init=(lo, up), objective="spec",
                             lower=lower, upper=upper)
        if res is not None:
            lo, up = res
    return lo, up


def _apply_split(iv: Interval, ctx, name) -> Interval:
    """In a BaB domain with split ``z >= 0`` (``<= 0``) the pre-activation's bounds are clamped."""
    split = None if ctx is None else ctx.split_of(name)
    if split is None:
        return iv
    lo = torch.where(split > 0, iv.lower.clamp(min=0), iv.lower)
    up = torch.where(split < 0, iv.upper.clamp(max=0), iv.upper)
    return Interval(lo, up)


def enclosure(graph: Graph, x: torch.Tensor) -> Interval:
    """An interval ``[N, n_out]`` containing the exact output of ``graph`` at each point ``x [N, ...]``
    (interval arithmetic on a point, rounded outward)."""
    xw = x.to(graph.float_dtype(x.dtype))
    b = compute_bounds(graph, {graph.input: Interval.point(xw)}, BoundConfig(method="ibp"))
    out = b[graph.output]
    return Interval(out.lower.flatten(1), out.upper.flatten(1))
