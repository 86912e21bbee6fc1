"""The gradient graph of a network (forward graph joined to its Clarke-chain-rule backward)."""
from .build import SPEC, GradientGraph, build_gradient_graph

__all__ = ["build_gradient_graph", "GradientGraph", "SPEC"]
