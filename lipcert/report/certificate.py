"""The Certificate: what every local-Lipschitz entry point returns."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class Certificate:
    """An interval ``[lower, upper]`` on the local Lipschitz constant of a network on a region.

    ``upper`` is proved (never below the true constant, up to float rounding in the stated dtype);
    ``lower`` is realised by ``witness``: a pair of points ``(x1, x2)`` of the region with
    ``|c.f(x1) - c.f(x2)| / ||x1 - x2||_p = lower`` for the spec row ``c`` of output ``output``.

    Attributes:
        upper, lower: max over outputs of the per-output bounds.
        per_output_upper, per_output_lower: tensors ``[K]``.
        witness: ``{"x1", "x2", "output"}`` (``x1``/``x2`` in the model's input shape, no batch).
        method, norm, eps: what was computed.
        seconds: wall time; ``timings`` splits it by phase.
        status: "bounded", or the MILP/BaB status ("optimal", "time_limit", ...).
        jacobian_lower, jacobian_upper: elementwise Jacobian bounds ``[K, *input_shape]`` when the
            method produced them.
        dtype: the floating-point type the bound was computed in ("float64", "float32").
        region: the region as certified: ``{"ball": "inf", "eps": ..., "lower": [...], "upper": [...]}``
            (the box's ends after outward rounding, in the input's shape).
    """

    upper: float
    lower: float
    per_output_upper: torch.Tensor
    per_output_lower: torch.Tensor
    witness: dict
    method: str
    norm: str
    eps: float
    seconds: float
    status: str = "bounded"
    timings: dict = field(default_factory=dict)
    jacobian_lower: Optional[torch.Tensor] = None
    jacobian_upper: Optional[torch.Tensor] = None
    details: dict = field(default_factory=dict)
    dtype: str = "float64"
    region: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """``upper / lower`` (inf when the lower bound is 0)."""
        if self.lower > 0:
            return self.upper / self.lower
        return 1.0 if self.upper == 0 else math.inf

    @property
    def sound(self) -> bool:
        return True

    def __repr__(self) -> str:
        k = self.per_output_upper.numel()
        return (f"Certificate(L in [{self.lower:.6g}, {self.upper:.6g}], ratio {self.ratio:.3g}, "
                f"method={self.method}, norm=l{self.norm}, eps={self.eps:g}, outputs={k}, {self.dtype}, "
                f"status={self.status}, {self.seconds:.3f}s)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tensors become lists)."""
        def conv(v):
            if isinstance(v, torch.Tensor):
                return v.detach().cpu().tolist()
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)
            return v
        d = {
            "upper": self.upper, "lower": self.lower, "ratio": self.ratio,
            "per_output_upper": self.per_output_upper, "per_output_lower": self.per_output_lower,
            "witness": self.witness, "method": self.method, "norm": self.norm, "eps": self.eps,
            "seconds": self.seconds, "status": self.status, "timings": self.timings, "details": self.details,
            "dtype": self.dtype, "region": self.region,
        }
        return conv(d)
