"""Exact values for small piecewise-linear networks (MILP with HiGHS, checked by BaB) and linear-region tools."""
from .milp import MilpOutcome, milp_values
from .pattern import interior_point, pattern_affine
from .verify import ExactResult, exact_lipschitz

__all__ = ["exact_lipschitz", "ExactResult", "milp_values", "MilpOutcome", "interior_point", "pattern_affine"]
