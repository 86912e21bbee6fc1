"""GELU, ``f(z) = z Phi(z)`` (exact form) and ``z sigmoid(2 sqrt(2/pi) (z + 0.044715 z^3))``
(the tanh form, ``0.5 z (1 + tanh(.))`` written without the cancellation of ``1 + tanh``).

Both are non-monotone: ``f`` decreases to its minimum at ``z* ~ -0.752`` then increases, and
``f'`` ranges over ``[-0.129, 1.129]`` with extremes at ``+-sqrt(2)`` (exact form; ``+-1.4185``
for the tanh form). The relaxations are the generic ones of :class:`lipcert.rules.smooth.Smooth`
with these constants (``tests/test_activations.py`` checks each against dense sampling):

  exact:  sup |f''| = 2 phi(0) = 0.79789   sup |f'''| = 0.77877   sup |f'| = 1.128904
  tanh:   sup |f''| = 0.79789              sup |f'''| = 0.77669   sup |f'| = 1.128993

Critical points: ``f'`` has exactly one zero (``f' < 0`` on ``(-inf, z*)`` since ``Phi(z) < |z| phi(z)``
there, ``> 0`` after), ``f''`` exactly two (exact form: ``f'' = phi (2 - z^2)``); they are located by
bisection and checked at import. Rounding: ``Phi(z) = erfc(-z / sqrt 2) / 2`` is accurate to a
few ulps, but the rounding of its argument moves it by a relative ``~ z^2 u`` in the left tail
(Mills ratio), hence the term scale ``|f| (1 + z^2)``; likewise ``|f| (1 + |2 v|)`` for the tanh form.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import registry
from .smooth import Smooth, critical_point

GELU, GELU_DERIV = "gelu", "gelu_deriv"
GELU_TANH, GELU_TANH_DERIV = "gelu_tanh", "gelu_tanh_deriv"

_R2PI = 1 / math.sqrt(2 * math.pi)
_C, _A = math.sqrt(2 / math.pi), 0.044715


def _Phi(z):
    return 0.5 * torch.special.erfc(-z / math.sqrt(2))


def _phi(z):
    return _R2PI * torch.exp(-0.5 * z * z)


def gelu(z):
    return z * _Phi(z)


def dgelu(z):
    return _Phi(z) + z * _phi(z)


def d2gelu(z):
    return _phi(z) * (2 - z * z)


def _v(z):
    return _C * (z + _A * z ** 3)


def _dv(z):
    return _C * (1 + 3 * _A * z * z)


def gelu_tanh(z):
    return z * torch.sigmoid(2 * _v(z))


def _q(z):  # d/dz sigmoid(2 v) = 2 s (1 - s) v'
    s = torch.sigmoid(2 * _v(z))
    return 2 * s * torch.sigmoid(-2 * _v(z)) * _dv(z)


def dgelu_tanh(z):
    return torch.sigmoid(2 * _v(z)) + z * _q(z)


def d2gelu_tanh(z):
    s, t = torch.sigmoid(2 * _v(z)), torch.sigmoid(-2 * _v(z))
    q = _q(z)
    dq = 2 * q * (t - s) * _dv(z) + 2 * s * t * (6 * _C * _A * z)
    return 2 * q + z * dq


def _tail_scale(z):
    return 1 + z * z


def _tanh_scale(z):
    return 1 + 2 * _v(z).abs()


registry.add_rule(GELU, Smooth(gelu, dgelu, 0.7980, crit=(critical_point(dgelu, -1.0, -0.5),),
                               scale=lambda z: gelu(z).abs() * _tail_scale(z), deriv=GELU_DERIV, lip=1.12891))
registry.add_rule(GELU_DERIV, Smooth(dgelu, d2gelu, 0.7800, crit=(-math.sqrt(2), math.sqrt(2)),
                                     scale=lambda z: (_Phi(z) + (z * _phi(z)).abs()) * _tail_scale(z)))
registry.add_rule(GELU_TANH, Smooth(gelu_tanh, dgelu_tanh, 0.7980, crit=(critical_point(dgelu_tanh, -1.0, -0.5),),
                                    scale=lambda z: gelu_tanh(z).abs() * _tanh_scale(z), deriv=GELU_TANH_DERIV,
                                    lip=1.12900))
registry.add_rule(GELU_TANH_DERIV, Smooth(
    dgelu_tanh, d2gelu_tanh, 0.7780,
    crit=(critical_point(d2gelu_tanh, -2.0, -1.0), critical_point(d2gelu_tanh, 1.0, 2.0)),
    scale=lambda z: (torch.sigmoid(2 * _v(z)) + (z * _q(z)).abs()) * _tanh_scale(z)))


def _emit(b, n, args, kwargs, module):
    approx = module.approximate if module is not None else (args[1] if len(args) > 1 else
                                                           kwargs.get("approximate", "none"))
    b.emit(n, GELU_TANH if approx == "tanh" else GELU, [args[0]], {})


registry.layer("GELU (exact and tanh forms)", emit=_emit, modules=(nn.GELU,),
               functions=(F.gelu, torch.ops.aten.gelu.default), methods=(), lowers_to=(GELU, GELU_TANH),
               methods_note="all but exact (not piecewise linear)")
