"""Rule table: op name -> rule. ``lookup`` is the only way the engine finds a rule."""
from __future__ import annotations

from ..errors import UnsupportedOperation
from .activations import ACTIVATION_RULES
from .base import Interval, LinearRule, NonlinearRule, RelaxContext, Relaxation
from .linear_ops import LINEAR_RULES
from .smooth import SMOOTH_RULES

RULES = {**LINEAR_RULES, **ACTIVATION_RULES, **SMOOTH_RULES}


def lookup(node):
    try:
        return RULES[node.op]
    except KeyError:
        raise UnsupportedOperation([(node.name, node.op)], sorted(RULES)) from None


__all__ = ["RULES", "lookup", "Interval", "Relaxation", "RelaxContext", "LinearRule", "NonlinearRule"]
