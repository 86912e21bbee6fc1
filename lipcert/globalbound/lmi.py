"""The LipSDP matrix inequality (Fazlyab et al. 2019) of a chain, its multipliers and a start point.

With ``z = [x; h_1; ...; h_L]`` (input and all hidden post-activations) and per-neuron
multipliers ``lam >= 0``, each activation contributes a quadratic form valid for every pair of
inputs (incremental form):
  slope-restricted in [a, b]: ``(dh - a dv)(b dv - dh) >= 0``, i.e. ``-2ab dv^2 + 2(a+b) dv dh - 2 dh^2 >= 0``
  (times lam / 2 per neuron; ``dv`` the pre-activation change);
  MaxMin/GroupSort pair (a permutation of its input at every point): ``|dv_p|^2 - |dh_p|^2 >= 0``
  (Pauli et al. 2024; one multiplier per pair).
Adding them to ``rho |dx|^2 - |W_L dh_L|^2`` gives ``M(rho, lam) = Q(lam) + diag(-rho I, 0, .., W_L^T W_L)``;
``M <= 0`` certifies ``L_2 <= sqrt(rho)``. Split ``M`` into the input block and the hidden block
``D``: for ``D < 0`` the least feasible ``rho`` is ``lambda_max(P - R D^{-1} R^T)`` (Schur
complement), an eigenvalue, convex in ``lam``.
"""
from __future__ import annotations

import torch

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
    ``-barrier * logdet(-D)`` that keeps descent inside the set where ``D < 0``. (Computed in
    floating point: an estimate; ``certificate.certified_rho`` turns it into a proved value.)"""
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


def project(chain: Chain, lam: torch.Tensor) -> torch.Tensor:
    """The nearest valid per-neuron multipliers: finite, ``>= 0``, and equal within each
    MaxMin/GroupSort pair (the pair's constraint holds for the pair, not per neuron: mean)."""
    expand, n_free = _pair_expand(chain)
    lam = torch.nan_to_num(lam.detach().to(chain.weights[0].device, torch.float64), nan=0.0, posinf=0.0)
    lam = lam.clamp_min(0.0)
    if n_free == lam.numel():
        return lam
    free = torch.zeros(n_free, dtype=torch.float64, device=lam.device).scatter_reduce(
        0, expand, lam, "mean", include_self=False)
    return free[expand]


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
