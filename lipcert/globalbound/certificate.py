"""The check every reported global bound passes, whichever solver proposed it.

Why the reported ``upper`` is sound in floating point, for every solver. A solver (the structured
interior-point method, L-BFGS, or cvxpy with Clarabel, SCS or any other SDP solver) only proposes
multipliers ``lam``; its own value of ``rho`` is never reported (``details["solver_value"]``): SCS
and Clarabel stop at a tolerance and may return a ``rho`` below the SDP optimum, and even below the
true constant. lipcert turns the multipliers into a bound itself (``certify_multipliers``):

1. ``lam`` is projected onto the valid set (finite, ``>= 0``, shared within MaxMin pairs), so the
   quadratic constraints it weighs hold for every pair of inputs;
2. the least ``rho`` for that ``lam`` is the Schur-complement eigenvalue, raised by a relative
   margin until ``certify`` proves ``-M(rho, lam)`` positive definite *in exact arithmetic*: a
   floating-point Cholesky factorisation of ``fl(-M) - cI`` runs to completion, with ``c``
   covering the rounding of the assembly of ``M`` and of the factorisation (Rump, BIT 2006);
3. if no margin passes (the point sits on the LMI's boundary, where ``-M`` has eigenvalues at
   rounding level, or outside it), ``lam`` is blended toward the strictly feasible start point;
   the LMI is affine in ``(rho, lam)``, so a blend with weight ``t`` keeps ``t`` times the start's
   margin;
4. the square root is rounded up (``certified_sqrt``), and the result is ``min`` with the naive
   product, whose every factor is proved the same way (``certified_op_norm``) and whose products
   are rounded up. If no multipliers pass, the naive product is the answer, and the status says so.

A poor solver output therefore costs tightness, never soundness. (Not covered: the dense matrices of
layers that round, BatchNorm and AvgPool, are taken as exact; Linear and Conv matrices are exact.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..rounding import higham_gamma
from .chain import Chain
from .lmi import assemble, project, schur_rho

_gamma = higham_gamma  # float64


def _proves_pd(A: torch.Tensor, e: float) -> bool:
    """The exact symmetric matrix within 2-norm distance ``e`` of the computed ``A`` is positive
    definite: the Cholesky factorisation of ``A - c I`` completes, ``c = e + 2 r`` with ``r`` Rump's
    bound ``gamma_{n+1} / (1 - gamma_{n+1}) tr(A)`` on the factorisation's rounding (doubled for
    safety and for the rounding of the shift itself). ``e`` and the trace are sums of nonnegative
    terms computed in floating point (relative error below ``n^2 u``): both are raised by 1e-6."""
    n = A.shape[0]
    g = _gamma(n + 1)
    r = g / (1 - g) * float(A.diagonal().clamp_min(0).sum()) + 1e-290 * n
    c = (e + 2 * r) * (1 + 1e-6)
    _, info = torch.linalg.cholesky_ex(A - c * torch.eye(n, dtype=A.dtype, device=A.device))
    return int(info) == 0


def certify(chain: Chain, lam: torch.Tensor, rho: float) -> bool:
    """``-M(rho, lam)`` is positive definite in exact arithmetic, proved in floating point.

    ``A = fl(-M)`` differs from the exact matrix by at most ``gamma_k |M|_abs`` entrywise (``k`` the
    longest inner product of the assembly plus a few additions), hence by at most
    ``e = gamma_k ||M_abs||_F`` in the 2-norm; ``_proves_pd`` does the rest. ``lam`` is used as
    given (negative entries make the assembled constraints invalid: project first)."""
    with torch.no_grad():
        A = -assemble(chain, lam, rho)
        k = max(max(W.shape) for W in chain.weights) + 4
        e = _gamma(k) * float(torch.linalg.matrix_norm(assemble(chain, lam, rho, absolute=True)))
        return _proves_pd(A, e)


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


def mul_up(a: float, b: float) -> float:
    """An upper bound on the exact product of two nonnegative floats."""
    return math.nextafter(a * b, math.inf)


@dataclass(frozen=True)
class Certified:
    value: float           # certified_sqrt(rho): the l2 bound
    rho: float             # certify(chain, lam, rho) is True
    lam: torch.Tensor      # [hidden] the multipliers that passed (projected, possibly blended)
    blend: float           # weight of the start point in lam (0: the solver's own multipliers)


BLENDS = (0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1e-2, 1e-1, 1.0)


def certify_multipliers(chain: Chain, lam, start=None) -> Certified | None:
    """The best certified bound from a solver's per-neuron multipliers ``lam`` [hidden] (any values:
    projected first) and a strictly feasible ``start`` [hidden]: ``lam`` itself, then blends
    ``(1 - t) lam + t start`` (a few small ``t`` are always tried: at the SDP optimum the blend often
    certifies a smaller ``rho``; larger ``t`` only while nothing passed). None when nothing passes."""
    cands = []
    if lam is not None:
        lam = project(chain, lam)
        cands = [(t, lam if t == 0 else (1 - t) * lam + t * start) for t in BLENDS if t == 0 or start is not None]
    elif start is not None:
        cands = [(1.0, start)]
    best = None
    for t, cand in cands:
        rho = certified_rho(chain, cand)
        if rho is not None and (best is None or rho < best.rho):
            best = Certified(certified_sqrt(rho), rho, cand.clone(), t)
        if best is not None and t >= 1e-5:
            break
    return best


def certified_op_norm(W: torch.Tensor, norm: str) -> float:
    """An upper bound on the exact operator norm ``||W||_{p->p}`` of the float64 matrix ``W``.

    l_inf (max row sum) and l1 (max column sum): the computed sum of ``k`` nonnegative terms is at
    least ``(1 - gamma_k)`` times the exact one; rounded up accordingly. l2: ``s`` from the SVD, raised
    until ``s^2 I - G`` is proved positive definite for the Gram matrix ``G`` of the smaller side
    (``fl(G)`` is within ``gamma_m |W|^T |W|`` entrywise, ``fl(s^2 I - G)`` within another unit
    roundoff of ``s^2 I + |W|^T |W|``); the Frobenius norm, rounded up, when no raise passes."""
    W = W.detach().to(torch.float64)
    if not bool(W.any()):
        return 0.0
    if norm in ("inf", "1"):
        sums = W.abs().sum(1 if norm == "inf" else 0)
        k = W.shape[1 if norm == "inf" else 0]
        return math.nextafter(float(sums.max()) * (1 + 3 * _gamma(k)), math.inf)
    with torch.no_grad():
        V = W if W.shape[0] >= W.shape[1] else W.T       # G = V^T V, the smaller Gram matrix
        m, n = V.shape
        G, Ga = V.T @ V, V.abs().T @ V.abs()
        s0 = float(torch.linalg.matrix_norm(W, ord=2))
        eye = torch.eye(n, dtype=torch.float64, device=W.device)
        for margin in (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2):
            s = math.nextafter(s0 * (1 + margin), math.inf)
            e = _gamma(m + 2) * float(torch.linalg.matrix_norm(s * s * eye + Ga))
            if _proves_pd(s * s * eye - G, e):
                return s
        fro = float(V.square().sum())
        return certified_sqrt(math.nextafter(fro * (1 + 3 * _gamma(V.numel())), math.inf))
