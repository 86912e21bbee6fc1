"""Bounding a batch of BaB domains: forward bounds under the splits (intersected with the
parent's), the gradient-norm bound per domain with plain CROWN, and the branching scores.

ReLU score (one neuron): ``|lambda| * (max(gu, 0) - min(gl, 0))`` for an unstable, unsplit
neuron, where ``[gl, gu]`` bounds the gradient entering its gradient product and ``lambda`` is the
coefficient the norm's upper bound puts on the product: the looseness of its relaxation weighted
by how much it reaches the bound. Input score (one dimension): width times the l1 norm of the
first linear layer's column (how strongly the dimension moves the first pre-activations).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine.config import BoundConfig, JacobianOptions
from ..engine.schedule import compute_bounds
from ..graph import ops
from ..engine.jacobian import jacobian_bounds_from
from ..rules import Interval, RelaxContext
from .domain import Domains

CROWN = BoundConfig(method="crown")
CROWN_J = JacobianOptions()  # plain CROWN Jacobian bounds with the paper's ReLU gradient relaxation


@dataclass(frozen=True)
class Setting:
    """What stays fixed during one search."""

    graph: object            # forward Graph
    gg: object               # GradientGraph (chord relaxation)
    C: torch.Tensor          # [K, n_out] spec rows
    norm: str
    relu_inputs: tuple       # forward pre-activation names feeding (leaky) ReLUs
    relu_grads: tuple        # (relu_grad node name, z name, g name) in the joint graph
    input_weight: torch.Tensor  # [*in] per-dimension input score weight


def make_setting(graph, gg, C, norm) -> Setting:
    relu_inputs = tuple(n.inputs[0] for n in graph.nodes if n.op in (ops.RELU, ops.LEAKY_RELU))
    relu_grads = tuple((n.name, n.inputs[0], n.inputs[1]) for n in gg.graph.nodes if n.op == ops.RELU_GRAD)
    in_shape = graph[graph.input].shape
    weight = torch.ones(in_shape, dtype=C.dtype, device=C.device)
    firsts = [n for n in graph.nodes if graph.input in n.inputs]
    if len(firsts) == 1 and firsts[0].op == ops.LINEAR and len(in_shape) == 1:
        weight = firsts[0].attrs["weight"].abs().sum(0).reshape(in_shape)
    return Setting(graph, gg, C, norm, relu_inputs, relu_grads, weight)


def bound_domains(st: Setting, lo, up, splits: dict, cls, parent_fwd=None) -> Domains:
    """Bound ``D`` domains; infeasible ones (contradictory splits) get ``ub = -inf``."""
    g = st.graph
    D = lo.shape[0]
    box = Interval(lo, up)
    rctx = RelaxContext(splits)
    fb = compute_bounds(g, {g.input: box}, CROWN, ctx=rctx, intersect_with=parent_fwd)
    dev = lo.device
    infeasible = torch.zeros(D, dtype=torch.bool, device=dev)
    for name, iv in fb.items():
        infeasible |= (iv.lower > iv.upper + 1e-9 * (1 + iv.upper.abs())).reshape(D, -1).any(1)
    record = {name: None for name, _, _ in st.relu_grads}
    res = jacobian_bounds_from(g, box, st.C[cls].unsqueeze(1), CROWN_J, st.norm, fb, ctx=rctx,
                               gradient_graph=st.gg, record=record)
    ub = res.norm_upper[:, 0].clone()
    ub[infeasible] = -torch.inf
    best = torch.full((D,), -torch.inf, dtype=lo.dtype, device=dev)
    pick = torch.zeros(D, 2, dtype=torch.long, device=dev)
    n_free = torch.zeros(D, dtype=torch.long, device=dev)
    for rg, z, gname in st.relu_grads:
        zb, gb = fb[z], res.joint[gname]
        free = (zb.lower < 0) & (zb.upper > 0) & (splits[z] == 0)
        n_free += free.reshape(D, -1).sum(1)
        gap = gb.upper.clamp(min=0) - gb.lower.clamp(max=0)
        lam = record.get(rg)
        weight = lam[0].abs() if lam is not None else torch.zeros_like(gap)
        score = torch.where(free, (weight + 1e-9) * (gap + 1e-9), torch.full_like(gap, -torch.inf)).reshape(D, -1)
        val, pos = score.max(1)
        better = val > best
        best = torch.where(better, val, best)
        idx = st.relu_inputs.index(z)
        pick[better] = torch.stack([torch.full_like(pos, idx), pos], 1)[better]
    iscore = ((up - lo) * st.input_weight).reshape(D, -1)
    ival, ipos = iscore.max(1)
    return Domains(lo, up, splits, cls, ub, fb, best, pick, ival, ipos, n_free)
