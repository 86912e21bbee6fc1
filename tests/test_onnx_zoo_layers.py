"""Real networks: zoo models through torch and ONNX, MaxMin/GroupSort soundness, ONNX errors."""
import os
import random

import pytest
import torch
import torch.nn as nn

import lipcert
from lipcert import zoo
from lipcert.layers import GroupSort, MaxMin

from nets import box_points


def export(net, x, path):
    torch.onnx.export(net, x, str(path), dynamo=False)
    return str(path)


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_torch_and_onnx_give_identical_certificates(name, tmp_path):
    net = zoo.load_model(name)
    X, _ = zoo.ZOO[name].dataset("test")
    x = X[0]
    p = export(net, x[None], tmp_path / f"{name}.onnx")
    eps = 0.01
    a = lipcert.local_lipschitz(net, x, eps, domain=(0, 1), method="crown", attack_steps=2)
    b = lipcert.local_lipschitz(p, x, eps, domain=(0, 1), method="crown", attack_steps=2)
    torch.testing.assert_close(a.per_output_upper, b.per_output_upper, rtol=1e-6, atol=0)
    a = lipcert.local_lipschitz(net, x, eps, domain=(0, 1), attack_steps=2)
    b = lipcert.local_lipschitz(p, x, eps, domain=(0, 1), attack_steps=2)
    torch.testing.assert_close(a.per_output_upper, b.per_output_upper, rtol=1e-6, atol=0)


def test_zoo_models_are_accurate_and_cached(tmp_path, monkeypatch):
    assert zoo.accuracy("digits-mlp") > 0.9
    assert zoo.accuracy("digits-cnn") > 0.9
    assert os.path.exists(zoo.cache_dir() / "digits-mlp-seed0.pt")


def lipschitz_net(kind, seed):
    torch.manual_seed(seed)
    if kind == "mlp-maxmin":
        return nn.Sequential(nn.Linear(4, 8), MaxMin(), nn.Linear(8, 8), MaxMin(), nn.Linear(8, 2)).eval(), (4,)
    if kind == "mlp-groupsort":
        return nn.Sequential(nn.Linear(3, 6), GroupSort(2), nn.Linear(6, 2)).eval(), (3,)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), MaxMin(), nn.Conv2d(4, 4, 3, stride=2), GroupSort(2),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 2)).eval(), (1, 6, 6)


@pytest.mark.parametrize("seed", range(8))
def test_maxmin_groupsort_networks_are_sound(seed):
    rng = random.Random(seed)
    kind = rng.choice(["mlp-maxmin", "mlp-groupsort", "cnn"])
    net, shape = lipschitz_net(kind, seed)
    x0 = torch.randn(shape)
    eps = rng.choice([0.05, 0.2])
    xs = box_points(x0, eps, 500).requires_grad_(True)
    y = net(xs)
    seen = torch.stack([torch.autograd.grad(y[:, j].sum(), xs, retain_graph=True)[0].flatten(1).abs().sum(1).max()
                        for j in range(y.shape[1])]).double()
    lo, up = lipcert.bounds.output_bounds(net, x0, eps)
    assert (y.detach().double() >= lo - 1e-5).all() and (y.detach().double() <= up + 1e-5).all()
    for m in ("ibp", "recurjac", "crown", "alpha-crown"):
        c = lipcert.local_lipschitz(net, x0, eps, method=m, attack_steps=3)
        assert (c.per_output_upper >= seen * (1 - 1e-5)).all(), (kind, m)
        assert c.lower <= c.upper * (1 + 1e-9)


def test_maxmin_between_orthogonal_maps_has_constant_one_in_l2():
    torch.manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(6, 6))
    q2, _ = torch.linalg.qr(torch.randn(6, 6))
    net = nn.Sequential(nn.Linear(6, 6, bias=False), MaxMin(), nn.Linear(6, 6, bias=False)).eval()
    with torch.no_grad():
        net[0].weight.copy_(q1)
        net[2].weight.copy_(q2)
    ex = lipcert.local_lipschitz(net, torch.randn(6), 0.5, method="bab", norm=2, bab_time=5, outputs=[0])
    assert ex.upper <= 1 + 1e-6 and ex.lower <= ex.upper


def test_exact_and_bab_support_maxmin():
    net, shape = lipschitz_net("mlp-maxmin", 3)
    x0 = torch.randn(shape)
    ex = lipcert.local_lipschitz(net, x0, 0.1, method="exact")
    b = lipcert.local_lipschitz(net, x0, 0.1, method="bab", bab_time=20, rtol=1e-6)
    assert ex.status == "optimal"
    assert abs(b.upper - ex.upper) <= 1e-4 * ex.upper


@pytest.mark.parametrize("net,shape", [
    (lambda: lipschitz_net("mlp-maxmin", 1)[0], (4,)),
    (lambda: lipschitz_net("cnn", 2)[0], (1, 6, 6)),
    (lambda: nn.Sequential(nn.Linear(4, 5), nn.LeakyReLU(0.1), nn.BatchNorm1d(5), nn.Linear(5, 2), nn.Tanh()).eval(), (4,)),
])
def test_onnx_roundtrip_identical(net, shape, tmp_path):
    m = net()
    x = torch.randn(shape)
    p = export(m, x[None], tmp_path / "m.onnx")
    for meth in ("ibp", "crown"):
        a = lipcert.local_lipschitz(m, x, 0.05, method=meth, attack_steps=0)
        b = lipcert.local_lipschitz(p, x, 0.05, method=meth, attack_steps=0)
        torch.testing.assert_close(a.per_output_upper, b.per_output_upper, rtol=1e-6, atol=1e-12)


def test_onnx_unsupported_op_is_named(tmp_path):
    class Soft(nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=1)

    m = nn.Sequential(nn.Linear(3, 4), Soft()).eval()
    p = export(m, torch.randn(1, 3), tmp_path / "soft.onnx")
    with pytest.raises(lipcert.UnsupportedOperation, match="(?i)softmax"):
        lipcert.local_lipschitz(p, torch.randn(3), 0.1)


def test_missing_and_bad_model_files(tmp_path):
    with pytest.raises(lipcert.InvalidInput, match="not found"):
        lipcert.load(tmp_path / "nope.onnx")
    torch.save({"w": torch.zeros(2)}, tmp_path / "sd.pt")
    with pytest.raises(lipcert.InvalidModel, match="state_dict"):
        lipcert.load(tmp_path / "sd.pt")
