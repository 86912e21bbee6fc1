"""Global l2 bounds vs width and depth (random ReLU MLPs on 2-D inputs, default init, seed 0):
naive product, LipSDP-Layer and LipSDP-Neuron by the fast solver, and the cvxpy/Clarabel reference
where it finishes within --cap seconds (it is skipped above --ref-max hidden neurons: interior-point
cost grows with the cube of the LMI size; 2-64-64-64-2, 192 neurons, took 388 s here).

    .venv/bin/python benchmarks/global.py [--ref-max 64]
"""
from __future__ import annotations

import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
from _common import table  # noqa: E402

import lipcert  # noqa: E402
from lipcert.globalbound.chain import chain_of  # noqa: E402
from lipcert.globalbound.lipsdp import lipsdp_cvxpy  # noqa: E402


def mlp(width, depth):
    torch.manual_seed(0)
    sizes = [2] + [width] * depth + [2]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def sampled(net, n=200000):
    xs = (3 * torch.randn(n, 2)).requires_grad_(True)
    y = net(xs)
    return max(torch.autograd.grad(y[:, j].sum(), xs, retain_graph=True)[0].norm(dim=1).max().item() for j in range(2))


def main():
    ref_max = int(sys.argv[sys.argv.index("--ref-max") + 1]) if "--ref-max" in sys.argv else 64
    rows = []
    for width, depth in ((16, 2), (32, 2), (64, 2), (128, 2), (32, 3), (32, 4), (64, 3)):
        net = mlp(width, depth)
        naive = lipcert.global_lipschitz(net, 2, "naive").value
        layer = lipcert.global_lipschitz(net, 2, "lipsdp-layer")
        neuron = lipcert.global_lipschitz(net, 2, "lipsdp")
        ref, ref_s = "-", "-"
        if width * depth <= ref_max:
            t = time.perf_counter()
            ref_v, _ = lipsdp_cvxpy(chain_of(net), "CLARABEL")
            ref, ref_s = f"{ref_v:.5g}", f"{time.perf_counter() - t:.1f}"
        rows.append((f"2-{'-'.join([str(width)] * depth)}-2", f"{sampled(net):.4g}", f"{naive:.4g}",
                     f"{layer.value:.5g}", f"{layer.seconds:.2f}", f"{neuron.value:.5g}", f"{neuron.seconds:.2f}",
                     ref, ref_s))
    table(rows, ("net", "sampled grad", "naive", "LipSDP-Layer", "s", "LipSDP-Neuron (fast)", "s",
                 "cvxpy/Clarabel", "s"))


if __name__ == "__main__":
    main()
