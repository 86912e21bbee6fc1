"""Batches of BaB domains, stored as arrays (one row per domain).

A domain is an input box, ReLU split decisions (+1: ``z >= 0``, -1: ``z <= 0``, 0: free) per
forward pre-activation feeding a (leaky) ReLU, the spec row (output class) it bounds, its upper
bound, and its forward-node bounds (children intersect theirs with them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rules import Interval


@dataclass
class Domains:
    lo: torch.Tensor            # [D, *in]
    up: torch.Tensor            # [D, *in]
    splits: dict                # name -> int8 [D, *shape]
    cls: torch.Tensor           # [D] long
    ub: torch.Tensor            # [D]
    fwd: dict                   # name -> Interval [D, ...]
    score_relu: torch.Tensor    # [D] best ReLU branching score (-inf: none unstable)
    pick_relu: torch.Tensor     # [D, 2] (node index, flat position) of the best ReLU split
    score_input: torch.Tensor   # [D] best input branching score
    pick_input: torch.Tensor    # [D] flat input dimension to bisect
    n_free: torch.Tensor        # [D] number of unstable, unsplit neurons

    def __len__(self):
        return self.cls.shape[0]

    def take(self, idx: torch.Tensor) -> "Domains":
        return Domains(self.lo[idx], self.up[idx], {k: v[idx] for k, v in self.splits.items()}, self.cls[idx],
                       self.ub[idx], {k: Interval(v.lower[idx], v.upper[idx]) for k, v in self.fwd.items()},
                       self.score_relu[idx], self.pick_relu[idx], self.score_input[idx], self.pick_input[idx],
                       self.n_free[idx])

    @staticmethod
    def cat(parts: list) -> "Domains":
        given = [p for p in parts if p is not None]
        parts = [p for p in given if len(p) > 0]
        if len(parts) <= 1:
            return parts[0] if parts else given[0]  # all empty: an empty batch
        f = parts[0]
        return Domains(torch.cat([p.lo for p in parts]), torch.cat([p.up for p in parts]),
                       {k: torch.cat([p.splits[k] for p in parts]) for k in f.splits}, torch.cat([p.cls for p in parts]),
                       torch.cat([p.ub for p in parts]),
                       {k: Interval(torch.cat([p.fwd[k].lower for p in parts]), torch.cat([p.fwd[k].upper for p in parts]))
                        for k in f.fwd},
                       torch.cat([p.score_relu for p in parts]), torch.cat([p.pick_relu for p in parts]),
                       torch.cat([p.score_input for p in parts]), torch.cat([p.pick_input for p in parts]),
                       torch.cat([p.n_free for p in parts]))
