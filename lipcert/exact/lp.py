"""A small wrapper over HiGHS (``highspy``): build an LP/MILP from row blocks and solve it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SolverError

try:
    import highspy
except ImportError:  # pragma: no cover - highspy is a dependency
    highspy = None

INF = float("inf")


@dataclass
class Solution:
    status: str            # "optimal", "time_limit", "infeasible", "unbounded", ...
    objective: float       # incumbent objective (nan when none)
    bound: float           # the solver's bound on the optimum (dual bound for a MILP), unchecked
    x: np.ndarray | None   # incumbent values
    row_dual: np.ndarray | None = None  # LP row duals (unchecked: callers verify what they derive from them)


class Model:
    """Variables with bounds (and integrality) and rows ``lo <= sum_j a_j x_j <= hi``."""

    def __init__(self):
        self.lb: list = []
        self.ub: list = []
        self.integer: list = []
        self.r_idx: list = []
        self.r_val: list = []
        self.r_lo: list = []
        self.r_hi: list = []
        self.cost: dict = {}

    @property
    def n(self) -> int:
        return len(self.lb)

    def add_vars(self, lb, ub, integer: bool = False) -> np.ndarray:
        lb = np.atleast_1d(np.asarray(lb, dtype=float))
        ub = np.atleast_1d(np.asarray(ub, dtype=float))
        lb, ub = np.broadcast_arrays(lb, ub)
        start = self.n
        self.lb.extend(lb.tolist())
        self.ub.extend(ub.tolist())
        self.integer.extend([integer] * lb.size)
        return np.arange(start, start + lb.size)

    def add_row(self, idx, val, lo=-INF, hi=INF):
        self.r_idx.append(np.asarray(idx, dtype=np.int64))
        self.r_val.append(np.asarray(val, dtype=float))
        self.r_lo.append(float(lo))
        self.r_hi.append(float(hi))

    def add_dense_rows(self, out_idx, M, in_idx, c, coef_out=-1.0):
        """Rows ``M @ x_in + c + coef_out * x_out == 0`` (``x_out = M x_in + c`` by default)."""
        M = np.asarray(M, dtype=float)
        for j in range(M.shape[0]):
            nz = np.nonzero(M[j])[0]
            self.add_row(np.concatenate([in_idx[nz], [out_idx[j]]]), np.concatenate([M[j, nz], [coef_out]]),
                         -c[j], -c[j])

    def dense(self):
        """``(A [rows, n], row_lo, row_hi, col_lo, col_hi, cost)`` as float64 arrays."""
        A = np.zeros((len(self.r_lo), self.n))
        for r, (idx, val) in enumerate(zip(self.r_idx, self.r_val)):
            np.add.at(A[r], idx, val)
        cost = np.zeros(self.n)
        for j, v in self.cost.items():
            cost[j] = v
        return A, np.array(self.r_lo), np.array(self.r_hi), np.array(self.lb), np.array(self.ub), cost

    def highs(self, maximize: bool = True, relax: bool = False, time_limit: float | None = None,
              mip_gap: float = 1e-6, presolve: bool = True, tolerance: float | None = None):
        """A HiGHS instance holding the model (``relax``: every variable continuous)."""
        if highspy is None:
            raise SolverError("highspy is not installed; pip install highspy")
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        if tolerance is not None:
            h.setOptionValue("primal_feasibility_tolerance", float(tolerance))
            h.setOptionValue("mip_feasibility_tolerance", float(tolerance))
        if not presolve:
            h.setOptionValue("presolve", "off")
        if time_limit is not None:
            h.setOptionValue("time_limit", float(time_limit))
        h.setOptionValue("mip_rel_gap", float(mip_gap))
        lp = highspy.HighsLp()
        lp.num_col_ = self.n
        lp.num_row_ = len(self.r_lo)
        cost = np.zeros(self.n)
        for j, v in self.cost.items():
            cost[j] = v
        lp.col_cost_ = cost
        lp.col_lower_ = np.array(self.lb)
        lp.col_upper_ = np.array(self.ub)
        lp.row_lower_ = np.array(self.r_lo)
        lp.row_upper_ = np.array(self.r_hi)
        starts = np.zeros(len(self.r_lo) + 1, dtype=np.int32)
        starts[1:] = np.cumsum([len(i) for i in self.r_idx])
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = starts
        lp.a_matrix_.index_ = np.concatenate(self.r_idx).astype(np.int32) if self.r_idx else np.zeros(0, np.int32)
        lp.a_matrix_.value_ = np.concatenate(self.r_val) if self.r_val else np.zeros(0)
        lp.a_matrix_.num_col_ = self.n
        lp.a_matrix_.num_row_ = len(self.r_lo)
        lp.sense_ = highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize
        if any(self.integer) and not relax:
            lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                               for i in self.integer]
        h.passModel(lp)
        return h

    def solve(self, maximize: bool = True, time_limit: float | None = None, mip_gap: float = 1e-6,
              presolve: bool = True, tolerance: float | None = None) -> Solution:
        """Solve; ``tolerance`` sets HiGHS's primal and MIP feasibility tolerances (None: its
        defaults, 1e-7 / 1e-6). On Lipschitz MILPs we saw HiGHS return a wrong "optimal" with the
        defaults on one model and with 1e-9 on another: nothing here is a bound until checked
        (see exact.verify)."""
        h = self.highs(maximize, False, time_limit, mip_gap, presolve, tolerance)
        h.run()
        return read_solution(h, any(self.integer), maximize)


def read_solution(h, integer: bool, maximize: bool = True) -> Solution:
    """The :class:`Solution` of a HiGHS instance after ``run``."""
    status = h.modelStatusToString(h.getModelStatus()).lower()
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = np.array(h.getSolution().col_value) if has_sol else None
    duals = None
    if has_sol and not integer and info.dual_solution_status == 2:
        duals = np.array(h.getSolution().row_dual)
    obj = info.objective_function_value if has_sol else float("nan")
    if integer:
        bound = info.mip_dual_bound
    else:
        bound = obj if status == "optimal" else (INF if maximize else -INF)
    name = {"optimal": "optimal", "time limit reached": "time_limit", "infeasible": "infeasible"}.get(status, status)
    return Solution(name, obj, bound, x, duals)
