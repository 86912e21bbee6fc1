"""Branch-and-bound on ReLU splits and input splits, and the checked witness pairs it reports."""
from .bounding import Setting, bound_domains, make_setting
from .search import BaBConfig, BaBResult, bab_search
from .witness import BestPairs, pair_value

__all__ = ["BaBConfig", "BaBResult", "bab_search", "make_setting", "bound_domains", "Setting", "BestPairs",
           "pair_value"]
