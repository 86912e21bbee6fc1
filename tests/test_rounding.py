"""Soundness in floating point (issue 13): the region rounded outward, float64 folding, saturated
activations in float32, affine-only models, degenerate BatchNorm, witnesses inside the exact
region, and random nets in float32 against sampled gradient norms."""
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

import lipcert
from lipcert.errors import InvalidModel
from lipcert.region import make_boxes

METHODS = ["ibp", "crown", "alpha-crown", "recurjac"]
DTYPES = [torch.float64, torch.float32]


class KinkAt(nn.Module):
    """``relu(w x + b)``: Lipschitz constant ``|w|`` on any region holding the kink ``-b/w``."""

    def __init__(self, w, b, dtype=torch.float32):
        super().__init__()
        self.lin = nn.Linear(1, 1).to(dtype)
        with torch.no_grad():
            self.lin.weight.fill_(w)
            self.lin.bias.fill_(b)

    def forward(self, x):
        return torch.relu(self.lin(x))


def _sliver_case(rng, w, b, dt):
    """``(x0, eps)`` in float64 whose region's upper end lies above the kink ``-b/w`` while the
    nearest ``dt`` value of ``x0 + eps`` lies below it (None if the kink admits no such case)."""
    k = Fraction(-b) / Fraction(w)
    ulp = float(k) * torch.finfo(dt).eps
    for _ in range(20000):
        eps = rng.uniform(0.01, 0.1)
        x0 = float(k) - eps + rng.uniform(0, ulp)
        hi = Fraction(x0) + Fraction(eps)
        r = Fraction(torch.tensor(x0, dtype=torch.float64).add(eps).to(dt).item())
        if hi >= k > r:
            return x0, eps
    return None


KINKS = [(10.0, -7.0), (3.0, -1.0), (7.0, -3.0), (-5.0, 2.0), (9.0, -4.0), (6.0, -5.0)]


@pytest.mark.parametrize("seed", range(2))
def test_kink_in_the_rounded_off_sliver_is_kept(seed):
    import random
    rng = random.Random(seed)
    found = 0
    for w, b in KINKS:
        net = KinkAt(w, b).eval()
        for case_dt in DTYPES:
            case = _sliver_case(rng, w, b, case_dt)
            if case is None:
                continue
            found += 1
            x0, eps = case
            for dt in DTYPES:
                for method in ("ibp", "crown"):
                    c = lipcert.local_lipschitz(net, torch.tensor([[x0]], dtype=torch.float64), eps,
                                                method=method, dtype=dt, attack_samples=16, attack_steps=2)
                    assert c.upper >= abs(w) * (1 - 1e-12), (w, b, case_dt, method, dt, c.upper)
    assert found >= 4


def test_audit_case_relu_shift():
    class F(nn.Module):
        def forward(self, x):
            return torch.relu(x - 0.5323921516569357)
    x0 = torch.tensor([[0.47627653647029533]], dtype=torch.float64)
    for dt in DTYPES:
        c = lipcert.local_lipschitz(F().eval(), x0, 0.05611561565459661, method="crown", dtype=dt)
        assert c.upper >= 1.0


def test_box_contains_region_exactly():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 200, generator=gen, dtype=torch.float64) * 3.2 - 1.5
    for eps in (0.0, 1e-9, 0.0123456789, 0.3):
        for dt in DTYPES:
            outer, inner = make_boxes(x0, eps, (-1.5, 1.7), dt)
            for i in range(200):
                xi = Fraction(x0[0, i].item())
                lo = max(xi - Fraction(eps), Fraction(-1.5))
                hi = min(xi + Fraction(eps), Fraction(1.7))
                assert Fraction(outer.lower[0, i].item()) <= lo and Fraction(outer.upper[0, i].item()) >= hi
                if inner is not None:
                    assert lo <= Fraction(inner.lower[0, i].item()) <= Fraction(inner.upper[0, i].item()) <= hi


