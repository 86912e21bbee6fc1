"""Spellings of the ops that only move values: every reshape (flatten, view, unflatten, squeeze,
...), identities (Identity, Dropout in eval mode, dtype casts), indexing with slices, integers and
``None``, concatenation and stacking, permutations and transposes. They lower to the exact IR ops
``reshape``, ``slice``, ``concat`` and ``permute``.

A reshape is per sample: the batch dimension must come out as it went in (``x.view(-1, 784)`` on
a batch is fine; ``x.flatten()`` or ``x.squeeze()`` on a batch of one would mix it in and is refused).
"""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph import ops
from ..graph.emit import is_node, unsupported
from . import registry

_aten = torch.ops.aten


def _batch(n):
    return n.meta["tensor_meta"].shape[0]


def _input_batch(b):
    return next(p for p in b.gm.graph.nodes if p.op == "placeholder").meta["tensor_meta"].shape[0]


def _emit_reshape(b, n, args, kwargs, m):
    if not is_node(args[0]):
        raise unsupported(n, "reshape of a constant")
    if _batch(n) != _input_batch(b) or len(n.meta["tensor_meta"].shape) == 0:
        raise unsupported(n, "reshape across the batch dimension",
                          f"the output's first dimension ({_batch(n)}) is not the batch ({_input_batch(b)}): "
                          "reshape per sample, e.g. x.flatten(1) or x.view(x.shape[0], -1)")
    if b.shape(n) == b.shape_of(args[0]):
        b.alias_to(n, args[0])
    else:
        b.emit(n, ops.RESHAPE, [args[0]], {})


def _emit_identity(b, n, args, kwargs, m):
    b.alias_to(n, args[0])


registry.layer("Flatten / Unflatten / view / reshape / squeeze / unsqueeze", emit=_emit_reshape,
               modules=(nn.Flatten, nn.Unflatten),
               functions=(torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten,
                          _aten.view.default, _aten.reshape.default, _aten._unsafe_view.default,
                          _aten.unsqueeze.default, _aten.squeeze.dim, _aten.squeeze.dims, _aten.flatten.using_ints,
                          _aten.unflatten.int),
               methods=("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"),
               lowers_to=(ops.RESHAPE,))
registry.layer("Identity, Dropout (eval), contiguous / clone / detach / dtype casts", emit=_emit_identity,
               modules=(nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout),
               functions=(F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, _aten.dropout.default,
                          _aten.clone.default, _aten.alias.default),
               methods=("contiguous", "clone", "detach", "float", "double", "to", "type_as"), lowers_to=())


# --- indexing -------------------------------------------------------------------------------
def _emit_getitem(b, n, args, kwargs, m):
    x, index = args[0], n.args[1]
    if not is_node(x):
        raise unsupported(n, "indexing a constant")
    if not isinstance(index, tuple):
        index = (index,)
    index = tuple(b.value(i) if not isinstance(i, slice) else
                  slice(b.value(i.start), b.value(i.stop), b.value(i.step)) for i in index)
    if any(i is not None and i is not Ellipsis and not isinstance(i, (int, slice)) for i in index):
        raise unsupported(n, "getitem", "only indexing with ':' ranges, integers, None and ... is supported "
                                        "(no tensor indices)")
    shape = list(b.shape_of(x))
    nd = len(shape) + 1
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (nd - n_real) + index[k + 1:]
    index = tuple(i for i in index if i is not None)  # None only inserts size-1 dims: the final reshape does it
    index = index + (slice(None),) * (nd - len(index))
    first = index[0]
    if not (first == slice(None) or (isinstance(first, slice) and slice(*first.indices(_input_batch(b))) ==
                                     slice(0, _input_batch(b), 1))):
        raise unsupported(n, "getitem", "the batch dimension cannot be indexed")
    cur = x
    for dim, sl in enumerate(index[1:]):
        if sl == slice(None):
            continue
        if isinstance(sl, int):
            sl = slice(sl % shape[dim], sl % shape[dim] + 1, 1)
        start, stop, step = slice(sl.start, sl.stop, sl.step).indices(shape[dim])
        if step <= 0:
            raise unsupported(n, "getitem", "negative steps")
        shape[dim] = len(range(start, stop, step))
        cur = b.add(n, "s", ops.SLICE, [cur], {"dim": dim, "start": start, "stop": stop, "step": step}, tuple(shape))
    if tuple(shape) == b.shape(n) and cur != x:
        b.alias_to(n, cur)
    elif cur == x and tuple(shape) == b.shape(n):
        b.alias_to(n, x)
    else:
        b.emit(n, ops.RESHAPE, [cur], {})


