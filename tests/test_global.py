"""Global bounds: naive >= LipSDP >= every local bound and every sampled gradient; the fast LipSDP
matches the cvxpy reference; MaxMin between orthogonal maps gives 1."""
import pytest
import torch
import torch.nn as nn

import lipcert
from lipcert.globalbound.chain import chain_of
from lipcert.globalbound.lipsdp import certify, lipsdp_cvxpy, lipsdp_fast
from lipcert.layers import GroupSort, MaxMin

from nets import mlp


def sampled_l2(net, d, n=20000, scale=3.0):
    xs = (scale * torch.randn(n, d)).requires_grad_(True)
    y = net(xs)
    return max(torch.autograd.grad(y[:, j].sum(), xs, retain_graph=True)[0].norm(dim=1).max().item()
               for j in range(y.shape[1]))


@pytest.mark.parametrize("sizes,act", [([2, 16, 16, 2], "relu"), ([3, 12, 12, 12, 2], "relu"), ([3, 16, 2], "tanh"),
                                       ([4, 20, 3], "sigmoid"), ([3, 10, 10, 2], "leaky")])
def test_fast_lipsdp_matches_cvxpy_and_orders(sizes, act):
    net = mlp(sizes, act, seed=1)
    ch = chain_of(net)
    ref, status = lipsdp_cvxpy(ch, "CLARABEL")
    fast = lipcert.global_lipschitz(net, 2, "lipsdp")
    naive = lipcert.global_lipschitz(net, 2, "naive")
    layer = lipcert.global_lipschitz(net, 2, "lipsdp-layer")
    assert fast.value <= naive.value * (1 + 1e-9)
    assert fast.value >= ref * (1 - 1e-4)             # the reference is the optimum of the same SDP
    assert fast.value <= ref * 1.01                   # acceptance: within 1% of the reference
    assert layer.value >= ref * (1 - 1e-4)            # fewer multipliers: never below the neuron SDP
    seen = sampled_l2(net, sizes[0])
    assert seen <= fast.value * (1 + 1e-6)
    x0 = torch.randn(sizes[0])
    for eps in (0.1, 1.0):
        loc = lipcert.local_lipschitz(net, x0, eps, norm=2, method="crown", attack_steps=5)
        assert loc.lower <= fast.value * (1 + 1e-6)
    assert naive.value >= lipcert.local_lipschitz(net, x0, 0.0, norm=2, method="naive").upper * (1 - 1e-9)


def test_every_accepted_iterate_is_a_certificate():
    net = mlp([2, 8, 8, 2], "relu", seed=2)
    ch = chain_of(net)
    value, lam = lipsdp_fast(ch, outer=2, inner=20)
    assert certify(ch, lam, value ** 2)
    assert not certify(ch, lam, (value * 0.9) ** 2)


def test_single_maxmin_between_orthogonal_matrices_gives_one():
    torch.manual_seed(0)
    for layer in (MaxMin(), GroupSort(2)):
        q1, _ = torch.linalg.qr(torch.randn(6, 6))
        q2, _ = torch.linalg.qr(torch.randn(6, 6))
        net = nn.Sequential(nn.Linear(6, 6, bias=False), layer, nn.Linear(6, 6, bias=False)).eval()
        with torch.no_grad():
            net[0].weight.copy_(q1)
            net[2].weight.copy_(q2)
        for method in ("lipsdp", "naive"):
            v = lipcert.global_lipschitz(net, 2, method).value
            assert abs(v - 1) <= 1e-5, (layer, method, v)
        ref, _ = lipsdp_cvxpy(chain_of(net), "CLARABEL")
        assert abs(ref - 1) <= 1e-4


def test_global_bounds_conv_and_errors():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).eval()
    with pytest.raises(lipcert.InvalidInput, match="input_shape"):
        lipcert.global_lipschitz(net, 2, "lipsdp")
    v = lipcert.global_lipschitz(net, 2, "lipsdp", input_shape=(1, 7, 7)).value
    n = lipcert.global_lipschitz(net, 2, "naive", input_shape=(1, 7, 7)).value
    assert v <= n * (1 + 1e-9) and sampled_l2(nn.Sequential(nn.Unflatten(1, (1, 7, 7)), net).eval(), 49) <= v * (1 + 1e-6)
    assert lipcert.global_lipschitz(net, "inf", "naive", input_shape=(1, 7, 7)).value > 0
    with pytest.raises(lipcert.InvalidInput, match="l2"):
        lipcert.global_lipschitz(mlp([2, 4, 2]), "inf", "lipsdp")
    with pytest.raises(lipcert.UnsupportedOperation):
        lipcert.global_lipschitz(nn.Sequential(nn.Linear(2, 2), nn.Softmax(1), nn.Linear(2, 2)).eval(), 2)
