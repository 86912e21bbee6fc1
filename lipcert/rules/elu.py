"""ELU and its relatives, on one smooth op ``elu(z) = z (z > 0), e^z - 1 (z <= 0)`` (``alpha = 1``):

* ``ELU(alpha) = alpha elu(z) + (1 - alpha) relu(z)`` (both sides agree on each half-line), so a
  general ``alpha`` adds one ReLU (whose kink is exactly the jump of ``f'`` when ``alpha != 1``);
* ``CELU(alpha) = alpha elu(z / alpha)``; ``SELU = lambda ELU(alpha0)``.

``elu`` is C^1 with ``f'' = e^z`` on ``z < 0`` and ``0`` on ``z > 0``, so ``f'`` is 1-Lipschitz and the
grid bound holds with ``m2 = 1`` across 0. Its derivative ``elu' = e^min(z, 0)`` has a kink at 0
(a grid point of its relaxation) and ``|elu''| <= 1`` on each side; both are monotone.
``expm1`` is accurate to a few ulps.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnsupportedOperation
from ..graph import ops
from . import registry
from .smooth import Smooth

ELU, ELU_DERIV = "elu", "elu_deriv"


def elu(z):
    return torch.where(z > 0, z, torch.expm1(torch.clamp(z, max=0)))


def delu(z):
    return torch.exp(torch.clamp(z, max=0))


def d2elu(z):
    return torch.where(z > 0, torch.zeros_like(z), torch.exp(torch.clamp(z, max=0)))


registry.add_rule(ELU, Smooth(elu, delu, 1.0 + 1e-6, deriv=ELU_DERIV, lip=1.0))
registry.add_rule(ELU_DERIV, Smooth(delu, d2elu, 1.0 + 1e-6, kinks=(0.0,)))

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _param(module, args, kwargs, attr, pos, default):
    if module is not None:
        return float(getattr(module, attr))
    return float(args[pos] if len(args) > pos else kwargs.get(attr, default))


def _elu_alpha(b, n, x, alpha, outer=1.0):
    """``outer * ELU_alpha(x)``, as nodes."""
    if alpha == 1.0 and outer == 1.0:
        b.emit(n, ELU, [x], {})
        return
    shape = b.shape(n)
    e = b.add(n, "elu", ELU, [x], {}, shape)
    if alpha == 1.0:
        b.emit(n, ops.AFFINE, [e], b.affine_attrs(n, outer, 0.0))
        return
    r = b.add(n, "relu", ops.RELU, [x], {"negative_slope": 0.0}, shape)
    b.emit(n, ops.ADD, [e, r], {"coeffs": (outer * alpha, outer * (1.0 - alpha))})


def _emit_elu(b, n, args, kwargs, module):
    alpha = _param(module, args, kwargs, "alpha", 1, 1.0)
    if not alpha >= 0:
        raise UnsupportedOperation([(n.name, f"elu(alpha={alpha})")], detail="ELU needs alpha >= 0")
    _elu_alpha(b, n, args[0], alpha)


def _emit_celu(b, n, args, kwargs, module):
    alpha = _param(module, args, kwargs, "alpha", 1, 1.0)
    if not alpha > 0:
        raise UnsupportedOperation([(n.name, f"celu(alpha={alpha})")], detail="CELU needs alpha > 0")
    if alpha == 1.0:
        b.emit(n, ELU, [args[0]], {})
        return
    x = b.scale(n, args[0], 1.0 / alpha, "in")
    e = b.add(n, "elu", ELU, [x], {}, b.shape(n))
    b.emit(n, ops.AFFINE, [e], b.affine_attrs(n, alpha, 0.0))


def _emit_selu(b, n, args, kwargs, module):
    _elu_alpha(b, n, args[0], SELU_ALPHA, SELU_SCALE)


registry.layer("ELU (any alpha >= 0)", emit=_emit_elu, modules=(nn.ELU,),
               functions=(F.elu, torch.ops.aten.elu.default), lowers_to=(ELU, ops.RELU),
               methods_note="all but exact (not piecewise linear)")
registry.layer("CELU", emit=_emit_celu, modules=(nn.CELU,), functions=(F.celu, torch.ops.aten.celu.default),
               lowers_to=(ELU,), methods_note="all but exact (not piecewise linear)")
registry.layer("SELU", emit=_emit_selu, modules=(nn.SELU,), functions=(F.selu, torch.ops.aten.selu.default),
               lowers_to=(ELU, ops.RELU), methods_note="all but exact (not piecewise linear)")
