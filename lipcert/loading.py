"""Model files that hold weights without code (``state_dict`` ``.pt``/``.pth``, ``.safetensors``)
and, only when the caller trusts the file, whole pickled modules.

A ``.pt`` file is always opened with ``torch.load(weights_only=True)`` first: that unpickler only
rebuilds tensors and plain containers and refuses any other global *before* calling it, so a file
that would run code is refused before any of its code runs. Only ``trust=True`` unpickles it fully.
"""
from __future__ import annotations

import importlib
import json
import pickle
import re
import sys

import torch
import torch.nn as nn

from .errors import InvalidInput, InvalidModel

SAFE_FORMATS = ("export it with torch.export.save(torch.export.export(model, (x,)), 'model.pt2'), "
                "or torch.onnx.export(model, x, 'model.onnx'), or save the weights "
                "(torch.save(model.state_dict(), 'model.pt') or a .safetensors file) and pass the class with "
                "--model-class pkg.module:Class (model_class= in the API)")


def load_torch_file(path, *, model_class=None, model_args=None, trust: bool = False) -> nn.Module:
    """An eval-mode module from a ``torch.save`` file: a ``state_dict`` (with ``model_class``), or,
    with ``trust``, a pickled module."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if trust:
            return _load_pickle_trusted(path)
        if "global" in str(e).lower():   # the safe unpickler met a class or function: code would run
            raise InvalidModel(f"{path} holds pickled Python objects{_globals_named(e)}, not only tensors: loading "
                               f"it would run code from the file, so lipcert refused it (nothing from it ran). "
                               f"Use a safe format: {SAFE_FORMATS}; or pass --trust-pickle (trust_pickle=True) "
                               f"if you trust the file") from None
        raise InvalidModel(f"cannot read {path} as a torch.save file of tensors (the safe unpickler stopped: "
                           f"{_reason(e)}; nothing from it ran); if it is a pickled module you trust, pass "
                           f"--trust-pickle (trust_pickle=True)") from None
    except Exception as e:
        raise InvalidModel(f"cannot read {path} as a torch.save file: {type(e).__name__}: {_first(e)}") from None
    state = state_dict_of(obj)
    if state is None:
        raise InvalidModel(f"{path} holds a {type(obj).__name__}, neither a state_dict (names -> tensors) nor a model")
    if model_class is None:
        raise InvalidModel(f"{path} holds a state_dict (weights without the model's code): pass the model's class "
                           f"with --model-class pkg.module:Class [--model-args JSON] (model_class=, model_args= in "
                           f"the API), or export the model (torch.export.save) or save it as ONNX")
    return build(model_class, model_args, state, str(path))


def load_safetensors(path, *, model_class=None, model_args=None) -> nn.Module:
    """An eval-mode module from a ``.safetensors`` file and the model's class."""
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - a dependency
        raise InvalidModel("reading .safetensors needs the safetensors package: pip install safetensors") from None
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:
        raise InvalidModel(f"cannot read {path} as a safetensors file: {type(e).__name__}: {_first(e)}") from None
    if model_class is None:
        raise InvalidModel(f"{path} holds weights without the model's code: pass the model's class with "
                           f"--model-class pkg.module:Class [--model-args JSON] (model_class=, model_args= in the API)")
    return build(model_class, model_args, state, str(path))


def state_dict_of(obj):
    """``obj`` as a ``{name: tensor}`` dict, also from a checkpoint ``{"state_dict": {...}, ...}``;
    None when it is neither."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    return None


def resolve_class(model_class):
    """The callable named by ``"pkg.module:Class"`` (or ``"pkg.module.Class"``), or ``model_class``
    itself when it is already callable."""
    if callable(model_class):
        return model_class
    if not isinstance(model_class, str) or not re.fullmatch(r"[\w.]+(:[\w.]+)?", model_class.strip()):
        raise InvalidInput(f"model_class must be a class or 'pkg.module:Class', got {model_class!r}")
    spec = model_class.strip()
    mod_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not mod_name or not attr:
        raise InvalidInput(f"model_class must name a module and a class, 'pkg.module:Class', got {spec!r}")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise InvalidInput(f"model_class {spec!r}: cannot import {mod_name!r}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidInput(f"model_class {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InvalidInput(f"model_class {spec!r} is a {type(obj).__name__}, not a class")
    return obj


def parse_model_args(model_args) -> dict:
    """Keyword arguments for the model's class: a dict, a JSON object string, or None."""
    if model_args is None:
        return {}
    if isinstance(model_args, str):
        try:
            model_args = json.loads(model_args)
        except ValueError as e:
            raise InvalidInput(f"--model-args must be a JSON object, e.g. '{{\"hidden\": 64}}': {e}") from None
    if not isinstance(model_args, dict):
        raise InvalidInput(f"model_args must be a JSON object / dict of keyword arguments, got "
                           f"{type(model_args).__name__}")
    return model_args


def build(model_class, model_args, state: dict, name: str) -> nn.Module:
    """``model_class(**model_args)`` with ``state`` loaded strictly, in eval mode."""
    cls = resolve_class(model_class)
    kwargs = parse_model_args(model_args)
    try:
        model = cls(**kwargs)
    except Exception as e:
        raise InvalidModel(f"{_name(cls)}(**{kwargs}) failed: {type(e).__name__}: {_first(e)}") from None
    if not isinstance(model, nn.Module):
        raise InvalidModel(f"{_name(cls)}(**{kwargs}) returned a {type(model).__name__}, not an nn.Module")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise InvalidModel(f"the weights in {name} do not fit {_name(cls)}: missing keys {_few(missing)}, "
                           f"unexpected keys {_few(unexpected)}")
    wrong = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise InvalidModel(f"the weights in {name} do not fit {_name(cls)}: shape mismatch {_few(wrong)} "
                           f"(file vs model; check --model-args)")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:
        raise InvalidModel(f"cannot load the weights in {name} into {_name(cls)}: {_first(e)}") from None
    return model.eval()


def _load_pickle_trusted(path) -> nn.Module:
    """The one place a model file is fully unpickled; only reached with trust_pickle=True."""
    print(f"lipcert: --trust-pickle: unpickling {path}; the file's code was allowed to run", file=sys.stderr)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # trust_pickle=True: the caller trusts it
    except Exception as e:
        raise InvalidModel(f"cannot unpickle {path}: {type(e).__name__}: {_first(e)}") from None
    if not isinstance(obj, nn.Module):
        raise InvalidModel(f"{path} holds a {type(obj).__name__}, not an nn.Module")
    return obj.eval()


def _globals_named(e) -> str:
    found = re.findall(r"GLOBAL ([\w.]+)", str(e))
    return f" (it names {', '.join(dict.fromkeys(found))})" if found else ""


def _reason(e) -> str:
    text = str(e)
    tail = text.split("WeightsUnpickler error:", 1)[-1]
    return next((line.strip() for line in tail.splitlines() if line.strip()), type(e).__name__)[:200]


def _few(keys, n=5):
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _name(cls):
    return getattr(cls, "__qualname__", None) or repr(cls)


def _first(e):
    return (str(e).splitlines() or [""])[0]
