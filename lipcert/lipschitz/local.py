"""``local_lipschitz`` and ``jacobian_bounds``: the public entry points of the core method."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from ..attack.pgd import attack
from ..errors import InvalidInput
from ..region import Problem, prepare
from ..rules import Interval
from ..report.certificate import Certificate
from ..engine.config import JacobianOptions
from ..engine.jacobian import jacobian_bounds_pass
from ..engine.naive import naive_bound
from ..engine.norms import parse_norm

METHODS = ("alpha-crown", "crown", "recurjac", "ibp", "naive", "bab", "exact")


def spec_matrix(prob: Problem, outputs) -> torch.Tensor:
    """Spec rows ``C [K, n_out]``: all outputs, a list of output indices, or user vectors."""
    n_out = prob.graph[prob.graph.output].numel
    dt, dev = prob.x0.dtype, prob.x0.device
    if outputs is None:
        return torch.eye(n_out, dtype=dt, device=dev)
    if isinstance(outputs, int):
        outputs = [outputs]
    t = torch.as_tensor(outputs)
    if t.dim() == 1 and not t.is_floating_point():
        if t.numel() == 0 or (t < 0).any() or (t >= n_out).any():
            raise InvalidInput(f"outputs {t.tolist()} out of range for a model with {n_out} outputs")
        return torch.eye(n_out, dtype=dt, device=dev)[t]
    t = t.to(dt).to(dev)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[1] != n_out or not torch.isfinite(t).all():
        raise InvalidInput(f"outputs must be indices or finite vectors of length {n_out}, got shape {list(t.shape)}")
    return t


def local_lipschitz(model, x0, eps, norm="inf", domain=None, outputs=None, method: str = "alpha-crown", *,
                    bab_time: Optional[float] = None, attack_steps: int = 30, attack_samples: int | None = None,
                    alpha_steps: int = 20, dtype=torch.float64, device=None, max_memory_gb: float = 2.0,
                    seed: int = 0, **options):
    """Certified interval on the local Lipschitz constant of ``model`` on the region
    ``X = {x : ||x - x0||_inf <= eps} ∩ domain``.

    ``L_j = sup_{x != y in X} |f_j(x) - f_j(y)| / ||x - y||_p`` for each selected output ``j``
    (``p`` = ``norm``); the certificate's ``upper`` is ``max_j`` of proved upper bounds and holds
    for every point of ``X`` (it bounds ``sup_X ||grad f_j||_q`` over the Clarke generalized
    gradient, ``q`` dual to ``p``); ``lower`` is a difference quotient of a witness pair in ``X``.

    Args:
        model: eval-mode ``nn.Module`` (or a path to an ``.onnx`` / ``torch.save`` file).
        x0: one input (with or without a leading batch dimension of 1), or a batch of N inputs.
        eps: radius >= 0 of the l_inf ball around ``x0``.
        norm: "inf" (default), 2 or 1: the input norm ``p``.
        domain: optional ``(lo, hi)`` clipping the region (e.g. ``(0, 1)`` for pixels).
        outputs: None (all), output indices, or spec vectors ``[K, n_out]`` (bounds of ``c . f``).
        method: "alpha-crown" (default), "crown", "recurjac", "ibp", "naive", "bab", "exact".
        bab_time: seconds of branch-and-bound after the bound (implies ``method="bab"``).
    Returns:
        A :class:`Certificate`, or a list of N certificates for a batch of N > 1 inputs
        (computed in one batched pass).
    """
    t0 = time.perf_counter()
    if bab_time is not None and method not in ("bab", "exact"):
        method = "bab"
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    norm = parse_norm(norm)
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        from ..io import load
        model = load(model, **{k: options.pop(k) for k in ("trust_pickle", "model_class", "model_args") if k in options})
    prob = prepare(model, x0, eps, domain, dtype=dtype, device=device)
    C = spec_matrix(prob, outputs)
    if method in ("bab", "exact"):
        return _dispatch_exact(method, prob, C, norm, bab_time=bab_time, seed=seed, alpha_steps=alpha_steps,
                               max_memory_gb=max_memory_gb, t0=t0, attack_steps=attack_steps,
                               attack_samples=attack_samples, **options)
    if options:
        raise InvalidInput(f"unknown options {sorted(options)} for method {method!r}")
    B = prob.x0.shape[0]
    timings = {}
    jl = ju = None
    with torch.no_grad():
        if method == "naive":
            ups = naive_bound(prob.graph, C, norm).unsqueeze(0).expand(B, -1)
        else:
            res = per_sample_pass(prob, C, method, norm, alpha_steps=alpha_steps, max_memory_gb=max_memory_gb)
            ups, jl, ju = res.norm_upper, res.lower, res.upper
            ups = torch.minimum(ups, naive_bound(prob.graph, C, norm).unsqueeze(0))
    timings["bound"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    atk = attack(prob.graph, prob.inner, prob.x0, C, norm, samples=attack_samples, steps=attack_steps, seed=seed,
                 witness_graph=prob.graph64)
    timings["attack"] = time.perf_counter() - t1
    certs = [_certificate(prob, b, ups[b], atk, method, norm, timings, t0,
                          None if jl is None else jl[b], None if ju is None else ju[b]) for b in range(B)]
    return certs if (prob.batched and B > 1) else certs[0]


def per_sample_pass(prob: Problem, C, method, norm, **kw) -> JacobianPass:
    """Jacobian bounds of every sample, one sample at a time: a batch then gives exactly the
    certificates of single calls (BLAS rounds a product differently for another batch size, and
    the relaxations' discrete choices, e.g. among candidate slopes, can amplify a one-ulp change
    into a different, equally sound, bound)."""
    B = prob.x0.shape[0]
    method = JacobianOptions.for_method(method)  # the method name is resolved here, once
    if B == 1:
        res = jacobian_bounds_pass(prob.graph, prob.box, C, method, norm, **kw)
        return JacobianPass(res.norm_upper, res.lower, res.upper)
    parts = [jacobian_bounds_pass(prob.graph, Interval(prob.box.lower[b:b + 1], prob.box.upper[b:b + 1]), C,
                                  method, norm, **kw) for b in range(B)]
    return JacobianPass(torch.cat([r.norm_upper for r in parts]), torch.cat([r.lower for r in parts]),
                        torch.cat([r.upper for r in parts]))


@dataclass(frozen=True)
class JacobianPass:
    norm_upper: torch.Tensor  # [B, K]
    lower: torch.Tensor       # [B, K, *input_shape]
    upper: torch.Tensor


def _certificate(prob, b, ups, atk, method, norm, timings, t0, jl=None, ju=None, status="bounded", details=None):
    lows = atk.value[b]
    # a proved upper bound can never be below a real difference quotient; if rounding made it
    # so (float tolerance), the upper bound wins and the lower is capped: report honestly
    k = int(lows.argmax())
    shape = prob.graph[prob.graph.input].shape
    witness = {"x1": atk.x1[b, k].reshape(shape), "x2": atk.x2[b, k].reshape(shape), "output": k,
               "gradient_norm_estimate": float(atk.grad_norm[b, k])}
    return Certificate(upper=float(ups.max()), lower=float(lows.max()), per_output_upper=ups.detach().clone(),
                       per_output_lower=lows.detach().clone(), witness=witness, method=method, norm=norm,
                       eps=prob.eps, seconds=time.perf_counter() - t0, status=status, timings=dict(timings),
                       jacobian_lower=jl, jacobian_upper=ju, details=_details(prob, details),
                       dtype=prob.dtype, region=prob.region(b))


def _details(prob, details):
    d = dict(details or {})
    if prob.note:
        d["dtype_note"] = prob.note
    return d


def _dispatch_exact(method, prob, C, norm, **kw):
    from .refine import run_refined
    known = {"bab_time", "seed", "alpha_steps", "max_memory_gb", "t0", "rtol", "batch", "split", "progress",
             "attack_steps", "attack_samples", "time_limit", "mip_gap", "max_domains"}
    unknown = set(kw) - known
    if unknown:
        raise InvalidInput(f"unknown options {sorted(unknown)} for method {method!r}")
    return run_refined(method, prob, C, norm, **kw)


def jacobian_bounds(model, x0, eps, domain=None, outputs=None, method: str = "crown", *, dtype=torch.float64,
                    alpha_steps: int = 20, max_memory_gb: float = 2.0):
    """Elementwise bounds ``J_lower <= J(x) <= J_upper`` of the Jacobian of the selected outputs,
    valid for every ``x`` in the region and every element of the Clarke generalized Jacobian.

    Returns ``(lower, upper)`` of shape ``[K, *input_shape]`` (``[N, K, *input_shape]`` for a batch)."""
    if method not in ("alpha-crown", "crown", "recurjac", "ibp"):
        raise InvalidInput(f"unknown method {method!r} for jacobian_bounds")
    prob = prepare(model, x0, eps, domain, dtype=dtype)
    C = spec_matrix(prob, outputs)
    with torch.no_grad():
        res = per_sample_pass(prob, C, method, "inf", alpha_steps=alpha_steps, max_memory_gb=max_memory_gb)
    if prob.batched and prob.x0.shape[0] > 1:
        return res.lower, res.upper
    return res.lower[0], res.upper[0]
