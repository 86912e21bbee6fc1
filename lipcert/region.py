"""Inputs and regions: validate ``x0``, ``eps`` and ``domain`` and build the input box.

The region is ``{x : ||x - x0||_inf <= eps} ∩ [lo, hi]``, a box. (For the l2 and l1 Lipschitz
norms the region is still this l_inf box; the norm only changes how gradients are measured.)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from . import rounding
from .errors import InvalidInput
from .graph import Graph, capture, check_model
from .rules import Interval


@dataclass(frozen=True)
class Problem:
    """A captured model and a batch of regions: ``x0 [B, *shape]``; ``box`` contains the region
    (outward-rounded, for bounds), ``inner`` lies inside it (inward-rounded, for witnesses; None
    when the region holds no two distinct representable points); ``graph64`` is the same graph in
    float64 (witnesses are evaluated there)."""

    graph: Graph
    x0: torch.Tensor
    box: Interval
    batched: bool
    eps: float
    inner: Optional[Interval] = None
    graph64: Optional[Graph] = None
    note: str = ""

    @property
    def dtype(self) -> str:
        return str(self.box.lower.dtype).replace("torch.", "")

    def region(self, b: int = 0) -> dict:
        """The region as certified, for certificates and records."""
        shape = self.graph[self.graph.input].shape
        return {"ball": "inf", "eps": self.eps, "lower": self.box.lower[b].reshape(shape).tolist(),
                "upper": self.box.upper[b].reshape(shape).tolist()}


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


def _eps_tensor(eps, like: torch.Tensor) -> torch.Tensor:
    if isinstance(eps, torch.Tensor):
        if not torch.isfinite(eps).all() or (eps < 0).any():
            raise InvalidInput(f"eps must be finite and >= 0, got {eps}")
        return eps.to(dtype=torch.float64, device=like.device)
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise InvalidInput(f"eps must be a number, got {eps!r}") from None
    if not math.isfinite(e) or e < 0:
        raise InvalidInput(f"eps must be finite and >= 0, got {eps}")
    return torch.tensor(e, dtype=torch.float64, device=like.device)


def _domain(domain, x0):
    if domain is None:
        return None, None
    try:
        dlo, dhi = domain
    except (TypeError, ValueError):
        raise InvalidInput(f"domain must be a (lo, hi) pair, got {domain!r}") from None
    dlo = torch.as_tensor(dlo, dtype=torch.float64, device=x0.device)
    dhi = torch.as_tensor(dhi, dtype=torch.float64, device=x0.device)
    if not (torch.isfinite(dlo).all() and torch.isfinite(dhi).all()):
        raise InvalidInput("domain ends must be finite")
    if (dlo > dhi).any():
        raise InvalidInput("domain lower end exceeds its upper end")
    tol = 1e-9 * (1 + x0.abs())
    if ((x0 < dlo - tol) | (x0 > dhi + tol)).any():
        raise InvalidInput("x0 lies outside the declared domain "
                           f"[{dlo.min().item():g}, {dhi.max().item():g}]")
    return torch.broadcast_to(dlo, x0.shape), torch.broadcast_to(dhi, x0.shape)


def make_box(x0: torch.Tensor, eps, domain, dtype=None) -> Interval:
    """A box in ``dtype`` (default: ``x0``'s) containing ``{x : |x - x0|_inf <= eps} ∩ domain``
    exactly (ends rounded outward, see ``lipcert.rounding``)."""
    return make_boxes(x0, eps, domain, dtype)[0]


def make_boxes(x0: torch.Tensor, eps, domain, dtype=None):
    """``(outer, inner)``: the outward-rounded box that contains the region and the inward-rounded
    one inside it (None when it holds no ``dtype`` point in some coordinate)."""
    dtype = dtype or x0.dtype
    x64 = x0.to(torch.float64)
    e = _eps_tensor(eps, x64)
    dlo, dhi = _domain(domain, x64)
    lo, hi = rounding.outward_box(x64, e, dlo, dhi, dtype)
    inner = rounding.inward_box(x64, e, dlo, dhi, dtype)
    return Interval(lo, hi), (None if inner is None else Interval(*inner))


def _capture64(model: nn.Module, example: torch.Tensor) -> Graph:
    """Capture in float64: folding (BatchNorm, constant arithmetic) is then done once, in float64,
    on exact copies of the model's weights. A model that refuses to run in float64 is captured in
    its own dtype."""
    p = next(iter(model.parameters()), None)
    if p is None or p.dtype == torch.float64:
        return capture(model, example.to(torch.float64) if p is not None else example)
    try:
        m64 = copy.deepcopy(model).double()
        with torch.no_grad():
            m64(example.to(torch.float64))
    except Exception:
        return capture(model, example)
    return capture(m64, example.to(torch.float64))


def _graph_in(graph64: Graph, dtype, device) -> tuple[Graph, str]:
    """The graph in the working dtype when every constant survives the cast exactly; otherwise
    in float64, with a note (rounding a folded constant would certify another function)."""
    if dtype == torch.float64 or dtype == graph64.float_dtype(torch.float64):
        return graph64.to(dtype=dtype, device=device), ""
    for node in graph64.nodes:
        for v in node.attrs.values():
            if isinstance(v, torch.Tensor) and not rounding.exactly_representable(v, dtype):
                return (graph64.to(dtype=torch.float64, device=device),
                        f"computed in float64: constants of node '{node.name}' ({node.op}) are not exactly "
                        f"representable in {str(dtype).replace('torch.', '')}")
    return graph64.to(dtype=dtype, device=device), ""


def prepare(model: nn.Module, x0, eps, domain=None, *, dtype=torch.float64, device=None) -> Problem:
    """Validate everything, capture the model (in float64, see ``_capture64``) and build the
    regions. The bound is computed in ``dtype`` (float64 by default) when the captured constants
    are exact in it, else in float64 (``Problem.note`` says why)."""
    check_model(model)
    x0 = as_tensor(x0, "x0")
    xb, batched = split_batch(model, x0)
    graph64 = _capture64(model, xb[:1])
    in_shape = graph64[graph64.input].shape
    if tuple(xb.shape[1:]) != tuple(in_shape):
        raise InvalidInput(f"x0 has sample shape {list(xb.shape[1:])}, the model expects {list(in_shape)}")
    if device is not None and torch.device(device).type == "cuda":
        # TF32 products (cuDNN's default for convolutions) round to 10 bits: the rounding analysis
        # of lipcert.rounding assumes IEEE float32/float64 arithmetic
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    graph, note = _graph_in(graph64, dtype, device)
    work = graph.float_dtype(torch.float64)
    xb = xb.to(device=device)
    box, inner = make_boxes(xb, eps, domain, work)
    e = float(eps) if not isinstance(eps, torch.Tensor) else float(eps.max())
    return Problem(graph, xb.to(work), box, batched, e, inner, graph64.to(dtype=torch.float64, device=device), note)
