"""Branch-and-bound on the MILP's binaries, every node's bound certified by lipcert (weak duality).

A node is the MILP of ``exact.milp.build`` with some binaries fixed and the others relaxed to
``[0, 1]``. HiGHS solves the node's LP; the row duals it returns are only a candidate ``y``:
for every ``x`` with ``l <= x <= u`` and ``L <= A x <= U`` and *any* ``y``,

    c . x = y . (A x) + (c - A^T y) . x <= sum_r max(y_r L_r, y_r U_r) + sum_j max(d_j l_j, d_j u_j)

with ``d = c - A^T y`` (Neumaier & Shcherbina, Math. Program. 99, 2004). ``d`` is computed in
floating point, off by at most ``gamma_m (|c| + |A|^T |y|)`` (``m`` rows, plus one), charged at
``max(|l_j|, |u_j|)``; each sum is raised by ``gamma`` of its length times the sum of its terms'
absolute values. A node the LP calls infeasible is dropped only when its dual ray ``rho``
proves it: ``sum_r min(rho_r L_r, rho_r U_r) > sum_j max(a_j l_j, a_j u_j)`` (``a = A^T rho``,
same margins) means no ``x`` of the box meets the rows. Any other outcome keeps the parent's
bound, and the node is split further.

The MILP relaxes the Lipschitz problem in exact arithmetic (its rows hold the network's own
weights, its big-M constants are the engine's sound bounds, its gradient scale is a power of two),
so the largest bound over closed and open nodes bounds ``L`` (times the scale).
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

import numpy as np

from ..rounding import higham_gamma
from .lp import read_solution

TINY = np.finfo(np.float64).tiny
_gamma = higham_gamma  # float64


def _raise(terms: np.ndarray) -> float:
    """An upper bound of the exact sum of the computed ``terms``."""
    if not np.all(np.isfinite(terms)):
        return math.inf
    return float(terms.sum() + _gamma(len(terms) + 1) * np.abs(terms).sum() + TINY)


def _pick(coef, lo, hi, upper: bool):
    """``max(coef lo, coef hi)`` (``upper``) or ``min`` elementwise, with 0 where ``coef == 0``
    (an infinite end times 0 counts 0)."""
    with np.errstate(invalid="ignore"):
        if upper:
            return np.where(coef > 0, coef * hi, np.where(coef < 0, coef * lo, 0.0))
        return np.where(coef > 0, coef * lo, np.where(coef < 0, coef * hi, 0.0))


@dataclass
class _Data:
    A: np.ndarray
    absA: np.ndarray
    L: np.ndarray
    U: np.ndarray
    c: np.ndarray
    absc: np.ndarray


def safe_bound(D: _Data, y: np.ndarray, l: np.ndarray, u: np.ndarray) -> float:
    """Certified upper bound of ``max c.x`` over ``{l <= x <= u, L <= A x <= U}`` from ``y``."""
    m = len(y) + 1
    d = D.c - D.A.T @ y
    derr = _gamma(m + 1) * (D.absc + D.absA.T @ np.abs(y)) * (1 + 2 * _gamma(m + 1))
    mag = np.maximum(np.abs(l), np.abs(u))
    return _raise(np.concatenate([_pick(y, D.L, D.U, True), _pick(d, l, u, True), derr * mag]))


def certified_infeasible(D: _Data, rho: np.ndarray, l: np.ndarray, u: np.ndarray) -> bool:
    """True when ``rho`` proves that no ``x`` in ``[l, u]`` has ``L <= A x <= U``."""
    m = len(rho) + 1
    a = D.A.T @ rho
    aerr = _gamma(m) * (D.absA.T @ np.abs(rho)) * (1 + 2 * _gamma(m))
    low = _pick(rho, D.L, D.U, False)   # rho . (A x) >= sum of these for every x meeting the rows
    if not np.all(np.isfinite(low)):
        return False
    low_sum = float(low.sum() - _gamma(len(low) + 1) * np.abs(low).sum() - TINY)
    high = _raise(np.concatenate([_pick(a, l, u, True), aerr * np.maximum(np.abs(l), np.abs(u))]))
    return low_sum > high  # and rho . (A x) = a . x <= high on the box


@dataclass
class Proof:
    upper: float     # certified bound of the MILP's objective (model units)
    closed: bool     # no open node left: every node was closed at or below its target
    nodes: int


def prove(model, target: float, time_limit: float, root_bound: float = math.inf) -> Proof:
    """Best-first branch-and-bound on ``model``'s binaries until every node's certified bound is
    ``<= target`` or the time is up. Returns the largest certified bound of the closed and open
    nodes (never below the MILP's optimum in exact arithmetic)."""
    t0 = time.perf_counter()
    A, L, U, l0, u0, c = model.dense()
    D = _Data(A, np.abs(A), L, U, c, np.abs(c))
    ints = np.array([j for j, f in enumerate(model.integer) if f], dtype=np.int32)
    h = model.highs(maximize=True, relax=True, presolve=False, tolerance=1e-10)
    h.setOptionValue("dual_feasibility_tolerance", 1e-10)
    heap = [(-root_bound, 0, {})]
    count = nodes = 0
    closed_max = -math.inf
    while heap:
        neg, _, fix = heapq.heappop(heap)
        parent = -neg
        if parent <= target:
            closed_max = max(closed_max, parent)
            continue
        if time.perf_counter() - t0 > time_limit:
            heapq.heappush(heap, (neg, -1, fix))
            break
        l, u = l0.copy(), u0.copy()
        for j, v in fix.items():
            l[j] = u[j] = v
        if len(ints):
            h.changeColsBounds(len(ints), ints, l[ints], u[ints])
        h.run()
        nodes += 1
        sol = read_solution(h, integer=False)
        bound, x = parent, sol.x
        if sol.status == "infeasible":
            if _ray_proves(h, D, l, u):
                continue  # proved empty
        elif sol.row_dual is not None:
            y = sol.row_dual
            bound = min(bound, safe_bound(D, y, l, u), safe_bound(D, -y, l, u))
        if bound <= target:
            closed_max = max(closed_max, bound)
            continue
        free = [int(j) for j in ints if int(j) not in fix]
        if not free:  # every binary fixed: the LP's certified bound is final for this node
            closed_max = max(closed_max, bound)
            continue
        frac = [(abs(x[j] - round(x[j])), j) for j in free] if x is not None else []
        best_frac, j = max(frac) if frac else (0.0, free[0])
        if x is not None and best_frac < 1e-9 and sol.objective > target * (1 + 1e-6) + 1e-12:
            # an integral LP optimum above the target: the MILP itself exceeds it, no proof exists
            heapq.heappush(heap, (-bound, -1, fix))
            break
        for v in (0.0, 1.0):
            count += 1
            heapq.heappush(heap, (-bound, count, {**fix, j: v}))
    open_max = max((-n for n, _, _ in heap), default=-math.inf)
    return Proof(max(closed_max, open_max), not heap, nodes)


def _ray_proves(h, D, l, u) -> bool:
    """Whether the dual ray of an infeasible node proves it; a warm-started solve sometimes
    returns a ray that does not, so the node is solved once more from scratch before giving up."""
    for attempt in range(2):
        if attempt:
            h.clearSolver()
            h.run()
            if h.modelStatusToString(h.getModelStatus()).lower() != "infeasible":
                return False
        rho = _dual_ray(h)
        if rho is not None and (certified_infeasible(D, rho, l, u) or certified_infeasible(D, -rho, l, u)):
            return True
    return False


def _dual_ray(h):
    try:
        status, has_ray, ray = h.getDualRay()
    except Exception:
        return None
    return np.asarray(ray, dtype=float) if has_ray else None
