"""lipcert: certified bounds on the Lipschitz constants of neural networks."""
from . import bounds, graph
from .errors import InvalidInput, InvalidModel, LipcertError, SolverError, UnsupportedOperation

__version__ = "0.1.0"

__all__ = ["bounds", "graph", "InvalidInput", "InvalidModel", "LipcertError", "SolverError",
           "UnsupportedOperation", "__version__"]
