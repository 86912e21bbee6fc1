"""Witness pairs: two distinct points of the region and a certified lower bound of their quotient.

``pair_value`` is the one check every lower bound of BaB and the exact method goes through: it
evaluates ``c . f`` at both points with ``floating.forward_with_error`` (a bound on the rounding
of the evaluation beside each value) and returns
``(|c.f(x2)^ - c.f(x1)^| - err_1 - err_2) / ||x2 - x1||_p`` rounded down (the distance rounded
up), which never exceeds the exact quotient of the two points. The points must differ and lie in
the witness region (the inward-rounded box, compared exactly); otherwise the value is ``-inf``
(not a pair). ``BestPairs`` keeps the best checked pair per spec row.
"""
from __future__ import annotations

import torch

from ..attack.pgd import _own_grads
from .floating import forward_with_error, gamma


def _down(q: torch.Tensor, dtype) -> torch.Tensor:
    """``q`` in ``dtype``, rounded down (a lower bound stays one)."""
    y = q.to(dtype)
    return torch.where(y.to(q.dtype) > q, torch.nextafter(y, torch.full_like(y, -torch.inf)), y)


def _primal(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return {"inf": lambda: d.abs().amax(1), "2": lambda: d.norm(dim=1), "1": lambda: d.abs().sum(1)}[norm]()


def pair_value(graph, x1, x2, rows, norm, lo=None, up=None) -> torch.Tensor:
    """Certified lower bound ``[N]`` of ``|rows[n] . (f(x2[n]) - f(x1[n]))| / ||x2[n] - x1[n]||_p``
    in exact arithmetic; ``-inf`` where the points are equal or outside ``[lo, up]`` (when given,
    the witness region, compared exactly) or the graph cannot be checked."""
    N = x1.shape[0]
    dt = x1.dtype
    u = torch.finfo(dt).eps / 2
    bad = (x1.flatten(1) == x2.flatten(1)).all(1)
    if lo is not None:
        for x in (x1, x2):
            bad |= ((x < lo) | (x > up)).flatten(1).any(1)
    out = torch.full((N,), -torch.inf, dtype=dt, device=x1.device)
    res = forward_with_error(graph, torch.cat([x1, x2]))
    if res is None:
        return out
    y, e = res[0][graph.output].flatten(1), res[1][graph.output].flatten(1)
    rows = rows.to(dt)
    n_out = y.shape[1]
    g = gamma(n_out + 1, dt)
    s = (y * rows.repeat(2, 1)).sum(1)
    s_err = ((y.abs() * rows.abs().repeat(2, 1)).sum(1) * g + (e * rows.abs().repeat(2, 1)).sum(1)) * (1 + g)
    num = (s[N:] - s[:N]).abs() * (1 - 4 * u) - (s_err[:N] + s_err[N:]) * (1 + 4 * u)
    d = x1[0].numel()
    dist = _primal(x2 - x1, norm) * (1 + gamma(d + 2, dt)) + torch.finfo(dt).tiny
    q = (num.clamp(min=0) / dist) * (1 - 2 * u)
    return torch.where(bad, out, q)


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit vector (primal norm) ``v`` with ``g . v = ||g||_dual``."""
    flat = g.flatten(1)
    if norm == "inf":
        v = torch.sign(flat)
    elif norm == "2":
        v = flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-300)
    else:
        v = torch.zeros_like(flat)
        i = flat.abs().argmax(1)
        r = torch.arange(len(i), device=g.device)
        v[r, i] = torch.sign(flat[r, i])
    return v.reshape(g.shape)


def pairs_near(graph, eval_graph, lo, up, pts, rows, norm, region):
    """Pairs ``x* -+ t v`` around ``pts [N, *in]`` inside the boxes ``[lo, up] ∩ region``, ``v``
    realising the dual norm of the gradient at ``x*``, for a few ``t``; the best checked one per
    point. Returns ``(value [N], x1, x2)`` (value ``-inf``: no pair found)."""
    rlo, rup = region
    lo, up = torch.maximum(lo, rlo), torch.minimum(up, rup)
    up = torch.maximum(up, lo)  # a box outside the region degenerates to a point (no pair)
    pts = torch.minimum(torch.maximum(pts, lo), up)
    width = up - lo
    v = _direction(_own_grads(graph, pts, rows), norm) * (width > 0)
    flat_w = width.flatten(1)
    # no gradient direction inside the box: move along its widest coordinate instead
    none = (v.flatten(1) == 0).all(1)
    if none.any():
        e = torch.zeros_like(flat_w)
        e[torch.arange(len(e)), flat_w.argmax(1)] = 1.0
        v = torch.where(none.reshape(-1, *([1] * (v.dim() - 1))), e.reshape(v.shape), v)
    half = (flat_w.amax(1) / 2).reshape(-1, *([1] * (pts.dim() - 1)))
    best = torch.full((pts.shape[0],), -torch.inf, dtype=pts.dtype, device=pts.device)
    bx1, bx2 = pts.clone(), pts.clone()
    for rel in (1.0, 1e-1, 1e-2, 1e-3):
        t = torch.minimum(half * rel, width / 2)
        centre = torch.minimum(torch.maximum(pts, lo + t), up - t)
        x1 = torch.minimum(torch.maximum(centre - t * v, lo), up)
        x2 = torch.minimum(torch.maximum(centre + t * v, lo), up)
        q = _down(pair_value(eval_graph, x1.to(torch.float64), x2.to(torch.float64), rows.to(torch.float64),
                             norm, rlo.to(torch.float64), rup.to(torch.float64)), best.dtype)
        take = q > best
        best = torch.where(take, q, best)
        m = take.reshape(-1, *([1] * (pts.dim() - 1)))
        bx1, bx2 = torch.where(m, x1, bx1), torch.where(m, x2, bx2)
    return best, bx1, bx2


class BestPairs:
    """The best checked pair per spec row ``k``: ``value [K]``, ``x1``/``x2`` ``[K, *in]``.

    Every row starts from the region's two extreme corners (a pair whenever the region has two
    distinct points, of value >= 0), so a reported lower bound always comes with a pair."""

    def __init__(self, graph, eval_graph, C, norm, region, x_fallback):
        self.graph, self.eval_graph, self.C, self.norm, self.region = graph, eval_graph, C, norm, region
        K = C.shape[0]
        self.value = torch.zeros(K, dtype=C.dtype, device=C.device)
        self.x1 = x_fallback.expand(K, *x_fallback.shape).clone()
        self.x2 = self.x1.clone()
        self.is_pair = torch.zeros(K, dtype=torch.bool, device=C.device)
        if region is not None:
            lo, up = region
            self.offer(torch.arange(K, device=C.device), lo.expand(K, *lo.shape), up.expand(K, *up.shape))

    def offer(self, cls, x1, x2) -> None:
        """Check the pairs ``(x1[n], x2[n])`` for rows ``cls[n]`` and keep the improvements."""
        if self.region is None or len(cls) == 0:
            return
        rlo, rup = (r.to(torch.float64) for r in self.region)
        q = _down(pair_value(self.eval_graph, x1.to(torch.float64), x2.to(torch.float64),
                             self.C[cls].to(torch.float64), self.norm, rlo, rup), self.value.dtype)
        self._keep(cls, q, x1, x2)

    def search(self, cls, lo, up, pts) -> None:
        """Look for pairs around ``pts`` inside the boxes ``[lo, up]`` (see ``pairs_near``)."""
        if self.region is None or len(cls) == 0:
            return
        q, x1, x2 = pairs_near(self.graph, self.eval_graph, lo, up, pts, self.C[cls], self.norm, self.region)
        self._keep(cls, q, x1, x2)

    def chord(self, k: int, pt, lo, up, phases) -> None:
        """The pair at the ends of the longest segment ``pt + t v`` (``v`` realising the dual
        norm of the gradient at ``pt``) inside ``[lo, up] ∩ region`` and inside the linear region
        of ``phases`` around ``pt``: the longer the pair, the smaller the share of the
        evaluation's rounding in its checked value. Computed in floating point (a proposal)."""
        if self.region is None:
            return
        from ..exact.pattern import pattern_affine
        lo, up = torch.maximum(lo, self.region[0]), torch.minimum(up, self.region[1])
        if bool((lo > up).any()) or bool((pt < lo).any()) or bool((pt > up).any()):
            return
        v = (_direction(_own_grads(self.graph, pt[None], self.C[k:k + 1]), self.norm)[0] * (up > lo)).flatten()
        if not bool((v != 0).any()):
            return
        p, t_plus, t_minus = pt.flatten(), torch.inf, torch.inf
        for name, (M, c) in pattern_affine(self.graph, phases, pt.dtype).items():
            s = phases[name].flatten().to(pt.dtype) * 2 - 1
            z, m = s * (M @ p + c), s * (M @ v)  # s z(pt + t v) = z + t m >= 0 inside the region
            if bool((z < 0).any()):
                return
            t_plus = min(t_plus, float((z / -m)[m < 0].min()) if bool((m < 0).any()) else torch.inf)
            t_minus = min(t_minus, float((z / m)[m > 0].min()) if bool((m > 0).any()) else torch.inf)
        lf, uf, pos, neg = lo.flatten(), up.flatten(), v > 0, v < 0
        for mask, ahead, behind in ((pos, (uf - p) / v, (p - lf) / v), (neg, (lf - p) / v, (p - uf) / v)):
            if bool(mask.any()):
                t_plus, t_minus = min(t_plus, float(ahead[mask].min())), min(t_minus, float(behind[mask].min()))
        x1 = torch.minimum(torch.maximum(p - 0.99 * t_minus * v, lf), uf).reshape(pt.shape)
        x2 = torch.minimum(torch.maximum(p + 0.99 * t_plus * v, lf), uf).reshape(pt.shape)
        self.offer(torch.tensor([k], device=pt.device), x1[None], x2[None])

    def _keep(self, cls, q, x1, x2):
        for i in range(len(q)):
            k = int(cls[i])
            if q[i] > -torch.inf and (q[i] > self.value[k] or not self.is_pair[k]):
                self.value[k], self.is_pair[k] = q[i], True
                self.x1[k], self.x2[k] = x1[i], x2[i]

    def witness(self, shape) -> dict:
        """``{"x1", "x2", "output"}`` of the best row; a region without two distinct points has no
        pair, and then ``x1 == x2`` is its one point, with a note, and the lower bound is 0."""
        k = int(self.value.argmax())
        w = {"x1": self.x1[k].reshape(shape), "x2": self.x2[k].reshape(shape), "output": k}
        if not bool(self.is_pair[k]):
            single = self.region is None or bool((self.region[0] == self.region[1]).all())
            w["note"] = ("the region holds no two distinct points: no pair exists and the lower bound is 0"
                         if single else "no pair could be checked (the rounding analysis does not cover an op)")
        return w
