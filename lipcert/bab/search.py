"""Best-first branch-and-bound over (output class, domain) pairs.

One search for all classes: the certificate is the max over classes, so the domain with the
largest upper bound is always split next, whatever its class (the reference implementation splits
its time equally over classes). Each step takes the ``batch`` worst open domains, splits each in
two (a ReLU pre-activation ``z >= 0`` / ``z <= 0``, or the input box at the midpoint of one
dimension; for inputs of dimension <= 16 by default "hybrid": the box while a domain has many
unstable neurons, ReLUs after), bounds the children in one batched pass with plain CROWN reusing
the parent's intermediate bounds, drops children whose bounds prove their splits contradictory,
closes those whose bound is below the pruning threshold, and settles children with no unstable
neuron (their bound cannot improve by ReLU splits).

Anytime: at every moment ``upper = max(open, closed bounds)`` is a valid certificate (children
cover their parent: ``z >= 0`` or ``z <= 0`` holds everywhere, and the two half boxes cover the
box). Nothing a solver says lowers it unchecked: the LP that settles a fixed pattern proposes a
point for a witness pair, or multipliers that prove the pattern's region misses the box; those are
checked (``empty.certify_empty``) before the domain is dropped, and a claim that fails the check
leaves the domain open, split further. ``lower`` is the best checked pair
(``witness.BestPairs``). Pruning threshold: the best lower bound over all classes, or with
``per_class`` each class's own lower bound times ``1 + rtol``, or the caller's target where
higher (every class's bound made tight: the exact method's proof of the MILP's value), the
search then running until no domain is open.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..attack.pgd import _own_grads, dual_norm
from ..engine.schedule import compute_bounds
from ..rules import Interval
from .bounding import CROWN, Setting, bound_domains
from .domain import Domains
from .empty import certify_empty
from .witness import BestPairs


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
    per_class: bool = False        # prune each class at its own lower bound * (1 + rtol), run until none is open


@dataclass
class BaBResult:
    per_output_upper: torch.Tensor  # [K] proved
    per_output_lower: torch.Tensor  # [K] checked pairs (``pairs``)
    pairs: BestPairs
    status: str
    domains_bounded: int
    steps: int
    split: str
    history: list = field(default_factory=list)   # (seconds, lower, upper)


def _split(st: Setting, parents: Domains, mode: str, hybrid_free: int = 8):
    """Two children per parent: ``(lo, up, splits, cls, parent_fwd)`` with children 0..P-1 the
    first halves and P..2P-1 the second. "hybrid" bisects the input while a domain has more than
    ``hybrid_free`` unstable neurons and splits a ReLU after (near points where several kinks
    meet, boxes keep straddling them and bisection alone converges slowly). A domain whose box
    has no width to bisect splits a ReLU."""
    P = len(parents)
    dev = parents.lo.device
    if mode == "relu":
        use_input = torch.zeros(P, dtype=torch.bool, device=dev)
    elif mode == "input":
        use_input = torch.ones(P, dtype=torch.bool, device=dev)
    else:
        use_input = parents.n_free > hybrid_free
    use_input &= parents.score_input > 0
    use_input |= parents.score_relu == -torch.inf  # nothing unstable left: only the box can split
    lo = parents.lo.repeat(2, *([1] * (parents.lo.dim() - 1)))
    up = parents.up.repeat(2, *([1] * (parents.up.dim() - 1)))
    splits = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in parents.splits.items()}
    rows = torch.arange(P, device=dev)
    ii = rows[use_input]
    if len(ii):
        dim = parents.pick_input[ii]
        flo, fup = lo.reshape(2 * P, -1), up.reshape(2 * P, -1)
        mid = (flo[ii, dim] + fup[ii, dim]) / 2
        fup[ii, dim] = mid
        flo[ii + P, dim] = mid
    for j in rows[~use_input].tolist():
        node_idx, pos = parents.pick_relu[j].tolist()
        name = st.relu_inputs[node_idx]
        splits[name].reshape(2 * P, -1)[j, pos] = 1
        splits[name].reshape(2 * P, -1)[j + P, pos] = -1
    cls = parents.cls.repeat(2)
    fwd = {k: Interval(v.lower.repeat(2, *([1] * (v.lower.dim() - 1))), v.upper.repeat(2, *([1] * (v.upper.dim() - 1))))
           for k, v in parents.fwd.items()}
    return lo, up, splits, cls, fwd


def bab_search(st: Setting, box, root_upper: torch.Tensor, pairs: BestPairs, cfg: BaBConfig,
               targets: torch.Tensor | None = None) -> BaBResult:
    """Search from per-class root bounds ``root_upper [K]`` (proved) over the box ``box``
    (``[1, *in]``); ``pairs`` holds the checked witness pairs so far and collects new ones. With
    ``per_class``, ``targets [K]`` (optional) raise each class's pruning threshold (a value to
    prove, e.g. a solver's estimate: a wrong one only loosens the bound, which stays proved)."""
    t0 = time.perf_counter()
    K = st.C.shape[0]
    in_shape = tuple(box.lower.shape[1:])
    d = box.lower[0].numel()
    dt, dev = box.lower.dtype, box.lower.device
    root_upper = root_upper.to(dt)
    closed_max = torch.full((K,), -torch.inf, dtype=dt, device=dev)  # closed domains, per class

    cls = torch.arange(K, device=dev)
    lo = box.lower.expand(K, *in_shape).clone()
    up = box.upper.expand(K, *in_shape).clone()
    fb0 = compute_bounds(st.graph, {st.graph.input: box}, CROWN)
    splits0 = {z: torch.zeros((K,) + tuple(fb0[z].lower.shape[1:]), dtype=torch.int8, device=dev)
               for z in st.relu_inputs}
    fwd0 = {k: Interval(v.lower.expand(K, *v.lower.shape[1:]), v.upper.expand(K, *v.upper.shape[1:])) for k, v in fb0.items()}
    doms = bound_domains(st, lo, up, splits0, cls, fwd0)
    # the region is never empty: a root "infeasible" is rounding, and keeps the root bound
    doms.ub = torch.where(doms.ub == -torch.inf, root_upper, torch.minimum(doms.ub, root_upper))
    piecewise = st.graph.is_piecewise_linear()
    mode = cfg.split if piecewise else "input"
    if mode == "auto":  # measured on 2-64-64-2 nets: hybrid beats pure input or ReLU splitting
        mode = "hybrid" if d <= cfg.input_dim_limit else "relu"
    steps = bounded = 0
    lower = float(pairs.value.max())
    history = [(0.0, lower, float(doms.ub.max()))]
    status = "time_limit"
    progress = _Progress(cfg.progress)
    try:
        while True:
            lower = float(pairs.value.max())
            thr = pairs.value * (1 + cfg.rtol) if cfg.per_class else torch.full_like(pairs.value, lower)
            if cfg.per_class and targets is not None:
                thr = torch.maximum(thr, targets.to(thr))
            keep = doms.ub > thr[doms.cls]
            # with no unstable ReLU left (piecewise-linear nets), the gradient is constant on the
            # domain's part of the box: its bound is exact and no split can lower it
            settled = keep & (doms.score_relu == -torch.inf) & piecewise
            if settled.any():
                sel = settled.nonzero().flatten()
                plain = ~torch.stack([(doms.splits[z][sel] != 0).reshape(len(sel), -1).any(1)
                                      for z in st.relu_inputs]).any(0) if st.relu_inputs else \
                    torch.ones(len(sel), dtype=torch.bool, device=dev)
                empty = torch.zeros(len(sel), dtype=torch.bool, device=dev)
                reopen = torch.zeros_like(empty)
                if plain.any():  # a plain box: f is affine on it, a witness at its centre is exact
                    b = sel[plain]
                    pairs.search(doms.cls[b], doms.lo[b], doms.up[b], (doms.lo[b] + doms.up[b]) / 2)
                if (~plain).any():
                    empty[~plain], reopen[~plain] = _settle_patterns(st, doms, sel[~plain], pairs)
                settled[sel[reopen & (doms.score_input[sel] > 0)]] = False
                doms.ub[sel[empty]] = -torch.inf  # proved empty: closed without a bound
            # nothing left to split (no unstable neuron, no box width): the bound is final
            stuck = keep & (doms.score_relu == -torch.inf) & (doms.score_input <= 0)
            close = ~keep | settled | stuck
            if close.any():
                _scatter_max(closed_max, doms.cls[close], doms.ub[close])
            doms = doms.take((~close).nonzero().flatten())
            lower = float(pairs.value.max())
            upper_now = max(float(doms.ub.max()) if len(doms) else -math.inf, float(closed_max.max()), lower)
            history.append((time.perf_counter() - t0, lower, upper_now))
            progress.update(lower, upper_now, len(doms), time.perf_counter() - t0, cfg.time_limit)
            if len(doms) == 0:
                if cfg.per_class:
                    tight = closed_max <= thr + 1e-12
                    status = "optimal" if bool(tight.all()) else "exhausted"
                else:
                    status = "optimal" if upper_now <= lower * (1 + cfg.rtol) + 1e-12 else "exhausted"
                break
            if not cfg.per_class and upper_now <= lower * (1 + cfg.rtol):
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
            if mode != "relu" or steps % 4 == 0:
                _lower_from_centres(st, children, pairs)
            # children whose own bounds prove their splits contradictory are empty: dropped
            doms = Domains.cat([rest, children.take((children.ub > -torch.inf).nonzero().flatten())])
    finally:
        progress.close()
    per_upper = closed_max.clone()
    if len(doms):
        _scatter_max(per_upper, doms.cls, doms.ub)
    # every class keeps at least its root domain's cover; -inf would mean the engine called the
    # whole region empty, which it is not: fall back to the root bound, never to 0
    per_upper = torch.where(per_upper == -torch.inf, root_upper, per_upper)
    per_upper = torch.maximum(per_upper, pairs.value)
    return BaBResult(per_upper, pairs.value.clone(), pairs, status, bounded, steps, mode, history)