class Saturated(nn.Module):
    def __init__(self, act, shift, bn=False):
        super().__init__()
        self.bn = nn.BatchNorm1d(1) if bn else nn.Identity()
        if bn:
            with torch.no_grad():
                self.bn.running_var.fill_(1e-4)
                self.bn.running_mean.fill_(-shift * 1e-2)
        self.act, self.shift, self.use_bn = act, shift, bn

    def forward(self, x):
        return -self.act(self.bn(x) if self.use_bn else x + self.shift)


def _true_constant(net, lo, hi):
    xs = torch.linspace(lo, hi, 2001, dtype=torch.float64).reshape(-1, 1).requires_grad_(True)
    net64 = net.double()
    (g,) = torch.autograd.grad(net64(xs).sum(), xs)
    net.float()
    return float(g.abs().max())


@pytest.mark.parametrize("act,shift", [(torch.sigmoid, 20.0), (torch.tanh, 10.0), (torch.sigmoid, 35.0),
                                       (torch.tanh, -12.0), (torch.sigmoid, -25.0)])
@pytest.mark.parametrize("bn", [False, True])
def test_saturated_smooth_activations(act, shift, bn):
    net = Saturated(act, shift, bn).eval()
    true = _true_constant(net, -0.1, 0.1)
    assert true > 0
    for dt in DTYPES:
        for method in METHODS:
            c = lipcert.local_lipschitz(net, torch.zeros(1, 1), 0.1, method=method, dtype=dt)
            assert c.upper >= true * (1 - 1e-6), (method, dt, c.upper, true)
            assert c.lower <= c.upper


def test_float32_batchnorm_folded_in_float64():
    """Two BN channels whose float32 scales differ by about one float32 ulp: their difference is
    the true constant, which folding in float32 rounds to 0."""
    net = nn.Sequential(nn.Linear(1, 2, bias=False), nn.BatchNorm1d(2), nn.Linear(2, 1, bias=False)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[1].running_var.copy_(torch.tensor([1.0, 1.0 + 1.2e-7]))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
    true = _true_constant(net, -0.5, 0.5)
    assert true > 1e-8
    for dt in DTYPES:
        c = lipcert.local_lipschitz(net, torch.zeros(1, 1), 0.5, method="crown", dtype=dt)
        assert c.upper >= true * (1 - 1e-9)
        assert c.upper <= true * 1.01


@pytest.mark.parametrize("make", [lambda: nn.Linear(3, 2),
                                  lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)),
                                  lambda: Scale()])
def test_affine_models_give_their_exact_constant(make):
    torch.manual_seed(0)
    net = make().eval()
    if isinstance(net, nn.Sequential):
        with torch.no_grad():
            net[1].running_var.uniform_(0.5, 2)
            net[1].running_mean.normal_()
    x0 = torch.randn(1, 3)
    J = torch.autograd.functional.jacobian(lambda z: net(z.reshape(1, 3)).reshape(-1), x0.reshape(3))
    exact = J.double().abs().sum(1)
    for method in METHODS + ["naive", "bab"]:
        c = lipcert.local_lipschitz(net, x0, 0.1, method=method, bab_time=1.0 if method == "bab" else None)
        if method != "naive":  # a product of norms is exact only for one layer
            assert torch.allclose(c.per_output_upper.double(), exact, rtol=1e-5), (method, c.per_output_upper, exact)
        assert (c.per_output_upper.double() >= exact * (1 - 1e-6)).all()
        assert c.per_output_upper.max() >= exact.max() * (1 - 1e-6)
        assert c.lower >= exact.max() * (1 - 1e-4) and c.lower <= c.upper


class Scale(nn.Module):
    def forward(self, x):
        return x * 3 - 1


def test_degenerate_batchnorm_is_invalid():
    bn = nn.BatchNorm1d(2, eps=0.0)
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([1.0, 0.0]))
    net = nn.Sequential(nn.Linear(2, 2), bn, nn.ReLU(), nn.Linear(2, 1)).eval()
    with pytest.raises(InvalidModel):
        lipcert.local_lipschitz(net, torch.zeros(1, 2), 0.1)


