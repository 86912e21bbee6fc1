"""Exact MILP values against brute force, every other method against exact, BaB convergence;
witness pairs, statuses and certified uppers of exact and BaB."""
import copy
import dataclasses
import math
import random

import pytest
import torch

import lipcert

from nets import mlp

OTHER = ("alpha-crown", "crown", "recurjac", "ibp", "naive")


def tiny_net(rng, seed):
    d = rng.choice([2, 3, 5, 8])
    sizes = [d] + [rng.choice([8, 16, 32]) for _ in range(rng.choice([2, 3]) - 1)] + [rng.choice([1, 2])]
    return mlp(sizes, rng.choice(["relu", "relu", "leaky"]), seed), d


@pytest.mark.parametrize("block", range(5))
def test_exact_between_every_lower_and_upper(block):
    """50 random tiny nets (10 per block): lower <= exact <= upper for every method."""
    rng = random.Random(1000 + block)
    for i in range(10):
        net, d = tiny_net(rng, 10 * block + i)
        x0 = torch.randn(d)
        eps = rng.choice([0.05, 0.1, 0.3])
        ex = lipcert.local_lipschitz(net, x0, eps, method="exact", attack_steps=5, time_limit=60)
        assert ex.status == "optimal"
        tol = 1e-6 * (1 + ex.upper)
        assert ex.lower <= ex.upper + tol
        for m in OTHER:
            c = lipcert.local_lipschitz(net, x0, eps, method=m, attack_steps=3, attack_samples=128)
            assert (c.per_output_upper >= ex.per_output_upper - tol).all(), (m, c.per_output_upper, ex.per_output_upper)
            assert c.lower <= ex.upper + tol, (m, c.lower, ex.upper)


