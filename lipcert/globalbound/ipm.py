"""LipSDP by a primal-dual interior-point method (HKM direction) that uses the LMI's structure.

The multipliers ``y = [rho, lam]`` are the dual variables of the SDP pair

    (D)  max  -rho   s.t.  S = -M(rho, lam) = C - sum_k y_k A_k  >= 0,   lam >= 0
    (P)  min  tr(C X)  s.t.  tr(A_k X) - x_k = b_k,   X >= 0,  x >= 0

(``C = -W_L^T W_L`` on the last hidden block, ``A_rho = -E`` the input block, ``A_j = F_j`` the
multiplier's quadratic-constraint matrix, ``b = (-1, 0, ..)``). Every ``F_j`` is a sum of rank-two
terms ``U_i D_i U_i^T`` over the neurons it owns (``atoms``: ``U_i = [e_i, w_i]``, the neuron's
coordinate in ``z`` and its weight row on the previous layer's coordinates), so the Schur-complement
matrix ``M_kl = tr(A_k X A_l S^-1)`` comes from the two small matrices ``U^T X U`` and
``U^T S^-1 U`` (``2m x 2m`` for ``m`` neurons): an iteration costs a few ``n x n`` factorisations
and ``O(n m^2)`` products, where a generic solver forms every ``A_k`` densely.

The start is dual feasible (a certified ``(rho, lam)``) and the dual iterate stays strictly
feasible (steps stop short of the boundary), so every iterate is a certificate; Mehrotra's
rule picks the centring parameter. Soundness does not rest on this solver: the caller recomputes
the bound of the final multipliers by the Schur-complement eigenvalue and certifies it by a
Cholesky factorisation of ``-M``.
"""
from __future__ import annotations

import torch

from .chain import Chain
from .lmi import _blocks, assemble


def atoms(chain: Chain):
    """``U`` [n, m, 2] and ``D`` [m, 2, 2] with ``F_i = U_i D_i U_i^T`` for every hidden neuron ``i``."""
    n0, sizes, starts = _blocks(chain)
    m = sum(sizes)
    n = n0 + m
    dev = chain.weights[0].device
    U = torch.zeros(n, m, 2, dtype=torch.float64, device=dev)
    D = torch.zeros(m, 2, 2, dtype=torch.float64, device=dev)
    prev, off = slice(0, n0), 0
    for k, (W, act) in enumerate(zip(chain.weights[:-1], chain.acts)):
        s = sizes[k]
        idx = torch.arange(off, off + s, device=dev)
        U[starts[k] + torch.arange(s, device=dev), idx, 0] = 1.0
        U[prev, off:off + s, 1] = W.T.to(torch.float64)
        if act.kind == "slope":
            a, b = act.alpha, act.beta
            D[idx] = torch.tensor([[-1.0, (a + b) / 2], [(a + b) / 2, -a * b]], dtype=torch.float64, device=dev)
        else:  # MaxMin/GroupSort pairs: |v|^2 - |h|^2 per neuron, the pair sharing its multiplier
            D[idx] = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, device=dev)
        prev = slice(starts[k], starts[k] + s)
        off += s
    return U, D


def _max_step(L, dZ):
    """Largest ``a`` with ``Z + a dZ`` positive definite, ``Z = L L^T``."""
    A = torch.linalg.solve_triangular(L, torch.linalg.solve_triangular(L, dZ, upper=False).T, upper=False)
    low = float(torch.linalg.eigvalsh((A + A.T) / 2)[0])
    return -1.0 / low if low < 0 else float("inf")


def _max_step_vec(v, dv):
    neg = dv < 0
    return float((-v[neg] / dv[neg]).min()) if bool(neg.any()) else float("inf")


class _Problem:
    def __init__(self, chain: Chain, owner: torch.Tensor, n_free: int):
        self.chain, self.owner, self.n_free = chain, owner, n_free
        U, self.D = atoms(chain)
        self.n, self.m = U.shape[0], U.shape[1]
        self.n0 = chain.weights[0].shape[1]
        self.Uf = U.reshape(self.n, 2 * self.m)
        dev = self.dev = chain.weights[0].device
        self.Sg = torch.zeros(self.m, n_free, dtype=torch.float64, device=dev)     # neuron -> free multiplier
        self.Sg[torch.arange(self.m, device=dev), owner] = 1.0
        self.zero = assemble(chain, torch.zeros(self.m, dtype=torch.float64, device=dev), 0.0)
        self.b = torch.zeros(n_free + 1, dtype=torch.float64, device=dev)
        self.b[0] = -1.0

    def slack(self, y):
        return -assemble(self.chain, y[1:][self.owner], float(y[0]))

    def dslack(self, dy):
        """``dS = -sum dy_k A_k``: the change of ``S`` along ``dy`` (linear part of ``-M``)."""
        return -(assemble(self.chain, dy[1:][self.owner], float(dy[0])) - self.zero)

    def apply(self, Z):
        """``(tr(A_k Z))_k``."""
        P = (self.Uf.T @ Z @ self.Uf).reshape(self.m, 2, self.m, 2)
        diag = torch.einsum("iab,ibia->i", self.D, P)
        return torch.cat([-Z[:self.n0, :self.n0].trace().reshape(1), self.Sg.T @ diag])

    def schur(self, X, Sinv):
        """``M_kl = tr(A_k X A_l S^-1)`` over ``[rho, free multipliers]``."""
        m, n0 = self.m, self.n0
        XU, SU = X @ self.Uf, Sinv @ self.Uf
        P1 = (self.Uf.T @ XU).reshape(m, 2, m, 2)
        P2 = (self.Uf.T @ SU).reshape(m, 2, m, 2)
        Q1 = torch.einsum("iab,ibkc->iakc", self.D, P1)     # D_i U_i^T X U_k
        Q2 = torch.einsum("kcd,kdia->kcia", self.D, P2)     # D_k U_k^T S^-1 U_i
        M_atom = torch.einsum("iakc,kcia->ik", Q1, Q2)
        XU0, SU0 = XU[:n0].reshape(n0, m, 2), SU[:n0].reshape(n0, m, 2)
        r_atom = -torch.einsum("iab,kib,kia->i", self.D, SU0, XU0)
        M = torch.empty(self.n_free + 1, self.n_free + 1, dtype=torch.float64, device=self.dev)
        M[0, 0] = (X[:n0, :n0] * Sinv[:n0, :n0]).sum()
        M[0, 1:] = M[1:, 0] = self.Sg.T @ r_atom
        M[1:, 1:] = self.Sg.T @ M_atom @ self.Sg
        return (M + M.T) / 2


