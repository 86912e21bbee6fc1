"""Every smooth rule of the registry, checked against an independent oracle: its IBP and its
relaxation by sampling boxes (ends, kinks, critical points, z = 0 and wide/narrow/far boxes), its
constants (sup |f''|, sup |f'|, critical points) by dense sampling with autograd, and the
derivative op the gradient graph uses against autograd of the function."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipcert.graph.ir import Node
from lipcert.rules import RULES, Interval
from lipcert.rules.smooth import CRIT_TOL, Smooth

DT = torch.float64
SMOOTH = sorted(name for name, r in RULES.items() if isinstance(r, Smooth))
DENSE = torch.linspace(-40, 40, 800001, dtype=DT)


def _derivs(f, z, n):
    z = z.clone().requires_grad_(True)
    out = [f(z)]
    for _ in range(n):
        (g,) = torch.autograd.grad(out[-1].sum(), z, create_graph=True)
        out.append(g)
    return [o.detach() for o in out]


def test_registry_has_the_activations():
    for op in ("gelu", "gelu_tanh", "silu", "elu", "softplus", "tanh", "sigmoid"):
        assert op in SMOOTH


@pytest.mark.parametrize("op", SMOOTH)
def test_constants_hold_by_dense_sampling(op):
    r = RULES[op]
    f0, f1, f2 = _derivs(r.f, DENSE, 2)
    away = torch.ones_like(DENSE, dtype=torch.bool)
    for k in r.kinks:  # f'' is only piecewise defined: skip the kink's neighbourhood
        away &= (DENSE - k).abs() > 1e-3
    assert float(f2[away].abs().max()) <= r.m2, (op, float(f2[away].abs().max()), r.m2)
    if r.lip is not None:
        assert float(f1.abs().max()) <= r.lip
    # critical points: f' changes sign exactly at the listed ones
    s = torch.sign(f1)
    flips = DENSE[:-1][(s[1:] * s[:-1]) < 0]
    assert len(flips) == len(r.crit), (op, flips, r.crit)
    for c, fl in zip(sorted(r.crit), flips.tolist()):
        assert abs(c - fl) < 1e-3
        _, d1 = _derivs(r.f, torch.tensor([c - CRIT_TOL, c + CRIT_TOL], dtype=DT), 1)
        assert float(d1[0]) * float(d1[1]) < 0  # isolated to CRIT_TOL, by autograd (not the rule's df)
    # the derivative the candidate slopes use is the function's
    torch.testing.assert_close(r.df(DENSE[::97]), f1[::97], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("op", [o for o in SMOOTH if RULES[o].deriv is not None])
def test_derivative_op_is_the_derivative(op):
    r = RULES[op]
    d = RULES[r.deriv]
    z = DENSE[::13]
    _, f1 = _derivs(r.f, z, 1)
    torch.testing.assert_close(d.f(z), f1, rtol=1e-9, atol=1e-13)


def _box_samples(l, u, r, n=400):
    t = torch.rand(n, dtype=DT) * (u - l) + l
    extra = [c for c in r.crit + r.kinks + (0.0,) if l <= c <= u]
    return torch.cat([torch.tensor([l, u] + extra, dtype=DT), t])


boxes = st.one_of(
    st.tuples(st.floats(-8, 8), st.floats(0, 16)),            # ordinary
    st.tuples(st.floats(-40, 40), st.floats(0, 1e-6)),         # narrow
    st.tuples(st.floats(-3, 3), st.floats(0, 0.01)),           # narrow near the bends
    st.tuples(st.floats(-60, 20), st.floats(0, 80)),           # wide
)


@pytest.mark.parametrize("op", SMOOTH)
@settings(max_examples=60, deadline=None)
@given(box=boxes)
def test_ibp_and_relaxation_contain_the_function(op, box):
    r = RULES[op]
    l, w = box
    u = l + w
    node = Node("a", op, ("z",), {}, (1,))
    z = _box_samples(l, u, r)
    iv = Interval(torch.full_like(z, l), torch.full_like(z, u))
    y = r.f(z)
    out = r.ibp(node, iv)
    assert (out.lower <= y).all() and (y <= out.upper).all()
    rel = r.relax(node, [iv])
    lo = rel.lower_bias + rel.lower_slopes[0] * z
    up = rel.upper_bias + rel.upper_slopes[0] * z
    assert (lo <= y).all(), float((lo - y).max())
    assert (y <= up).all(), float((y - up).max())


@pytest.mark.parametrize("op", SMOOTH)
def test_relaxation_is_tight_on_small_boxes(op):
    """On a box of width 1e-3 the two lines are within ~m2 w^2 of each other (no useless slack)."""
    r = RULES[op]
    z0 = torch.linspace(-5, 5, 41, dtype=DT)
    z0 = z0[torch.stack([(z0 - k).abs() > 1e-3 for k in r.kinks] + [z0 == z0]).all(0)]  # kinks: no line is tight
    iv = Interval(z0 - 5e-4, z0 + 5e-4)
    rel = r.relax(Node("a", op, ("z",), {}, (1,)), [iv])
    gap = (rel.upper_bias - rel.lower_bias) + (rel.upper_slopes[0] - rel.lower_slopes[0]) * z0
    assert float(gap.abs().max()) < 1e-6 * max(1.0, r.m2) + 1e-9


def test_gelu_derivative_range():
    d = RULES[RULES["gelu"].deriv]
    iv = d.ibp(Node("d", "gelu_deriv", ("z",), {}, (1,)), Interval(torch.tensor([-50.0], dtype=DT),
                                                                      torch.tensor([50.0], dtype=DT)))
    assert -0.1290 < float(iv.lower) < -0.1288 and 1.1289 < float(iv.upper) < 1.1291
    assert math.isclose(RULES["gelu"].lip, 1.12891, rel_tol=1e-5)
