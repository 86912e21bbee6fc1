"""``method="exact"``: the MILP's value, checked from both sides by lipcert itself.

1. HiGHS solves LipMIP's MILP (``exact.milp``) per spec row. Its value ``V`` is an estimate; the
   pair realised in the linear region of its incumbent is checked by ``bab.witness`` and becomes
   the lower bound (``L >= lower``).
2. The upper bound is proved, never read off the solver: every search closes a node of row ``k``
   once its certified bound is ``<= max(lower_k, V_k) (1 + RTOL)``, so when no node is left
   open, that bound holds by lipcert's own checks. First a branch-and-bound on the MILP's
   binaries whose node bounds are weak-duality bounds lipcert evaluates itself from HiGHS's LP
   duals (``exact.certified``); then BaB (``bab.search`` with ``per_class``), which also finds
   better witnesses where the incumbent's fell short. ``V`` is only a place to stop: a wrong
   value makes the searches stop early or late, and ``upper`` is whatever they proved.
3. Status per row: "optimal" (bracket closed and ``V`` inside it), "solver_inconsistent" (``V``
   below a checked witness, or an "optimal" ``V`` above the proved upper bound: HiGHS was wrong;
   the bounds are still lipcert's), "solver_failed" (no value: infeasible, unbounded, error),
   "time_limit" (the MILP stopped early and the bracket is open), "upper_verified" (``upper <= V
   (1 + RTOL)`` proved, but no pair reaches ``V``: the region is a point, has a
   coordinate clipped to zero width, or is so small that rounding limits the pair), or
   "milp_unverified" (the proof did not finish in time: ``upper`` is the best bound proved,
   ``details["milp_value"]`` the estimate). The certificate's status is "optimal" only when
   every row's is; otherwise the first of ``ORDER`` that occurs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..bab import BaBConfig, bab_search
from .certified import prove
from .milp import milp_values

RTOL = 1e-7          # the exact bracket: upper <= lower * (1 + RTOL)
AGREE = 1e-6         # relative slack within which the MILP's value agrees with the proved bracket
MILP_SHARE = 2 / 3   # of the proof's time, for the certified search on the MILP; the rest for BaB
ORDER = ("solver_inconsistent", "solver_failed", "time_limit", "milp_unverified", "upper_verified")


@dataclass
class ExactResult:
    per_output_upper: torch.Tensor
    per_output_lower: torch.Tensor
    witness: dict
    status: str
    details: dict


def exact_lipschitz(graph, box, C, norm, root, b, *, setting, pairs, root_upper, time_limit=None,
                    verify_time=60.0, mip_gap=1e-6, batch=64, split="auto", max_domains=200_000) -> ExactResult:
    """Exact per-output values for sample ``b`` of ``root`` (a ``JacobianBounds`` of the batch)
    on the box ``box`` (``[1, *in]``). ``setting`` is the BaB ``Setting``, ``pairs`` the
    ``BestPairs`` of the witness region (seeded with the attack's pairs), ``root_upper [K]`` a
    proved bound per row. ``time_limit`` caps MILP and proof together (None: the MILP runs to
    the end and the proof gets ``verify_time`` seconds)."""
    t0 = time.perf_counter()
    milp_budget = None if time_limit is None else time_limit / 2
    outcomes = milp_values(graph, box, C, norm, root, b, pairs, time_limit=milp_budget, mip_gap=mip_gap)
    t_milp = time.perf_counter() - t0
    proof_budget = verify_time if time_limit is None else max(1.0, time_limit - t_milp)
    t1 = time.perf_counter()
    ups = root_upper.clone().to(pairs.value.dtype)
    nodes = [0] * len(outcomes)
    # the value to prove per row: the MILP's estimate, or the witness where it is higher (a wrong
    # estimate only changes where the searches stop; their bounds stay certified)
    targets = torch.tensor([max(float(pairs.value[k]), o.value if math.isfinite(o.value) else 0.0) * (1 + RTOL)
                            for k, o in enumerate(outcomes)], dtype=ups.dtype, device=ups.device)
    for k, o in enumerate(outcomes):  # 1. branch-and-bound on the MILP, certified bounds
        left = proof_budget * MILP_SHARE - (time.perf_counter() - t1)
        if o.model is None or o.status == "failed" or left <= 0:  # a model HiGHS failed on is left to BaB
            continue
        pr = prove(o.model, float(targets[k]) * o.scale, left / (len(outcomes) - k), float(ups[k]) * o.scale)
        nodes[k] = pr.nodes
        if pr.upper > -math.inf:  # -inf would call the (never empty) region empty: ignored
            ups[k] = min(float(ups[k]), pr.upper / o.scale)
    # 2. BaB from there: rows already proved close at once; it finds better witnesses where the
    # MILP's was short of the maximum, and proves what the first search could not
    res = None
    if any(float(ups[k]) > float(targets[k]) for k in range(len(outcomes))):
        cfg = BaBConfig(time_limit=max(0.0, proof_budget - (time.perf_counter() - t1)), rtol=RTOL, batch=batch,
                        split=split, max_domains=max_domains, per_class=True)
        res = bab_search(setting, box, ups, pairs, cfg, targets=targets)
        ups = torch.minimum(ups, res.per_output_upper)
    lows = pairs.value.clone()
    ups = torch.maximum(ups, lows)
    statuses = [_row_status(o, float(ups[k]), float(lows[k]), mip_gap) for k, o in enumerate(outcomes)]
    status = "optimal" if all(s == "optimal" for s in statuses) else next(s for s in ORDER if s in statuses)
    shape = graph[graph.input].shape
    details = {"solver": "HiGHS", "milp_value": [o.value for o in outcomes],
               "milp_status": [o.status for o in outcomes], "solves": [_solves(o) for o in outcomes],
               "statuses": statuses, "mip_gap": mip_gap, "proof_milp_nodes": nodes,
               "proof": "milp_nodes" if res is None else res.status, "proof_steps": 0 if res is None else res.steps,
               "proof_domains": 0 if res is None else res.domains_bounded, "seconds_milp": t_milp,
               "seconds_proof": time.perf_counter() - t0 - t_milp}
    return ExactResult(ups, lows, pairs.witness(shape), status, details)


def _closed(upper: float, lower: float) -> bool:
    return upper <= lower * (1 + RTOL) + 1e-12


def _row_status(o, upper: float, lower: float, mip_gap: float) -> str:
    if o.status == "failed" or not math.isfinite(o.value):
        return "solver_failed"
    # HiGHS's value may sit up to its MIP gap above its incumbent, and a little off by its tolerances
    if o.value < lower * (1 - AGREE) or (o.status == "optimal" and o.value > upper * (1 + AGREE + mip_gap) + 1e-12):
        return "solver_inconsistent"
    if _closed(upper, lower):
        return "optimal"
    if o.status == "time_limit":
        return "time_limit"
    # the MILP's value is proved from above, but no checked pair reaches it: the region has too few
    # free coordinates (eps = 0, a coordinate clipped to zero width), or rounding limits the pair
    return "upper_verified" if upper <= o.value * (1 + RTOL) * (1 + 1e-12) + 1e-12 else "milp_unverified"


def _solves(o) -> list:
    return [{"settings": {k: v for k, v in s.items()}, "status": st, "objective": obj, "bound": bd}
            for s, st, obj, bd in o.solves]