def ipm_lipsdp(chain: Chain, owner: torch.Tensor, n_free: int, lam0: torch.Tensor, rho0: float,
               tol: float = 1e-8, max_iter: int = 100, gamma: float = 0.95):
    """Per-neuron multipliers near the LipSDP optimum, from the strictly feasible ``(rho0, lam0)``,
    and a dict with the iteration count, the primal residual and ``rho_lower = -tr(C X)``: for a
    primal-feasible ``X`` this is a lower bound on the SDP's optimal ``rho`` (weak duality), so with
    a small residual it measures how far the multipliers are from the SDP optimum. (It bounds the
    SDP, not the Lipschitz constant: the certificate is the multipliers' upper bound.)"""
    P = _Problem(chain, owner, n_free)
    y = torch.cat([torch.tensor([rho0], dtype=torch.float64, device=P.dev), lam0.to(P.dev, torch.float64)])
    S = P.slack(y)
    LS, info = torch.linalg.cholesky_ex(S)
    if int(info) != 0:
        return lam0[owner], {"iterations": 0, "primal_residual": float("inf"), "rho_lower": 0.0, "rho": rho0}
    n, N = P.n, P.n + n_free
    X = torch.eye(n, dtype=torch.float64, device=P.dev) / P.n0           # tr(E X) = 1 at the start
    mu0 = float((X * S).sum()) / n
    x = mu0 / y[1:]                                          # centred LP part: x_j s_j = mu0
    it = 0
    for it in range(max_iter):
        s = y[1:]
        mu = (float((X * S).sum()) + float(x @ s)) / N
        r_p = P.b - P.apply(X) + torch.cat([torch.zeros(1, dtype=torch.float64, device=P.dev), x])
        if mu * N <= tol * max(abs(float(y[0])), 1e-12) and float(r_p.abs().max()) <= 1e-6:
            break
        Sinv = torch.cholesky_inverse(LS)
        M = P.schur(X, Sinv)
        M[1:, 1:] += torch.diag(x / s)
        d = M.diagonal().clamp_min(1e-300).rsqrt()
        LM, info = torch.linalg.cholesky_ex(M * d[:, None] * d[None, :])
        if int(info) != 0:
            break
        tr_Sinv = P.apply(Sinv)
        LX, info_x = torch.linalg.cholesky_ex(X)             # X is fixed within the iteration

        def direction(sigma_mu):
            rhs = P.b - sigma_mu * tr_Sinv
            rhs[1:] += sigma_mu / s
            dy = d * torch.cholesky_solve((d * rhs)[:, None], LM)[:, 0]
            dS = P.dslack(dy)
            dX = sigma_mu * Sinv - X - X @ dS @ Sinv
            dX = (dX + dX.T) / 2
            ds = dy[1:]
            dx = sigma_mu / s - x - x * ds / s
            return dy, dS, dX, ds, dx

        def steps(dS, dX, ds, dx):
            ap = min(_max_step(LX, dX) if int(info_x) == 0 else 0.0, _max_step_vec(x, dx))
            ad = min(_max_step(LS, dS), _max_step_vec(s, ds))
            return min(1.0, gamma * ap), min(1.0, gamma * ad)

        dy, dS, dX, ds, dx = direction(0.0)                  # predictor (affine scaling)
        ap, ad = steps(dS, dX, ds, dx)
        mu_aff = (float(((X + ap * dX) * (S + ad * dS)).sum()) + float((x + ap * dx) @ (s + ad * ds))) / N
        sigma = min(1.0, max(mu_aff / mu, 0.0) ** 3)
        dy, dS, dX, ds, dx = direction(sigma * mu)           # centred step
        ap, ad = steps(dS, dX, ds, dx)
        y_new = y + ad * dy
        S_new = P.slack(y_new)
        LS_new, info = torch.linalg.cholesky_ex(S_new)
        while int(info) != 0 and ad > 1e-12:                 # rounding at the boundary: back off
            ad *= 0.5
            y_new = y + ad * dy
            S_new = P.slack(y_new)
            LS_new, info = torch.linalg.cholesky_ex(S_new)
        if int(info) != 0 or not bool((y_new[1:] > 0).all()):
            break
        y, S, LS = y_new, S_new, LS_new
        X = X + ap * dX
        x = x + ap * dx
    r_p = P.b - P.apply(X) + torch.cat([torch.zeros(1, dtype=torch.float64, device=P.dev), x])
    C = P.slack(torch.zeros_like(y))
    info = {"iterations": it + 1, "primal_residual": float(r_p.abs().max()), "rho_lower": float(-(C * X).sum()),
            "rho": float(y[0])}
    return y[1:][owner], info
