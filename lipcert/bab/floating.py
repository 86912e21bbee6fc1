"""Forward passes that carry a bound on their own rounding error.

Each node's computed value ``v^`` comes with ``e`` such that ``|v^ - v| <= e`` for the value ``v``
the same node has in exact arithmetic at the same (exactly given) input points (Higham,
*Accuracy and Stability of Numerical Algorithms*, ch. 3, eq. 3.5; ``u`` the unit roundoff,
``gamma_k = k u / (1 - k u)``):

- a linear node ``y = W x + b`` computed from the computed input ``x^`` (error ``e``):
  ``|y^ - y| <= |W| e + gamma_k (|W| |x^| + |b|)``, ``k`` the input size plus two (a bound on
  the length of every dot product, whatever the summation order); reshape, slice, concat: exact;
- (leaky) ReLU is 1-Lipschitz and exact (``a z`` adds ``u |y|``); with a fixed phase pattern
  (``masks``) it is the product by ``a + (1 - a) mask``, exact for ReLU and within ``u |y|`` for
  LeakyReLU; tanh and sigmoid are 1- and 1/4-Lipschitz and accurate to a few ulps (``8 u |y|``);
- the bounds themselves are computed in floating point and raised by ``gamma_k`` plus the
  smallest normal number, which covers their own rounding.
``affine=False`` evaluates the linear part only (every bias and shift dropped): the pass then
computes directional derivatives of a fixed-pattern network, with the same error bounds.
"""
from __future__ import annotations

import dataclasses

import torch

from ..graph import ops
from ..rules import lookup

WEIGHTED = (ops.LINEAR, ops.CONV2D, ops.CONV_T2D, ops.ADD, ops.AFFINE)


def gamma(k: int, dtype) -> float:
    """``gamma_k`` for ``dtype``: ``|fl(a . b) - a . b| <= gamma_k |a| . |b|`` for a dot product
    of length ``k`` in any summation order."""
    ku = max(int(k), 1) * torch.finfo(dtype).eps / 2
    return ku / (1 - ku)


def _variant(node, sign: bool, offset: bool):
    """The node with ``|W|`` (``sign=False``) or ``W``, and with ``|b|``/``b`` or no offset."""
    attrs = dict(node.attrs)

    def f(v):
        return v if sign else (v.abs() if isinstance(v, torch.Tensor) else abs(v))
    for key in ("weight", "scale"):
        if key in attrs:
            attrs[key] = f(attrs[key])
    if "coeffs" in attrs:
        attrs["coeffs"] = [f(c) for c in attrs["coeffs"]]
    for key in ("bias", "shift"):
        if key in attrs and attrs[key] is not None:
            v = attrs[key]
            if offset:
                attrs[key] = f(v)
            else:
                attrs[key] = None if key == "bias" else (torch.zeros_like(v) if isinstance(v, torch.Tensor) else 0.0)
    return dataclasses.replace(node, attrs=attrs)


def forward_with_error(graph, x: torch.Tensor, masks: dict | None = None, affine: bool = True):
    """``(values, errors)``: dicts ``name -> [N, *shape]`` for every node at the points
    ``x [N, *in]``; ``masks`` (pre-activation name -> {0,1} ``[*shape]``) fixes the phase of
    every (leaky) ReLU. None when the graph has an op this pass cannot account for."""
    dt = x.dtype
    u, tiny = torch.finfo(dt).eps / 2, torch.finfo(dt).tiny
    val = {graph.input: x}
    err = {graph.input: torch.zeros_like(x)}
    for node in graph.nodes:
        if node.name in val:
            continue
        xs, es = [val[i] for i in node.inputs], [err[i] for i in node.inputs]
        rule = lookup(node)
        if rule.exact_move:
            y, e = rule.forward(node, *xs), rule.forward(node, *es)
        elif node.op in WEIGHTED:
            g = gamma(sum(v[0].numel() for v in xs) + 2, dt)
            y = rule.forward(node if affine else _variant(node, True, False), *xs)
            prop = rule.forward(_variant(node, False, False), *es)
            mag = rule.forward(_variant(node, False, affine), *[v.abs() for v in xs])
            e = (prop + g * mag) * (1 + 2 * g) + tiny  # the factor covers the rounding of this line
        elif node.op in (ops.RELU, ops.LEAKY_RELU):
            a = float(node.attrs.get("negative_slope", 0.0))
            if masks is None:
                if not affine:
                    return None
                y = rule.forward(node, xs[0])
            else:
                y = xs[0] * (a + (1 - a) * masks[node.inputs[0]].to(dt))
            e = es[0] if a == 0 else es[0] + 2 * u * y.abs() + tiny
        elif getattr(rule, "lip", None) is not None and affine and masks is None:
            # a smooth activation: the input's error moves it by at most sup|f'| times that, and
            # its own evaluation is accurate to a few ulps of its terms (rules.smooth)
            y = rule.forward(node, xs[0])
            e = (rule.lip * es[0] + 16 * u * rule.scale(xs[0])) * (1 + 4 * u) + tiny
        else:
            return None
        val[node.name], err[node.name] = y, e
    return val, err
