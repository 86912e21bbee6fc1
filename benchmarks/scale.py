"""Scale: alpha-crown local Lipschitz bounds on networks of growing width, depth and input size, up to
a CIFAR-sized CNN (3x32x32, conv 32-32-64-64, dense 512-512-10). Prints seconds and the peak
memory of a fresh process per network, float32, eps 1/255, all 10 classes.

    .venv/bin/python benchmarks/scale.py [--quick]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import isolated, table  # noqa: E402


def build(kind, size):
    import torch
    import torch.nn as nn
    torch.manual_seed(0)
    if kind == "mlp-width":
        net = nn.Sequential(nn.Linear(64, size), nn.ReLU(), nn.Linear(size, size), nn.ReLU(), nn.Linear(size, 10))
        return net.eval(), torch.rand(64)
    if kind == "mlp-depth":
        layers = [nn.Linear(64, 64), nn.ReLU()]
        for _ in range(size - 1):
            layers += [nn.Linear(64, 64), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(64, 10)).eval(), torch.rand(64)
    if kind == "cnn-input":
        net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(32 * (size // 4) ** 2, 100), nn.ReLU(), nn.Linear(100, 10))
        return net.eval(), torch.rand(3, size, size)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64 * 8 * 8, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    return net.eval(), torch.rand(3, 32, 32)


def job(kind, size, method):
    import torch
    import lipcert
    net, x = build(kind, size)
    c = lipcert.local_lipschitz(net, x, 1 / 255, domain=(0, 1), method=method, dtype=torch.float32,
                                attack_steps=5, attack_samples=64, max_memory_gb=4.0)
    return c.upper, c.lower, c.timings["bound"]


def main():
    quick = "--quick" in sys.argv
    cases = [("mlp-width", w) for w in (64, 256, 1024)] + [("mlp-depth", d) for d in (2, 4, 8)] + \
            [("cnn-input", s) for s in (8, 16, 32)] + [("cifar-cnn", 32)]
    if quick:
        cases = cases[:2]
    rows = []
    for kind, size in cases:
        for method in ("crown", "alpha-crown"):
            (up, lo, sec), wall, rss = isolated(job, kind, size, method)
            rows.append((kind, size, method, f"{up:.4g}", f"{lo:.4g}", f"{sec:.1f}", f"{rss:.0f}"))
            print(rows[-1], flush=True)
    table(rows, ("net", "size", "method", "upper", "lower", "bound s", "peak MB"))


if __name__ == "__main__":
    main()
