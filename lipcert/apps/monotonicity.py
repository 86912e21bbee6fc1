"""Monotonicity certificates (the paper's application): is output ``k`` non-decreasing (or
non-increasing) in feature ``i`` over a region?

Certified when the lower (upper) bound of ``d f_k / d x_i`` over the region, from the Jacobian
bounds of the gradient graph, is ``>= 0`` (``<= 0``): then ``f_k`` is monotone along every segment
parallel to ``e_i`` inside the box (the Clarke gradient's ``i``-th entry has that sign everywhere).
Violated when a point of the region has a gradient entry of the wrong sign *and* a witness pair
along ``e_i`` shows the function actually moves the wrong way. Otherwise unknown; input splitting
(``bab_time``) then refines the region into pieces until one of the two is shown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..attack.pgd import _evaluate, _own_grads
from ..errors import InvalidInput
from ..engine.jacobian import jacobian_bounds_pass
from ..region import make_box, prepare
from ..rules import Interval


@dataclass
class MonotonicityResult:
    status: str                   # "certified" | "violated" | "unknown"
    direction: str                # "increasing" | "decreasing"
    feature: int
    output: int
    derivative_lower: float       # proved bounds of d f_output / d x_feature on the region
    derivative_upper: float
    witness: dict = field(default_factory=dict)   # for "violated": x1, x2 (x2 = x1 + t e_i), f(x1), f(x2), gradient
    seconds: float = 0.0
    pieces: int = 1

    def __repr__(self):
        return (f"Monotonicity({self.status}: output {self.output} {self.direction} in feature {self.feature}; "
                f"d f/d x in [{self.derivative_lower:.4g}, {self.derivative_upper:.4g}], {self.seconds:.3f}s)")


def monotonicity(model, x0, eps, feature: int, output: int = 0, *, direction: str = "increasing", domain=None,
                 vary: str = "all", method: str = "crown", bab_time: float = 0.0, max_pieces: int = 256,
                 dtype=torch.float64) -> MonotonicityResult:
    """Certify that ``output`` is monotone (``direction``) in ``feature`` on the region.

    Args:
        vary: "all" (the l_inf ball around x0, clipped to domain) or "feature" (only ``feature``
            varies over ``[x0_i - eps, x0_i + eps] ∩ domain``, the other features fixed: the paper's
            Adult setting, e.g. eps=1, domain=(0, 1) for the feature's whole range).
        bab_time: seconds of input splitting when the first bound is inconclusive.
    """
    t0 = time.perf_counter()
    if direction not in ("increasing", "decreasing"):
        raise InvalidInput("direction must be 'increasing' or 'decreasing'")
    prob = prepare(model, x0, 0.0, domain, dtype=dtype)
    if prob.x0.shape[0] != 1:
        raise InvalidInput("monotonicity takes one input point")
    x = prob.x0
    d = x[0].numel()
    if not 0 <= feature < d:
        raise InvalidInput(f"feature {feature} out of range for inputs of {d} features")
    n_out = prob.graph[prob.graph.output].numel
    if not 0 <= output < n_out:
        raise InvalidInput(f"output {output} out of range for a model with {n_out} outputs")
    if vary == "feature":
        e = torch.zeros_like(x).flatten()
        e[feature] = float(eps)
        box = make_box(x, e.reshape(x.shape), domain)
    elif vary == "all":
        box = make_box(x, eps, domain)
    else:
        raise InvalidInput("vary must be 'all' or 'feature'")
    C = torch.eye(n_out, dtype=dtype)[output:output + 1]
    sign = 1.0 if direction == "increasing" else -1.0
    queue = [box]
    lo_all, up_all = float("inf"), -float("inf")   # over the certified pieces (they tile the region)
    root = None
    pieces = 0
    while queue:
        piece = queue.pop(0)
        pieces += 1
        with torch.no_grad():
            res = jacobian_bounds_pass(prob.graph, piece, C, method, "inf")
        jl = float(res.lower.reshape(-1)[feature])
        ju = float(res.upper.reshape(-1)[feature])
        root = root or (jl, ju)
        if (sign > 0 and jl >= 0) or (sign < 0 and ju <= 0):
            lo_all, up_all = min(lo_all, jl), max(up_all, ju)
            continue  # this piece is certified
        w = _violation(prob.graph, piece, C, feature, sign)
        if w is not None:
            return MonotonicityResult("violated", direction, feature, output, root[0], root[1], w,
                                      time.perf_counter() - t0, pieces)
        if time.perf_counter() - t0 > bab_time or pieces + len(queue) >= max_pieces:
            return MonotonicityResult("unknown", direction, feature, output, root[0], root[1], {},
                                      time.perf_counter() - t0, pieces)
        queue.extend(_bisect(piece))
    return MonotonicityResult("certified", direction, feature, output, lo_all, up_all, {},
                              time.perf_counter() - t0, pieces)


def _bisect(box: Interval):
    w = (box.upper - box.lower).flatten()
    i = int(w.argmax())
    mid = (box.lower.flatten()[i] + box.upper.flatten()[i]) / 2
    u1 = box.upper.clone().flatten()
    u1[i] = mid
    l2 = box.lower.clone().flatten()
    l2[i] = mid
    return [Interval(box.lower, u1.reshape(box.upper.shape)), Interval(l2.reshape(box.lower.shape), box.upper)]


def _violation(graph, box, C, feature, sign, n=512):
    """A point with a wrong-signed partial derivative and a pair along ``e_feature`` on which the
    function moves the wrong way, or None."""
    gen = torch.Generator().manual_seed(0)
    lo, up = box.lower[0], box.upper[0]
    pts = torch.cat([((lo + up) / 2)[None], lo + (up - lo) * torch.rand((n,) + tuple(lo.shape), generator=gen,
                                                                       dtype=lo.dtype)])
    g = _own_grads(graph, pts, C.expand(len(pts), -1)).flatten(1)[:, feature]
    order = (sign * g).argsort()
    for j in order[:8].tolist():
        if sign * g[j] >= 0:
            break
        x = pts[j].flatten().clone()
        width = float(up.flatten()[feature] - lo.flatten()[feature])
        for t in (width / 10, width / 100, width / 1000):
            x1, x2 = x.clone(), x.clone()
            x1[feature] = max(float(lo.flatten()[feature]), float(x[feature]) - t / 2)
            x2[feature] = min(float(up.flatten()[feature]), float(x1[feature]) + t)
            f = _evaluate(graph, torch.stack([x1, x2]).reshape(2, *lo.shape)) @ C.T
            if sign * (f[1, 0] - f[0, 0]) < 0 and x2[feature] > x1[feature]:
                return {"x1": x1.reshape(lo.shape), "x2": x2.reshape(lo.shape), "f_x1": float(f[0, 0]),
                        "f_x2": float(f[1, 0]), "gradient": g[j].item()}
    return None
