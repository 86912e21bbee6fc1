"""Output-bound benchmark: IBP / CROWN / alpha-CROWN on an MLP 784-256-256-256-10 and a CNN
(conv 3->16 k4 s2, conv 16->32 k4 s2, fc 100, fc 10 on 3x32x32), default init, seed 0.
Prints method, mean bound width over the outputs, seconds (bound only, after a warm-up) and the
peak memory of a fresh process running that one job.

    .venv/bin/python benchmarks/bounds.py
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import isolated, table  # noqa: E402


def build(kind):
    import torch
    import torch.nn as nn
    torch.manual_seed(0)
    if kind == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        x0 = torch.rand(1, 784)
    else:
        net = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(32 * 8 * 8, 100), nn.ReLU(), nn.Linear(100, 10))
        x0 = torch.rand(1, 3, 32, 32)
    return net.eval(), x0


def job(kind, method, eps):
    import lipcert
    net, x0 = build(kind)
    lipcert.bounds.output_bounds(net, x0, eps, method="crown")  # warm-up (imports, first-call costs)
    if method == "alpha-crown":
        lipcert.bounds.output_bounds(net, x0, 0.0, method="alpha-crown")
    t = time.perf_counter()
    lo, up = lipcert.bounds.output_bounds(net, x0, eps, method=method)
    sec = time.perf_counter() - t
    return float((up - lo).mean()), sec


def main():
    rows = []
    for kind, eps in (("mlp", 0.01), ("cnn", 0.005)):
        for method in ("ibp", "crown", "alpha-crown"):
            (width, sec), _, rss = isolated(job, kind, method, eps)
            rows.append((kind, eps, method, f"{width:.4g}", f"{sec:.3f}", f"{rss:.0f}"))
    table(rows, ("net", "eps", "method", "mean width", "seconds", "peak MB"))


if __name__ == "__main__":
    main()
