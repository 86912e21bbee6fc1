"""Loading models and inputs from files, without running code from them unless asked.

Models (see :func:`load`): ``.onnx`` (imported as a ``torch.fx`` graph of
torch functions, :mod:`lipcert.graph.onnx_import`),
``.pt2`` (``torch.export.save``; the archive is vetted, :mod:`lipcert.exported`), weights without
code (a ``state_dict`` ``.pt``/``.pth`` or a ``.safetensors`` file, plus the model's class,
:mod:`lipcert.loading`), ``zoo:NAME``, or an ``nn.Module``. A pickled whole module loads only
with ``trust_pickle=True``.
Inputs: ``.npy``, ``.pt``/``.pth`` (a tensor), ``.csv`` (one sample per row, no header).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .errors import InvalidInput, InvalidModel


def file_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def load(model, *, model_class=None, model_args=None, trust_pickle: bool = False) -> nn.Module:
    """An ``nn.Module`` from a model file, ``zoo:NAME``, an ``ExportedProgram`` or a module.

    Safe by default: no code from the file runs.

    - ``.onnx``: an ONNX graph.
    - ``.pt2``: a ``torch.export`` program (``torch.export.save``), as ``ep.module()``.
    - ``.pt``/``.pth``/``.bin`` holding a ``state_dict``, or ``.safetensors``: weights; the code
      comes from ``model_class`` (a class, or ``"pkg.module:Class"``) called with ``model_args``
      (a dict or a JSON object string); the weights are loaded strictly.
    - a ``.pt`` holding a pickled module (``torch.save(model)``): refused with
      :class:`InvalidModel` before any of its code runs, unless ``trust_pickle=True``, which
      unpickles it (and says so on stderr).

    Args:
        model: a path (str or PathLike), ``"zoo:NAME"``, a ``torch.export.ExportedProgram`` or an
            ``nn.Module`` (returned as given).
        model_class: the model's class for a weights file.
        model_args: keyword arguments of ``model_class``.
        trust_pickle: allow unpickling the file (runs code from it).
    Returns:
        The module, in eval mode when it was loaded from a file.
    """
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, torch.export.ExportedProgram):
        from .exported import unlift
        return unlift(model)
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidInput(f"model must be an nn.Module, a path or 'zoo:NAME', not {type(model).__name__}")
    s = os.fspath(model)
    if s.startswith("zoo:"):
        from . import zoo
        return zoo.load_model(s[4:])
    p = Path(s)
    if not p.exists():
        raise InvalidInput(f"model file not found: {s}")
    if p.is_dir():
        raise InvalidInput(f"model path is a folder, not a file: {s}")
    suffix = p.suffix.lower()
    if model_class is not None and suffix in (".onnx", ".pt2"):
        raise InvalidInput(f"model_class is for weights files (.pt state_dict, .safetensors); {s} carries its graph")
    if suffix == ".onnx":
        return load_onnx(p)
    if suffix == ".pt2":
        from .exported import load_exported
        return load_exported(p, trust=trust_pickle)
    from . import loading
    if suffix == ".safetensors":
        return loading.load_safetensors(p, model_class=model_class, model_args=model_args)
    return loading.load_torch_file(p, model_class=model_class, model_args=model_args, trust=trust_pickle)


def load_onnx(path) -> nn.Module:
    """ONNX -> an eval-mode ``torch.fx.GraphModule`` (:func:`lipcert.graph.onnx_import.onnx_to_module`);
    nodes it cannot import raise UnsupportedOperation naming every one of them."""
    import onnx

    from .graph.onnx_import import onnx_to_module
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise InvalidModel(f"cannot read ONNX file {path}: {e}") from e
    return onnx_to_module(model)


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
