"""Exact MILP values against brute force, every other method against exact, BaB convergence."""
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
