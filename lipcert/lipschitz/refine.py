"""``method="bab"`` and ``method="exact"``: the root bound and attack, then the search or the MILP.

Lower bounds of both come only from pairs checked by ``bab.witness`` inside the witness region
(the inward-rounded box when the region provides one): the attack's pairs are checked again, and
every pair BaB or the MILP proposes goes through the same check.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from ..attack.pgd import attack
from ..bab import BaBConfig, BestPairs, bab_search, make_setting
from ..report.certificate import Certificate
from ..engine.config import JacobianOptions
from ..engine.jacobian import jacobian_bounds_pass
from ..engine.naive import naive_bound


def run_refined(method, prob, C, norm, *, bab_time=None, seed=0, alpha_steps=20, max_memory_gb=2.0, t0=None,
                rtol=1e-3, batch=64, split="auto", progress=False, attack_steps=30, attack_samples=None,
                time_limit=None, mip_gap=1e-6, max_domains=200_000):
    t0 = t0 or time.perf_counter()
    B, K = prob.x0.shape[0], C.shape[0]
    with torch.no_grad():
        root = jacobian_bounds_pass(prob.graph, prob.box, C, JacobianOptions.for_method("alpha-crown"), norm, alpha_steps=alpha_steps,
                                    max_memory_gb=max_memory_gb)
        root_up = torch.minimum(root.norm_upper, naive_bound(prob.graph, C, norm).unsqueeze(0))
    inner = prob.inner if hasattr(prob, "inner") else prob.box  # witness points come from inside the region
    atk = None if inner is None else attack(prob.graph, inner, prob.x0, C, norm, samples=attack_samples,
                                            steps=attack_steps, seed=seed)
    timings = {"root": time.perf_counter() - t0}
    st = make_setting(prob.graph, root.gradient_graph, C, norm)  # the root's gradient graph (chord relaxation)
    eval_graph = getattr(prob, "graph64", None)
    eval_graph = prob.graph.to(dtype=torch.float64) if eval_graph is None else eval_graph
    shape = prob.graph[prob.graph.input].shape
    certs = []
    for b in range(B):
        t1 = time.perf_counter()
        box_b = type(prob.box)(prob.box.lower[b:b + 1], prob.box.upper[b:b + 1])
        region = _witness_region(prob, b)
        pairs = BestPairs(prob.graph, eval_graph, C, norm, region, prob.x0[b])
        rows = torch.arange(K, device=C.device)
        if region is not None and atk is not None:  # the attack's pairs, checked again, and pairs near them
            pairs.offer(rows, atk.x1[b], atk.x2[b])
            pairs.search(rows, region[0].expand(K, *shape), region[1].expand(K, *shape), _best_points(prob, atk, b))
        if method == "bab":
            cfg = BaBConfig(time_limit=60.0 if bab_time is None else float(bab_time), rtol=rtol, batch=batch,
                            split=split, progress=progress, max_domains=max_domains)
            res = bab_search(st, box_b, root_up[b], pairs, cfg)
            ups, lows, status = res.per_output_upper, res.per_output_lower, res.status
            witness = pairs.witness(shape)
            details = {"domains_bounded": res.domains_bounded, "steps": res.steps, "split": res.split,
                       "history": res.history, "root_upper": root_up[b].tolist()}
        else:
            from ..exact import exact_lipschitz
            res = exact_lipschitz(prob.graph, box_b, C, norm, root, b, setting=st, pairs=pairs, root_upper=root_up[b],
                                  time_limit=time_limit, verify_time=60.0 if bab_time is None else float(bab_time),
                                  mip_gap=mip_gap, batch=batch, split=split, max_domains=max_domains)
            ups, lows, witness, status = res.per_output_upper, res.per_output_lower, res.witness, res.status
            details = dict(res.details, root_upper=root_up[b].tolist())
        if getattr(prob, "note", ""):
            details["dtype_note"] = prob.note
        timings_b = dict(timings, search=time.perf_counter() - t1)
        certs.append(Certificate(upper=float(ups.max()), lower=float(lows.max()), per_output_upper=ups,
                                 per_output_lower=lows, witness=witness, method=method, norm=norm, eps=prob.eps,
                                 seconds=time.perf_counter() - t0, status=status, timings=timings_b,
                                 jacobian_lower=root.lower[b], jacobian_upper=root.upper[b], details=details,
                                 **_provenance(prob, b)))
    return certs if (prob.batched and B > 1) else certs[0]


def _witness_region(prob, b):
    """``(lo, up)`` ``[*in]`` inside the exact region, where witness points are taken: the
    problem's inward-rounded box when it has one, else its box; None when it holds no point."""
    inner = prob.inner if hasattr(prob, "inner") else prob.box
    if inner is None:
        return None
    lo, up = inner.lower[b], inner.upper[b]
    return (lo, up) if bool((lo <= up).all()) else None


def _best_points(prob, atk, b):
    """One point per class: the midpoint of the attack's best witness pair."""
    return ((atk.x1[b] + atk.x2[b]) / 2).reshape(atk.x1.shape[1], *prob.x0.shape[1:])


def _provenance(prob, b) -> dict:
    """The certificate's ``dtype`` and ``region`` where both the certificate and the problem have them."""
    names = {f.name for f in dataclasses.fields(Certificate)}
    out = {}
    if "dtype" in names and hasattr(prob, "dtype"):
        out["dtype"] = prob.dtype
    if "region" in names and hasattr(prob, "region"):
        out["region"] = prob.region(b)
    return out
