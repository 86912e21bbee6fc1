from .local import METHODS, jacobian_bounds, local_lipschitz

__all__ = ["local_lipschitz", "jacobian_bounds", "METHODS"]
