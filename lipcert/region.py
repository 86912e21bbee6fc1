"""Inputs and regions: validate ``x0``, ``eps`` and ``domain`` and build the input box.

The region is ``{x : ||x - x0||_inf <= eps} ∩ [lo, hi]``, a box. (For the l2 and l1 Lipschitz
norms the region is still this l_inf box; the norm only changes how gradients are measured.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .errors import InvalidInput
from .graph import Graph, capture, check_model
from .rules import Interval


@dataclass(frozen=True)
class Problem:
    """A captured model and a batch of regions: ``x0 [B, *shape]``, ``box`` its input box."""

    graph: Graph
    x0: torch.Tensor
    box: Interval
    batched: bool
    eps: float


def as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, (list, tuple, float, int)):
        x = torch.as_tensor(x)
    if not isinstance(x, torch.Tensor):
        raise InvalidInput(f"{name} must be a tensor or numpy array, got {type(x).__name__}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise InvalidInput(f"{name} has NaN or infinite entries")
    return x.detach()


def _runs(model, x) -> bool:
    try:
        with torch.no_grad():
            y = model(x)
        return isinstance(y, torch.Tensor) and y.dim() >= 1 and y.shape[0] == x.shape[0]
    except Exception:
        return False


def split_batch(model: nn.Module, x0: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``x0`` as ``[B, *input_shape]`` and whether it carried a batch dimension.

    A 1-D ``x0`` is one sample. Otherwise ``x0`` is read as a batch when the model accepts it as
    one (its first dimension becomes the batch) and as one sample when only that works."""
    p = next(iter(model.parameters()), None)
    xx = x0.to(p.dtype) if p is not None else x0
    if x0.dim() == 0:
        raise InvalidInput("x0 must have at least one dimension")
    if x0.dim() >= 2 and _runs(model, xx):
        return x0, True
    if _runs(model, xx.unsqueeze(0)):
        return x0.unsqueeze(0), False
    raise InvalidInput(f"x0 of shape {list(x0.shape)} does not fit the model's input (tried it as a batch and "
                       f"as a single sample)")


def make_box(x0: torch.Tensor, eps, domain) -> Interval:
    if isinstance(eps, torch.Tensor):
        if not torch.isfinite(eps).all() or (eps < 0).any():
            raise InvalidInput(f"eps must be finite and >= 0, got {eps}")
        eps_t = eps.to(x0.dtype)
    else:
        try:
            e = float(eps)
        except (TypeError, ValueError):
            raise InvalidInput(f"eps must be a number, got {eps!r}") from None
        if not math.isfinite(e) or e < 0:
            raise InvalidInput(f"eps must be finite and >= 0, got {eps}")
        eps_t = torch.tensor(e, dtype=x0.dtype, device=x0.device)
    lo, up = x0 - eps_t, x0 + eps_t
    if domain is not None:
        try:
            dlo, dhi = domain
        except (TypeError, ValueError):
            raise InvalidInput(f"domain must be a (lo, hi) pair, got {domain!r}") from None
        dlo = torch.as_tensor(dlo, dtype=x0.dtype)
        dhi = torch.as_tensor(dhi, dtype=x0.dtype)
        if (dlo > dhi).any():
            raise InvalidInput("domain lower end exceeds its upper end")
        tol = 1e-9 * (1 + x0.abs())
        if ((x0 < dlo - tol) | (x0 > dhi + tol)).any():
            raise InvalidInput("x0 lies outside the declared domain "
                               f"[{dlo.min().item():g}, {dhi.max().item():g}]")
        lo, up = torch.maximum(lo, dlo), torch.minimum(up, dhi)
    return Interval(lo, up)


def prepare(model: nn.Module, x0, eps, domain=None, *, dtype=torch.float64, device=None) -> Problem:
    """Validate everything and capture the model in ``dtype`` (float64 by default: sound margins
    from rounding are then far below any tolerance a user cares about)."""
    check_model(model)
    x0 = as_tensor(x0, "x0")
    xb, batched = split_batch(model, x0)
    graph = capture(model, xb[:1])
    in_shape = graph[graph.input].shape
    if tuple(xb.shape[1:]) != tuple(in_shape):
        raise InvalidInput(f"x0 has sample shape {list(xb.shape[1:])}, the model expects {list(in_shape)}")
    xb = xb.to(dtype=dtype, device=device)
    graph = graph.to(dtype=dtype, device=device)
    box = make_box(xb, eps, domain)
    return Problem(graph, xb, box, batched, float(eps) if not isinstance(eps, torch.Tensor) else float(eps.max()))
