"""Linear regions of piecewise-linear networks.

With every (leaky) ReLU's phase fixed, the network is affine in ``x``; its pre-activations are
``z_j(x) = M_j x + c_j``. The region of a phase pattern is the polyhedron
``{x in box : phase_j * z_j(x) >= 0}``. ``interior_point`` finds its Chebyshev-like centre (the
point maximising the distance to every hyperplane and box face) with an LP: a positive margin means
the region has an interior, where the gradient is the pattern's Jacobian, so a witness pair around
that point realises it (the pair is checked by evaluation); a negative margin says the region is
empty, a claim that counts only once ``bab.empty`` has checked its Farkas certificate.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..graph import ops
from ..rules import lookup
from .lp import Model


def pattern_affine(graph, phases: dict, dtype=torch.float64) -> dict:
    """``name -> (M [n, d], c [n])`` for every pre-activation in ``phases`` (``name -> {0,1}
    tensor [*shape]``, 1 = active), the network being affine under that pattern."""
    in_shape = graph[graph.input].shape
    d = math.prod(in_shape)
    pts = torch.cat([torch.zeros(1, d, dtype=dtype), torch.eye(d, dtype=dtype)]).reshape(d + 1, *in_shape)
    env = {graph.input: pts}
    out = {}
    for node in graph.nodes:
        if node.name in env:
            continue
        xs = [env[i] for i in node.inputs]
        if node.op in (ops.RELU, ops.LEAKY_RELU):
            z = xs[0]
            a = float(node.attrs.get("negative_slope", 0.0))
            mask = phases[node.inputs[0]].to(dtype)
            env[node.name] = z * (a + (1 - a) * mask)
        else:
            env[node.name] = lookup(node).forward(node, *xs)
        if node.name in phases:
            v = env[node.name].reshape(d + 1, -1)
            out[node.name] = ((v[1:] - v[:1]).T, v[0])  # M [n, d], c [n]
    return out


def interior_point(graph, lo: torch.Tensor, up: torch.Tensor, phases: dict):
    """``(x [*in], margin)``: see :func:`pattern_lp`."""
    pt, margin, _ = pattern_lp(graph, lo, up, phases)
    return pt, margin


def pattern_lp(graph, lo: torch.Tensor, up: torch.Tensor, phases: dict):
    """``(x [*in], margin, multipliers)``: the point of the pattern's region farthest (in l2)
    from its hyperplanes and from the faces of the box ``[lo, up]`` of positive width, found by
    HiGHS. ``margin < 0``: the LP says the region is empty, and ``multipliers`` (name -> ``[n]``,
    the duals of the hyperplane rows, or None) are its Farkas certificate, unchecked: with them
    ``sum_j y_j s_j z_j(x) <= margin < 0`` on the whole box (``bab.empty`` checks it);
    ``margin == 0``: no interior. Nothing here is a bound until checked."""
    device = lo.device
    if device.type != "cpu":  # the LP is solved on the CPU
        graph = graph.to(device="cpu")
        lo, up = lo.cpu(), up.cpu()
        phases = {k: v.cpu() for k, v in phases.items()}
    aff = pattern_affine(graph, phases, lo.dtype)
    d = lo.numel()
    m = Model()
    x = m.add_vars(lo.flatten().numpy(), up.flatten().numpy())
    tau = m.add_vars(-1e6, 1e6)[0]
    rows = []  # (name, j) of each hyperplane row
    for name, (M, c) in aff.items():
        sign = phases[name].flatten().numpy() * 2.0 - 1.0
        Mn, cn = M.numpy(), c.numpy()
        norms = np.linalg.norm(Mn, axis=1)
        for j in range(Mn.shape[0]):
            if norms[j] == 0:
                continue
            nz = np.nonzero(Mn[j])[0]
            # sign * (M x + c) >= tau * ||M||
            m.add_row(np.concatenate([x[nz], [tau]]), np.concatenate([sign[j] * Mn[j, nz], [-norms[j]]]),
                      lo=-sign[j] * cn[j])
            rows.append((name, j))
    w = (up - lo).flatten().numpy()
    lf, uf = lo.flatten().numpy(), up.flatten().numpy()
    for i in range(d):
        if w[i] > 0:
            m.add_row([x[i], tau], [1.0, -1.0], lo=lf[i])
            m.add_row([x[i], tau], [-1.0, -1.0], lo=-uf[i])
    m.cost = {int(tau): 1.0}
    try:
        sol = m.solve(maximize=True)
    except Exception:  # a solver failure says nothing about the region
        return None, math.nan, None
    if sol.status != "optimal" or sol.x is None:
        return None, math.nan, None
    pt = torch.tensor(sol.x[:d], dtype=lo.dtype).reshape(lo.shape).to(device)
    multipliers = None
    if sol.row_dual is not None:
        multipliers = {name: np.zeros(M.shape[0]) for name, (M, _) in aff.items()}
        for r, (name, j) in enumerate(rows):
            multipliers[name][j] = abs(float(sol.row_dual[r]))
    return pt, float(sol.x[d]), multipliers
