"""Certified robustness radius from local Lipschitz bounds of the logit margins.

For label ``y`` and every other class ``j`` the margin ``m_j(x) = f_y(x) - f_j(x)``. If on the
ball ``B(x0, r)`` each margin's local Lipschitz constant (l_inf input) is at most ``L_j(r)``, then
``m_j(x) >= m_j(x0) - L_j(r) ||x - x0||_inf > 0`` for ``||x - x0|| < m_j(x0) / L_j(r)``; the
prediction is certified on ``B(x0, r)`` when ``r * L_j(r) < m_j(x0)`` for all ``j``. ``L_j(r)``
grows with ``r``, so the largest certified ``r`` is found by bisection. The naive radius uses the
region-free (global) constant instead: ``min_j m_j(x0) / L_j^global``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidInput
from ..lipschitz.local import local_lipschitz
from ..region import as_tensor, split_batch


@dataclass
class RadiusResult:
    radius: float           # certified: the prediction is constant on the l_inf ball of this radius
    naive_radius: float     # the same from the global (naive product) constants
    label: int
    margin: float           # smallest logit margin at x0
    evaluations: int

    def __repr__(self):
        return (f"CertifiedRadius(r = {self.radius:.5g} (naive global {self.naive_radius:.5g}), label {self.label}, "
                f"margin {self.margin:.4g}, {self.evaluations} bound evaluations)")


def certified_radius(model, x0, label: int, *, method: str = "crown", domain=None, r_max: float = 1.0,
                     tol: float = 1e-3, max_iter: int = 30) -> RadiusResult:
    x0 = as_tensor(x0, "x0")
    xb, _ = split_batch(model, x0)
    if xb.shape[0] != 1:
        raise InvalidInput("certified_radius takes one input point")
    with torch.no_grad():
        logits = model(xb.to(next(model.parameters()).dtype)).double()[0]
    K = logits.numel()
    if not 0 <= label < K:
        raise InvalidInput(f"label {label} out of range for {K} outputs")
    if int(logits.argmax()) != label:
        return RadiusResult(0.0, 0.0, label, float(logits[label] - logits.max()), 0)
    others = [j for j in range(K) if j != label]
    C = torch.zeros(len(others), K, dtype=torch.float64)
    for r, j in enumerate(others):
        C[r, label], C[r, j] = 1.0, -1.0
    from ..bounds import output_bounds
    # margins at x0 enclosed by outward interval arithmetic (their lower ends are what is certified)
    margins = output_bounds(model, xb, 0.0, method="ibp", C=C)[0].reshape(-1).double()
    margins = torch.where(margins > 0, margins * (1 - 2.0 ** -52), margins)
    if not bool((margins > 0).all()):
        return RadiusResult(0.0, 0.0, label, float(margins.min()), 0)
    naive = local_lipschitz(model, xb, 0.0, method="naive", outputs=C, attack_steps=0, attack_samples=4)
    naive_r = float((margins / naive.per_output_upper.clamp(min=1e-30)).min()) * (1 - 2.0 ** -52)
    evals = 0

    def certified(r):
        nonlocal evals
        evals += 1
        c = local_lipschitz(model, xb, r, method=method, outputs=C, domain=domain, attack_steps=0, attack_samples=4)
        return bool((r * c.per_output_upper * (1 + 2.0 ** -52) < margins).all())  # product rounded up

    lo, hi = 0.0, r_max
    if certified(hi):
        return RadiusResult(hi, min(naive_r, hi), label, float(margins.min()), evals)
    lo = min(naive_r, hi) if naive_r > 0 and certified(min(naive_r, hi)) else 0.0
    for _ in range(max_iter):
        if hi - lo <= tol * max(hi, 1e-12):
            break
        mid = (lo + hi) / 2
        if certified(mid):
            lo = mid
        else:
            hi = mid
    return RadiusResult(lo, naive_r, label, float(margins.min()), evals)
