"""The op registry (``registry.RULES`` and ``registry.LAYERS``), filled by the op files below.
``lookup`` is the only way the engine finds a rule."""
from __future__ import annotations

from ..errors import UnsupportedOperation
from . import registry
from .activations import ACTIVATION_RULES
from .base import Interval, LinearRule, NonlinearRule, RelaxContext, Relaxation
from .linear_ops import LINEAR_RULES
from . import smooth
from .smooth import SMOOTH_RULES

for _name, _rule in {**LINEAR_RULES, **ACTIVATION_RULES, **SMOOTH_RULES}.items():
    registry.add_rule(_name, _rule)

# op files: each registers its rules and spellings (adding an op = one file + one name here)
from . import affine_layers, shape_layers, pool, piecewise_layers, discontinuous  # noqa: E402,F401
from . import gelu, silu, elu, softplus  # noqa: E402,F401

smooth._register_layers()

RULES = registry.RULES


def lookup(node):
    try:
        return RULES[node.op]
    except KeyError:
        raise UnsupportedOperation([(node.name, node.op)], sorted(RULES)) from None


__all__ = ["RULES", "lookup", "Interval", "Relaxation", "RelaxContext", "LinearRule", "NonlinearRule", "registry"]