registry.layer("indexing with slices, integers, None", emit=_emit_getitem, functions=(operator.getitem,),
               lowers_to=(ops.SLICE, ops.RESHAPE))


def _emit_aten_slice(b, n, args, kwargs, m):  # aten.slice.Tensor(x, dim, start, end, step)
    x, dim = args[0], args[1] if len(args) > 1 else 0
    start, end, step = (args[2] if len(args) > 2 else None), (args[3] if len(args) > 3 else None), \
        (args[4] if len(args) > 4 else 1)
    shape = b.shape_of(x)
    if dim % (len(shape) + 1) == 0:
        raise unsupported(n, "slice", "the batch dimension cannot be sliced")
    d = dim % (len(shape) + 1) - 1
    s0, s1, st = slice(start, min(end, 2 ** 62) if end is not None else None, step).indices(shape[d])
    b.emit(n, ops.SLICE, [x], {"dim": d, "start": s0, "stop": s1, "step": st})


registry.layer("slice (ATen graphs)", emit=_emit_aten_slice, functions=(_aten.slice.Tensor,), lowers_to=(ops.SLICE,))


# --- concatenation --------------------------------------------------------------------------
def _emit_cat(stack):
    def emit(b, n, args, kwargs, m):
        parts = list(args[0] if args else kwargs["tensors"])
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not all(is_node(p) for p in parts):
            raise unsupported(n, "cat/stack of constants", "every part must depend on the input")
        ndim = len(b.shape(n))
        dim = dim % (ndim + 1)
        if dim == 0:
            raise unsupported(n, "cat/stack along the batch dimension")
        if stack:
            ins = []
            fx_parts = n.args[0] if n.args else n.kwargs["tensors"]
            for p, fp in zip(parts, fx_parts):
                shp = list(fp.meta["tensor_meta"].shape[1:])
                shp.insert(dim - 1, 1)
                ins.append(b.add(n, "u", ops.RESHAPE, [p], {}, tuple(shp)))
            parts = ins
        if len(parts) == 1:
            b.alias_to(n, parts[0])
        else:
            b.emit(n, ops.CONCAT, parts, {"dim": dim - 1})
    return emit


registry.layer("cat", emit=_emit_cat(False), functions=(torch.cat, torch.concat, _aten.cat.default),
               lowers_to=(ops.CONCAT,))
registry.layer("stack", emit=_emit_cat(True), functions=(torch.stack, _aten.stack.default),
               lowers_to=(ops.CONCAT, ops.RESHAPE))


# --- permutations ---------------------------------------------------------------------------
def _permute_node(b, n, x, dims):
    nd = len(b.shape_of(x)) + 1
    dims = [d % nd for d in dims]
    if dims[0] != 0:
        raise unsupported(n, "permute", "the batch dimension must stay first")
    per = tuple(d - 1 for d in dims[1:])
    if per == tuple(range(len(per))):
        b.alias_to(n, x)
    else:
        b.emit(n, ops.PERMUTE, [x], {"dims": per})


def _emit_permute(b, n, args, kwargs, m):
    dims = args[1:] if len(args) > 2 or (len(args) == 2 and isinstance(args[1], int)) else \
        (args[1] if len(args) > 1 else kwargs["dims"])
    _permute_node(b, n, args[0], list(dims))


def _emit_transpose(b, n, args, kwargs, m):
    x, d0, d1 = args[0], args[1], args[2]
    nd = len(b.shape_of(x)) + 1
    dims = list(range(nd))
    dims[d0 % nd], dims[d1 % nd] = dims[d1 % nd], dims[d0 % nd]
    _permute_node(b, n, x, dims)


registry.layer("permute", emit=_emit_permute, functions=(torch.permute, _aten.permute.default),
               methods=("permute",), lowers_to=(ops.PERMUTE,))
registry.layer("transpose", emit=_emit_transpose, functions=(torch.transpose, _aten.transpose.int),
               methods=("transpose",), lowers_to=(ops.PERMUTE,))
