"""ATen spellings of the ops capture knows, for graphs that come out of ``torch.export``
(``.pt2`` files, ``ep.module()``): each ``torch.ops.aten.<op>.<overload>`` call whose arguments
mean the same as a ``torch``/``F`` function's is renamed to that function before capture reads
the graph. Only overloads whose positional arguments match one for one are listed; anything
else stays an ATen op and is reported as unsupported by name.

(This is the bridge until capture is keyed on ATen ops itself: DESIGN.md sections 5-6.)
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

_aten = torch.ops.aten

SAME_ARGS = {
    _aten.linear.default: F.linear,                  # (input, weight, bias)
    _aten.conv2d.default: F.conv2d,                  # (input, weight, bias, stride, padding, dilation, groups)
    _aten.relu.default: torch.relu,
    _aten.tanh.default: torch.tanh,
    _aten.sigmoid.default: torch.sigmoid,
    _aten.leaky_relu.default: F.leaky_relu,          # (input, negative_slope)
    _aten.flatten.using_ints: torch.flatten,         # (input, start_dim, end_dim)
    _aten.view.default: torch.reshape,               # (input, size): same values for a view
    _aten.reshape.default: torch.reshape,
    _aten.avg_pool2d.default: F.avg_pool2d,          # (input, kernel, stride, padding, ceil, count_pad, divisor)
    _aten.dropout.default: F.dropout,                # (input, p, train): exported in eval mode, train=False
    _aten.mul.Tensor: operator.mul,
    _aten.div.Tensor: operator.truediv,
    _aten.neg.default: operator.neg,
}
WITH_ALPHA = {_aten.add.Tensor: operator.add, _aten.sub.Tensor: operator.sub}  # (x, y, *, alpha=1)


def rewrite(gm: fx.GraphModule) -> None:
    """Rename, in place, the ATen calls of ``gm`` that have a same-argument torch function."""
    changed = False
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        if n.target in SAME_ARGS and not n.kwargs:
            n.target = SAME_ARGS[n.target]
            changed = True
        elif n.target in WITH_ALPHA and n.kwargs.get("alpha", 1) == 1:
            n.target = WITH_ALPHA[n.target]
            n.kwargs = {}
            changed = True
    if changed:
        gm.recompile()
