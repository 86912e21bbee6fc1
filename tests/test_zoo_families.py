"""The max-pool CNN and GELU MLP zoo models: accurate, and their crown certificates sound against autograd."""
import copy

import pytest
import torch

import lipcert
from lipcert import zoo

NEW = ["digits-maxpool-cnn", "digits-gelu-mlp"]


@pytest.mark.parametrize("name", NEW)
def test_new_zoo_models_load_and_are_accurate(name):
    assert name in zoo.names()
    net = zoo.load_model(name)
    X, y = zoo.ZOO[name].dataset("test")
    assert tuple(X.shape[1:]) == zoo.ZOO[name].input_shape()
    assert not net.training
    assert zoo.accuracy(name) > 0.9
    assert (zoo.cache_dir() / f"{name}-seed0.pt").exists()


def region_gradient_norms(net, x0, eps, n=50, seed=0):
    """Max over ``n`` uniform points of ``{||x - x0||_inf <= eps} ∩ [0, 1]`` of ``||grad f_k(x)||_1``,
    for every output k, by autograd on a float64 copy of ``net``."""
    net64 = copy.deepcopy(net).double()
    x0 = x0.double()
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    gen = torch.Generator().manual_seed(seed)
    xs = (lo + (hi - lo) * torch.rand((n,) + tuple(x0.shape), generator=gen, dtype=torch.float64))
    xs.requires_grad_(True)
    y = net64(xs)
    return torch.stack([torch.autograd.grad(y[:, k].sum(), xs, retain_graph=True)[0].flatten(1).abs().sum(1).max()
                        for k in range(y.shape[1])])


@pytest.mark.parametrize("name", NEW)
def test_new_zoo_models_crown_is_sound_against_sampled_gradients(name):
    net = zoo.load_model(name)
    X, _ = zoo.ZOO[name].dataset("test")
    x0, eps = X[0], 0.01
    c = lipcert.local_lipschitz(net, x0, eps, domain=(0, 1), method="crown", attack_steps=5)
    seen = region_gradient_norms(net, x0, eps)
    assert c.per_output_upper.shape == seen.shape
    assert (c.per_output_upper.double() >= seen * (1 - 1e-9)).all(), (c.per_output_upper, seen)
    assert c.lower <= c.upper
    assert (c.per_output_lower <= c.per_output_upper).all()
