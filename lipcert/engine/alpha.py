"""alpha-CROWN: optimise the free parameters of relaxations for one bounding objective.

Every optimisable relaxation (the lower slope of an unstable (leaky) ReLU, the McCormick mixing
weight of a product) has a parameter in ``[0, 1]`` for which the relaxation is valid whatever its
value, so any parameter gives a sound bound. Parameters are kept per spec row and per side
(lower/upper pass), optimised with Adam, projected to ``[0, 1]`` after each step, and the best
bound seen for each row is kept (a running max of sound lower bounds is sound).
The engine owns the parameters; the rules only read them.
"""
from __future__ import annotations

import torch

from ..rules import lookup
from .crown import backward_bounds


def _objective(lo, up, kind):
    if kind == "spec":
        loss = 0
        if lo is not None:
            loss = loss - lo.sum()
        if up is not None:
            loss = loss + up.sum()
        return loss
    if kind == "stability":  # distance of each unstable neuron to the nearer stable side
        return torch.minimum(up.clamp(min=0), (-lo).clamp(min=0)).sum()
    return (up - lo).sum()


def _free_params(graph, root, bounds):
    """Nodes among the ancestors of ``root`` whose relaxation has a parameter that matters."""
    out = []
    for name in graph.ancestors(root) - {root}:
        node = graph[name]
        if node.op == "input":
            continue
        rule = lookup(node)
        if rule.linear or not rule.optimizable:
            continue
        ivs = [bounds[i] for i in node.inputs]
        masks = rule.needs_bounds(node, ivs)
        if any(m is not None and bool(m.any()) for m in masks):
            out.append(node)
    return out


def optimize_alpha(graph, root, spec, bounds, cfg, ctx, *, init, objective, lower=True, upper=True):
    """Optimised bounds ``(lower [B, S], upper [B, S])`` of ``spec . root``, never worse than
    ``init``; None when nothing is optimisable."""
    nodes = _free_params(graph, root, bounds)
    if not nodes or cfg.alpha_steps <= 0:
        return None
    S, B = spec.shape[0], spec.shape[1]
    itemsize = spec.element_size()
    biggest = max(graph[n].numel for n in graph.ancestors(root))
    rows_per_chunk = max(1, int(cfg.max_memory_gb * 2**30 // (12 * B * biggest * itemsize)))
    best_lo, best_up = init
    best_lo = None if best_lo is None else best_lo.clone()
    best_up = None if best_up is None else best_up.clone()
    for start in range(0, S, rows_per_chunk):
        rows = slice(start, min(S, start + rows_per_chunk))
        sub = spec[rows].detach()
        params = {}
        for node in nodes:
            a0 = lookup(node).init_alpha(node, [bounds[i] for i in node.inputs]).detach()
            params[node.name] = a0.unsqueeze(0).unsqueeze(0).expand(2, sub.shape[0], *a0.shape).clone().requires_grad_(True)
        opt = torch.optim.Adam(list(params.values()), lr=cfg.alpha_lr)
        with torch.enable_grad():
            for step in range(cfg.alpha_steps + 1):
                lo, up = backward_bounds(graph, root, sub, bounds, lower=lower, upper=upper, alpha=params, ctx=ctx)
                if lo is not None:
                    best_lo[:, rows] = torch.maximum(best_lo[:, rows], lo.detach())
                if up is not None:
                    best_up[:, rows] = torch.minimum(best_up[:, rows], up.detach())
                if step == cfg.alpha_steps:
                    break
                loss = _objective(lo, up, objective)
                if not loss.requires_grad:  # no free parameter reaches this objective
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for p in params.values():
                        p.clamp_(0, 1)
    return best_lo, best_up