def _inside(x, x0, eps, dom=None):
    for a, c in zip(x.reshape(-1).tolist(), x0.reshape(-1).tolist()):
        lo, hi = Fraction(c) - Fraction(eps), Fraction(c) + Fraction(eps)
        if dom is not None:
            lo, hi = max(lo, Fraction(dom[0])), min(hi, Fraction(dom[1]))
        if not lo <= Fraction(a) <= hi:
            return False
    return True


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.Sigmoid])
def test_witness_is_a_pair_inside_the_exact_region(dt, act):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 16), act(), nn.Linear(16, 3)).eval()
    x0 = torch.rand(1, 4, dtype=torch.float64)
    eps = 0.0123456789
    c = lipcert.local_lipschitz(net, x0, eps, method="crown", dtype=dt, domain=(0, 1))
    x1, x2 = c.witness["x1"].double(), c.witness["x2"].double()
    assert not torch.equal(x1, x2)
    assert _inside(x1, x0, eps, (0, 1)) and _inside(x2, x0, eps, (0, 1))
    with torch.no_grad():
        n64 = net.double()
        y1, y2 = n64(x1.reshape(1, 4)), n64(x2.reshape(1, 4))
        net.float()
    k = c.witness["output"]
    q = abs(float(y2[0, k] - y1[0, k])) / float((x2 - x1).abs().max())
    assert q >= c.lower * (1 - 1e-9)
    assert c.dtype in ("float32", "float64") and c.region["ball"] == "inf"


def test_certificate_reports_dtype_and_region():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)).eval()
    c = lipcert.local_lipschitz(net, torch.zeros(1, 2), 0.1, dtype=torch.float32)
    assert c.dtype == "float32"
    assert all(lo <= -0.1 for lo in c.region["lower"]) and all(up >= 0.1 for up in c.region["upper"])
    d = c.to_dict()
    assert d["dtype"] == "float32" and d["region"]["eps"] == pytest.approx(0.1)


def _observed(net, x0, eps, q, n=2000):
    xs = (x0 + eps * (2 * torch.rand((n,) + tuple(x0.shape[1:]), dtype=torch.float64) - 1))
    xs = torch.cat([xs, x0 + eps * torch.sign(torch.randn((n,) + tuple(x0.shape[1:]), dtype=torch.float64))])
    xs.requires_grad_(True)
    n64 = net.double()
    out = n64(xs)
    best = []
    for j in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, j].sum(), xs, retain_graph=True)
        best.append(float(g.flatten(1).norm(p=q, dim=1).max()))
    net.float()
    return best


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from([nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU]),
       eps=st.sampled_from([1e-3, 0.05, 0.5]), bn=st.booleans(), norm=st.sampled_from(["inf", "2"]))
def test_float32_bounds_cover_sampled_gradients(seed, act, eps, bn, norm):
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 8)]
    if bn:
        b = nn.BatchNorm1d(8)
        with torch.no_grad():
            b.running_var.uniform_(1e-3, 3)
            b.running_mean.normal_(0, 2)
        layers.append(b)
    net = nn.Sequential(*layers, act(), nn.Linear(8, 8), act(), nn.Linear(8, 2)).eval()
    x0 = torch.randn(1, 3, dtype=torch.float64) * 2
    seen = _observed(net, x0, eps, 1 if norm == "inf" else 2)
    for method in ("ibp", "crown", "alpha-crown"):
        c = lipcert.local_lipschitz(net, x0, eps, norm=norm, method=method, dtype=torch.float32,
                                    attack_samples=64, attack_steps=3)
        for j, s in enumerate(seen):
            assert float(c.per_output_upper[j]) >= s * (1 - 1e-9), (method, j, float(c.per_output_upper[j]), s)


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.ReLU])
def test_batched_calls_equal_single_calls(act):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), act(), nn.Linear(32, 32), act(), nn.Linear(32, 5)).eval()
    X = torch.randn(4, 8)
    for method in ("crown", "alpha-crown"):
        batch = lipcert.local_lipschitz(net, X, 0.5, method=method, attack_samples=16, attack_steps=2)
        for i in range(4):
            one = lipcert.local_lipschitz(net, X[i:i + 1], 0.5, method=method, attack_samples=16, attack_steps=2)
            assert torch.equal(batch[i].per_output_upper, one.per_output_upper), (method, i)
            assert batch[i].lower == one.lower
