"""LipSDP (structured interior point) on CPU and on a GPU when one is present: same values, times.

    .venv/bin/python benchmarks/gpu_lipsdp.py
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import relu_mlp as mlp, table  # noqa: E402

import lipcert  # noqa: E402
from lipcert.zoo import load_model  # noqa: E402



def main():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    nets = [("2-64-64-64-2", mlp(64, 3)), ("2-256-256-256-2", mlp(256, 3)), ("2-512-512-2", mlp(512, 2)),
            ("digits-mlp", load_model("digits-mlp"))]
    rows = []
    for name, net in nets:
        row = [name]
        for dev in devices:
            if dev == "cuda":
                lipcert.global_lipschitz(net, 2, "lipsdp", device=dev)   # warm-up (kernels, handles)
                torch.cuda.synchronize()
            t = time.perf_counter()
            g = lipcert.global_lipschitz(net, 2, "lipsdp", device=dev)
            row += [f"{g.value:.7g}", f"{time.perf_counter() - t:.2f}", f"{g.details['gap']:.1e}"]
        rows.append(row)
        print(*row, flush=True)
    head = ["net"]
    for dev in devices:
        head += [f"LipSDP ({dev})", "s", "gap"]
    table(rows, head)


if __name__ == "__main__":
    main()
