"""Best-first branch-and-bound over (output class, domain) pairs.

One search for all classes: the certificate is the max over classes, so the domain with the
largest upper bound is always split next, whatever its class (the reference implementation splits
its time equally over classes). Each step takes the ``batch`` worst open domains, splits each in
two (a ReLU pre-activation ``z >= 0`` / ``z <= 0``, or the input box at the midpoint of one
dimension; for inputs of dimension <= 16 by default "hybrid": the box while a domain has many
unstable neurons, ReLUs after), bounds the children in one batched pass with plain CROWN reusing the parent's
intermediate bounds, drops infeasible children and those whose bound is below the best lower
bound, and settles children with no unstable neuron (their bound cannot improve by ReLU splits).

Anytime: at every moment ``upper = max(open, settled, pruned bounds)`` is a valid certificate
(children cover their parent: ``z >= 0`` or ``z <= 0`` holds everywhere, and the two half boxes
cover the box), and ``lower`` is the best difference quotient found.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..attack.pgd import _own_grads, certify_points, dual_norm
from .bounding import Setting, bound_domains
from .domain import Domains


@dataclass(frozen=True)
class BaBConfig:
    time_limit: float = 60.0       # seconds
    rtol: float = 1e-3             # stop when upper <= (1 + rtol) * lower
    batch: int = 64                # domains split per step
    max_domains: int = 200_000     # stop when the open set grows beyond this
    split: str = "auto"            # "auto" | "relu" | "input" | "hybrid"
    input_dim_limit: int = 16      # input splitting is considered up to this input dimension
    hybrid_free: int = 8           # hybrid: ReLU splits once a domain has at most this many unstable neurons
    progress: bool = False         # show a rich progress line


@dataclass
class BaBResult:
    per_output_upper: torch.Tensor
    lower: float
    per_output_lower: torch.Tensor
    x1: torch.Tensor
    x2: torch.Tensor
    output: int
    status: str
    domains_bounded: int
    steps: int
    split: str
    history: list = field(default_factory=list)   # (seconds, lower, upper)


def _split(st: Setting, parents: Domains, mode: str, hybrid_free: int = 8):
    """Two children per parent: ``(lo, up, splits, cls, parent_fwd)`` with children 0..P-1 the
    first halves and P..2P-1 the second. "hybrid" bisects the input while a domain has more than
    ``hybrid_free`` unstable neurons and splits a ReLU after (near points where several kinks
    meet, boxes keep straddling them and bisection alone converges slowly)."""
    P = len(parents)
    dev = parents.lo.device
    if mode == "relu":
        use_input = torch.zeros(P, dtype=torch.bool, device=dev)
    elif mode == "input":
        use_input = torch.ones(P, dtype=torch.bool, device=dev)
    else:
        use_input = parents.n_free > hybrid_free
    use_input |= parents.score_relu == -torch.inf  # nothing unstable left: only the box can split
    lo = parents.lo.repeat(2, *([1] * (parents.lo.dim() - 1)))
    up = parents.up.repeat(2, *([1] * (parents.up.dim() - 1)))
    splits = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in parents.splits.items()}
    rows = torch.arange(P, device=dev)
    # input bisection
    ii = rows[use_input]
    if len(ii):
        dim = parents.pick_input[ii]
        flo, fup = lo.reshape(2 * P, -1), up.reshape(2 * P, -1)
        mid = (flo[ii, dim] + fup[ii, dim]) / 2
        fup[ii, dim] = mid
        flo[ii + P, dim] = mid
    # ReLU split
    rr = rows[~use_input]
    for j in rr.tolist():
        node_idx, pos = parents.pick_relu[j].tolist()
        name = st.relu_inputs[node_idx]
        splits[name].reshape(2 * P, -1)[j, pos] = 1
        splits[name].reshape(2 * P, -1)[j + P, pos] = -1
    cls = parents.cls.repeat(2)
    from ..rules import Interval
    fwd = {k: Interval(v.lower.repeat(2, *([1] * (v.lower.dim() - 1))), v.upper.repeat(2, *([1] * (v.upper.dim() - 1))))
           for k, v in parents.fwd.items()}
    return lo, up, splits, cls, fwd


def bab_search(st: Setting, box, root_upper: torch.Tensor, lower: float, best_pts: torch.Tensor,
               cfg: BaBConfig, region_lo: torch.Tensor, region_up: torch.Tensor) -> BaBResult:
    """Search from per-class root bounds ``root_upper [K]`` and a certified ``lower`` whose witness
    points are ``best_pts [K, *shape]`` (one per class)."""
    t0 = time.perf_counter()
    K = st.C.shape[0]
    in_shape = tuple(box.lower.shape[1:])
    d = box.lower[0].numel()
    dt = box.lower.dtype
    dev = box.lower.device
    per_lower = torch.zeros(K, dtype=dt, device=dev)
    pair = {}

    def improve_lower(pts, cls, lo_b, up_b):
        nonlocal lower
        q, x1, x2 = certify_points(st.graph, lo_b, up_b, pts, st.C[cls], st.norm)
        for i in range(len(q)):
            k = int(cls[i])
            if q[i] > per_lower[k]:
                per_lower[k] = q[i]
                pair[k] = (x1[i].clone(), x2[i].clone())
        lower = max(lower, float(per_lower.max()))

    improve_lower(best_pts, torch.arange(K, device=dev), region_lo.expand(K, *in_shape), region_up.expand(K, *in_shape))
    closed_max = torch.full((K,), -torch.inf, dtype=dt, device=dev)  # settled or pruned domains, per class

    def zero_splits(D, fwd):
        return {z: torch.zeros((D,) + tuple(fwd[z].lower.shape[1:]), dtype=torch.int8, device=dev)
                for z in st.relu_inputs}

    # root domains, one per class still above the lower bound
    cls = torch.arange(K, device=dev)
    lo = box.lower.expand(K, *in_shape).clone()
    up = box.upper.expand(K, *in_shape).clone()
    from ..engine.schedule import compute_bounds
    from .bounding import CROWN
    from ..rules import Interval
    fb0 = compute_bounds(st.graph, {st.graph.input: box}, CROWN)
    splits0 = {z: torch.zeros((K,) + tuple(fb0[z].lower.shape[1:]), dtype=torch.int8, device=dev)
               for z in st.relu_inputs}
    fwd0 = {k: Interval(v.lower.expand(K, *v.lower.shape[1:]), v.upper.expand(K, *v.upper.shape[1:])) for k, v in fb0.items()}
    doms = bound_domains(st, lo, up, splits0, cls, fwd0)
    doms.ub = torch.minimum(doms.ub, root_upper.to(dt))
    piecewise = st.graph.is_piecewise_linear()
    mode = cfg.split if piecewise else "input"
    if mode == "auto":  # measured on 2-64-64-2 nets: hybrid beats pure input or ReLU splitting
        mode = "hybrid" if d <= cfg.input_dim_limit else "relu"
    steps = bounded = 0
    history = [(0.0, lower, float(doms.ub.max()))]
    status = "time_limit"
    progress = _Progress(cfg.progress)
    try:
        while True:
            # settle and prune
            keep = doms.ub > lower
            if (~keep).any():
                _scatter_max(closed_max, doms.cls[~keep], doms.ub[~keep])
            # with no unstable ReLU left (piecewise-linear nets), the gradient is constant on the
            # domain: its bound is exact and no split can lower it
            settled = keep & (doms.score_relu == -torch.inf) & piecewise
            if settled.any():
                sel = settled.nonzero().flatten()
                boxes = torch.stack([(doms.splits[z][sel] != 0).reshape(len(sel), -1).any(1)
                                     for z in st.relu_inputs]).any(0) == 0 if st.relu_inputs else \
                    torch.ones(len(sel), dtype=torch.bool, device=dev)
                empty = torch.zeros(len(sel), dtype=torch.bool, device=dev)
                if boxes.any():  # a plain box: f is affine on it, a witness at its centre is exact
                    b = sel[boxes]
                    improve_lower((doms.lo[b] + doms.up[b]) / 2, doms.cls[b], doms.lo[b], doms.up[b])
                if (~boxes).any():
                    empty[~boxes] = _settle_patterns(st, doms, sel[~boxes], lower, improve_lower)
                _scatter_max(closed_max, doms.cls[sel[~empty]], doms.ub[sel[~empty]])
                keep &= ~settled
            doms = doms.take(keep.nonzero().flatten())
            upper_now = max(float(doms.ub.max()) if len(doms) else -torch.inf, float(closed_max.max()), lower)
            history.append((time.perf_counter() - t0, lower, upper_now))
            progress.update(lower, upper_now, len(doms), time.perf_counter() - t0, cfg.time_limit)
            if len(doms) == 0:
                status = "optimal" if upper_now <= lower * (1 + cfg.rtol) + 1e-12 else "exhausted"
                break
            if upper_now <= lower * (1 + cfg.rtol):
                status = "converged"
                break
            if time.perf_counter() - t0 > cfg.time_limit:
                status = "time_limit"
                break
            if len(doms) > cfg.max_domains:
                status = "domain_limit"
                break
            n = min(cfg.batch, len(doms))
            order = doms.ub.argsort(descending=True)
            parents, rest = doms.take(order[:n]), doms.take(order[n:])
            lo, up, splits, cls, fwd = _split(st, parents, mode, cfg.hybrid_free)
            children = bound_domains(st, lo, up, splits, cls, fwd)
            children.ub = torch.minimum(children.ub, parents.ub.repeat(2))  # a child is inside its parent
            bounded += len(children)
            steps += 1
            # lower bound: gradient norms at the centres of the best children boxes
            if mode != "relu" or steps % 4 == 0:
                top = children.ub.argsort(descending=True)[: min(16, len(children))]
                centres = (children.lo[top] + children.up[top]) / 2
                g = _own_grads(st.graph, centres, st.C[children.cls[top]])
                gn = dual_norm(g.unsqueeze(1), st.norm)[:, 0]
                good = gn > per_lower[children.cls[top]]
                if good.any():
                    sel = top[good]
                    improve_lower(centres[good], children.cls[sel], children.lo[sel], children.up[sel])
            doms = Domains.cat([rest, children.take((children.ub > -torch.inf).nonzero().flatten())])
    finally:
        progress.close()
    per_upper = closed_max.clone()
    if len(doms):
        _scatter_max(per_upper, doms.cls, doms.ub)
    per_upper = torch.maximum(per_upper, per_lower)  # classes fully pruned: lower is still a bound... see below
    # a class whose every domain was pruned below the global lower bound has upper <= lower; the
    # max over classes is unaffected, and per class we report what was proved for it
    per_upper = torch.where(per_upper == -torch.inf, torch.zeros_like(per_upper), per_upper)
    k = int(per_lower.argmax())
    x1, x2 = pair.get(k, (best_pts[k], best_pts[k]))
    return BaBResult(per_upper, float(per_lower.max()), per_lower, x1, x2, k, status, bounded, steps, mode, history)


def _scatter_max(target, idx, vals):
    target.scatter_reduce_(0, idx, vals.to(target.dtype), reduce="amax")


class _Progress:
    def __init__(self, on: bool):
        self.bar = None
        if on:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("BaB"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                transient=False)
            self.task = self.bar.add_task("", total=1.0)
            self.bar.start()

    def update(self, lower, upper, n_open, elapsed, limit):
        if self.bar is not None:
            ratio = upper / lower if lower > 0 else float("inf")
            self.bar.update(self.task, completed=min(1.0, elapsed / max(limit, 1e-9)),
                            description=f"L in [{lower:.5g}, {upper:.5g}] ratio {ratio:.4f}, {n_open} open domains")

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def _settle_patterns(st, doms, sel, lower, improve_lower):
    """For domains whose every neuron has a fixed phase: an LP finds an interior point of the
    pattern's linear region (a witness pair there realises the domain's exact value) or proves
    the region empty. Returns the mask (over ``sel``) of empty domains."""
    from ..exact.pattern import interior_point
    empty = torch.zeros(len(sel), dtype=torch.bool, device=sel.device)
    for n, j in enumerate(sel.tolist()):
        if doms.ub[j] <= lower:
            continue
        phases = {}
        for z in st.relu_inputs:
            sp, zb = doms.splits[z][j], doms.fwd[z]
            phases[z] = ((sp > 0) | ((sp == 0) & (zb.lower[j] >= 0) & (zb.upper[j] > 0))).to(torch.int8)
        lo, up = doms.lo[j], doms.up[j]
        pt, margin = interior_point(st.graph, lo, up, phases)
        if margin < -1e-9:
            empty[n] = True
        elif margin > 0:
            r = margin / math.sqrt(lo.numel()) * 0.5
            improve_lower(pt[None], doms.cls[j:j + 1], torch.maximum(pt - r, lo)[None], torch.minimum(pt + r, up)[None])
    return empty
