"""Graph capture and the IR."""
from .capture import SUPPORTED, capture, check_model
from .ir import Graph, Node
from .run import run

__all__ = ["capture", "check_model", "Graph", "Node", "run", "SUPPORTED"]
