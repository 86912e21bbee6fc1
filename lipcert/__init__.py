"""lipcert: certified bounds on the Lipschitz constants of neural networks."""
from . import bounds, graph
from .errors import InvalidInput, InvalidModel, LipcertError, SolverError, UnsupportedOperation
from .apps.monotonicity import monotonicity
from .apps.radius import certified_radius
from .dataset import certify_dataset
from .globalbound import global_lipschitz
from .io import load
from .lipschitz import jacobian_bounds, local_lipschitz
from .report.certificate import Certificate

__version__ = "0.1.0"

__all__ = ["bounds", "graph", "local_lipschitz", "jacobian_bounds", "monotonicity", "certified_radius", "load",
           "global_lipschitz", "certify_dataset",
           "Certificate", "InvalidInput",
           "InvalidModel", "LipcertError", "SolverError", "UnsupportedOperation", "__version__"]
