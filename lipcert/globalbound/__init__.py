"""Global (region-free) Lipschitz bounds: naive products of layer norms and LipSDP."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import InvalidInput
from .chain import chain_of
from .lipsdp import lipsdp_cvxpy, lipsdp_fast, lipsdp_ipm

METHODS = ("naive", "lipsdp", "lipsdp-layer")


@dataclass
class GlobalBound:
    value: float            # certified: ||f(x) - f(y)||_q <= value ||x - y||_p for all x, y
    method: str
    norm: str
    seconds: float
    details: dict = field(default_factory=dict)

    def __repr__(self):
        return f"GlobalBound(L <= {self.value:.6g}, method={self.method}, norm=l{self.norm}, {self.seconds:.3f}s)"


def _op_norm(W, norm):
    if norm == "2":
        return float(torch.linalg.matrix_norm(W, ord=2))
    if norm == "inf":
        return float(W.abs().sum(1).max())
    return float(W.abs().sum(0).max())


def naive_chain(chain, norm):
    """Product of operator norms and activation slope bounds (MaxMin/GroupSort: 1 in l2; in l_inf
    and l1 a pair permutation is also norm-preserving)."""
    L = 1.0
    for W, act in zip(chain.weights[:-1], chain.acts):
        L *= _op_norm(W, norm) * (max(abs(act.alpha), abs(act.beta)) if act.kind == "slope" else 1.0)
    return L * _op_norm(chain.weights[-1], norm)


def global_lipschitz(model, norm=2, method: str = "lipsdp", *, input_shape=None, solver: str = "ipm",
                     rounds: int = 20, device=None) -> GlobalBound:
    """Certified global Lipschitz constant of an ``nn.Sequential`` chain (output norm = input norm).

    Args:
        norm: 2, "inf" or 1; LipSDP is for 2.
        method: "naive" (product of layer operator norms), "lipsdp" (LipSDP-Neuron), "lipsdp-layer".
        input_shape: per-sample input shape (required when the model does not start with nn.Linear).
        solver: "ipm" (default; a primal-dual interior-point method on the LMI's rank-two structure,
            seconds for hundreds of neurons), "lbfgs" (first-order eigenvalue optimisation, LipDiff
            style), or "clarabel"/"scs" (the generic cvxpy reference; small nets only). The "ipm" and
            "lbfgs" values are the Schur-complement eigenvalue of the multipliers found, certified by a
            Cholesky factorisation; "fast" is an alias of "ipm".
        device: where the LipSDP solvers run ("cpu", "cuda", ...); by default the model's device.
    """
    from ..lipschitz.norms import parse_norm
    norm = parse_norm(norm)
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    from ..graph import check_model
    check_model(model)
    t0 = time.perf_counter()
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if solver in ("clarabel", "scs"):
        device = "cpu"                     # cvxpy takes numpy arrays
    chain = chain_of(model, input_shape, device=device)
    naive = naive_chain(chain, norm)
    if method == "naive":
        return GlobalBound(naive, method, norm, time.perf_counter() - t0, {"layers": len(chain.weights)})
    if norm != "2":
        raise InvalidInput("LipSDP bounds the l2 constant: use norm=2 (or method='naive')")
    layerwise = method == "lipsdp-layer"
    if solver in ("ipm", "fast"):
        value, _, info = lipsdp_ipm(chain, layerwise=layerwise)
        details = {"solver": "structured primal-dual interior point (certified multipliers)", **info}
    elif solver == "lbfgs":
        value, _ = lipsdp_fast(chain, outer=rounds, layerwise=layerwise)
        details = {"solver": "L-BFGS on the smoothed eigenvalue (certified points)", "rounds": rounds}
    elif solver in ("clarabel", "scs"):
        value, status = lipsdp_cvxpy(chain, solver.upper(), layerwise=layerwise)
        details = {"solver": f"cvxpy/{solver}", "status": status}
    else:
        raise InvalidInput("solver must be 'ipm', 'lbfgs', 'clarabel' or 'scs'")
    details["naive"] = naive
    return GlobalBound(value if solver in ("clarabel", "scs") else min(value, naive), method, norm, time.perf_counter() - t0, details)


__all__ = ["global_lipschitz", "GlobalBound", "METHODS"]
