"""Exact vs BaB vs alpha-CROWN on 2-D inputs of growing width and depth (the paper's 'varying
width / depth' table, random ReLU MLPs, x0 ~ N(0, 1), eps = 0.1, all outputs).

Prints: exact value and MILP seconds (HiGHS, with its status), BaB seconds to reach 1.01 x exact,
and the alpha-crown bound / exact. Each solve is capped (--cap seconds).

    .venv/bin/python benchmarks/exact.py [--cap 60] [--quick]
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import relu_mlp as mlp, table  # noqa: E402

import lipcert  # noqa: E402



def run(width, depth, cap):
    net = mlp(width, depth)
    torch.manual_seed(1)
    x0 = torch.randn(2)
    ex = lipcert.local_lipschitz(net, x0, 0.1, method="exact", time_limit=cap)
    bab = lipcert.local_lipschitz(net, x0, 0.1, method="bab", bab_time=cap, rtol=1e-3)
    alpha = lipcert.local_lipschitz(net, x0, 0.1)
    ref = ex.upper if ex.status == "optimal" else bab.upper
    hit = next((t for t, lo, up in bab.details["history"] if up <= 1.01 * ref), None)
    bab_time = f"{bab.timings['root'] + hit:.2f}" if hit is not None else f">{cap}"
    return (width, depth, f"{ex.upper:.5g}", ex.status, f"{ex.seconds:.2f}", bab_time, f"{bab.upper / ref:.4f}",
            f"{alpha.upper / ref:.3f}")


def main():
    cap = float(sys.argv[sys.argv.index("--cap") + 1]) if "--cap" in sys.argv else 60.0
    quick = "--quick" in sys.argv
    torch.set_num_threads(2)
    rows = []
    widths = (8, 16, 32) if quick else (8, 16, 32, 64, 128)
    depths = (2, 3) if quick else (2, 3, 4, 5)
    for w in widths:
        rows.append(run(w, 2, cap))
    for dep in depths[1:]:
        rows.append(run(32, dep, cap))
    table(rows, ("width", "depth", "exact", "status", "exact s", "BaB s to 1.01x", "BaB/exact", "alpha-crown/exact"))


if __name__ == "__main__":
    main()
