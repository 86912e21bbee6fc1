"""LipSDP solvers (the LMI: ``lmi.py``). Each one *proposes* per-neuron multipliers; the bound is
made from them by ``certificate.certify_multipliers``, never taken from the solver (see there).

- ``ipm``: a primal-dual interior-point method on the LMI's rank-two structure (``ipm.py``), from
  the naive bound's multipliers; seconds for hundreds of neurons.
- ``lbfgs`` (LipDiff-style): L-BFGS on ``log lam`` lowering a smoothed Schur eigenvalue; each
  round's end point is checked by the certificate and the best certified one is kept.
- ``cvxpy``: the generic SDP in cvxpy (Clarabel, SCS, any installed SDP solver), for small nets
  and as the reference value in tests (``lipsdp_cvxpy`` returns the solver's own value).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import SolverError
from .certificate import certified_rho, certified_sqrt, certify, certify_multipliers  # noqa: F401 (re-exported)
from .chain import Chain
from .lmi import _blocks, _free_start, _initial, _owner, _pair_expand, assemble, schur_rho  # noqa: F401


@dataclass(frozen=True)
class Proposal:
    """What a solver hands to the certificate."""
    lam: torch.Tensor | None      # [hidden] per-neuron multipliers it ended with (None: it has none)
    start: torch.Tensor | None    # [hidden] the strictly feasible start point (the blend target)
    value: float                  # the solver's own bound sqrt(rho): NOT certified (nan if none)
    status: str                   # "optimal", "optimal_inaccurate", ..., or why it has no multipliers
    info: dict = field(default_factory=dict)


def _start(chain: Chain):
    """Per-neuron multipliers that certify about the naive product, or None."""
    return _initial(chain, _pair_expand(chain)[0])


def propose_lbfgs(chain: Chain, outer: int = 20, inner: int = 100, layerwise: bool = False, start=None) -> Proposal:
    """L-BFGS on ``log lam`` minimising the smoothed eigenvalue (log-sum-exp, temperature lowered
    over ``outer`` rounds from 2% to 0.002% of the best value), each round's end point checked by
    ``certified_rho``; the best checked point is proposed. An infeasible trial point (hidden block
    not negative definite) gets an infinite objective, which the line search backs away from."""
    initial = _start(chain)
    if start is None and not layerwise and initial is not None:
        # LipSDP-Layer first (few parameters, well conditioned); its multipliers are a feasible
        # start for the per-neuron problem, whose value can then only improve on it
        layer = propose_lbfgs(chain, outer=outer, inner=inner, layerwise=True)
        start = layer.lam if layer.status == "done" else None
    lam0 = initial if start is None else start
    if lam0 is None:
        return Proposal(None, None, math.nan, "no feasible start point")
    owner, n_free = _owner(chain, layerwise)
    free0 = _free_start(lam0, owner, n_free)
    theta = free0.log().clone().requires_grad_(True)
    best_rho, best_lam = math.inf, None

    def accept(lam):
        nonlocal best_rho, best_lam
        rho = certified_rho(chain, lam.detach())
        if rho is not None and rho < best_rho:
            best_rho, best_lam = rho, lam.detach().clone()

    n_hidden = float(owner.numel())
    accept(free0[owner])
    r0 = schur_rho(chain, free0[owner])
    if r0 is None:
        return Proposal(lam0, initial, math.nan, "start point infeasible")
    scale = float(r0)  # the start value (sets the first temperature)
    for o in range(outer):
        scale = min(scale, best_rho)
        temp = scale * 0.02 * (1e-3) ** (o / max(outer - 1, 1))
        opt = torch.optim.LBFGS([theta], lr=1, max_iter=inner, history_size=50, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            with torch.enable_grad():
                r = schur_rho(chain, theta.exp()[owner], temperature=temp, barrier=0.1 * temp / n_hidden)
                if r is None:
                    return torch.tensor(math.inf, dtype=torch.float64, device=theta.device)
                r.backward()
            return r

        before = theta.detach().clone()
        try:
            opt.step(closure)
        except (RuntimeError, ValueError):
            with torch.no_grad():
                theta.copy_(before)
        if not torch.isfinite(theta).all():
            with torch.no_grad():
                theta.copy_(before)
        accept(theta.detach().exp()[owner])
    lam = best_lam if best_lam is not None else theta.detach().exp()[owner]
    r = schur_rho(chain, lam)
    value = math.sqrt(max(float(r), 0.0)) if r is not None else math.nan
    return Proposal(lam, initial, value, "done" if best_lam is not None else "no checked point",
                    {"rounds": outer})


def propose_ipm(chain: Chain, layerwise: bool = False, tol: float = 1e-8, max_iter: int = 100) -> Proposal:
    """The interior-point method's final multipliers (``ipm.py``), started from the naive bound's.
    ``info``: iterations, primal residual and ``rho_lower``, the dual estimate of the SDP optimum."""
    from .ipm import ipm_lipsdp
    owner, n_free = _owner(chain, layerwise)
    lam0 = _start(chain)
    if lam0 is None:
        return Proposal(None, None, math.nan, "no feasible start point")
    free0 = _free_start(lam0, owner, n_free)
    r0 = float(schur_rho(chain, free0[owner]))
    rho0 = r0 + 0.5 * abs(r0) + 1e-12
    final, info = ipm_lipsdp(chain, owner, n_free, free0, rho0, tol=tol, max_iter=max_iter)
    value = math.sqrt(max(info.pop("rho"), 0.0))
    return Proposal(final, free0[owner], value, "done", info)


def propose_cvxpy(chain: Chain, solver: str = "CLARABEL", layerwise: bool = False) -> Proposal:
    """Minimise rho subject to ``M(rho, lam) <= 0`` with cvxpy and ``solver`` (any installed SDP
    solver). Raises SolverError when cvxpy or the solver cannot run; a solve that ends without
    multipliers is a Proposal with ``lam=None`` and the solver's status."""
    try:
        import cvxpy as cp
    except ImportError as e:  # pragma: no cover
        raise SolverError("cvxpy is not installed: pip install lipcert[sdp]") from e
    import numpy as np
    owner, n_free = _owner(chain, layerwise)
    cpu = Chain([W.cpu() for W in chain.weights], chain.acts, chain.input_shape)
    sizes = [W.shape[0] for W in cpu.weights[:-1]]
    lam = cp.Variable(n_free, nonneg=True)
    rho = cp.Variable(nonneg=True)
    n0 = cpu.weights[0].shape[1]
    # M is affine in (rho, lam): M = M0 - rho E + sum_j lam_j M_j, assembled from unit multipliers
    M0 = assemble(cpu, torch.zeros(sum(sizes), dtype=torch.float64), 0.0).numpy()
    E = np.zeros_like(M0)
    E[:n0, :n0] = np.eye(n0)
    expr = M0 - rho * E
    for j in range(n_free):
        unit = (owner.cpu() == j).to(torch.float64)
        expr = expr + lam[j] * (assemble(cpu, unit, 0.0).numpy() - M0)
    prob = cp.Problem(cp.Minimize(rho), [(expr + expr.T) / 2 << 0])
    try:
        prob.solve(solver=solver.upper())
    except (cp.error.SolverError, ValueError) as e:
        raise SolverError(f"cvxpy/{solver}: {e}") from e
    start = _start(chain)
    if prob.status not in ("optimal", "optimal_inaccurate") or rho.value is None or lam.value is None:
        return Proposal(None, start, math.nan, f"cvxpy/{solver} returned status {prob.status}")
    free = torch.as_tensor(np.asarray(lam.value, dtype=np.float64)).to(chain.weights[0].device)
    return Proposal(free[owner.to(free.device)], start, math.sqrt(max(float(rho.value), 0.0)), prob.status)


