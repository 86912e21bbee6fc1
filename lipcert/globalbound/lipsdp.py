"""LipSDP (Fazlyab et al. 2019) for l2 Lipschitz constants of chains, two ways.

With ``z = [x; h_1; ...; h_L]`` (input and all hidden post-activations) and per-neuron
multipliers ``lam >= 0``, each activation contributes a quadratic form valid for every pair of
inputs (incremental form):
  slope-restricted in [a, b]: ``(dh - a dv)(b dv - dh) >= 0``, i.e. ``-2ab dv^2 + 2(a+b) dv dh - 2 dh^2 >= 0``
  (times lam / 2 per neuron; ``dv`` the pre-activation change);
  MaxMin/GroupSort pair (a permutation of its input at every point): ``|dv_p|^2 - |dh_p|^2 >= 0``
  (Pauli et al. 2024; one multiplier per pair).
Adding them to ``rho |dx|^2 - |W_L dh_L|^2`` gives ``M(rho, lam) = Q(lam) + diag(-rho I, 0, .., W_L^T W_L)``;
``M <= 0`` certifies ``L_2 <= sqrt(rho)``.

Fast path (LipDiff-style): split ``M`` into the input block and the hidden block ``D``. For
``D < 0`` the least feasible ``rho`` is ``lambda_max(P - R D^{-1} R^T)`` (Schur complement), an
eigenvalue, convex in ``lam``; L-BFGS on ``log lam`` lowers a smoothed version of it, and each
accepted point is checked by a Cholesky factorisation of ``-M`` (with a relative margin on rho):
every accepted point is a certificate. The start point
(products of layer norms, the naive bound) is feasible by construction.
Reference: the same SDP in cvxpy (Clarabel or SCS), for small nets and tests.
"""
from __future__ import annotations

import math

import torch

from ..errors import SolverError
from .chain import Chain


def _blocks(chain: Chain):
    """Index ranges of the input and each hidden layer in ``z``."""
    n0 = chain.weights[0].shape[1]
    sizes = [W.shape[0] for W in chain.weights[:-1]]
    starts = [n0]
    for s in sizes[:-1]:
        starts.append(starts[-1] + s)
    return n0, sizes, starts


def assemble(chain: Chain, lam: torch.Tensor, rho, absolute: bool = False) -> torch.Tensor:
    """``M(rho, lam)`` (dense, float64); ``lam`` has one entry per hidden neuron (pairs share it).
    With ``absolute`` every term is replaced by its absolute value (``|W|``, ``|lam|``, ``|a b|``,
    ``|a + b| / 2``, ``|rho|``): the entrywise bound ``certify`` needs on the assembly's rounding."""
    c = abs if absolute else (lambda v: v)
    weights = [W.abs() for W in chain.weights] if absolute else chain.weights
    lam = lam.abs() if absolute else lam
    n0, sizes, starts = _blocks(chain)
    n = n0 + sum(sizes)
    dev = chain.weights[0].device
    M = torch.zeros(n, n, dtype=torch.float64, device=dev)
    prev = slice(0, n0)
    off = 0
    for k, (W, act) in enumerate(zip(weights[:-1], chain.acts)):
        cur = slice(starts[k], starts[k] + sizes[k])
        lk = lam[off:off + sizes[k]]
        off += sizes[k]
        if act.kind == "slope":
            a, b = act.alpha, act.beta
            # lam/2 * (-2ab v^2 + 2(a+b) v h - 2 h^2) with v = W prev
            M[prev, prev] += c(-a * b) * (W.T * lk) @ W
            cross = c((a + b) / 2) * (lk[:, None] * W)
            M[cur, prev] += cross
            M[prev, cur] += cross.T
        else:  # pairs: lam_p (|v_p|^2 - |h_p|^2)
            M[prev, prev] += (W.T * lk) @ W
        M[cur, cur] += torch.diag(c(-1.0) * lk)
        prev = cur
    WL = weights[-1]
    M[prev, prev] += WL.T @ WL
    M[:n0, :n0] += c(-rho) * torch.eye(n0, dtype=torch.float64, device=dev)
    return M