def brute_force_2d(net, x0, eps, n=1500):
    """Max gradient l1 norm over a fine grid of the 2-D box (exact gradient of each region hit)."""
    t = torch.linspace(-eps, eps, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(t, t, indexing="ij")
    pts = (x0.double() + torch.stack([gx.flatten(), gy.flatten()], 1)).requires_grad_(True)
    net = net.double()
    y = net(pts)
    out = []
    for j in range(y.shape[1]):
        (g,) = torch.autograd.grad(y[:, j].sum(), pts, retain_graph=True)
        out.append(g.abs().sum(1).max())
    net.float()
    return torch.stack(out)


@pytest.mark.parametrize("seed", range(4))
def test_exact_matches_brute_force_on_2d_inputs(seed):
    net = mlp([2, 12, 12, 2], "relu", 50 + seed)
    torch.manual_seed(seed)
    x0 = torch.randn(2)
    ex = lipcert.local_lipschitz(net, x0, 0.2, method="exact", attack_steps=5)
    bf = brute_force_2d(net, x0, 0.2)
    torch.testing.assert_close(ex.per_output_upper, bf, rtol=1e-6, atol=1e-9)
    assert abs(ex.lower - ex.upper) <= 1e-6 * ex.upper


@pytest.mark.parametrize("seed", range(6))
def test_bab_converges_to_exact(seed):
    rng = random.Random(seed)
    d = rng.choice([2, 4, 6])
    net = mlp([d, 16, 16, 2], "relu", 70 + seed)
    torch.manual_seed(seed)
    x0 = torch.randn(d)
    ex = lipcert.local_lipschitz(net, x0, 0.15, method="exact", attack_steps=5)
    for split in ("auto", "relu"):
        b = lipcert.local_lipschitz(net, x0, 0.15, method="bab", bab_time=120, rtol=1e-5, split=split, attack_steps=5)
        assert b.upper >= ex.upper * (1 - 1e-6), (split, b.upper, ex.upper)  # exact carries a 1e-7 solver margin
        assert b.upper <= ex.upper * (1 + 1e-4), (split, b.upper, ex.upper, b.status)
        assert b.lower <= ex.upper * (1 + 1e-7)


def test_exact_acceptance_2_32_32_2():
    net = mlp([2, 32, 32, 2], "relu", 0)
    c = lipcert.local_lipschitz(net, torch.tensor([0.3, -0.2]), 0.1, method="exact")
    assert c.status == "optimal"
    assert abs(c.upper - c.lower) <= 1e-6 * c.upper


def test_bab_reaches_two_percent_of_exact_on_2_64_64_2():
    for seed in range(3):
        net = mlp([2, 64, 64, 2], "relu", seed)
        torch.manual_seed(seed)
        x0 = torch.randn(2)
        ex = lipcert.local_lipschitz(net, x0, 0.1, method="exact")
        b = lipcert.local_lipschitz(net, x0, 0.1, method="bab", bab_time=30, rtol=0.01)
        assert b.upper <= 1.02 * ex.upper
        assert b.upper >= ex.upper * (1 - 1e-6)


def test_exact_rejects_smooth_nets_and_l2():
    with pytest.raises(lipcert.InvalidInput, match="piecewise-linear"):
        lipcert.local_lipschitz(mlp([2, 4, 1], "tanh"), torch.zeros(2), 0.1, method="exact")
    with pytest.raises(lipcert.InvalidInput, match="norm"):
        lipcert.local_lipschitz(mlp([2, 4, 1], "relu"), torch.zeros(2), 0.1, method="exact", norm=2)


def test_exact_l1_input_norm_matches_bab():
    net = mlp([3, 12, 2], "relu", 5)
    x0 = torch.randn(3)
    ex = lipcert.local_lipschitz(net, x0, 0.2, method="exact", norm=1)
    b = lipcert.local_lipschitz(net, x0, 0.2, method="bab", norm=1, bab_time=60, rtol=1e-6)
    assert ex.status == "optimal"
    assert abs(b.upper - ex.upper) <= 1e-4 * ex.upper
    assert ex.lower <= ex.upper * (1 + 1e-7)


def test_bab_on_tanh_net_is_sound_and_tighter():
    net = mlp([2, 16, 16, 1], "tanh", 3)
    x0 = torch.randn(2)
    a = lipcert.local_lipschitz(net, x0, 0.3)
    b = lipcert.local_lipschitz(net, x0, 0.3, method="bab", bab_time=5)
    assert b.upper <= a.upper + 1e-9 and b.lower <= b.upper
    xs = (x0 + 0.3 * (2 * torch.rand(20000, 2) - 1)).requires_grad_(True)
    (g,) = torch.autograd.grad(net(xs).sum(), xs)
    assert b.upper >= g.abs().sum(1).max().item() * (1 - 1e-5)


# --- witnesses, statuses and certified uppers (issue 13) ------------------------------------

def region_box(x0, eps, domain):
    """The region ``[x0 - eps, x0 + eps] ∩ domain`` in float64."""
    lo, up = x0.double() - eps, x0.double() + eps
    if domain is not None:
        lo = torch.maximum(lo, torch.as_tensor(domain[0], dtype=torch.float64))
        up = torch.minimum(up, torch.as_tensor(domain[1], dtype=torch.float64))
    return lo, up


def sampled_grad_norms(net, lo, up, n=3000, seed=0):
    """Largest l1 norm of each output's gradient (the dual of l_inf) at points of ``[lo, up]``."""
    g = torch.Generator().manual_seed(seed)
    xs = lo + (up - lo) * torch.rand(n, lo.numel(), generator=g, dtype=torch.float64)
    xs = torch.cat([xs, lo[None], up[None], ((lo + up) / 2)[None]]).requires_grad_(True)
    n64 = copy.deepcopy(net).double()
    y = n64(xs)
    return torch.stack([torch.autograd.grad(y[:, j].sum(), xs, retain_graph=True)[0].abs().sum(1).max()
                        for j in range(y.shape[1])])


def in_region(x, x0, eps, domain) -> bool:
    """Whether the float64 point ``x`` lies in ``{|x - x0|_inf <= eps} ∩ domain``, exactly
    (rational arithmetic: the region of the values given, not of their rounded ends)."""
    from fractions import Fraction
    dlo, dhi = (None, None) if domain is None else [torch.as_tensor(v, dtype=torch.float64).expand(x.shape)
                                                     for v in domain]
    for i in range(x.numel()):
        xi, ci = Fraction(float(x[i])), Fraction(float(x0[i]))
        if abs(xi - ci) > Fraction(float(eps)):
            return False
        if dlo is not None and not float(dlo[i]) <= float(x[i]) <= float(dhi[i]):
            return False
    return True


def check_certificate(net, x0, eps, domain, c):
    """The witness contract, the status, and the upper bound against sampled gradients."""
    assert c.status != "infeasible"
    x0 = x0.double().flatten()
    w = c.witness
    x1, x2 = w["x1"].double().flatten(), w["x2"].double().flatten()
    assert in_region(x1, x0, eps, domain) and in_region(x2, x0, eps, domain), (x1, x2, x0, eps)
    assert c.lower <= c.upper
    lo, up = region_box(x0, eps, domain)
    ulp = torch.nextafter(x0.abs(), torch.tensor(math.inf, dtype=torch.float64)) - x0.abs()
    if bool((up - lo > 4 * ulp).any()):  # the region clearly holds two distinct points
        assert not torch.equal(x1, x2), "a witness must be two distinct points"
    if not torch.equal(x1, x2):
        n64 = copy.deepcopy(net).double()
        with torch.no_grad():
            f1, f2 = n64(x1[None])[0, w["output"]], n64(x2[None])[0, w["output"]]
        q = (f2 - f1).abs() / (x2 - x1).abs().max()
        assert q >= c.lower * (1 - 1e-12) - 1e-15, (q, c.lower)
        assert c.lower == c.per_output_lower[w["output"]]
    else:  # no pair (a single point, or a radius of a few ulps): nothing realises a positive value
        assert c.lower == 0
    seen = sampled_grad_norms(net, lo, up)
    assert (c.per_output_upper >= seen * (1 - 1e-9) - 1e-12).all(), (c.per_output_upper, seen)


def witness_cases():
    """(net, x0, eps, domain) on small random ReLU nets: eps 0, a coordinate clipped to zero
    width by ``domain``, a clipped box, and a plain one."""
    for seed in range(3):
        torch.manual_seed(100 + seed)
        d = 3
        net = mlp([d, 8, 8, 2], "relu" if seed != 1 else "leaky", 200 + seed)
        x0 = torch.rand(d)
        pinned = (torch.cat([x0[:1], torch.full((d - 1,), -5.0)]), torch.cat([x0[:1], torch.full((d - 1,), 5.0)]))
        x_edge = torch.cat([torch.zeros(1), x0[1:]])
        yield net, x0, 0.0, None
        yield net, x0, 0.25, pinned
        yield net, x_edge, 0.25, (0.0, 1.0)
        yield net, x0, 0.15, None


@pytest.mark.parametrize("method", ["exact", "bab"])
def test_witness_pairs_statuses_and_uppers(method):
    for net, x0, eps, domain in witness_cases():
        c = lipcert.local_lipschitz(net, x0, eps, domain=domain, method=method, bab_time=3, time_limit=30,
                                    attack_steps=5)
        check_certificate(net, x0, eps, domain, c)
        if method == "exact" and domain is None and eps > 0:
            assert c.status == "optimal", c.details["statuses"]


def _patched_solve(monkeypatch, change):
    """Make every MILP solve of HiGHS return ``change(solution)`` (LPs are left alone)."""
    from lipcert.exact import lp
    orig = lp.Model.solve

    def solve(self, *args, **kwargs):
        sol = orig(self, *args, **kwargs)
        return change(sol) if any(self.integer) else sol
    monkeypatch.setattr(lp.Model, "solve", solve)


@pytest.mark.parametrize("drop_incumbent", [False, True])
def test_exact_upper_holds_when_the_milp_value_is_too_low(monkeypatch, drop_incumbent):
    net = mlp([2, 12, 12, 2], "relu", 50)
    x0 = torch.tensor([0.4, -0.3])
    truth = lipcert.local_lipschitz(net, x0, 0.2, method="exact", attack_steps=5)
    assert truth.status == "optimal"
    _patched_solve(monkeypatch, lambda s: dataclasses.replace(
        s, objective=0.9 * s.objective, bound=0.9 * s.bound, x=None if drop_incumbent else s.x))
    c = lipcert.local_lipschitz(net, x0, 0.2, method="exact", attack_steps=5)
    assert (c.per_output_upper >= truth.per_output_lower).all()
    assert c.upper >= brute_force_2d(net, x0, 0.2, n=400).max() * (1 - 1e-9)
    assert c.status != "optimal", c.status
    check_certificate(net, x0, 0.2, None, c)


def test_exact_solver_infeasible_is_a_solver_failure(monkeypatch):
    from lipcert.exact.lp import Solution
    net = mlp([2, 12, 2], "relu", 7)
    x0 = torch.tensor([0.1, 0.2])
    _patched_solve(monkeypatch, lambda s: Solution("infeasible", math.nan, math.inf, None))
    c = lipcert.local_lipschitz(net, x0, 0.2, method="exact", attack_steps=5)
    assert c.status == "solver_failed"
    check_certificate(net, x0, 0.2, None, c)


def test_certified_lp_bounds_hold_for_any_duals():
    """``safe_bound`` bounds the LP's maximum for every multiplier vector, and a feasible LP is
    never certified infeasible."""
    import numpy as np
    from lipcert.exact import certified
    from lipcert.exact.lp import Model
    rng = np.random.default_rng(0)
    for trial in range(30):
        n, m = int(rng.integers(2, 6)), int(rng.integers(1, 6))
        A = rng.normal(size=(m, n))
        xbar = rng.uniform(-1, 1, n)  # a feasible point
        lo_r = A @ xbar - rng.uniform(0, 1, m) * (rng.random(m) < 0.7)
        hi_r = np.where(rng.random(m) < 0.5, np.inf, A @ xbar + rng.uniform(0, 1, m))
        model = Model()
        x = model.add_vars(-np.ones(n), np.ones(n))
        for r in range(m):
            model.add_row(x, A[r], lo_r[r], hi_r[r])
        model.cost = {int(j): float(v) for j, v in zip(x, rng.normal(size=n))}
        best = model.solve(maximize=True).objective
        Ad, L, U, l, u, cost = model.dense()
        D = certified._Data(Ad, np.abs(Ad), L, U, cost, np.abs(cost))
        for y in [rng.normal(size=m) * s for s in (0.0, 0.1, 1.0, 10.0)]:
            assert certified.safe_bound(D, y, l, u) >= best - 1e-12
            assert not certified.certified_infeasible(D, y, l, u)


def test_pattern_emptiness_is_never_certified_for_a_realised_pattern():
    """``certify_empty`` with the LP's multipliers or random ones never drops a pattern that a
    point of the box realises, and does drop patterns the LP finds empty with a clear margin."""
    import numpy as np
    from lipcert.bab.empty import certify_empty
    from lipcert.exact.pattern import pattern_lp
    from lipcert.graph.run import run
    from lipcert.region import prepare
    net = mlp([2, 6, 6, 1], "relu", 3)
    prob = prepare(net, torch.tensor([0.2, -0.1]), 0.3)
    g, lo, up = prob.graph, prob.box.lower[0], prob.box.upper[0]
    pre = [n.inputs[0] for n in g.nodes if n.op == "relu"]
    xs = lo + (up - lo) * torch.rand(200, 2, dtype=torch.float64)
    env = run(g, {g.input: xs})
    rng = np.random.default_rng(0)
    dropped = 0
    for i in range(40):
        real = {z: (env[z][i] > 0).to(torch.int8) for z in pre}
        _, _, mult = pattern_lp(g, lo, up, real)
        rand = {z: np.abs(rng.normal(size=env[z].shape[1])) for z in pre}
        assert not certify_empty(g, lo, up, real, mult)
        assert not certify_empty(g, lo, up, real, rand)
        flipped = {z: (1 - v) if k == 0 else v for k, (z, v) in enumerate(real.items())}
        _, margin, mult = pattern_lp(g, lo, up, flipped)
        if margin < -1e-3:
            assert certify_empty(g, lo, up, flipped, mult)
            dropped += 1
    assert dropped > 0


def test_pair_value_is_below_the_exact_quotient():
    """The checked quotient never exceeds the one computed in exact rational arithmetic."""
    from fractions import Fraction
    from lipcert.bab.witness import pair_value
    from lipcert.region import prepare
    net = mlp([2, 5, 1], "relu", 4)
    prob = prepare(net, torch.zeros(2), 1.0)
    W1, b1, W2, b2 = [[[Fraction(float(v)) for v in row] for row in p.detach().double().reshape(p.shape[0], -1)]
                      for p in (net[0].weight, net[0].bias[:, None], net[2].weight, net[2].bias[:, None])]

    def f(x):
        h = [max(Fraction(0), sum(w * xi for w, xi in zip(W1[j], x)) + b1[j][0]) for j in range(5)]
        return sum(w * hj for w, hj in zip(W2[0], h)) + b2[0][0]
    torch.manual_seed(0)
    x1 = torch.rand(50, 2, dtype=torch.float64) * 2 - 1
    x2 = x1 + torch.randn(50, 2, dtype=torch.float64) * torch.tensor([1e-1, 1e-4, 1e-8]).repeat(17)[:50, None]
    q = pair_value(prob.graph, x1, x2, torch.ones(50, 1, dtype=torch.float64), "inf")
    assert int((q > 0).sum()) >= 25
    for i in range(50):
        a, b = [Fraction(float(v)) for v in x1[i]], [Fraction(float(v)) for v in x2[i]]
        exact = abs(f(b) - f(a)) / max(abs(p - r) for p, r in zip(a, b))
        assert Fraction(float(q[i])) <= exact
