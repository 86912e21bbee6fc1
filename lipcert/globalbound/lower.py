"""A lower bound on the global Lipschitz constant, with a witness pair anyone can re-evaluate.

Random points at several scales; at each, the exact Jacobian ``J(x)`` (autograd, float64) and its
operator norm ``||J(x)||_{p->p}`` (an estimate of the constant); a random local search moves the
best points while the norm grows (ReLU norms are piecewise constant: no useful gradient). The best
points become pairs
``x1, x2 = x -+ t v`` with ``v`` the input direction that realises the norm (l2: the top right
singular vector; l_inf: the signs of the largest row; l1: the largest column's coordinate), for a
few ``t``. The reported value is ``(||f(x2) - f(x1)||_p - rounding) / ||x2 - x1||_p``: a difference
quotient of two points, so at most the constant (no differentiability assumed), with a margin for
the rounding of the two float64 evaluations subtracted.
"""
from __future__ import annotations

import copy
import math

import torch

SCALES = (0.3, 1.0, 3.0, 10.0)    # standard deviations of the sampled points (cycled)


def _vnorm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Vector norm of every row of ``d`` [N, k]."""
    return {"inf": lambda: d.abs().amax(1), "2": lambda: d.norm(dim=1), "1": lambda: d.abs().sum(1)}[norm]()


def _jacobians(f, x: torch.Tensor) -> torch.Tensor:
    """``J(x)`` [N, K, n] of ``f`` (flattened output and input) at every point ``x`` [N, *shape]."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = f(x).flatten(1)
        rows = [torch.autograd.grad(y[:, k].sum(), x, retain_graph=k + 1 < y.shape[1])[0].flatten(1)
                for k in range(y.shape[1])]
    return torch.stack(rows, 1)


def _op_norm_and_direction(J: torch.Tensor, norm: str):
    """``||J_i||_{p->p}`` [N] and a unit (in l_p) input direction ``v_i`` [N, n] attaining it."""
    if norm == "2":
        _, S, Vh = torch.linalg.svd(J, full_matrices=False)
        return S[:, 0], Vh[:, 0, :]
    if norm == "inf":
        sums = J.abs().sum(2)                           # [N, K] row sums
        i = sums.argmax(1)
        return sums.amax(1), torch.sign(J[torch.arange(len(J)), i])
    sums = J.abs().sum(1)                               # [N, n] column sums
    j = sums.argmax(1)
    return sums.amax(1), torch.nn.functional.one_hot(j, J.shape[2]).to(J.dtype)


@torch.no_grad()
def sampled_lower(model, input_shape, norm: str, samples: int | None = None, seed: int = 0, device=None,
                  top: int = 8, chunk: int = 256, climb: int = 20, tries: int = 16):
    """``(lower, witness)``: ``lower <= ||f(x1) - f(x2)||_p / ||x1 - x2||_p`` for the witness
    ``{"x1", "x2"}`` (model input shape, no batch), hence at most the global constant (output
    norm = input norm). ``samples``: random points (default 8192 for inputs of up to 256 entries,
    else 1024; 0 gives ``(0.0, {})``), then ``climb`` rounds of ``tries`` random moves around the
    ``top`` best. The model is copied (float64); the caller's model and the global random state
    are untouched."""
    if samples is None:
        samples = 8192 if math.prod(input_shape) <= 256 else 1024
    if samples <= 0:
        return 0.0, {}
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    f = copy.deepcopy(model).double().to(device).eval()
    shape = tuple(input_shape)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    scale = torch.tensor(SCALES, dtype=torch.float64).repeat(samples // len(SCALES) + 1)[:samples]
    pts = (torch.randn((samples,) + shape, generator=gen, dtype=torch.float64)
           * scale.reshape(-1, *([1] * len(shape)))).to(device)
    est = torch.cat([_op_norm_and_direction(_jacobians(f, pts[i:i + chunk]), norm)[0]
                     for i in range(0, samples, chunk)])
    best = est.topk(min(top, samples)).indices
    x, val = pts[best], est[best]
    k = len(best)
    ar = torch.arange(k, device=device)
    expand = (1, k) + (1,) * len(shape)
    for r in range(climb):     # random local search around the best points (ReLU norms are piecewise constant)
        sigma = 0.5 * 0.8 ** r * x.flatten(1).abs().amax(1).clamp_min(1.0)              # [top]
        noise = torch.randn((tries,) + tuple(x.shape), generator=gen, dtype=torch.float64).to(device)
        cand = x.unsqueeze(0) + sigma.reshape(expand) * noise                           # [tries, top, *shape]
        cval = _op_norm_and_direction(_jacobians(f, cand.reshape(-1, *shape)), norm)[0].reshape(tries, k)
        j = cval.argmax(0)                                                              # [top]
        take = cval[j, ar] > val
        val = torch.where(take, cval[j, ar], val)
        x = torch.where(take.reshape(k, *([1] * len(shape))), cand[j, ar], x)
    _, v = _op_norm_and_direction(_jacobians(f, x), norm)      # [top, n]
    x = x.flatten(1)
    eps = torch.finfo(torch.float64).eps
    value, witness = 0.0, {}
    for rel in (1e-2, 1e-4, 1e-6):
        t = rel * x.abs().amax(1, keepdim=True).clamp_min(1.0)
        x1, x2 = x - t * v, x + t * v
        y1, y2 = f(x1.reshape(-1, *shape)).flatten(1), f(x2.reshape(-1, *shape)).flatten(1)
        # the rounding of the two evaluations is paid for out of the quotient: it stays a lower bound
        err = _vnorm(64 * eps * (y1.abs() + y2.abs()), norm)
        dist = _vnorm(x2 - x1, norm)
        q = torch.where(dist > 0, (_vnorm(y2 - y1, norm) - err).clamp_min(0) / dist.clamp_min(1e-300),
                        torch.zeros_like(dist))
        i = int(q.argmax())
        if float(q[i]) > value:
            value = float(q[i])
            witness = {"x1": x1[i].reshape(shape).cpu(), "x2": x2[i].reshape(shape).cpu()}
    return value, witness
