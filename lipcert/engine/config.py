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


@dataclass(frozen=True)
class JacobianOptions:
    """How Jacobian bounds are computed, resolved once from a method name (``for_method``) at the
    API boundary: the engine reads these fields, never the name."""

    forward: str = "crown"          # BoundConfig method of the forward (pre-activation) bounds
    gradient: str = "crown"         # BoundConfig method of the gradient graph
    gradient_alpha: bool = False    # the gradient graph is optimised too where the net is smooth
    relu_mode: str = "chord"        # ReLU gradient relaxation: "chord" (the paper's) or "constant" (RecurJac)
    back_substitute: bool = True    # CROWN bounds on J and on the norm's linear form (False: IBP only)
    smooth_fallback: bool = False   # also run plain CROWN on smooth nets and keep the better norm bound

    @staticmethod
    def for_method(method: "str | JacobianOptions") -> "JacobianOptions":
        if isinstance(method, JacobianOptions):
            return method
        table = {
            "ibp": JacobianOptions("ibp", "ibp", back_substitute=False),
            "crown": JacobianOptions(),
            "recurjac": JacobianOptions(relu_mode="constant"),
            "alpha-crown": JacobianOptions("alpha-crown", "crown", gradient_alpha=True, smooth_fallback=True),
        }
        if method not in table:
            raise ValueError(f"unknown Jacobian method {method!r}; use one of {sorted(table)}")
        return table[method]
