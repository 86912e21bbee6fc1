"""Lower bounds on the local Lipschitz constant, each with a witness pair anyone can re-evaluate.

1. sample points in the box (x0, the centre, uniform points) and take the exact gradient dual norm;
2. from the best points, projected ascent on a smoothed gradient norm (ReLU replaced by a sharp
   softplus, so the piecewise-constant norm gets a useful ascent direction), tracking the exact
   norm at every iterate;
3. turn the best point ``x*`` into a *pair*: ``x1, x2 = x* -+ t v`` (moved inward so both lie in
   the box) with ``v`` the direction that realises the dual norm of the gradient, for a few step
   sizes ``t``. The reported lower bound is ``(|c.f(x2) - c.f(x1)| - rounding) / ||x2 - x1||_p``,
   which never exceeds the Lipschitz constant on the region (both points lie in it; the rounding
   margin of the two evaluations is subtracted). No differentiability assumption is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..graph import ops
from ..graph.ir import Graph
from ..rounding import cast_down, gamma
from ..rules import Interval, lookup


@dataclass(frozen=True)
class AttackResult:
    value: torch.Tensor      # [B, K] certified lower bounds (difference quotients)
    grad_norm: torch.Tensor  # [B, K] best exact gradient dual norm seen (an estimate)
    x1: torch.Tensor         # [B, K, *shape] witness pair
    x2: torch.Tensor


def _evaluate(graph: Graph, x: torch.Tensor, smooth: float | None = None) -> torch.Tensor:
    """Graph output ``[N, *out]``; with ``smooth``, (leaky) ReLU is replaced by a softplus of
    sharpness ``smooth`` (only for the ascent direction, never for a reported value)."""
    env = {graph.input: x}
    for node in graph.nodes:
        if node.name in env:
            continue
        xs = [env[i] for i in node.inputs]
        if smooth is not None and node.op in (ops.RELU, ops.LEAKY_RELU):
            a = float(node.attrs.get("negative_slope", 0.0))
            z = xs[0]
            env[node.name] = a * z + (1 - a) * F.softplus(z, beta=smooth)
        else:
            env[node.name] = lookup(node).forward(node, *xs)
    return env[graph.output].flatten(1)


def _grads(graph, x, C, smooth=None, create_graph=False):
    """Gradients ``[N, K, *shape]`` of ``C @ f`` at points ``x [N, *shape]``."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = _evaluate(graph, x, smooth) @ C.T  # [N, K]
        gs = [torch.autograd.grad(y[:, k].sum(), x, create_graph=create_graph, retain_graph=True)[0]
              for k in range(C.shape[0])]
    return torch.stack(gs, 1)


