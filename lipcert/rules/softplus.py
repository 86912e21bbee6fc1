"""Softplus, ``f(z) = log(1 + e^z) = max(z, 0) + log1p(e^-|z|)`` (the second form has no overflow
and no cancellation), and ``softplus_beta(z) = softplus(beta z) / beta``, captured as two affine
nodes around it.

Convex and increasing: ``f' = sigmoid`` (so the gradient graph uses the sigmoid op as ``f'``),
``sup |f''| = 1/4``, ``sup |f'| = 1``. PyTorch's ``F.softplus`` returns ``z`` itself for
``beta z > threshold`` (20), a jump of ``2e-9``; lipcert bounds the function without the cut,
of which the cut version is a floating-point approximation.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnsupportedOperation
from ..graph import ops
from . import registry
from .smooth import Smooth

SOFTPLUS = "softplus"


def softplus(z):
    return torch.relu(z) + torch.log1p(torch.exp(-z.abs()))


registry.add_rule(SOFTPLUS, Smooth(softplus, torch.sigmoid, 0.25 + 1e-6, deriv=ops.SIGMOID, lip=1.0))


def _emit(b, n, args, kwargs, module):
    if module is not None:
        beta = module.beta
    else:
        beta = args[1] if len(args) > 1 else kwargs.get("beta", 1.0)
    beta = float(beta)
    if not beta > 0:
        raise UnsupportedOperation([(n.name, f"softplus(beta={beta})")], detail="softplus needs beta > 0")
    x = args[0]
    if beta != 1.0:
        x = b.scale(n, x, beta, "in")
    if beta == 1.0:
        b.emit(n, SOFTPLUS, [x], {})
    else:
        y = b.add(n, "sp", SOFTPLUS, [x], {}, b.shape(n))
        b.emit(n, ops.AFFINE, [y], b.affine_attrs(n, 1.0 / beta, 0.0))


registry.layer("Softplus (any beta)", emit=_emit, modules=(nn.Softplus,),
               functions=(F.softplus, torch.ops.aten.softplus.default), lowers_to=(SOFTPLUS,),
               methods_note="all but exact (not piecewise linear)")