def schur_rho(chain: Chain, lam: torch.Tensor, temperature: float = 0.0, barrier: float = 0.0):
    """Least ``rho`` with ``M(rho, lam) <= 0`` when the hidden block is negative definite, else None.
    With ``temperature > 0``, the smooth upper bound ``t log sum exp(eig / t)`` of it, plus
    ``-barrier * logdet(-D)`` that keeps descent inside the set where ``D < 0``."""
    n0 = chain.weights[0].shape[1]
    M = assemble(chain, lam, 0.0)
    P, R, D = M[:n0, :n0], M[:n0, n0:], M[n0:, n0:]
    Lc, info = torch.linalg.cholesky_ex(-D)
    if int(info) != 0:
        return None
    Y = torch.cholesky_solve(R.T, Lc)              # (-D)^{-1} R^T
    S = P + R @ Y                                   # P - R D^{-1} R^T
    eig = torch.linalg.eigvalsh((S + S.T) / 2)
    if temperature > 0:
        return temperature * torch.logsumexp(eig / temperature, 0) - barrier * 2 * Lc.diagonal().log().sum()
    return eig[-1]


_U = 2.0 ** -53          # unit roundoff of float64


def _gamma(k: int) -> float:
    return k * _U / (1 - k * _U)


def certify(chain: Chain, lam: torch.Tensor, rho: float) -> bool:
    """``-M(rho, lam)`` is positive definite in exact arithmetic, proved in floating point.

    ``A = fl(-M)`` differs from the exact matrix by at most ``gamma_k |M|_abs`` entrywise (``k`` the
    longest inner product of the assembly plus a few additions), hence by at most
    ``e = gamma_k ||M_abs||_F`` in the 2-norm. A floating-point Cholesky factorisation of
    ``A - c I`` that runs to completion proves ``A - (c - r) I`` positive definite for the rounding
    ``r <= gamma_{n+1} / (1 - gamma_{n+1}) tr(A)`` (Rump, BIT 2006; doubled here for safety and for
    the rounding of the shift itself). With ``c = e + 2 r`` the exact ``-M`` is positive definite."""
    with torch.no_grad():
        A = -assemble(chain, lam, rho)
        n = A.shape[0]
        k = max(max(W.shape) for W in chain.weights) + 4
        e = _gamma(k) * float(torch.linalg.matrix_norm(assemble(chain, lam, rho, absolute=True)))
        g = _gamma(n + 1)
        r = g / (1 - g) * float(A.diagonal().clamp_min(0).sum()) + 1e-290 * n
        c = e + 2 * r
        _, info = torch.linalg.cholesky_ex(A - c * torch.eye(n, dtype=A.dtype, device=A.device))
    return int(info) == 0


