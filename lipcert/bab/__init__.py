"""Branch-and-bound on ReLU splits and input splits."""
from .bounding import Setting, bound_domains, make_setting
from .search import BaBConfig, BaBResult, bab_search

__all__ = ["BaBConfig", "BaBResult", "bab_search", "make_setting", "bound_domains", "Setting"]
