"""Concrete evaluation of a Graph (the interpreter used by tests, attacks and BaB)."""
from __future__ import annotations


from ..rules import lookup
from .ir import Graph


def run(graph: Graph, inputs: dict, upto: str | None = None) -> dict:
    """Evaluate every node; ``inputs`` maps input names to ``[B, *shape]`` tensors.
    Returns ``name -> value``."""
    env = dict(inputs)
    for node in graph.nodes:
        if node.name in env:
            continue
        env[node.name] = lookup(node).forward(node, *[env[i] for i in node.inputs])
        if node.name == upto:
            break
    return env
