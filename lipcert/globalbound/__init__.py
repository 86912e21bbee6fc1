"""Global (region-free) Lipschitz bounds: naive products of layer norms and LipSDP.

Pipeline: ``chain.py`` reads the chain off the model; ``lmi.py`` is the LipSDP matrix inequality;
``lipsdp.py`` (and ``ipm.py``) are the solvers, which only propose multipliers; ``certificate.py``
turns multipliers into a proved bound (why it is sound in floating point for every solver: its
docstring); ``lower.py`` is the sampled lower bound with its witness.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..errors import InvalidInput, SolverError
from .certificate import certified_op_norm, certify_multipliers, mul_up
from .chain import chain_of
from .lipsdp import propose_cvxpy, propose_ipm, propose_lbfgs
from .lower import sampled_lower

METHODS = ("naive", "lipsdp", "lipsdp-layer")
OWN_SOLVERS = ("ipm", "fast", "lbfgs")


@dataclass
class GlobalBound:
    """An interval ``[lower, upper]`` on the global Lipschitz constant (output norm = input norm).

    ``upper`` is proved: ``||f(x) - f(y)||_p <= upper ||x - y||_p`` for all ``x, y``, checked by lipcert
    whatever the solver (``certificate.py``). ``lower`` is realised by ``witness = {"x1", "x2"}``:
    ``||f(x1) - f(x2)||_p / ||x1 - x2||_p >= lower`` (0 and ``{}`` when sampling is off).
    ``status``: "certified" (the method's certificate), or "naive fallback: <why>" when no
    multipliers passed the check and ``upper`` is the (certified) naive product.
    ``multipliers`` [hidden]: the LipSDP multipliers that passed, with ``details["rho"]``:
    ``certify(chain_of(model), multipliers, details["rho"])`` holds and ``upper ** 2 >= rho``
    when ``details["certificate"] == "lipsdp"``. ``details["solver_value"]``: the solver's own
    value, never reported as the bound.
    """

    upper: float
    lower: float
    method: str
    norm: str
    seconds: float
    witness: dict = field(default_factory=dict, repr=False)
    status: str = "certified"
    details: dict = field(default_factory=dict)
    multipliers: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def value(self) -> float:
        """The certified upper bound (``upper``; kept for older callers)."""
        return self.upper

    @property
    def ratio(self) -> float:
        """``upper / lower`` (inf when the lower bound is 0)."""
        if self.lower > 0:
            return self.upper / self.lower
        return 1.0 if self.upper == 0 else math.inf

    def __repr__(self):
        return (f"GlobalBound(L in [{self.lower:.6g}, {self.upper:.6g}], ratio {self.ratio:.3g}, "
                f"method={self.method}, norm=l{self.norm}, status={self.status}, {self.seconds:.3f}s)")


def naive_chain(chain, norm):
    """Product of operator norms and activation slope bounds (MaxMin/GroupSort: 1 in l2; in l_inf
    and l1 a pair permutation is also norm-preserving). Every factor is a proved upper bound of
    the exact norm (``certified_op_norm``) and every product is rounded up."""
    L = 1.0
    for W, act in zip(chain.weights[:-1], chain.acts):
        slope = max(abs(act.alpha), abs(act.beta)) if act.kind == "slope" else 1.0
        L = mul_up(mul_up(L, certified_op_norm(W, norm)), slope)
    return mul_up(L, certified_op_norm(chain.weights[-1], norm))


def _propose(chain, solver: str, layerwise: bool, rounds: int):
    """The solver's Proposal and a one-line description of the solver."""
    if solver in ("ipm", "fast"):
        return propose_ipm(chain, layerwise=layerwise), "structured primal-dual interior point"
    if solver == "lbfgs":
        return propose_lbfgs(chain, outer=rounds, layerwise=layerwise), "L-BFGS on the smoothed eigenvalue"
    return propose_cvxpy(chain, solver, layerwise=layerwise), f"cvxpy/{solver}"


def _check_solver(solver: str) -> str:
    name = solver.lower()
    if name in OWN_SOLVERS:
        return name
    try:
        import cvxpy as cp
    except ImportError as e:  # pragma: no cover
        raise SolverError(f"solver {solver!r} needs cvxpy: pip install lipcert[sdp]") from e
    if solver.upper() not in cp.installed_solvers():
        raise InvalidInput(f"unknown solver {solver!r}: use 'ipm', 'lbfgs' or an installed cvxpy solver "
                           f"({', '.join(s.lower() for s in cp.installed_solvers())})")
    return name


def global_lipschitz(model, norm=2, method: str = "lipsdp", *, input_shape=None, solver: str = "ipm",
                     rounds: int = 20, device=None, samples: int | None = None, seed: int = 0) -> GlobalBound:
    """Certified global Lipschitz constant of an ``nn.Sequential`` chain (output norm = input norm),
    as an interval ``[lower, upper]``.

    ``upper`` holds for all pairs of inputs: every solver only proposes LipSDP multipliers; lipcert
    projects them onto the valid set, finds the least ``rho`` its rounding-aware Cholesky check
    accepts (blending toward a strictly feasible start if needed) and reports ``sqrt(rho)`` rounded
    up, or the naive product when that is smaller or nothing passes (``status`` says which). The
    solver's own value is ``details["solver_value"]``. ``lower`` is a sampled difference quotient
    with its ``witness`` pair.

    Args:
        norm: 2, "inf" or 1; LipSDP is for 2.
        method: "naive" (product of layer operator norms), "lipsdp" (LipSDP-Neuron), "lipsdp-layer".
        input_shape: per-sample input shape (required when the model does not start with nn.Linear).
        solver: "ipm" (default; a primal-dual interior-point method on the LMI's rank-two structure,
            seconds for hundreds of neurons; "fast" is an alias), "lbfgs" (first-order eigenvalue
            optimisation, LipDiff style), or any installed cvxpy SDP solver ("clarabel", "scs", ...:
            the generic reference, small nets only). All are certified the same way.
        rounds: outer rounds of the "lbfgs" solver.
        device: where the LipSDP solvers run ("cpu", "cuda", ...); by default the model's device.
        samples: random points for the lower bound (default 8192 for inputs of up to 256 entries,
            else 1024; 0: no lower bound); ``seed`` seeds them.
    """
    from ..engine.norms import parse_norm
    norm = parse_norm(norm)
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    from ..graph import check_model
    check_model(model)
    if method != "naive":
        if norm != "2":
            raise InvalidInput("LipSDP bounds the l2 constant: use norm=2 (or method='naive')")
        solver = _check_solver(solver)
    t0 = time.perf_counter()
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if method != "naive" and solver not in OWN_SOLVERS:
        device = "cpu"                     # cvxpy takes numpy arrays
    chain = chain_of(model, input_shape, device=device)
    naive = naive_chain(chain, norm)
    timings = {"naive": time.perf_counter() - t0}
    lower, witness = sampled_lower(model, chain.input_shape, norm, samples=samples, seed=seed)
    timings["lower"] = time.perf_counter() - t0 - timings["naive"]
    if method == "naive":
        return GlobalBound(naive, lower, method, norm, time.perf_counter() - t0, witness,
                           details={"layers": len(chain.weights), "timings": timings})
    t1 = time.perf_counter()
    proposal, name = _propose(chain, solver, method == "lipsdp-layer", rounds)
    timings["solver"] = time.perf_counter() - t1
    cert = certify_multipliers(chain, proposal.lam, proposal.start)
    timings["certificate"] = time.perf_counter() - t1 - timings["solver"]
    details = {"solver": name, "solver_status": proposal.status, "solver_value": proposal.value,
               **proposal.info, "naive": naive, "timings": timings}
    if cert is None:
        status = f"naive fallback: no LipSDP multipliers passed the certificate ({proposal.status})"
        details.update(certificate="naive", lipsdp_value=math.inf)
        return GlobalBound(naive, lower, method, norm, time.perf_counter() - t0, witness, status, details)
    details.update(lipsdp_value=cert.value, rho=cert.rho, blend=cert.blend,
                   certificate="lipsdp" if cert.value <= naive else "naive")
    if "rho_lower" in details:
        lo = details["rho_lower"]
        details["gap"] = cert.value / math.sqrt(lo) - 1 if lo > 0 else math.inf
    return GlobalBound(min(cert.value, naive), lower, method, norm, time.perf_counter() - t0, witness,
                       "certified", details, cert.lam)


__all__ = ["global_lipschitz", "GlobalBound", "METHODS"]
