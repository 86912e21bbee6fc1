"""Every relaxation is checked by sampling its input box (corners and z = 0 included), and every
hand-written linear backward against torch.func.vjp."""
import torch
from hypothesis import given
from hypothesis import strategies as st

from lipcert.graph import ops
from lipcert.graph.ir import Node
from lipcert.rules import RULES, Interval, RelaxContext

DT = torch.float64
bound = st.floats(-4, 4, allow_nan=False)


def interval(a, b):
    lo, up = min(a, b), max(a, b)
    return lo, up


def samples(lo, up, n=1000, extra=()):
    t = torch.rand(n, dtype=DT) * (up - lo) + lo
    pts = [torch.tensor([lo, up], dtype=DT), t] + [torch.tensor([e], dtype=DT) for e in extra if lo <= e <= up]
    return torch.cat(pts)


def check_relaxation(relax, xs, y, tol=1e-9):
    """lower(xs) <= y <= upper(xs) elementwise; xs is a list of input samples (or None)."""
    lo = relax.lower_bias + sum(0 if s is None else s * x for s, x in zip(relax.lower_slopes, xs))
    up = relax.upper_bias + sum(0 if s is None else s * x for s, x in zip(relax.upper_slopes, xs))
    assert (lo <= y + tol).all(), (lo - y).max()
    assert (y <= up + tol).all(), (y - up).max()


@given(bound, bound, st.floats(0, 1), st.sampled_from([0.0, 0.01, 0.3, 1.0]))
def test_leaky_relu_relaxation_sound(a, b, alpha, slope):
    l, u = interval(a, b)
    node = Node("r", ops.LEAKY_RELU, ("z",), {"negative_slope": slope}, (1,))
    z = samples(l, u, extra=(0.0,))
    iv = Interval(torch.full_like(z, l), torch.full_like(z, u))
    rule = RULES[ops.LEAKY_RELU]
    check_relaxation(rule.relax(node, [iv], alpha=torch.full_like(z, alpha)), [z], rule.forward(node, z))
    check_relaxation(rule.relax(node, [iv]), [z], rule.forward(node, z))
    ib = rule.ibp(node, iv)
    y = rule.forward(node, z)
    assert (ib.lower <= y).all() and (y <= ib.upper).all()


@given(bound, bound, bound, bound, st.sampled_from([0.0, 0.1]), st.sampled_from(["chord", "constant"]))
def test_relu_grad_relaxation_sound(a, b, c, d, slope, mode):
    """h = s * g for every s in the Clarke set at every z in [l, u] (s in [a, 1] when 0 in [l, u])."""
    l, u = interval(a, b)
    gl, gu = interval(c, d)
    node = Node("h", ops.RELU_GRAD, ("z", "g"), {"negative_slope": slope, "mode": mode}, (1,))
    n = 2000
    z = samples(l, u, n, extra=(0.0,))
    g = samples(gl, gu, len(z) - 2)[: len(z)]
    g = torch.cat([g, torch.tensor([gl, gu], dtype=DT)])[: len(z)]
    s = torch.where(z > 0, 1.0, torch.where(z < 0, slope, slope + (1 - slope) * torch.rand_like(z)))
    if l <= 0 <= u:  # also the two vertices of the Clarke set
        z = torch.cat([z, torch.zeros(2, dtype=DT)])
        g = torch.cat([g, torch.tensor([gl, gu], dtype=DT)])
        s = torch.cat([s, torch.tensor([slope, 1.0], dtype=DT)])
    h = s * g
    ivz = Interval(torch.full_like(z, l), torch.full_like(z, u))
    ivg = Interval(torch.full_like(z, gl), torch.full_like(z, gu))
    rule = RULES[ops.RELU_GRAD]
    check_relaxation(rule.relax(node, [ivz, ivg]), [z, g], h)
    ib = rule.ibp(node, ivz, ivg)
    assert (ib.lower <= h + 1e-12).all() and (h <= ib.upper + 1e-12).all()


def test_relu_grad_split_makes_node_exact():
    node = Node("h", ops.RELU_GRAD, ("z", "g"), {"negative_slope": 0.0, "mode": "chord"}, (1,))
    ivz = Interval(torch.tensor([[-1.0]], dtype=DT), torch.tensor([[1.0]], dtype=DT))
    ivg = Interval(torch.tensor([[-2.0]], dtype=DT), torch.tensor([[3.0]], dtype=DT))
    for split, slope in ((1, 1.0), (-1, 0.0)):
        ctx = RelaxContext({"z": torch.tensor([[split]], dtype=torch.int8)})
        r = RULES[ops.RELU_GRAD].relax(node, [ivz, ivg], ctx=ctx)
        assert float(r.upper_slopes[1]) == slope and float(r.lower_slopes[1]) == slope
        assert float(r.upper_bias) == 0 and float(r.lower_bias) == 0


@given(st.sampled_from([ops.TANH, ops.SIGMOID, ops.TANH_DERIV, ops.SIGMOID_DERIV]), st.floats(-8, 8), st.floats(0, 6))
def test_smooth_relaxation_sound(op, a, w):
    l, u = a, a + w
    node = Node("s", op, ("z",), {}, (1,))
    z = samples(l, u, 3000, extra=(0.0,))
    iv = Interval(torch.full_like(z, l), torch.full_like(z, u))
    rule = RULES[op]
    y = rule.forward(node, z)
    check_relaxation(rule.relax(node, [iv]), [z], y, tol=1e-12)
    ib = rule.ibp(node, iv)
    assert (ib.lower <= y + 1e-12).all() and (y <= ib.upper + 1e-12).all()


