"""Activations of Lipschitz networks, as modules users put in their models.

Both are 1-Lipschitz and gradient-norm preserving; lipcert captures them (torch and ONNX) as
slices, ``max``/``min`` of pairs and a concatenation, and bounds ``max(a, b) = b + relu(a - b)``,
``min(a, b) = a - relu(a - b)`` with one ReLU per pair (exact identities), so the forward
relaxation, the gradient (a permutation at ``a != b``, the Clarke set at ties), BaB splits and the
exact MILP all come from the ReLU rules.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class MaxMin(nn.Module):
    """Split the features/channels (dim 1) into halves ``a, b``; return ``cat(max(a, b), min(a, b))``."""

    def forward(self, x):
        n = x.shape[1] // 2
        a = x[:, :n]
        b = x[:, n:]
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class GroupSort(nn.Module):
    """GroupSort with groups of 2 adjacent features/channels (dim 1), each sorted descending:
    ``(x0, x1, x2, x3, ...) -> (max(x0, x1), min(x0, x1), max(x2, x3), ...)``."""

    def __init__(self, group_size: int = 2):
        super().__init__()
        if group_size != 2:
            raise ValueError("lipcert supports GroupSort with group_size 2 (MaxMin pairs)")
        self.group_size = group_size

    def forward(self, x):
        a = x[:, 0::2]
        b = x[:, 1::2]
        pair = torch.stack([torch.maximum(a, b), torch.minimum(a, b)], dim=2)
        return pair.flatten(1, 2)
