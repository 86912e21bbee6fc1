"""Dataset certification throughput: 500 digits test points with the digits MLP and CNN (crown,
eps 0.01, domain [0, 1]): points/second with 1 worker (batched), 2 local worker processes, and
Ray on 2 CPUs; the Ray overhead against local batching.

    .venv/bin/python benchmarks/dataset.py [--n 500]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import table  # noqa: E402

import lipcert  # noqa: E402
from lipcert import zoo  # noqa: E402


def main():
    n = int(sys.argv[sys.argv.index("--n") + 1]) if "--n" in sys.argv else 500
    rows = []
    try:
        import ray
    except ImportError:
        ray = None
    for name in ("digits-mlp", "digits-cnn"):
        m = zoo.load_model(name)
        X, y = zoo.ZOO[name].dataset("test")
        X, y = X[:n], y[:n]
        for label, kw in (("1 worker, batches of 32", {}), ("2 local processes", {"workers": 2}),
                          ("Ray, 2 CPUs", {"cluster": "local"})):
            if "cluster" in kw and ray is None:
                continue
            if "cluster" in kw:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                s = lipcert.certify_dataset(m, X, 0.01, labels=y, out=os.path.join(d, "r.jsonl"), domain=(0, 1),
                                            method="crown", **kw)
                sec = time.perf_counter() - t
            if "cluster" in kw:
                ray.shutdown()
            rows.append((name, label, len(X), f"{sec:.1f}", f"{len(X) / sec:.1f}", f"{s.mean_upper:.4g}",
                         s.certified))
    table(rows, ("model", "how", "points", "seconds", "points/s", "mean upper", "certified"))


if __name__ == "__main__":
    main()
