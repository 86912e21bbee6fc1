"""Ops with jumps: no Lipschitz constant exists on any region that contains a jump, so lipcert
refuses them by name with the reason (instead of calling them unsupported)."""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph import ops
from . import registry

STEP = "is discontinuous (a step function): no Lipschitz constant exists on a region that contains a jump"


def _hardshrink_emit(b, n, args, kwargs, m):
    lam = m.lambd if m is not None else (args[1] if len(args) > 1 else kwargs.get("lambd", 0.5))
    if lam != 0:
        from ..graph.emit import unsupported
        raise unsupported(n, f"Hardshrink(lambd={lam})", f"Hardshrink with lambd != 0 jumps by lambd at +-lambd; it {STEP}",
                          refused=True)
    b.alias_to(n, args[0])


def _threshold_emit(b, n, args, kwargs, m):
    th = m.threshold if m is not None else args[1]
    value = m.value if m is not None else args[2]
    if th != value:
        from ..graph.emit import unsupported
        raise unsupported(n, f"Threshold({th}, {value})", f"Threshold with value != threshold jumps at the threshold; "
                                                          f"it {STEP}", refused=True)
    from .piecewise_layers import clamp_nodes
    clamp_nodes(b, n, args[0], torch.tensor(float(th), dtype=torch.float64), None)


registry.layer("Hardshrink (only lambd = 0)", emit=_hardshrink_emit, modules=(nn.Hardshrink,),
               functions=(F.hardshrink,), lowers_to=())
registry.layer("Threshold (only value = threshold)", emit=_threshold_emit, modules=(nn.Threshold,),
               functions=(F.threshold,), lowers_to=(ops.RELU,))
registry.layer("sign, round, floor, ceil, trunc, heaviside, comparisons (refused)", refuse=f"the op {STEP}",
               functions=(torch.sign, torch.sgn, torch.round, torch.floor, torch.ceil, torch.trunc, torch.heaviside,
                          torch.gt, torch.lt, torch.ge, torch.le, torch.eq, torch.ne, torch.argmax, torch.argmin,
                          operator.gt, operator.lt, operator.ge, operator.le, operator.eq, operator.ne),
               methods=("sign", "sgn", "round", "floor", "ceil", "trunc", "heaviside", "gt", "lt", "ge", "le", "eq",
                        "ne", "argmax", "argmin"))
