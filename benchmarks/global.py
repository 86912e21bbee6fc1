"""Global l2 bounds vs width and depth (random ReLU MLPs on 2-D inputs, default init, seed 0, and the
trained zoo MLPs): naive product, LipSDP-Layer and LipSDP-Neuron by the structured interior-point
solver ("ipm", the default) and by L-BFGS on the Schur eigenvalue ("lbfgs"), and the generic
cvxpy/Clarabel reference (skipped above --ref-max hidden neurons: its cost grows with the cube of
the number of LMI entries; 2-64-64-64-2, 192 neurons, took 388 s here).

    .venv/bin/python benchmarks/global.py [--ref-max 64] [--only 2-16-16-2,diabetes-mlp] [--raw]

``--only`` keeps the named nets (the name's first word: ``2-32-32-2``, ``digits-mlp``, ...). ``--raw`` prints, per
net and solver (ipm, lbfgs, scs, clarabel), the solver's own value next to the certified bound
lipcert reports from the same multipliers (``details["solver_value"]`` vs ``upper``), the
best sampled difference quotient (``lower``) and the time.
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import relu_mlp as mlp, table  # noqa: E402

import lipcert  # noqa: E402
from lipcert.globalbound.chain import chain_of  # noqa: E402
from lipcert.globalbound.lipsdp import lipsdp_cvxpy  # noqa: E402
from lipcert.zoo import load_model  # noqa: E402



def sampled(net, d, n=100000):
    """Largest l2 norm of a gradient row seen at random points (a lower bound on the constant)."""
    xs = (3 * torch.randn(n, d)).requires_grad_(True)
    y = net(xs)
    return max(torch.autograd.grad(y[:, j].sum(), xs, retain_graph=True)[0].norm(dim=1).max().item()
               for j in range(y.shape[1]))


def raw_vs_certified(nets, solvers=("ipm", "lbfgs", "scs", "clarabel")):
    rows = []
    for name, net, _ in nets:
        for solver in solvers:
            g = lipcert.global_lipschitz(net, 2, "lipsdp", solver=solver)
            raw = g.details["solver_value"]
            rows.append((name, solver, f"{raw:.12g}", f"{g.upper:.12g}", f"{g.upper / raw - 1:+.2e}",
                         f"{g.lower:.12g}", f"{raw / g.lower - 1:+.2e}", g.details["certificate"],
                         f"{g.details['blend']:g}", f"{g.seconds:.2f}"))
            print(*rows[-1], flush=True)
    table(rows, ("net", "solver", "solver value", "certified upper", "upper/solver - 1", "sampled lower",
                 "solver/lower - 1", "certificate", "blend", "s"))


def main():
    ref_max = int(sys.argv[sys.argv.index("--ref-max") + 1]) if "--ref-max" in sys.argv else 64
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    rows = []
    nets = [(f"2-{'-'.join([str(w)] * d)}-2", lambda w=w, d=d: mlp(w, d), 2)
            for w, d in ((16, 2), (32, 2), (64, 2), (128, 2), (32, 3), (32, 4), (64, 3), (128, 3), (256, 2), (256, 3))]
    nets += [("digits-mlp 64-128-128-10", lambda: load_model("digits-mlp"), 64),
             ("diabetes-mlp 10-64-64-1", lambda: load_model("diabetes-mlp"), 10)]
    nets = [(name, make(), d) for name, make, d in nets if only is None or name.split()[0] in only]
    if "--raw" in sys.argv:
        return raw_vs_certified(nets)
    for name, net, d in nets:
        naive = lipcert.global_lipschitz(net, 2, "naive").value
        layer = lipcert.global_lipschitz(net, 2, "lipsdp-layer")
        neuron = lipcert.global_lipschitz(net, 2, "lipsdp")
        lbfgs = lipcert.global_lipschitz(net, 2, "lipsdp", solver="lbfgs")
        ref, ref_s = "-", "-"
        if chain_of(net).hidden <= ref_max:
            t = time.perf_counter()
            ref_v, _ = lipsdp_cvxpy(chain_of(net), "CLARABEL")
            ref, ref_s = f"{ref_v:.6g}", f"{time.perf_counter() - t:.1f}"
        rows.append((name, f"{sampled(net, d):.4g}", f"{naive:.4g}", f"{layer.value:.5g}", f"{layer.seconds:.2f}",
                     f"{neuron.value:.6g}", f"{neuron.seconds:.2f}", f"{lbfgs.value:.6g}", f"{lbfgs.seconds:.2f}",
                     ref, ref_s))
        print(*rows[-1], flush=True)
    table(rows, ("net", "sampled grad", "naive", "LipSDP-Layer", "s", "LipSDP-Neuron (ipm)", "s",
                 "LipSDP-Neuron (lbfgs)", "s", "cvxpy/Clarabel", "s"))


if __name__ == "__main__":
    main()