@given(bound, bound, bound, bound, st.floats(0, 1))
def test_mccormick_sound(a, b, c, d, alpha):
    dl, du = interval(a, b)
    gl, gu = interval(c, d)
    node = Node("m", ops.MUL, ("d", "g"), {}, (1,))
    n = 2000
    dd = torch.cat([torch.rand(n, dtype=DT) * (du - dl) + dl, torch.tensor([dl, dl, du, du], dtype=DT)])
    gg = torch.cat([torch.rand(n, dtype=DT) * (gu - gl) + gl, torch.tensor([gl, gu, gl, gu], dtype=DT)])
    ivd = Interval(torch.full_like(dd, dl), torch.full_like(dd, du))
    ivg = Interval(torch.full_like(dd, gl), torch.full_like(dd, gu))
    rule = RULES[ops.MUL]
    check_relaxation(rule.relax(node, [ivd, ivg], alpha=torch.full_like(dd, alpha)), [dd, gg], dd * gg)
    ib = rule.ibp(node, ivd, ivg)
    assert (ib.lower <= dd * gg + 1e-12).all() and (dd * gg <= ib.upper + 1e-12).all()


def _linear_nodes():
    torch.manual_seed(0)
    conv = {"weight": torch.randn(4, 3, 3, 3, dtype=DT), "bias": torch.randn(4, dtype=DT), "stride": (2, 2),
            "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    dw = {"weight": torch.randn(3, 1, 2, 2, dtype=DT), "bias": None, "stride": (2, 2), "padding": (0, 0),
          "dilation": (1, 1), "groups": 3}
    dil = {"weight": torch.randn(2, 3, 3, 3, dtype=DT), "bias": None, "stride": (1, 1), "padding": (2, 2),
           "dilation": (2, 2), "groups": 1}
    convt = {"weight": torch.randn(4, 3, 3, 3, dtype=DT), "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1),
             "groups": 1, "output_padding": (1, 1)}
    return [
        (Node("l", ops.LINEAR, ("x",), {"weight": torch.randn(5, 7, dtype=DT), "bias": torch.randn(5, dtype=DT)}, (5,)), [(7,)]),
        (Node("c", ops.CONV2D, ("x",), conv, (4, 4, 4)), [(3, 8, 8)]),
        (Node("c", ops.CONV2D, ("x",), conv, (4, 4, 4)), [(3, 7, 7)]),
        (Node("d", ops.CONV2D, ("x",), dw, (3, 3, 3)), [(3, 7, 7)]),
        (Node("e", ops.CONV2D, ("x",), dil, (2, 6, 6)), [(3, 6, 6)]),
        (Node("t", ops.CONV_T2D, ("x",), convt, (3, 8, 8)), [(4, 4, 4)]),
        (Node("r", ops.RESHAPE, ("x",), {}, (12,)), [(3, 2, 2)]),
        (Node("a", ops.ADD, ("x", "y"), {"coeffs": (1.0, -2.0)}, (6,)), [(6,), (6,)]),
        (Node("f", ops.AFFINE, ("x",), {"scale": torch.randn(6, dtype=DT), "shift": torch.randn(6, dtype=DT)}, (6,)), [(6,)]),
        (Node("l2", ops.LINEAR, ("x",), {"weight": torch.randn(5, 7, dtype=DT), "bias": torch.randn(5, dtype=DT)},
              (3, 5)), [(3, 7)]),  # on the last of several dimensions
        (Node("p", ops.PERMUTE, ("x",), {"dims": (2, 0, 1)}, (4, 2, 3)), [(2, 3, 4)]),
        (Node("g", ops.GATHER, ("x",), {"index": torch.tensor([[0, 5, 5], [3, 0, 11]])}, (2, 3)), [(3, 4)]),
        (Node("s", ops.SCATTER, ("x",), {"index": torch.tensor([[0, 5, 5], [3, 0, 11]])}, (3, 4)), [(2, 3)]),
        (Node("sl", ops.SLICE, ("x",), {"dim": 1, "start": 1, "stop": 4, "step": 2}, (3, 2)), [(3, 5)]),
        (Node("st", ops.SLICE_T, ("x",), {"dim": 1, "start": 1, "stop": 4, "step": 2}, (3, 5)), [(3, 2)]),
        (Node("cc", ops.CONCAT, ("x", "y"), {"dim": 0}, (5, 2)), [(2, 2), (3, 2)]),
    ]


def test_linear_backward_matches_vjp_and_ibp_contains():
    for node, shapes in _linear_nodes():
        rule = RULES[node.op]
        xs = [torch.randn((2,) + s, dtype=DT) for s in shapes]
        y = rule.forward(node, *xs)
        assert tuple(y.shape[1:]) == node.shape
        A = torch.randn((3, 2) + node.shape, dtype=DT)
        As, const = rule.backward(node, A, shapes)
        # A . y == sum A_i . x_i + const, and each A_i equals the vjp
        lhs = (A * y.unsqueeze(0)).flatten(2).sum(-1)
        rhs = sum((Ai * x.unsqueeze(0)).flatten(2).sum(-1) for Ai, x in zip(As, xs)) + (0 if const is None else const)
        torch.testing.assert_close(lhs, rhs)
        _, vjp = torch.func.vjp(lambda *v: rule.forward(node, *v), *xs)
        for s in range(3):
            ref = vjp(A[s])
            for Ai, r in zip(As, ref):
                torch.testing.assert_close(Ai[s], r)
        lo = [x - 0.3 for x in xs]
        ib = rule.ibp(node, *[Interval(x - 0.3, x + 0.3) for x in xs])
        for _ in range(50):
            p = [l + 0.6 * torch.rand_like(l) for l in lo]
            v = rule.forward(node, *p)
            assert (ib.lower <= v + 1e-10).all() and (v <= ib.upper + 1e-10).all()
