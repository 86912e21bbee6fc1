"""The core method: soundness against sampled gradients, exactness at radius 0, method ordering,
witnesses that re-evaluate, batching."""
import random

import pytest
import torch

import lipcert

from nets import box_points, cnn, mlp, random_net, residual

METHODS = ("ibp", "recurjac", "crown", "alpha-crown")
Q = {"inf": 1, "2": 2, "1": float("inf")}


def sampled_grad_norms(net, x0, eps, q, n=400, gen=None):
    """Max over sampled points of the dual norm of each output's gradient ``[K]``."""
    xs = box_points(x0, eps, n, gen).float().requires_grad_(True)
    y = net(xs)
    out = []
    for j in range(y.shape[1]):
        (g,) = torch.autograd.grad(y[:, j].sum(), xs, retain_graph=True)
        out.append(g.flatten(1).norm(p=q, dim=1).max())
    return torch.stack(out).double()


@pytest.mark.parametrize("block", range(10))
def test_soundness_200_random_networks(block):
    """20 random nets per block, 200 in all: every method's upper >= sampled gradient norms
    and >= its own witness lower bound."""
    rng = random.Random(block)
    for i in range(20):
        net, shape = random_net(rng, acts=("relu", "leaky", "tanh"))
        x0 = torch.randn(shape)
        eps = rng.choice([0.01, 0.1, 0.4])
        norm = rng.choice(["inf", "inf", "2", "1"])
        seen = sampled_grad_norms(net, x0, eps, Q[norm])
        for m in METHODS:
            c = lipcert.local_lipschitz(net, x0, eps, norm=norm, method=m, attack_steps=3, attack_samples=64,
                                        alpha_steps=5)
            tol = 1e-5 * seen + 1e-7
            assert (c.per_output_upper >= seen - tol).all(), (m, norm, c.per_output_upper, seen)
            assert c.lower <= c.upper * (1 + 1e-9) + 1e-12, (m, c)


@pytest.mark.parametrize("make,shape", [(lambda: mlp([4, 16, 16, 3], "relu", 1), (4,)),
                                        (lambda: cnn("relu", seed=2), (3, 8, 8)),
                                        (lambda: mlp([3, 8, 8, 2], "leaky", 3), (3,)),
                                        (lambda: mlp([3, 8, 8, 2], "tanh", 4), (3,)),
                                        (lambda: residual("relu", 5), (6,))])
@pytest.mark.parametrize("norm", ["inf", "2", "1"])
def test_zero_radius_equals_gradient_norm(make, shape, norm):
    net = make()
    x0 = torch.randn(shape).double()
    xr = x0[None].clone().requires_grad_(True)
    y = net.double()(xr)
    ref = torch.stack([torch.autograd.grad(y[0, j], xr, retain_graph=True)[0].flatten().norm(p=Q[norm])
                       for j in range(y.shape[1])])
    net.float()
    for m in ("crown", "alpha-crown", "recurjac", "ibp"):
        c = lipcert.local_lipschitz(net, x0.float(), 0.0, norm=norm, method=m, attack_steps=0)
        torch.testing.assert_close(c.per_output_upper, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_method_ordering_on_relu_nets(seed):
    rng = random.Random(seed)
    d = rng.choice([2, 5, 10])
    net = mlp([d] + [rng.choice([8, 16, 32])] * rng.choice([1, 2, 3]) + [3], "relu", seed)
    x0 = torch.randn(d)
    eps = rng.choice([0.02, 0.1, 0.3])
    up = {m: lipcert.local_lipschitz(net, x0, eps, method=m, attack_steps=0, attack_samples=16).per_output_upper
          for m in METHODS}
    tol = 1e-6 * (1 + up["ibp"])
    assert (up["alpha-crown"] <= up["crown"] + tol).all()
    assert (up["crown"] <= up["recurjac"] + tol).all()
    assert (up["crown"] <= up["ibp"] + tol).all()


def test_witness_re_evaluates_to_the_lower_bound():
    net = mlp([4, 16, 16, 3], "relu", 7)
    x0 = torch.rand(4)
    c = lipcert.local_lipschitz(net, x0, 0.1, domain=(0, 1))
    w = c.witness
    x1, x2 = w["x1"], w["x2"]
    for x in (x1, x2):
        assert ((x >= torch.clamp(x0 - 0.1, 0, 1) - 1e-12) & (x <= torch.clamp(x0 + 0.1, 0, 1) + 1e-12)).all()
    y1, y2 = net.double()(x1[None])[0], net.double()(x2[None])[0]
    q = (y1[w["output"]] - y2[w["output"]]).abs() / (x1 - x2).abs().max()
    assert abs(q.item() - c.lower) <= 1e-9 * (1 + c.lower)
    assert 0 < c.lower <= c.upper


def test_batch_of_inputs_matches_single_calls():
    net = mlp([5, 16, 16, 4], "relu", 8)
    xs = torch.randn(3, 5)
    certs = lipcert.local_lipschitz(net, xs, 0.05, method="crown", attack_steps=2)
    assert isinstance(certs, list) and len(certs) == 3
    for x, c in zip(xs, certs):
        single = lipcert.local_lipschitz(net, x, 0.05, method="crown", attack_steps=2)
        torch.testing.assert_close(c.per_output_upper, single.per_output_upper, rtol=1e-9, atol=1e-12)


def test_jacobian_bounds_contain_sampled_jacobians():
    for net, shape in ((mlp([3, 12, 12, 2], "relu", 9), (3,)), (mlp([3, 12, 2], "tanh", 10), (3,)),
                       (cnn("leaky", seed=11, channels=1, size=6, out=2), (1, 6, 6))):
        x0 = torch.randn(shape)
        lo, up = lipcert.jacobian_bounds(net, x0, 0.1)
        xs = box_points(x0, 0.1, 500).double().requires_grad_(True)
        y = net.double()(xs)
        for j in range(y.shape[1]):
            (g,) = torch.autograd.grad(y[:, j].sum(), xs, retain_graph=True)
            assert (g >= lo[j] - 1e-9).all() and (g <= up[j] + 1e-9).all()
        net.float()


def test_outputs_selection_and_spec_vectors():
    net = mlp([3, 8, 3], "relu", 12)
    x0 = torch.randn(3)
    full = lipcert.local_lipschitz(net, x0, 0.1, method="crown", attack_steps=0)
    sub = lipcert.local_lipschitz(net, x0, 0.1, method="crown", outputs=[2], attack_steps=0)
    torch.testing.assert_close(sub.per_output_upper, full.per_output_upper[2:])
    margin = lipcert.local_lipschitz(net, x0, 0.1, method="crown", outputs=torch.tensor([[1.0, -1.0, 0.0]]),
                                     attack_steps=0)
    assert margin.upper <= full.per_output_upper[0] + full.per_output_upper[1] + 1e-9


def test_tiny_2d_mlp_is_tight_with_default_method():
    """Acceptance: 2-32-32-2, eps 0.1: upper / lower <= 1.5 with the default method."""
    net = mlp([2, 32, 32, 2], "relu", 0)
    ratios = []
    for s in range(5):
        torch.manual_seed(100 + s)
        c = lipcert.local_lipschitz(net, torch.randn(2), 0.1)
        ratios.append(c.ratio)
    assert max(ratios) <= 1.5, ratios