def _lower_from_centres(st, children, pairs):
    """Gradient norms at the centres of the best children boxes; pairs around the promising ones."""
    top = children.ub.argsort(descending=True)[: min(16, len(children))]
    top = top[children.ub[top] > -torch.inf]
    if len(top) == 0:
        return
    centres = (children.lo[top] + children.up[top]) / 2
    g = _own_grads(st.graph, centres, st.C[children.cls[top]])
    gn = dual_norm(g.unsqueeze(1), st.norm)[:, 0]
    good = gn > pairs.value[children.cls[top]]
    if good.any():
        sel = top[good]
        pairs.search(children.cls[sel], children.lo[sel], children.up[sel], centres[good])


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


def _settle_patterns(st, doms, sel, pairs):
    """For domains whose every neuron has a fixed phase: an LP looks for an interior point of the
    pattern's linear region, around which a witness pair realises the domain's value. Returns
    ``(empty, reopen)`` masks over ``sel``: empty when the LP's Farkas multipliers pass
    ``empty.certify_empty`` (the domain holds no point), reopen when the LP found no point and
    its claim did not check out (split further rather than dropped)."""
    from ..exact.pattern import pattern_lp
    empty = torch.zeros(len(sel), dtype=torch.bool, device=sel.device)
    reopen = torch.zeros_like(empty)
    for n, j in enumerate(sel.tolist()):
        phases = {}
        for z in st.relu_inputs:
            sp, zb = doms.splits[z][j], doms.fwd[z]
            phases[z] = ((sp > 0) | ((sp == 0) & (zb.lower[j] >= 0) & (zb.upper[j] > 0))).to(torch.int8)
        lo, up = doms.lo[j], doms.up[j]
        pt, margin, multipliers = pattern_lp(st.graph, lo, up, phases)
        if pt is None or margin < 0:
            if certify_empty(st.graph, lo, up, phases, multipliers):
                empty[n] = True
            elif pt is None or margin < -1e-9:
                reopen[n] = True
        elif margin > 0:
            r = margin / math.sqrt(lo.numel()) * 0.5
            pairs.search(doms.cls[j:j + 1], torch.maximum(pt - r, lo)[None], torch.minimum(pt + r, up)[None], pt[None])
            pairs.chord(int(doms.cls[j]), pt, lo, up, phases)
    return empty, reopen
