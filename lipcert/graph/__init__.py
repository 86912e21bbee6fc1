"""Graph capture and the IR."""
from .capture import OpStatus, capture, check_model, inspect, supported
from .ir import Graph, Node
from .run import run


def __getattr__(name):
    if name == "SUPPORTED":  # every spelling capture accepts (read from the op registry)
        return supported()
    raise AttributeError(name)


__all__ = ["capture", "check_model", "inspect", "supported", "OpStatus", "Graph", "Node", "run"]
