"""Tightness of the default method on the newer layer families, on trained digits nets.

Families: the max-pool CNN and GELU MLP of the zoo, and 64-64-64-10 digits MLPs with SiLU, ELU and
Softplus plus a Conv1d ReLU net on the digits rows read as [1, 64] sequences (these four trained
here, seeded, with the zoo's training loop). On the first N digits test inputs (default 5), with
``lipcert.local_lipschitz(model, x, eps, domain=(0, 1))`` (alpha-crown, l_inf):

* eps 0.01: mean and max of upper/lower over the inputs, and the mean seconds per call;
* eps 1e-6: the max over inputs and outputs k of ``upper_k / ||grad f_k(x0)||_1 - 1`` (gradient by
  autograd on a float64 copy of the model; the min is printed too: a value below 0 would be an
  unsound bound), and the mean seconds per call.

Target: upper/lower <= 2 at eps 0.01 and ``upper_k / ||grad f_k(x0)||_1 - 1 <= 0.02`` at eps 1e-6.
Inputs that miss it are listed after the table. No asserts.

    .venv/bin/python benchmarks/families.py [--n 5] [--threads 2] [--families maxpool-cnn,silu-mlp,...]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
from _common import table  # noqa: E402

import lipcert  # noqa: E402
from lipcert import zoo  # noqa: E402

RATIO_TARGET = 2.0
GRAD_TARGET = 0.02


def _mlp(act):
    return nn.Sequential(nn.Linear(64, 64), act(), nn.Linear(64, 64), act(), nn.Linear(64, 10))


def _conv1d():
    return nn.Sequential(nn.Conv1d(1, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv1d(8, 16, 5, stride=2, padding=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 10))


def _trained_here(build, epochs, seq=False, seed=0):
    def make():
        X, y = zoo.digits("train")
        Xt, yt = zoo.digits("test")
        if seq:
            X, Xt = X.reshape(-1, 1, 64), Xt.reshape(-1, 1, 64)
        t = time.perf_counter()
        torch.manual_seed(seed)
        model = zoo.fit(build(), X, y, epochs, seed)
        secs = time.perf_counter() - t
        with torch.no_grad():
            acc = float((model(Xt).argmax(1) == yt).float().mean())
        return model, Xt, acc, secs
    return make


def _from_zoo(name):
    def make():
        t = time.perf_counter()
        model = zoo.load_model(name)
        secs = time.perf_counter() - t
        Xt, _ = zoo.ZOO[name].dataset("test")
        return model, Xt, zoo.accuracy(name), secs
    return make


FAMILIES = {
    "maxpool-cnn": ("zoo digits-maxpool-cnn", _from_zoo("digits-maxpool-cnn")),
    "gelu-mlp": ("zoo digits-gelu-mlp", _from_zoo("digits-gelu-mlp")),
    "silu-mlp": ("64-64-64-10 SiLU", _trained_here(lambda: _mlp(nn.SiLU), 30)),
    "elu-mlp": ("64-64-64-10 ELU", _trained_here(lambda: _mlp(nn.ELU), 30)),
    "softplus-mlp": ("64-64-64-10 Softplus", _trained_here(lambda: _mlp(nn.Softplus), 30)),
    "conv1d": ("conv1d 8,16 k5 s2 ReLU on [1,64]", _trained_here(_conv1d, 30, seq=True)),
}


def grad_l1(model64, x):
    """``||grad f_k(x)||_1`` for every output k, by autograd in float64."""
    J = torch.autograd.functional.jacobian(lambda v: model64(v[None])[0], x.double())
    return J.reshape(J.shape[0], -1).abs().sum(1)


def run_family(key, n):
    label, make = FAMILIES[key]
    model, Xt, acc, train_s = make()
    model64 = copy.deepcopy(model).double().eval()
    xs = Xt[:n]
    lipcert.local_lipschitz(model, xs[0], 0.01, domain=(0, 1), attack_steps=1)  # warm-up
    ratios, secs, bound_s, misses = [], [], [], []
    for i, x in enumerate(xs):
        c = lipcert.local_lipschitz(model, x, 0.01, domain=(0, 1))
        ratios.append(c.ratio)
        secs.append(c.seconds)
        bound_s.append(c.timings["bound"])
        if not c.ratio <= RATIO_TARGET:
            misses.append(f"{key}: input {i}, eps 0.01: upper/lower {c.ratio:.3f} (upper {c.upper:.4g}, "
                          f"lower {c.lower:.4g}), {c.ratio / RATIO_TARGET - 1:+.1%} over the target")
    rel, secs6, bound6 = [], [], []
    for i, x in enumerate(xs):
        c = lipcert.local_lipschitz(model, x, 1e-6, domain=(0, 1))
        g = grad_l1(model64, x)
        r = c.per_output_upper.double() / g - 1
        rel.append(r)
        secs6.append(c.seconds)
        bound6.append(c.timings["bound"])
        k = int(r.argmax())
        if not float(r.max()) <= GRAD_TARGET:
            misses.append(f"{key}: input {i}, eps 1e-6: output {k}: upper {float(c.per_output_upper[k]):.6g} vs "
                          f"||grad||_1 {float(g[k]):.6g} (+{float(r[k]):.2%}; lower {float(c.per_output_lower[k]):.6g},"
                          f" {float(c.per_output_lower[k] / g[k] - 1):+.2%})")
        if float(r.min()) < -1e-9:
            k = int(r.argmin())
            misses.append(f"{key}: input {i}, eps 1e-6: output {k}: upper {float(c.per_output_upper[k]):.6g} BELOW "
                          f"||grad||_1 {float(g[k]):.6g} ({float(r[k]):.3e}): unsound")
    rel = torch.stack(rel)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    ok = max(ratios) <= RATIO_TARGET and float(rel.max()) <= GRAD_TARGET and float(rel.min()) >= -1e-9
    row = (key, label, f"{acc:.3f}", f"{train_s:.1f}", f"{mean(ratios):.3f}", f"{max(ratios):.3f}",
           f"{mean(bound_s):.2f}", f"{mean(secs):.2f}", f"{float(rel.max()):.2e}", f"{float(rel.min()):.1e}",
           f"{mean(bound6):.2f}", f"{mean(secs6):.2f}", "yes" if ok else "NO")
    return row, misses


def main(n=5, threads=2, families=None):
    torch.set_num_threads(threads)
    keys = families or list(FAMILIES)
    unknown = set(keys) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"unknown --families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    rows, misses = [], []
    for key in keys:
        row, m = run_family(key, n)
        rows.append(row)
        misses += m
    print(f"default method (alpha-crown), norm inf, domain [0, 1], first {n} digits test inputs; "
          f"s = mean seconds per input (bound only / whole call incl. attack)")
    table(rows, ("family", "net", "test acc", "train s", "u/l mean @.01", "u/l max @.01", "bound s", "call s",
                 "max u/|g|-1 @1e-6", "min u/|g|-1", "bound s", "call s", "target"))
    if misses:
        print(f"\nmisses (target: upper/lower <= {RATIO_TARGET} at eps 0.01, upper_k/||grad f_k||_1 - 1 <= "
              f"{GRAD_TARGET} at eps 1e-6):")
        for m in misses:
            print("  " + m)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="number of test inputs (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--families", type=lambda s: [f for f in s.split(",") if f], default=None,
                    help=f"comma-separated subset of: {', '.join(FAMILIES)}")
    a = ap.parse_args()
    main(a.n, a.threads, a.families)
