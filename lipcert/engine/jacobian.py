"""Bounds on the Jacobian (and its dual norm) of ``C @ f`` over a region, through the gradient graph.

The forward graph is bounded first at batch ``B``; the joint graph is then bounded at batch
``B * K`` (sample ``b``, spec row ``k`` at index ``b * K + k``) with the forward bounds reused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .config import BoundConfig, JacobianOptions
from .schedule import compute_bounds, spec_bounds
from ..gradient import build_gradient_graph
from ..rules import Interval, RelaxContext
from .norms import finish, interval_norm, linear_norm_spec


@dataclass(frozen=True)
class JacobianBounds:
    lower: torch.Tensor        # [B, K, *input_shape]
    upper: torch.Tensor        # [B, K, *input_shape]
    norm_upper: torch.Tensor   # [B, K]
    forward: dict              # forward-graph bounds used (batch B)
    joint: dict                # bounds of every joint-graph node (batch B * K)
    gradient_graph: object     # the GradientGraph they belong to


def forward_bounds(graph, box: Interval, method: str, *, alpha_steps=20, max_memory_gb=2.0,
                   ctx: Optional[RelaxContext] = None) -> dict:
    """Bounds of every forward node, tuned for gradient bounds: with alpha-crown the objective of
    a ReLU pre-activation is its instability ``min(u+, (-l)+)`` (only stability matters to the
    ReLU gradient relaxation), of a smooth pre-activation its width."""
    objective = "stability" if graph.is_piecewise_linear() else "width"
    cfg = BoundConfig(method=JacobianOptions.for_method(method).forward, alpha_steps=alpha_steps, objective=objective,
                      max_memory_gb=max_memory_gb)
    boxes = {graph.input: box}
    if not cfg.optimizes:
        return compute_bounds(graph, boxes, cfg, ctx=ctx)
    # every node's optimised bounds stay inside its plain CROWN bounds, so that alpha-crown can
    # only make more neurons stable than crown does
    plain = compute_bounds(graph, boxes, BoundConfig(method="crown", max_memory_gb=max_memory_gb), ctx=ctx)
    return compute_bounds(graph, boxes, cfg, ctx=ctx, intersect_with=plain)


def jacobian_bounds_from(graph, box: Interval, C: torch.Tensor, method: str, norm: str, fwd_bounds: dict, *,
                         alpha_steps=20, max_memory_gb=2.0, ctx: Optional[RelaxContext] = None,
                         gradient_graph=None, record: Optional[dict] = None) -> JacobianBounds:
    """Jacobian bounds given forward bounds (``fwd_bounds`` at batch B). ``C`` is ``[K, n_out]``
    (the same rows for every sample) or ``[B, K, n_out]`` (rows per sample)."""
    B, K = box.lower.shape[0], C.shape[-2]
    opts = JacobianOptions.for_method(method)
    gg = gradient_graph or build_gradient_graph(graph, opts.relu_mode)
    jg = gg.graph
    known = {name: iv.repeat_interleave(K) for name, iv in fwd_bounds.items()}
    out_shape = graph[graph.output].shape
    C = C.to(box.lower)
    cvals = (C.repeat(B, 1) if C.dim() == 2 else C.reshape(B * K, -1)).reshape(B * K, *out_shape)
    boxes = {graph.input: box.repeat_interleave(K), gg.spec_input: Interval.point(cvals)}
    smooth = not graph.is_piecewise_linear()
    gmethod = "alpha-crown" if (opts.gradient_alpha and smooth) else opts.gradient
    cfg = BoundConfig(method=gmethod, alpha_steps=alpha_steps, objective="width", max_memory_gb=max_memory_gb)
    ectx = _expand_ctx(ctx, K)
    gb = compute_bounds(jg, boxes, cfg, known=known, ctx=ectx)
    J = gb[gg.jacobian]
    in_shape = graph[graph.input].shape
    d = J.lower[0].numel()
    if opts.back_substitute:
        eye = torch.eye(d, dtype=J.lower.dtype, device=J.lower.device)
        spec = eye.reshape(d, 1, *in_shape).expand(d, B * K, *in_shape)
        lo, up = spec_bounds(jg, gg.jacobian, spec, gb, cfg, ctx=ectx)
        J = J.intersect(Interval(lo.reshape(J.lower.shape), up.reshape(J.upper.shape)))
    nup = interval_norm(J.lower, J.upper, norm)
    lin = linear_norm_spec(J.lower, J.upper, norm) if opts.back_substitute else None
    if lin is not None:
        a, b = lin
        _, up = spec_bounds(jg, gg.jacobian, a.unsqueeze(0), {**gb, gg.jacobian: J}, cfg, ctx=ectx, lower=False,
                            record=record)
        nup = torch.minimum(nup, finish(up[:, 0] + b, norm))
    gb[gg.jacobian] = J
    return JacobianBounds(J.lower.reshape(B, K, *in_shape), J.upper.reshape(B, K, *in_shape),
                          nup.reshape(B, K), fwd_bounds, gb, gg)


def _expand_ctx(ctx, K):
    if ctx is None or not ctx.splits:
        return ctx
    return RelaxContext({k: v.repeat_interleave(K, 0) for k, v in ctx.splits.items()})


def jacobian_bounds_pass(graph, box: Interval, C: torch.Tensor, method: str, norm: str, *, alpha_steps=20,
                         max_memory_gb=2.0) -> JacobianBounds:
    """Forward bounds, then Jacobian bounds; for alpha-crown on nets with smooth activations the
    plain CROWN result is computed too and the smaller norm bound kept per output (optimising one
    objective can loosen another; for piecewise-linear nets tighter forward bounds can only
    shrink the relaxed gradient set, so no second pass is needed)."""
    opts = JacobianOptions.for_method(method)
    fb = forward_bounds(graph, box, opts, alpha_steps=alpha_steps, max_memory_gb=max_memory_gb)
    res = jacobian_bounds_from(graph, box, C, opts, norm, fb, alpha_steps=alpha_steps, max_memory_gb=max_memory_gb)
    if opts.smooth_fallback and not graph.is_piecewise_linear():
        plain = JacobianOptions()
        fb2 = forward_bounds(graph, box, plain, max_memory_gb=max_memory_gb)
        res2 = jacobian_bounds_from(graph, box, C, plain, norm, fb2, max_memory_gb=max_memory_gb)
        better = res2.norm_upper < res.norm_upper
        res = JacobianBounds(torch.maximum(res.lower, res2.lower), torch.minimum(res.upper, res2.upper),
                             torch.where(better, res2.norm_upper, res.norm_upper), res.forward, res.joint,
                             res.gradient_graph)
    return res
