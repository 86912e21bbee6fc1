"""Soundness of every node's bounds by sampling; ordering of methods; exactness at radius 0."""
import random

import pytest
import torch

import lipcert
from lipcert.engine.config import BoundConfig
from lipcert.engine.schedule import compute_bounds
from lipcert.graph import run
from lipcert.region import prepare

from nets import FunctionalMLP, box_points, cnn, mlp, random_net, residual


def _check_all_nodes(net, x0, eps, method):
    prob = prepare(net, x0, eps)
    g = prob.graph
    bounds = compute_bounds(g, {g.input: prob.box}, BoundConfig(method=method, alpha_steps=5))
    pts = box_points(prob.x0[0], eps, 1000)
    env = run(g, {g.input: pts})
    for node in g.nodes:
        v = env[node.name]
        iv = bounds[node.name]
        tol = 1e-9 * (1 + v.abs())
        assert (v >= iv.lower - tol).all(), f"{method}: lower bound of {node.describe()} violated"
        assert (v <= iv.upper + tol).all(), f"{method}: upper bound of {node.describe()} violated"


@pytest.mark.parametrize("seed", range(30))
def test_every_node_bound_contains_samples(seed):
    rng = random.Random(seed)
    net, shape = random_net(rng)
    x0 = torch.randn(shape)
    eps = rng.choice([0.01, 0.1, 0.5])
    for method in ("ibp", "crown", "alpha-crown"):
        _check_all_nodes(net, x0, eps, method)


@pytest.mark.parametrize("seed", range(10))
def test_output_bounds_sound_and_ordered(seed):
    rng = random.Random(100 + seed)
    d = rng.choice([2, 4, 8])
    net = mlp([d, 16, 16, 3], "relu", seed)
    x0 = torch.randn(d)
    eps = rng.choice([0.05, 0.2, 0.5])
    res = {m: lipcert.bounds.output_bounds(net, x0, eps, method=m) for m in ("ibp", "crown", "alpha-crown")}
    xs = box_points(x0, eps, 2000)
    with torch.no_grad():
        ys = net(xs).double()
    for m, (lo, up) in res.items():
        assert (ys >= lo - 1e-6).all() and (ys <= up + 1e-6).all(), m
    w = {m: up - lo for m, (lo, up) in res.items()}
    assert (w["crown"] <= w["ibp"] + 1e-9).all()
    assert (res["alpha-crown"][0] >= res["crown"][0] - 1e-9).all()
    assert (res["alpha-crown"][1] <= res["crown"][1] + 1e-9).all()


@pytest.mark.parametrize("make,shape", [(lambda: mlp([4, 8, 8, 3], "relu"), (4,)), (lambda: cnn("tanh"), (3, 8, 8)),
                                        (lambda: residual("leaky"), (6,))])
def test_zero_radius_is_exact(make, shape):
    net = make()
    x0 = torch.randn(shape)
    for m in ("ibp", "crown", "alpha-crown"):
        lo, up = lipcert.bounds.output_bounds(net, x0, 0.0, method=m)
        y = net(x0[None])[0].double()
        torch.testing.assert_close(lo, y, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(up, y, rtol=1e-6, atol=1e-6)


def test_sequential_and_functional_give_identical_bounds():
    seq = mlp([5, 12, 12, 3], "relu", seed=3)
    fun = FunctionalMLP(seq).eval()
    x0 = torch.randn(5)
    for m in ("ibp", "crown", "alpha-crown"):
        a = lipcert.bounds.output_bounds(seq, x0, 0.3, method=m)
        b = lipcert.bounds.output_bounds(fun, x0, 0.3, method=m)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)


def test_domain_clips_and_spec_matrix():
    net = mlp([3, 8, 2], "relu")
    x0 = torch.tensor([0.0, 0.5, 1.0])
    lo, up = lipcert.bounds.output_bounds(net, x0, 0.3, domain=(0, 1))
    xs = torch.rand(5000, 3) * torch.tensor([0.3, 0.6, 0.3]) + torch.tensor([0.0, 0.2, 0.7])
    ys = net(xs).double()
    assert (ys >= lo - 1e-7).all() and (ys <= up + 1e-7).all()
    C = torch.tensor([[1.0, -1.0]])
    dlo, dup = lipcert.bounds.output_bounds(net, x0, 0.3, domain=(0, 1), C=C)
    diff = (ys[:, 0] - ys[:, 1])
    assert dlo.shape == (1,) and (diff >= dlo - 1e-7).all() and (diff <= dup + 1e-7).all()
    assert dup[0] - dlo[0] <= (up[0] - lo[1]) - (lo[0] - up[1]) + 1e-9


def test_memory_chunking_gives_same_bounds():
    net = cnn("relu", channels=1, size=8)
    x0 = torch.randn(1, 8, 8)
    a = lipcert.bounds.output_bounds(net, x0, 0.05, method="crown")
    b = lipcert.bounds.output_bounds(net, x0, 0.05, method="crown", max_memory_gb=1e-5)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
