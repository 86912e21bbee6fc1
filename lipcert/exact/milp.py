"""Exact local Lipschitz constants of piecewise-linear networks by mixed-integer programming (HiGHS).

For output row ``c`` the MILP is (LipMIP, Jordan & Dimakis 2020, over the joint graph):
  x in the box; every linear node ``y = M x + b`` as equalities (matrices from the ops' own
  backward rules); an unstable (leaky) ReLU ``y = a z + (1 - a) r`` with ``r = relu(z)`` encoded by
  a binary ``delta``: ``r >= 0, r >= z, r <= z - l (1 - delta), r <= u delta`` (big-M from the
  engine's bounds ``[l, u]``); the gradient product of the same neuron ``h = a g + (1 - a) w`` with
  ``w = delta g`` exactly: ``gl delta <= w <= gu delta``, ``g - gu (1 - delta) <= w <= g - gl (1 - delta)``
  (the same binary ties the gradient mask to the forward phase; at ``z = 0`` both phases are
  feasible, the two vertices of the Clarke set); ``t_i = |J_i|`` with a binary sign when ``J_i``
  can take both signs; objective ``max sum_i t_i`` (l_inf inputs) or ``max_i t_i`` (l1 inputs).
Its optimum is the maximum of the chain-rule gradient norm over the region: the paper's target, an
upper bound of the Lipschitz constant equal to it on generic networks. What comes out of HiGHS is
an estimate, never a bound: the optimum's activation pattern is given to an LP that finds an
interior point of its linear region, and a pair around that point, checked by lipcert's own
evaluation (``bab.witness``), realises the value as a lower bound; ``exact.verify`` proves the
matching upper bound (``exact.certified``, then BaB).

The model relaxes the problem in exact arithmetic, which ``exact.certified`` relies on: its rows
hold the network's own weights, every big-M constant and variable bound comes from the engine's
sound bounds (widened by ``1e-9``), and the gradient scale is a power of two.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInput
from ..graph import ops
from ..rules import lookup
from .lp import Model
from .pattern import interior_point


@dataclass
class MilpOutcome:
    """What HiGHS said for one spec row: unchecked numbers."""

    value: float     # its claimed maximum (the largest bound of the usable solves; nan: none)
    status: str      # "optimal", "time_limit" or "failed" (infeasible, unbounded, error, no bound)
    solves: list     # (settings, HiGHS status, objective, bound) per solve
    model: object = None   # the MILP (``lp.Model``), for ``exact.certified``
    scale: float = 1.0     # its objective is ``scale`` times the gradient norm


def _matrices(graph, node):
    """``([M_i [n_out, n_in_i]], c [n_out])`` of a linear node, from its backward rule."""
    n = node.numel
    dt = next((v.dtype for v in node.attrs.values() if isinstance(v, torch.Tensor) and v.is_floating_point()),
              torch.float64)
    eye = torch.eye(n, dtype=dt).reshape(n, 1, *node.shape)
    As, const = lookup(node).backward(node, eye, [graph[i].shape for i in node.inputs])
    Ms = [A.reshape(n, -1).numpy() for A in As]
    c = np.zeros(n) if const is None else const.reshape(n).numpy()
    return Ms, c


def _np(iv, i):
    return iv.lower[i].flatten().numpy().astype(float), iv.upper[i].flatten().numpy().astype(float)


def _backward_nodes(jg, spec_input) -> set:
    """Nodes that depend on the spec: the gradient part, linear and homogeneous in ``c``."""
    out = {spec_input}
    for n in jg.nodes:
        if any(i in out for i in n.inputs):
            out.add(n.name)
    return out


def build(jg, spec_input, jac, bounds: dict, i: int, norm: str, fwd_input: str):
    """The MILP for batch index ``i`` of the joint-graph ``bounds``. Returns (model, x vars,
    binaries per pre-activation, scale). The gradient part is linear and homogeneous in the spec
    ``c``, so it is solved for ``scale * c`` with ``scale`` (a power of two) making the Jacobian bounds O(1) (deep
    nets have gradients of 1e-3 and below, where solver tolerances start to cut off solutions);
    the objective is divided by ``scale`` afterwards."""
    m = Model()
    var: dict = {}
    delta: dict = {}
    back = _backward_nodes(jg, spec_input)
    jl0, ju0 = _np(bounds[jac], i)
    # a power of two: scaling is then exact, and the scaled MILP relaxes the scaled problem exactly
    scale = 2.0 ** -math.floor(math.log2(max(float(np.max(np.maximum(np.abs(jl0), np.abs(ju0)))), 1e-300)))
    for node in jg.nodes:
        name = node.name
        lo, up = _np(bounds[name], i)
        if name in back:
            lo, up = lo * scale, up * scale
        if node.op == ops.INPUT:
            var[name] = m.add_vars(lo, up)
        elif lookup(node).linear:
            var[name] = m.add_vars(lo - 1e-9 * (1 + abs(lo)), up + 1e-9 * (1 + abs(up)))
            Ms, c = _matrices(jg, node)
            rows_M = np.concatenate(Ms, axis=1)
            ins = np.concatenate([var[k] for k in node.inputs])
            m.add_dense_rows(var[name], rows_M, ins, c)
        elif node.op in (ops.RELU, ops.LEAKY_RELU):
            a = float(node.attrs.get("negative_slope", 0.0))
            z = var[node.inputs[0]]
            zl, zu = _np(bounds[node.inputs[0]], i)
            y = m.add_vars(np.minimum(a * zl, 0) - 1e-9, np.maximum(zu, 0) + 1e-9)
            var[name] = y
            d = np.full(len(z), -1, dtype=np.int64)
            for j in range(len(z)):
                if zl[j] > 0:
                    m.add_row([y[j], z[j]], [1, -1], 0, 0)
                elif zu[j] < 0:
                    m.add_row([y[j], z[j]], [1, -a], 0, 0)
                else:
                    b = m.add_vars(0, 1, integer=True)[0]
                    r = m.add_vars(0, max(zu[j], 0))[0]
                    d[j] = b
                    m.add_row([r, z[j]], [1, -1], lo=0)                        # r >= z
                    m.add_row([r, z[j], b], [1, -1, -zl[j]], hi=-zl[j])        # r <= z - l (1 - b)
                    m.add_row([r, b], [1, -zu[j]], hi=0)                       # r <= u b
                    m.add_row([y[j], z[j], r], [1, -a, -(1 - a)], 0, 0)        # y = a z + (1 - a) r
            delta[node.inputs[0]] = d
        elif node.op == ops.RELU_GRAD:
            a = float(node.attrs.get("negative_slope", 0.0))
            zname, gname = node.inputs
            g = var[gname]
            gl, gu = _np(bounds[gname], i)
            gl, gu = gl * scale, gu * scale
            zl, zu = _np(bounds[zname], i)
            h = m.add_vars(lo - 1e-9 * (1 + abs(lo)), up + 1e-9 * (1 + abs(up)))
            var[name] = h
            d = delta[zname]
            for j in range(len(g)):
                if zl[j] > 0:
                    m.add_row([h[j], g[j]], [1, -1], 0, 0)
                elif zu[j] < 0:
                    m.add_row([h[j], g[j]], [1, -a], 0, 0)
                else:
                    b = d[j]
                    w = m.add_vars(min(gl[j], 0), max(gu[j], 0))[0]
                    m.add_row([w, b], [1, -gl[j]], lo=0)                        # w >= gl b
                    m.add_row([w, b], [1, -gu[j]], hi=0)                        # w <= gu b
                    m.add_row([w, g[j], b], [1, -1, -gu[j]], lo=-gu[j])         # w >= g - gu (1 - b)
                    m.add_row([w, g[j], b], [1, -1, -gl[j]], hi=-gl[j])         # w <= g - gl (1 - b)
                    m.add_row([h[j], g[j], w], [1, -a, -(1 - a)], 0, 0)         # h = a g + (1 - a) w
        else:
            raise InvalidInput(f"method 'exact' supports piecewise-linear networks (ReLU, LeakyReLU); "
                               f"{node.describe()} is not")
    J = var[jac]
    jl, ju = jl0 * scale, ju0 * scale
    t = m.add_vars(0, np.maximum(np.abs(jl), np.abs(ju)) + 1e-9)
    for j in range(len(J)):
        if jl[j] >= 0:
            m.add_row([t[j], J[j]], [1, -1], 0, 0)
        elif ju[j] <= 0:
            m.add_row([t[j], J[j]], [1, 1], 0, 0)
        else:
            s = m.add_vars(0, 1, integer=True)[0]
            m.add_row([t[j], J[j]], [1, -1], lo=0)                              # t >= J
            m.add_row([t[j], J[j]], [1, 1], lo=0)                               # t >= -J
            m.add_row([t[j], J[j], s], [1, -1, -2 * jl[j]], hi=-2 * jl[j])      # t <= J - 2 jl (1 - s)
            m.add_row([t[j], J[j], s], [1, 1, -2 * ju[j]], hi=0)                # t <= -J + 2 ju s
    if norm == "inf":
        m.cost = {int(k): 1.0 for k in t}
    elif norm == "1":
        big = float(np.max(np.maximum(np.abs(jl), np.abs(ju)))) + 1.0
        top = m.add_vars(0, big)[0]
        pick = m.add_vars(np.zeros(len(t)), np.ones(len(t)), integer=True)
        m.add_row(pick, np.ones(len(t)), 1, 1)
        for j in range(len(t)):
            m.add_row([top, t[j], pick[j]], [1, -1, big], hi=big)              # top <= t_j + big (1 - pick_j)
        m.cost = {int(top): 1.0}
    else:
        raise InvalidInput("method 'exact' supports norm 'inf' and 1 (an l2 objective is not linear)")
    return m, var[fwd_input], delta, scale


def milp_values(graph, box, C, norm, root, b, pairs, *, time_limit=None, mip_gap=1e-6) -> list:
    """One :class:`MilpOutcome` per spec row for sample ``b`` of ``root`` (a ``JacobianBounds``
    of the batch); the witness pair of every incumbent is offered to ``pairs`` (a
    ``bab.witness.BestPairs``, which checks it)."""
    if not graph.is_piecewise_linear():
        bad = graph.first_not_piecewise_linear()
        raise InvalidInput(f"method 'exact' supports piecewise-linear networks (ReLU, LeakyReLU); {bad.describe()} is not")
    gg = root.gradient_graph
    jg = gg.graph
    K = C.shape[0]
    out = []
    t0 = time.perf_counter()
    for k in range(K):
        i = b * K + k
        budget = None if time_limit is None else max(0.1, (time_limit - (time.perf_counter() - t0)) / (K - k))
        m, xv, delta, scale = build(jg, gg.spec_input, gg.jacobian, root.joint, i, norm, graph.input)
        solves, value, status = [], math.nan, "failed"
        # HiGHS is not reliable on these models under any single setting (a wrong "optimal" was
        # seen with its default tolerances on one net and with 1e-9 on another): move on to the
        # next setting while its value is below a checked witness or it found none
        for settings in ({"tolerance": None}, {"tolerance": 1e-9}, {"tolerance": None, "presolve": False}):
            tl = None if budget is None else budget / 3
            try:
                sol = _unscale(m.solve(maximize=True, time_limit=tl, mip_gap=mip_gap, **settings), scale)
            except Exception as err:  # a solver error is a failed solve, never a property of the region
                solves.append((settings, f"error: {err}", math.nan, math.nan))
                continue
            solves.append((settings, sol.status, sol.objective, sol.bound))
            if sol.x is not None:
                _offer_witness(graph, box, pairs, k, sol.x, xv, delta, root.forward, b)
            # "infeasible" on a region that is never empty is a numerical failure, not an answer
            if sol.status in ("optimal", "time_limit") and math.isfinite(sol.bound):
                value = sol.bound if math.isnan(value) else max(value, sol.bound)
                status = "optimal" if "optimal" in (status, sol.status) else "time_limit"
                if sol.status == "optimal" and sol.bound >= float(pairs.value[k]) * (1 - 1e-6):
                    break
        out.append(MilpOutcome(value, status, solves, m, scale))
    return out


def _unscale(sol, scale):
    return type(sol)(sol.status, sol.objective / scale, sol.bound / scale, sol.x)


def _offer_witness(graph, box, pairs, k, xsol, xv, delta, fwd_bounds, b):
    """The pair realised inside the linear region of the MILP incumbent, offered to ``pairs``."""
    phases = {}
    for name, d in delta.items():
        iv = fwd_bounds[name]
        zl = iv.lower[b].flatten()
        ph = (zl > 0).to(torch.int8)
        for j, var in enumerate(d.tolist()):
            if var >= 0:
                ph[j] = int(round(xsol[var]))
        phases[name] = ph.reshape(iv.lower.shape[1:])
    lo, up = box.lower[0], box.upper[0]
    cls = torch.tensor([k], device=lo.device)
    x_inc = torch.tensor(xsol[xv], dtype=lo.dtype, device=lo.device).reshape(lo.shape)
    pairs.search(cls, lo[None], up[None], torch.minimum(torch.maximum(x_inc, lo), up)[None])
    pt, margin = interior_point(graph, lo, up, phases)
    if pt is None or not margin > 0:
        return
    r = margin / math.sqrt(lo.numel()) * 0.5
    pairs.search(cls, torch.maximum(pt - r, lo)[None], torch.minimum(pt + r, up)[None], pt[None])
    pairs.chord(k, pt, lo, up, phases)
