"""Helpers shared by the benchmark scripts: run a job in a fresh process and report its peak RSS."""
from __future__ import annotations

import multiprocessing as mp
import resource
import time


def _child(fn, args, q):
    import torch
    torch.set_num_threads(2)
    t = time.perf_counter()
    out = fn(*args)
    q.put((out, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def isolated(fn, *args):
    """Run ``fn(*args)`` in a fresh process; return ``(result, seconds, peak_rss_mb)``."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))


def relu_mlp(width, depth, seed=0, d_in=2, d_out=2):
    """``d_in-width^depth-d_out`` ReLU MLP with PyTorch's default init under ``seed`` (eval mode)."""
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    sizes = [d_in] + [width] * depth + [d_out]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()
