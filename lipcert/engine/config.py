"""Typed configuration of the bound engine."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BoundConfig:
    method: str = "crown"              # "ibp" | "crown" | "alpha-crown"
    alpha_steps: int = 20              # Adam iterations per optimised node (alpha-crown)
    alpha_lr: float = 0.25             # Adam step size on alpha in [0, 1]
    objective: str = "width"           # intermediate objective: "width" (sum u - l) or "stability"
    max_memory_gb: float = 2.0         # spec rows are chunked so one chunk's coefficients fit in this
    optimize_output: bool = True       # alpha-crown also optimises the final spec's bounds

    def __post_init__(self):
        if self.method not in ("ibp", "crown", "alpha-crown"):
            raise ValueError(f"unknown bound method {self.method!r}; use 'ibp', 'crown' or 'alpha-crown'")

    @property
    def refines(self) -> bool:
        """Intermediate bounds are tightened by CROWN (else IBP only)."""
        return self.method != "ibp"

    @property
    def optimizes(self) -> bool:
        """Relaxation parameters are optimised (alpha-CROWN)."""
        return self.method == "alpha-crown"
