"""Exact values for small piecewise-linear networks (MILP with HiGHS) and linear-region tools."""
from .milp import ExactResult, exact_lipschitz
from .pattern import interior_point, pattern_affine

__all__ = ["exact_lipschitz", "ExactResult", "interior_point", "pattern_affine"]
