"""Rewrites of ONNX node patterns before conversion: how exporters spell a torch op that lipcert
captures as one op (``F.silu`` as ``Mul(x, Sigmoid(x))``, ``F.softplus`` with its threshold as
``Where(Greater(x, t), x, Softplus(x))``)."""
from __future__ import annotations

from onnx import helper


def _producers_and_reads(nodes: list):
    """``(output name -> node, list of every input read)``."""
    return {o: n for n in nodes for o in n.output}, [i for n in nodes for i in n.input]


def fuse_softplus_threshold(nodes: list) -> list:
    """The nodes, each ``Where(Greater(x, t), x, Softplus(x))`` replaced by ``Softplus(x, t)``.

    That is how the dynamo exporter writes torch's ``F.softplus(x)`` (which is ``x`` above its
    threshold); :func:`_softplus` reads ``t`` back, so Greater and Where need no converters. The
    Greater node goes when nothing else reads it; the inner Softplus stays (dead code, removed
    with the rest)."""
    made, reads = _producers_and_reads(nodes)
    fused, dropped = {}, set()
    for n in nodes:
        if n.op_type != "Where" or len(n.input) != 3:
            continue
        cond, x, other = n.input
        greater, softplus = made.get(cond), made.get(other)
        if (greater is not None and softplus is not None and greater.op_type == "Greater"
                and softplus.op_type == "Softplus" and greater.input[0] == x == softplus.input[0]
                and reads.count(cond) == 1):
            fused[id(n)] = helper.make_node("Softplus", [x, greater.input[1]], list(n.output), name=n.name)
            dropped.add(id(greater))
    return [fused.get(id(n), n) for n in nodes if id(n) not in dropped]


def fuse_silu(nodes: list) -> list:
    """The nodes, each ``Mul(x, Sigmoid(x))`` (how both exporters write ``F.silu``) replaced by one
    ``SiLU(x)`` node (lipcert's own op type), so that it is captured as SiLU and not as a product
    of two input-dependent tensors. The Sigmoid goes when nothing else reads it."""
    made, reads = _producers_and_reads(nodes)
    fused, dropped = {}, set()
    for n in nodes:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        for x, s in (n.input, n.input[::-1]):
            sig = made.get(s)
            if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == x:
                fused[id(n)] = helper.make_node("SiLU", [x], list(n.output), name=n.name)
                if reads.count(s) == 1:
                    dropped.add(id(sig))
                break
    return [fused.get(id(n), n) for n in nodes if id(n) not in dropped]
