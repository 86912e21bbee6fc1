"""``method="bab"`` and ``method="exact"``: the root bound and attack, then the search or the MILP."""
from __future__ import annotations

import time

import torch

from ..attack.pgd import attack
from ..bab import BaBConfig, bab_search, make_setting
from ..gradient import build_gradient_graph
from ..report.certificate import Certificate
from .jacobian import jacobian_bounds_pass
from .naive import naive_bound


def run_refined(method, prob, C, norm, *, bab_time=None, seed=0, alpha_steps=20, max_memory_gb=2.0, t0=None,
                rtol=1e-3, batch=64, split="auto", progress=False, attack_steps=30, attack_samples=None,
                time_limit=None, mip_gap=1e-6, max_domains=200_000):
    t0 = t0 or time.perf_counter()
    B = prob.x0.shape[0]
    with torch.no_grad():
        root = jacobian_bounds_pass(prob.graph, prob.box, C, "alpha-crown", norm, alpha_steps=alpha_steps,
                                    max_memory_gb=max_memory_gb)
        root_up = torch.minimum(root.norm_upper, naive_bound(prob.graph, C, norm).unsqueeze(0))
    atk = attack(prob.graph, prob.box, prob.x0, C, norm, samples=attack_samples, steps=attack_steps, seed=seed)
    timings = {"root": time.perf_counter() - t0}
    certs = []
    for b in range(B):
        t1 = time.perf_counter()
        box_b = type(prob.box)(prob.box.lower[b:b + 1], prob.box.upper[b:b + 1])
        if method == "bab":
            cfg = BaBConfig(time_limit=60.0 if bab_time is None else float(bab_time), rtol=rtol, batch=batch,
                            split=split, progress=progress, max_domains=max_domains)
            st = make_setting(prob.graph, build_gradient_graph(prob.graph, "chord"), C, norm)
            pts = _best_points(prob, atk, b)
            res = bab_search(st, box_b, root_up[b], float(atk.value[b].max()), pts, cfg, box_b.lower, box_b.upper)
            ups, lows = res.per_output_upper, res.per_output_lower
            witness = {"x1": res.x1.reshape(prob.graph[prob.graph.input].shape),
                       "x2": res.x2.reshape(prob.graph[prob.graph.input].shape), "output": res.output}
            status = res.status
            details = {"domains_bounded": res.domains_bounded, "steps": res.steps, "split": res.split,
                       "history": res.history, "root_upper": root_up[b].tolist()}
        else:
            from ..exact import exact_lipschitz
            res = exact_lipschitz(prob.graph, box_b, C, norm, root, b, time_limit=time_limit, mip_gap=mip_gap,
                                  lower_points=_best_points(prob, atk, b), lower_values=atk.value[b])
            ups, lows, witness, status = res.per_output_upper, res.per_output_lower, res.witness, res.status
            details = res.details
        timings_b = dict(timings, search=time.perf_counter() - t1)
        certs.append(Certificate(upper=float(ups.max()), lower=float(lows.max()), per_output_upper=ups,
                                 per_output_lower=lows, witness=witness, method=method, norm=norm, eps=prob.eps,
                                 seconds=time.perf_counter() - t0, status=status, timings=timings_b,
                                 jacobian_lower=root.lower[b], jacobian_upper=root.upper[b], details=details))
    return certs if (prob.batched and B > 1) else certs[0]


def _best_points(prob, atk, b):
    """One point per class: the midpoint of the attack's best witness pair."""
    return ((atk.x1[b] + atk.x2[b]) / 2).reshape(atk.x1.shape[1], *prob.x0.shape[1:])
