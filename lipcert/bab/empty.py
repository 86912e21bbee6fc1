"""Checking that a fixed phase pattern has no point in a box (a Farkas certificate).

Under a pattern (every (leaky) ReLU's phase fixed) the pre-activations are affine,
``z_j(x) = z_j(x_c) + M_j (x - x_c)``. If multipliers ``y >= 0`` satisfy

    max over x in the box of  sum_j y_j s_j z_j(x)  <  0        (s_j = +1 active, -1 inactive)

then no point of the box has ``s_j z_j(x) >= 0`` for every ``j``: the pattern's region misses the
box. With ``x_c`` the box centre and ``r`` at least its half-widths, the maximum is at most
``sum_j y_j s_j z_j(x_c) + sum_i r_i |sum_j y_j s_j M_ji|``, evaluated with
``floating.forward_with_error``: ``z(x_c)`` by the affine pass at the centre and ``M`` by the
linear pass on the unit vectors, each with its rounding bound, the sums raised by ``gamma``. The
multipliers (from the LP in ``exact.pattern``) are only candidates: a wrong one fails the check.
"""
from __future__ import annotations

import torch

from .floating import forward_with_error, gamma


def certify_empty(graph, lo: torch.Tensor, up: torch.Tensor, phases: dict, multipliers: dict | None) -> bool:
    """True when the multipliers prove that no point of ``[lo, up]`` (``[*in]``) has the
    pattern ``phases`` (name -> {0,1} ``[*shape]``, 1 = ``z >= 0``); False when they do not."""
    if not multipliers:
        return False
    dt = lo.dtype
    u, tiny = torch.finfo(dt).eps / 2, torch.finfo(dt).tiny
    shape, d = lo.shape, lo.numel()
    centre = (lo + up) / 2
    r = (torch.maximum(up - centre, centre - lo) * (1 + 4 * u) + tiny).flatten()  # box inside centre -+ r
    at_centre = forward_with_error(graph, centre[None], masks=phases)
    eye = torch.eye(d, dtype=dt, device=lo.device).reshape(d, *shape)
    slopes = forward_with_error(graph, eye, masks=phases, affine=False)
    if at_centre is None or slopes is None:
        return False
    n_total = sum(len(y) for y in multipliers.values()) + len(multipliers)
    g = gamma(n_total + 2, dt)
    phi = torch.zeros((), dtype=dt, device=lo.device)
    phi_err = torch.zeros_like(phi)
    a = torch.zeros(d, dtype=dt, device=lo.device)
    a_err = torch.zeros_like(a)
    for name, y in multipliers.items():
        y = torch.as_tensor(y, dtype=dt, device=lo.device).clamp(min=0)
        w = y * (phases[name].flatten().to(dt) * 2 - 1)                # y_j s_j, exact
        z, ez = at_centre[0][name].flatten(), at_centre[1][name].flatten()
        M, EM = slopes[0][name].reshape(d, -1), slopes[1][name].reshape(d, -1)  # [d, n]: dz_j / dx_i
        phi = phi + (w * z).sum()
        phi_err = phi_err + (y * ez).sum() + g * (y * z.abs()).sum()
        a = a + M @ w
        a_err = a_err + EM @ y + g * (M.abs() @ y)
    spread = (r * (a.abs() + a_err * (1 + g))).sum()
    bound = phi + phi.abs() * gamma(4, dt) + (phi_err * (1 + g) + spread) * (1 + gamma(d + 4, dt)) + tiny
    return bool(bound < 0)
