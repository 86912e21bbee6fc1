"""A feed-forward chain ``f(x) = W_L phi_L(... phi_1(W_0 x + b_0) ...) + b_L`` read off an
``nn.Sequential`` (nested Sequentials flattened), with every affine layer as a dense matrix.

Global bounds need the layer structure (LipSDP is stated for chains); conv layers are turned into
their dense matrices for the given input shape (fine for the small nets SDPs can handle).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import InvalidInput, UnsupportedOperation
from ..layers import GroupSort, MaxMin

# slope-restriction interval [alpha, beta] of each activation
SLOPES = {nn.ReLU: (0.0, 1.0), nn.Tanh: (0.0, 1.0), nn.Sigmoid: (0.0, 0.25)}


@dataclass
class Act:
    kind: str                 # "slope" (elementwise, slope in [alpha, beta]) | "pairs" (MaxMin/GroupSort)
    alpha: float = 0.0
    beta: float = 1.0
    pairs: torch.Tensor | None = None   # [n/2, 2] neuron index pairs for "pairs"


@dataclass
class Chain:
    weights: list             # W_0 .. W_L, dense [n_{k+1}, n_k]
    acts: list                # Act between consecutive weights (len = L)
    input_shape: tuple

    @property
    def hidden(self) -> int:
        return sum(W.shape[0] for W in self.weights[:-1])


def _flatten(model):
    for m in model.children() if isinstance(model, nn.Sequential) else [model]:
        if isinstance(m, nn.Sequential):
            yield from _flatten(m)
        else:
            yield m


def _dense(layer, in_shape):
    """Dense matrix (no bias) of an affine layer on inputs of ``in_shape`` and its output shape.
    The offsets (``bias``, BatchNorm's ``running_mean``) are zeroed first rather than subtracted
    afterwards: ``(w + b) - b`` can round, a Linear or Conv weight times a unit vector cannot."""
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    layer = copy.deepcopy(layer).double().cpu()  # never change the user's model
    with torch.no_grad():
        for name in ("bias", "running_mean"):
            if isinstance(getattr(layer, name, None), torch.Tensor):
                getattr(layer, name).zero_()
        zero = layer(torch.zeros(1, *in_shape, dtype=torch.float64))
        out = layer(eye) - zero
    return out.reshape(n, -1).T.contiguous(), tuple(zero.shape[1:])


def _pairs(m, shape):
    n = math.prod(shape)
    idx = torch.arange(n).reshape(shape)
    c = shape[0]
    if isinstance(m, MaxMin):
        a, b = idx[: c // 2].flatten(), idx[c // 2:].flatten()
    else:
        a, b = idx[0::2].flatten(), idx[1::2].flatten()
    return torch.stack([a, b], 1)


def chain_of(model: nn.Module, input_shape=None, device=None) -> Chain:
    """The chain of a Sequential-like model (float64 weights on ``device``, CPU by default); raises
    UnsupportedOperation for anything else."""
    layers = list(_flatten(model))
    if input_shape is None:
        first = next((m for m in layers if isinstance(m, (nn.Linear, nn.Conv2d))), None)
        if not isinstance(first, nn.Linear):
            raise InvalidInput("input_shape is required for models that do not start with nn.Linear")
        input_shape = (first.in_features,)
    shape = tuple(input_shape)
    weights, acts, pending = [], [], None
    for m in layers:
        if isinstance(m, (nn.Dropout, nn.Identity)):
            continue
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Flatten, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d)):
            W, shape = _dense(m, shape)
            pending = W if pending is None else W @ pending
            continue
        if pending is None:
            raise UnsupportedOperation([(type(m).__name__, "activation before any affine layer")])
        if isinstance(m, nn.LeakyReLU):
            act = Act("slope", min(m.negative_slope, 1.0), max(m.negative_slope, 1.0))
        elif type(m) in SLOPES:
            act = Act("slope", *SLOPES[type(m)])
        elif isinstance(m, (MaxMin, GroupSort)):
            act = Act("pairs", pairs=_pairs(m, shape))
        else:
            raise UnsupportedOperation([(type(m).__name__, "global bound")],
                                       ["Linear", "Conv2d", "Flatten", "AvgPool2d", "BatchNorm (eval)", "ReLU",
                                        "LeakyReLU", "Tanh", "Sigmoid", "MaxMin", "GroupSort"],
                                       detail="global bounds need an nn.Sequential chain of these layers")
        weights.append(pending)
        acts.append(act)
        pending = None
    if pending is None:
        raise UnsupportedOperation([("output", "activation")], detail="the chain must end with an affine layer")
    weights.append(pending)
    if device is not None:
        weights = [W.to(device) for W in weights]
        for a in acts:
            if a.pairs is not None:
                a.pairs = a.pairs.to(device)
    return Chain(weights, acts, tuple(input_shape))