def _certified(chain: Chain, p: Proposal):
    cert = certify_multipliers(chain, p.lam, p.start)
    if cert is None:
        raise SolverError(f"LipSDP: no certified point found ({p.status})")
    return cert


def lipsdp_fast(chain: Chain, outer: int = 20, inner: int = 100, layerwise: bool = False, start=None):
    """Certified ``(L2 bound, lam)`` from the L-BFGS multipliers (``propose_lbfgs``):
    ``certify(chain, lam, bound ** 2)`` holds."""
    cert = _certified(chain, propose_lbfgs(chain, outer, inner, layerwise, start))
    return cert.value, cert.lam


def lipsdp_ipm(chain: Chain, layerwise: bool = False, tol: float = 1e-8, max_iter: int = 100):
    """Certified ``(L2 bound, lam, info)`` from the interior-point multipliers (``propose_ipm``);
    ``certify(chain, lam, bound ** 2)`` holds and the bound is never worse than the start's (about
    the naive product). ``info["gap"]`` is the relative distance of the bound from the dual estimate
    ``sqrt(rho_lower)`` of the SDP optimum (meaningful when the primal residual is small);
    ``info["solver_value"]`` the method's own, uncertified, value."""
    p = propose_ipm(chain, layerwise, tol, max_iter)
    cert = _certified(chain, p)
    info = {**p.info, "solver_value": p.value, "blend": cert.blend}
    lo = info.get("rho_lower", 0.0)
    info["gap"] = cert.value / math.sqrt(lo) - 1 if lo > 0 else float("inf")
    return cert.value, cert.lam, info


def lipsdp_cvxpy(chain: Chain, solver: str = "CLARABEL", layerwise: bool = False):
    """The reference ``(sqrt(rho), status)`` of the cvxpy solve: the solver's own value, *not*
    certified (SCS and Clarabel stop at a tolerance; it can be below the true constant).
    ``global_lipschitz(..., solver=...)`` certifies the same solve's multipliers instead."""
    p = propose_cvxpy(chain, solver, layerwise)
    if p.lam is None:
        raise SolverError(p.status)
    return p.value, p.status