def dual_norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    g = g.flatten(2)
    if norm == "inf":
        return g.abs().sum(-1)
    if norm == "2":
        return g.norm(dim=-1)
    return g.abs().amax(-1)


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit vector (in the primal norm) ``v`` with ``g . v = ||g||_dual``."""
    if norm == "inf":
        return torch.sign(g)
    if norm == "2":
        return g / g.flatten(1).norm(dim=1).clamp(min=1e-30).reshape(-1, *([1] * (g.dim() - 1)))
    flat = g.flatten(1)
    v = torch.zeros_like(flat)
    i = flat.abs().argmax(1)
    r = torch.arange(len(i), device=g.device)
    v[r, i] = torch.sign(flat[r, i])
    return v.reshape(g.shape)


def _primal(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return {"inf": lambda: d.abs().amax(1), "2": lambda: d.norm(dim=1), "1": lambda: d.abs().sum(1)}[norm]()


def _own_grads(graph, x, rows, smooth=None, create_graph=False):
    """Gradient ``[N, *shape]`` of ``rows[n] . f(x[n])`` at each point (one spec row per point)."""
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        y = (_evaluate(graph, x, smooth) * rows).sum()
        (g,) = torch.autograd.grad(y, x, create_graph=create_graph)
    return g


def attack(graph: Graph, box: Optional[Interval], x0: torch.Tensor, C: torch.Tensor, norm: str, *,
           samples: int | None = None, steps: int = 30, starts: int = 4, seed: int = 0,
           witness_graph: Optional[Graph] = None) -> AttackResult:
    """Best lower bound per (input, spec row), with its witness pair. ``box`` must lie inside the
    region (the inward-rounded box); None (no two representable points in the region) gives
    lower bounds 0. Witness pairs are evaluated on ``witness_graph`` (the float64 graph) when
    given. Each input draws its own random points from a generator seeded with ``seed``: its
    result does not depend on the batch."""
    B, K = x0.shape[0], C.shape[0]
    if box is None:
        pts = x0.unsqueeze(1).expand(B, K, *x0.shape[1:]).clone()
        return AttackResult(x0.new_zeros(B, K), x0.new_zeros(B, K), pts, pts.clone())
    x0 = torch.minimum(torch.maximum(x0, box.lower), box.upper)  # x0 rounded to the dtype may lie outside
    shape = tuple(x0.shape[1:])
    if samples is None:  # sampling is what finds the large-gradient regions of small inputs (cheap there)
        samples = 8192 if x0[0].numel() <= 256 else 1024
    lo, up = box.lower, box.upper
    width = up - lo
    best_gn = x0.new_zeros(B, K)
    best_pt = x0.unsqueeze(1).expand(B, K, *shape).clone()
    ar = torch.arange(K, device=x0.device)
    for b in range(B):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        u = torch.rand((samples,) + shape, generator=gen, dtype=x0.dtype).to(x0.device)
        pts = torch.cat([x0[b:b + 1], ((lo[b] + up[b]) / 2).unsqueeze(0), lo[b] + u * width[b]])
        gn = dual_norm(_grads(graph, pts, C), norm)  # [N, K]
        i = gn.argmax(0)
        best_gn[b], best_pt[b] = gn[i, ar], pts[i]
        if steps <= 0 or float(width[b].max()) <= 0:
            continue
        ns = min(starts, len(pts))
        top = gn.topk(ns, dim=0).indices.T.reshape(-1)  # [K * ns], class-major
        cls = ar.repeat_interleave(ns)
        rows = C[cls]  # own spec row per point
        x = pts[top].clone()
        step = width[b] / 8
        beta = _sharpness(width[b])
        for _ in range(steps):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                g = _own_grads(graph, xr, rows, smooth=beta, create_graph=True)
                obj = dual_norm(g.unsqueeze(1), norm).sum()
                # an affine model's gradient does not depend on x: nothing to ascend
                (dx,) = (torch.autograd.grad(obj, xr, allow_unused=True) if obj.requires_grad else (None,))
            if dx is None:
                break
            x = torch.maximum(torch.minimum(x + step * torch.sign(dx), up[b]), lo[b])
            step = step * 0.85
            gn_x = dual_norm(_own_grads(graph, x, rows).unsqueeze(1), norm)[:, 0].reshape(K, ns)
            j = gn_x.argmax(1)
            improve = gn_x[ar, j] > best_gn[b]
            if improve.any():
                cand = x.reshape(K, ns, *shape)[ar, j]
                best_gn[b] = torch.where(improve, gn_x[ar, j], best_gn[b])
                best_pt[b] = torch.where(improve.reshape(K, *([1] * len(shape))), cand, best_pt[b])
    x1, x2, val = _witness_pairs(witness_graph or graph, box, best_pt, C, norm)
    return AttackResult(val, best_gn, x1, x2)


def _sharpness(width: torch.Tensor) -> float:
    w = float(width.max())
    return 10.0 / max(w, 1e-6)


def certify_points(graph, lo, up, pts, rows, norm):
    """Difference-quotient lower bounds at points ``pts [N, *shape]`` for spec rows ``rows [N, n_out]``:
    pairs ``x* -+ t v`` inside the boxes ``[lo, up]`` (``[N, *shape]``), for a few ``t``.
    Returns ``(value [N], x1 [N, *shape], x2 [N, *shape])``; ``value`` is a certified lower bound of
    the Lipschitz constant of ``rows[n] . f`` on any region containing box ``n``: both outputs are
    enclosed by outward-rounded interval arithmetic on the points (``enclosure``), the distance is
    rounded up and the quotient down. Where no positive quotient is found the first pair (two
    distinct points of the box when it has positive width) is kept with value 0."""
    shape = pts.shape[1:]
    wdt = graph.float_dtype(pts.dtype)
    g = _own_grads(graph, pts.to(wdt), rows.to(wdt))
    v = _direction(g, norm).to(pts.dtype)
    width = (up - lo).clamp(min=0)
    scale = width.flatten(1).amax(1).reshape(-1, *([1] * len(shape)))
    best = pts.new_full((pts.shape[0],), -1.0)
    bx1, bx2 = pts.clone(), pts.clone()
    r64 = rows.to(torch.float64)
    with torch.no_grad():
        for rel in (1e-1, 1e-2, 1e-3):
            # step per coordinate, moved inward so that both points stay in the box without clipping
            t = torch.minimum(scale * rel, width / 2)
            centre = torch.minimum(torch.maximum(pts, lo + t), up - t)
            x1 = torch.minimum(torch.maximum(centre - t * v, lo), up)
            x2 = torch.minimum(torch.maximum(centre + t * v, lo), up)
            q = quotient_lower(graph, x1, x2, r64, norm)
            take = q > best
            best = torch.where(take, q, best)
            m = take.reshape(-1, *([1] * len(shape)))
            bx1, bx2 = torch.where(m, x1, bx1), torch.where(m, x2, bx2)
    return cast_down(best.clamp(min=0), pts.dtype), bx1, bx2  # rounded down: still a lower bound


def quotient_lower(graph, x1, x2, rows, norm):
    """A lower bound ``[N]`` of ``|rows . (f(x2) - f(x1))| / ||x2 - x1||_p`` in exact arithmetic."""
    from ..engine.schedule import enclosure
    y1, y2 = enclosure(graph, x1), enclosure(graph, x2)  # [N, n_out] intervals
    dt = y1.lower.dtype
    lo_d = _row_dot(rows, y2.lower, y2.upper, lower=True) - _row_dot(rows, y1.lower, y1.upper, lower=False)
    up_d = _row_dot(rows, y2.lower, y2.upper, lower=False) - _row_dot(rows, y1.lower, y1.upper, lower=True)
    n = rows.shape[1]
    err = gamma(n + 2, dt) * (rows.abs() * (y1.lower.abs() + y1.upper.abs() + y2.lower.abs() + y2.upper.abs())).sum(1)
    dy = (torch.maximum(lo_d, -up_d) - err).clamp(min=0)
    d = (x2.to(dt) - x1.to(dt)).flatten(1)
    dist = _primal(d, norm) * (1 + gamma(d.shape[1] + 2, dt))
    q = torch.where(dist > 0, dy / dist.clamp(min=1e-300), torch.zeros_like(dy))
    return q * (1 - gamma(2, dt))


def _row_dot(rows, lo, up, lower):
    """``min`` (lower) or ``max`` of ``rows . y`` over ``y in [lo, up]`` (computed, not rounded)."""
    pos, neg = rows.clamp(min=0), rows.clamp(max=0)
    if lower:
        return (pos * lo + neg * up).sum(1)
    return (pos * up + neg * lo).sum(1)



def _witness_pairs(graph, box, pts, C, norm):
    """Difference-quotient pairs around each point ``pts [B, K, *shape]``, one sample at a time
    (so that a sample's witness does not depend on the batch it came in)."""
    B, K = pts.shape[:2]
    shape = pts.shape[2:]
    out = [certify_points(graph, box.lower[b:b + 1].expand(K, *shape), box.upper[b:b + 1].expand(K, *shape),
                          pts[b], C, norm) for b in range(B)]
    val = torch.stack([o[0] for o in out])
    x1 = torch.stack([o[1] for o in out])
    x2 = torch.stack([o[2] for o in out])
    return x1, x2, val