def certified_rho(chain: Chain, lam: torch.Tensor):
    """The least ``rho`` this ``lam`` certifies, up to a relative margin of 1e-9 (raised until the
    rigorous check of ``certify`` passes), or None when the hidden block is not negative definite."""
    with torch.no_grad():
        r = schur_rho(chain, lam)
    if r is None:
        return None
    r = max(float(r), 0.0)
    scale = r + float(torch.linalg.matrix_norm(chain.weights[-1], ord=2)) ** 2 * 1e-12 + 1e-300
    for margin in (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
        rho = r + margin * scale
        if certify(chain, lam, rho):
            return rho
    return None


def certified_sqrt(rho: float) -> float:
    """``sqrt(rho)`` rounded up, so that ``value ** 2 >= rho`` in floating point."""
    v = math.sqrt(rho)
    while v * v < rho:
        v = math.nextafter(v, math.inf)
    return math.nextafter(v, math.inf)


def _pair_expand(chain: Chain):
    """Map from free multipliers to per-neuron ones (pairs share theirs)."""
    index, count, dev = [], 0, chain.weights[0].device
    for W, act in zip(chain.weights[:-1], chain.acts):
        n = W.shape[0]
        if act.kind == "slope":
            index.append(torch.arange(count, count + n, device=dev))
            count += n
        else:
            owner = torch.empty(n, dtype=torch.long, device=dev)
            p = act.pairs
            owner[p[:, 0]] = torch.arange(count, count + len(p), device=dev)
            owner[p[:, 1]] = torch.arange(count, count + len(p), device=dev)
            index.append(owner)
            count += len(p)
    return torch.cat(index), count


def _initial(chain: Chain, expand):
    """Layer multipliers that certify the naive product (made strict by ``gamma``).

    Eliminating the hidden layers from the last one backwards: layer ``k`` with ``lam_k`` keeps at
    least ``lam_k / 2`` of its diagonal once the later layers are eliminated if
    ``lam_{L-1} >= 2 |W_L|^2`` and ``lam_{k-1} >= c_k lam_k |W_k|^2``, where ``c_k`` is what the
    layer's constraint costs the previous block per unit of ``lam_k |W_k|^2``: ``(a+b)^2`` from the
    cross term ``(a+b)/2 lam W`` (plus ``-2ab`` when ``ab < 0``), ``2`` for MaxMin pairs."""
    norms = [float(torch.linalg.matrix_norm(W, ord=2)) for W in chain.weights]
    L = len(chain.acts)
    for gamma in (1.05, 2.0, 4.0, 16.0, 256.0):
        t = [0.0] * L
        req = 2.0 * norms[-1] ** 2
        for k in range(L - 1, -1, -1):
            t[k] = max(gamma * req, 1e-12)
            act = chain.acts[k]
            c = (act.alpha + act.beta) ** 2 + 2 * max(-act.alpha * act.beta, 0.0) if act.kind == "slope" else 2.0
            req = c * t[k] * norms[k] ** 2
        lam = torch.cat([torch.full((W.shape[0],), t[k], dtype=torch.float64, device=W.device)
                         for k, W in enumerate(chain.weights[:-1])])
        if schur_rho(chain, lam) is not None:
            return lam
    return None


def lipsdp_fast(chain: Chain, outer: int = 20, inner: int = 100, layerwise: bool = False, start=None):
    """Certified ``(L2 bound, lam)``: L-BFGS on ``log lam`` minimising the smoothed eigenvalue
    (log-sum-exp, temperature lowered over ``outer`` rounds from 2% to 0.002% of the best value),
    the exact eigenvalue of each round's end point certified by a Cholesky factorisation of
    ``-M``. An infeasible trial point (hidden block not negative definite) gets an infinite
    objective, which the line search backs away from."""
    expand, n_free = _pair_expand(chain)
    if start is None and not layerwise:
        # LipSDP-Layer first (few parameters, well conditioned); its multipliers are a feasible
        # start for the per-neuron problem, whose value can then only improve on it
        _, start = lipsdp_fast(chain, outer=outer, inner=inner, layerwise=True)
    lam0 = _initial(chain, expand) if start is None else start
    if lam0 is None:
        raise SolverError("LipSDP: no feasible start point found")
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
    scale = float(schur_rho(chain, free0[owner]))  # the start value (sets the first temperature)
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

        start = theta.detach().clone()
        try:
            opt.step(closure)
        except (RuntimeError, ValueError):
            with torch.no_grad():
                theta.copy_(start)
        if not torch.isfinite(theta).all():
            with torch.no_grad():
                theta.copy_(start)
        accept(theta.detach().exp()[owner])
    return certified_sqrt(best_rho), best_lam


def lipsdp_cvxpy(chain: Chain, solver: str = "CLARABEL", layerwise: bool = False):
    """The reference: minimise rho subject to ``M(rho, lam) <= 0`` with cvxpy."""
    try:
        import cvxpy as cp
    except ImportError as e:  # pragma: no cover
        raise SolverError("cvxpy is not installed: pip install lipcert[sdp]") from e
    import numpy as np
    expand, n_free = _owner(chain, layerwise)
    sizes = [W.shape[0] for W in chain.weights[:-1]]
    lam = cp.Variable(n_free, nonneg=True)
    rho = cp.Variable(nonneg=True)
    n0 = chain.weights[0].shape[1]
    N = sum(sizes)
    # M is affine in (rho, lam): M = M0 - rho E + sum_j lam_j M_j, assembled from unit multipliers
    M0 = assemble(chain, torch.zeros(N, dtype=torch.float64), 0.0).numpy()
    E = np.zeros_like(M0)
    E[:n0, :n0] = np.eye(n0)
    expr = M0 - rho * E
    for j in range(n_free):
        unit = (expand == j).to(torch.float64)
        Mj = (assemble(chain, unit, 0.0).numpy() - M0)
        expr = expr + lam[j] * Mj
    prob = cp.Problem(cp.Minimize(rho), [(expr + expr.T) / 2 << 0])
    prob.solve(solver=getattr(cp, solver))
    if prob.status not in ("optimal", "optimal_inaccurate") or rho.value is None:
        raise SolverError(f"cvxpy/{solver} returned status {prob.status}")
    return math.sqrt(max(float(rho.value), 0.0)), prob.status


def _owner(chain: Chain, layerwise: bool):
    """Free multiplier of every hidden neuron: its own, its MaxMin pair's, or its layer's."""
    expand, n_free = _pair_expand(chain)
    if layerwise:
        sizes = [W.shape[0] for W in chain.weights[:-1]]
        return torch.cat([torch.full((s,), k, device=expand.device) for k, s in enumerate(sizes)]), len(sizes)
    return expand, n_free


def _free_start(lam0: torch.Tensor, owner: torch.Tensor, n_free: int) -> torch.Tensor:
    """Free multipliers from per-neuron ones: the largest over each owner's neurons (the starts
    are constant per layer, so for a layer this is its common value)."""
    return torch.zeros(n_free, dtype=torch.float64, device=lam0.device).scatter_reduce(
        0, owner, lam0, "amax", include_self=False)


def lipsdp_ipm(chain: Chain, layerwise: bool = False, tol: float = 1e-8, max_iter: int = 100):
    """Certified L2 bound by the structured primal-dual interior-point method
    (``ipm.py``), started from the naive bound's multipliers. The value is the Schur eigenvalue of
    the final multipliers, certified by a Cholesky factorisation of ``-M``; the start point's
    certificate is the fallback, so the result is never worse than the naive product.
    Returns ``(bound, lam, info)``; ``info["gap"]`` is the relative distance of ``bound`` from the
    dual estimate ``sqrt(rho_lower)`` of the SDP optimum (meaningful when the primal residual is small)."""
    from .ipm import ipm_lipsdp
    expand, _ = _pair_expand(chain)
    owner, n_free = _owner(chain, layerwise)
    lam0 = _initial(chain, expand)
    if lam0 is None:
        raise SolverError("LipSDP: no feasible start point found")
    free0 = _free_start(lam0, owner, n_free)
    r0 = float(schur_rho(chain, free0[owner]))
    rho0 = r0 + 0.5 * abs(r0) + 1e-12
    final, info = ipm_lipsdp(chain, owner, n_free, free0, rho0, tol=tol, max_iter=max_iter)
    best_rho, best_lam = math.inf, None
    # The optimum lies on the boundary of the LMI, where -M has eigenvalues at rounding level that no
    # margin on rho lifts (hidden-only directions): blends (1 - t) final + t start keep -M >= t times
    # the start's margin (the LMI is affine in lam) at the cost of t times the start's excess.
    start = free0[owner]
    for t in (0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1.0):
        lam = (1 - t) * final + t * start
        rho = certified_rho(chain, lam)
        if rho is not None and rho < best_rho:
            best_rho, best_lam = rho, lam.clone()
        if best_lam is not None and t >= 1e-5:
            break
    if best_lam is None:
        raise SolverError("LipSDP: no certified point found")
    value = certified_sqrt(best_rho)
    info["gap"] = value / math.sqrt(info["rho_lower"]) - 1 if info["rho_lower"] > 0 else float("inf")
    return value, best_lam, info
