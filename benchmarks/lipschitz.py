"""Local Lipschitz benchmark (l_inf -> l_inf, all outputs): every method on random and trained nets.

Prints net, eps, method, upper, lower, upper/lower and seconds (bound only; the attack's time is
separate), each after one warm-up call, all in this one process (ratios of times within one run
are what to quote).

    .venv/bin/python benchmarks/lipschitz.py [--quick] [--models NAME[,NAME...]] [--threads N]

``--models`` keeps only the named nets (the names in the first column, e.g.
``digits-maxpool-cnn,digits-gelu-mlp``); ``--threads`` sets torch's thread count (default 2).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
from _common import table  # noqa: E402

import lipcert  # noqa: E402
from lipcert import zoo  # noqa: E402

METHODS = ("alpha-crown", "crown", "recurjac", "ibp", "naive")


def random_mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)).eval()
    return net, torch.rand(784), None


def random_cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    return net, torch.rand(1, 8, 8), None


def trained(name):
    def make():
        X, _ = zoo.ZOO[name].dataset("test")
        return zoo.load_model(name), X[0], (0, 1)
    return make


def main(quick=False, models=None, threads=2):
    torch.set_num_threads(threads)
    cases = [("random 784-100-100-10", random_mlp, (0.02,)), ("random cnn 1x8x8", random_cnn, (0.02,)),
             ("digits-mlp", trained("digits-mlp"), (0.005, 0.02, 0.05)),
             ("digits-cnn", trained("digits-cnn"), (0.005, 0.02)),
             ("digits-resnet", trained("digits-resnet"), (0.005,)),
             ("diabetes-mlp", trained("diabetes-mlp"), (0.05, 0.2)),
             ("digits-maxpool-cnn", trained("digits-maxpool-cnn"), (0.005, 0.02)),
             ("digits-gelu-mlp", trained("digits-gelu-mlp"), (0.005, 0.02))]
    if models:  # overrides --quick
        unknown = set(models) - {c[0] for c in cases}
        if unknown:
            raise SystemExit(f"unknown --models {sorted(unknown)}; choose from {', '.join(c[0] for c in cases)}")
        cases = [c for c in cases if c[0] in models]
    elif quick:
        cases = cases[:3]
    rows = []
    for name, make, epss in cases:
        net, x0, dom = make()
        lipcert.local_lipschitz(net, x0, 0.01, domain=dom, attack_steps=1)  # warm-up
        for eps in epss:
            for m in METHODS:
                c = lipcert.local_lipschitz(net, x0, eps, domain=dom, method=m)
                rows.append((name, eps, m, f"{c.upper:.4g}", f"{c.lower:.4g}", f"{c.ratio:.3f}",
                             f"{c.timings['bound']:.3f}"))
    table(rows, ("net", "eps", "method", "upper", "lower", "upper/lower", "bound s"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the first three nets (ignored with --models)")
    ap.add_argument("--models", type=lambda s: [m for m in s.split(",") if m], default=None,
                    help="comma-separated net names to run (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    a = ap.parse_args()
    main(a.quick, a.models, a.threads)
