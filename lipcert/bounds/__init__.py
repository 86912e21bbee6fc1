"""Bounds on the values of a network over an input region (IBP, CROWN, alpha-CROWN)."""
from __future__ import annotations

import torch

from ..engine.config import BoundConfig
from ..engine.schedule import compute_bounds, spec_bounds
from ..errors import InvalidInput
from ..region import prepare
from ..rules import Interval

METHODS = ("ibp", "crown", "alpha-crown")


def output_bounds(model, x0, eps, method: str = "crown", domain=None, C=None, *, alpha_steps: int = 20,
                  dtype=torch.float64, device=None, max_memory_gb: float = 2.0):
    """Sound elementwise bounds of ``model``'s output (or of ``C @ output``) over the region
    ``{x : ||x - x0||_inf <= eps} ∩ domain``.

    Args:
        model: an eval-mode ``nn.Module``.
        x0: one input, with or without a leading batch dimension of 1, or a batch.
        eps: radius (>= 0) of the l_inf ball.
        method: "ibp", "crown" or "alpha-crown".
        domain: optional ``(lo, hi)`` clipping the ball (floats or tensors).
        C: optional spec ``[K, n_out]`` (or ``[B, K, n_out]``): bounds of ``C @ output``.
    Returns:
        ``(lower, upper)`` tensors of the output shape (batch dimension kept iff ``x0`` had one);
        for every ``x`` in the region, ``lower <= model(x) <= upper``.
    """
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    prob = prepare(model, x0, eps, domain, dtype=dtype, device=device)
    g = prob.graph
    cfg = BoundConfig(method=method, alpha_steps=alpha_steps, max_memory_gb=max_memory_gb)
    with torch.no_grad():
        bounds = compute_bounds(g, {g.input: prob.box}, cfg)
        out = g[g.output]
        B = prob.x0.shape[0]
        if C is None and method == "ibp":
            lo, up = bounds[g.output].lower, bounds[g.output].upper
        else:
            if C is None:
                n = out.numel
                spec = torch.eye(n, dtype=dtype, device=prob.x0.device).reshape(n, 1, *out.shape).expand(n, B, *out.shape)
                shape = (B,) + out.shape
            else:
                C = torch.as_tensor(C, dtype=dtype, device=prob.x0.device)
                if C.dim() == 2:
                    C = C.unsqueeze(0).expand(B, *C.shape)
                if C.shape[-1] != out.numel or C.shape[0] != B:
                    raise InvalidInput(f"C has shape {list(C.shape)}; expected [K, {out.numel}] or [{B}, K, {out.numel}]")
                spec = C.transpose(0, 1).reshape(C.shape[1], B, *out.shape)
                shape = (B, C.shape[1])
            if method == "ibp":
                lo, up = _ibp_spec(spec, bounds[g.output])
            else:
                lo, up = spec_bounds(g, g.output, spec, bounds, cfg)
                ilo, iup = _ibp_spec(spec, bounds[g.output])
                lo, up = torch.maximum(lo, ilo), torch.minimum(up, iup)
            lo, up = lo.reshape(shape), up.reshape(shape)
    if not prob.batched:
        lo, up = lo[0], up[0]
    return lo, up


def _ibp_spec(spec, iv: Interval):
    """Interval bounds ``[B, S]`` of ``spec . y`` for ``y`` in ``iv``."""
    from ..engine.crown import concretize
    return concretize(spec, iv, upper=False).T, concretize(spec, iv, upper=True).T


__all__ = ["output_bounds", "Interval", "METHODS"]
