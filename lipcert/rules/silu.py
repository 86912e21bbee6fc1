"""SiLU (swish), ``f(z) = z sigmoid(z)``.

Non-monotone: minimum at ``z* ~ -1.2785``; ``f' = s (1 + z (1 - s))`` ranges over
``[-0.0998, 1.0998]`` with extremes at ``+-2.3994`` (the zeros of ``f''``). Constants (checked
against dense sampling in ``tests/test_activations.py``): ``sup |f''| = 1/2`` (at 0),
``sup |f'''| = 0.30818``, ``sup |f'| = 1.099839``. ``f'`` has one zero (``f' < 0`` exactly where
``z (1 - s) < -1``, an interval of the left half-line) and ``f''`` two. Products and sums of
sigmoids, each accurate to a few ulps: the term scale is ``|f|`` and ``s + |z| s (1 - s)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import registry
from .smooth import Smooth, critical_point

SILU, SILU_DERIV = "silu", "silu_deriv"


def silu(z):
    return z * torch.sigmoid(z)


def dsilu(z):
    return torch.sigmoid(z) + z * torch.sigmoid(z) * torch.sigmoid(-z)


def d2silu(z):
    s, t = torch.sigmoid(z), torch.sigmoid(-z)
    return s * t * (2 + z * (t - s))


registry.add_rule(SILU, Smooth(silu, dsilu, 0.5001, crit=(critical_point(dsilu, -2.0, -1.0),), deriv=SILU_DERIV,
                               lip=1.09984))
registry.add_rule(SILU_DERIV, Smooth(
    dsilu, d2silu, 0.3090, crit=(critical_point(d2silu, -3.0, -2.0), critical_point(d2silu, 2.0, 3.0)),
    scale=lambda z: torch.sigmoid(z) + (z * torch.sigmoid(z) * torch.sigmoid(-z)).abs()))


def _emit(b, n, args, kwargs, module):
    b.emit(n, SILU, [args[0]], {})


registry.layer("SiLU / swish", emit=_emit, modules=(nn.SiLU,), functions=(F.silu, torch.ops.aten.silu.default),
               lowers_to=(SILU,), methods_note="all but exact (not piecewise linear)")
