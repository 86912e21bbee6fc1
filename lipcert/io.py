"""Loading models and inputs from files.

Models: ``.onnx`` (converted by onnx2torch into the same capture path), a whole module saved with
``torch.save(model)`` (``.pt``/``.pth``), or ``zoo:NAME`` for a zoo model.
Inputs: ``.npy``, ``.pt``/``.pth`` (a tensor), ``.csv`` (one sample per row, no header).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .errors import InvalidInput, InvalidModel, UnsupportedOperation


def file_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def load(path) -> nn.Module:
    """An eval-mode ``nn.Module`` from an ONNX file, a ``torch.save`` file, or ``zoo:NAME``."""
    s = str(path)
    if s.startswith("zoo:"):
        from . import zoo
        return zoo.load_model(s[4:])
    p = Path(s)
    if not p.exists():
        raise InvalidInput(f"model file not found: {s}")
    if p.suffix.lower() == ".onnx":
        return load_onnx(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InvalidModel(f"cannot read {s} as a torch.save file: {e}") from e
    if isinstance(obj, dict):
        raise InvalidModel(f"{s} holds a state_dict, not a model: save the whole module (torch.save(model)) "
                           "or export it to ONNX")
    if not isinstance(obj, nn.Module):
        raise InvalidModel(f"{s} holds a {type(obj).__name__}, not an nn.Module")
    return obj.eval()


def load_onnx(path) -> nn.Module:
    """ONNX -> torch through onnx2torch; ops it cannot convert raise UnsupportedOperation naming
    the ONNX node."""
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as e:  # pragma: no cover
        raise UnsupportedOperation([("onnx", "import")], detail=f"install the onnx extra: pip install lipcert[onnx] ({e})")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise InvalidModel(f"cannot read ONNX file {path}: {e}") from e
    try:
        net = convert(model)
    except Exception as first:
        try:  # newer opsets than onnx2torch knows: convert the model down first
            from onnx import version_converter
            net = convert(version_converter.convert_version(model, 17))
        except Exception:
            bad = _unconvertible_nodes(model)
            raise UnsupportedOperation(bad or [("onnx", str(path))],
                                       detail=f"onnx2torch could not convert it: {first}") from first
    return net.eval()


def _unconvertible_nodes(model) -> list:
    try:
        from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY  # noqa: F401
        known = {k.operation_type for k in _CONVERTER_REGISTRY}
    except Exception:
        return []
    return [(n.name or n.output[0], n.op_type) for n in model.graph.node if n.op_type not in known]


def load_input(path) -> torch.Tensor:
    """A tensor from ``.npy``, ``.pt``/``.pth`` or ``.csv``."""
    p = Path(str(path))
    if not p.exists():
        raise InvalidInput(f"input file not found: {path}")
    suf = p.suffix.lower()
    try:
        if suf == ".npy":
            x = torch.from_numpy(np.load(p, allow_pickle=False))
        elif suf in (".pt", ".pth"):
            x = torch.load(p, map_location="cpu", weights_only=True)
        elif suf == ".csv":
            x = torch.from_numpy(np.loadtxt(p, delimiter=",", ndmin=2))
            if x.shape[0] == 1:
                x = x[0]
        else:
            raise InvalidInput(f"unknown input format {suf!r}: use .npy, .pt or .csv")
    except InvalidInput:
        raise
    except Exception as e:
        raise InvalidInput(f"cannot read input {path}: {e}") from e
    if not isinstance(x, torch.Tensor):
        raise InvalidInput(f"{path} does not hold a tensor")
    return x.float() if x.dtype == torch.float64 else x


def model_hash(model, path=None) -> str:
    """A stable hash of a model: the file's, or of its parameters and buffers."""
    if path is not None and os.path.exists(str(path)):
        return file_hash(path)
    h = hashlib.sha256()
    for name, t in sorted(list(model.state_dict().items())):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()
