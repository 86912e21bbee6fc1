"""``torch.export`` programs (``.pt2`` files written by ``torch.export.save``), loaded without
running code from the file.

``torch.export.load`` is not safe on an untrusted file by itself: an archive may hold pickled
weights or constants (fully unpickled by torch), opaque objects (``pickle.loads``),
AOTInductor shared libraries (loaded with ``dlopen``), sample inputs that fall back to a full
unpickle when the safe one fails, symbolic shape expressions that are parsed with
``sympy.sympify`` (which calls ``eval``), and graph nodes whose target is any attribute of
``torch`` / ``operator`` (run when the module runs). So the archive is read once into memory and
vetted before ``torch.export.load`` sees those same bytes: only raw tensor payloads, sample
inputs that load with ``weights_only=True``, graphs whose node targets are ATen ops, arithmetic
``operator`` functions, ``math`` functions or ``torch.sym_*``, and shape expressions written with symbol names, numbers, arithmetic and a fixed list of sympy
functions pass. Anything else is refused with :class:`InvalidModel` unless the caller trusts the
file (``trust_pickle=True``).
"""
from __future__ import annotations

import io
import json
import re
import sys
import zipfile

import torch
import torch.nn as nn

from .errors import InvalidModel

# layout of a PT2 archive, relative to its top folder (torch/export/pt2_archive/constants.py)
_FIXED_FILES = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_ALLOWED_DIRS = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")

# graph targets that cannot reach the file system, the interpreter or an object's attributes
_OPERATOR_OK = {"add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "getitem",
                "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift",
                "matmul"}
_TARGET_OK = re.compile(r"^(torch\.ops\.aten\.\w+(\.\w+)?|math\.\w+|torch\.(sym_\w+|_sym_\w+))$")

# shape expressions: sympy.sympify(...) evaluates them with eval, so only these names may appear
_SYMPY_OK = {"Symbol", "Integer", "Rational", "Float", "Max", "Min", "Mod", "Abs", "Eq", "Ne", "Lt", "Le", "Gt",
             "Ge", "And", "Or", "Not", "Piecewise", "floor", "ceiling", "sqrt", "oo", "zoo", "nan", "True",
             "False", "None", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
             "FloorToInt", "CeilDiv", "LShift", "RShift", "IsNonOverlappingAndDenseIndicator", "TruncToFloat",
             "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural", "FloatTrueDiv",
             "IntTrueDiv", "Identity", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor",
             "OpaqueUnaryFn_sqrt", "OpaqueUnaryFn_exp", "OpaqueUnaryFn_log",
             # keyword arguments of Symbol(...)
             "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "infinite"}
_EXPR_TOKEN = re.compile(r"\s+|'[A-Za-z_][A-Za-z0-9_]*'|[A-Za-z_][A-Za-z0-9_]*|\d+(\.\d*)?(e[+-]?\d+)?"
                         r"|\*\*|//|<=|>=|==|!=|[-+*/%()<>,=&|~]")
_SYMBOL_NAME = re.compile(r"^[a-z]+\d+$")       # s0, s31, u2, ...: ends in digits, no builtin does


def load_exported(path, *, trust: bool = False) -> nn.Module:
    """An eval-mode ``nn.Module`` (``ExportedProgram.module()``) from a ``torch.export.save`` file.

    The archive is vetted first (see the module docstring); one that could run code is refused,
    or with ``trust`` loaded anyway (saying so on stderr).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        vet_archive(data, str(path))
    except InvalidModel:
        if not trust:
            raise
        print(f"lipcert: --trust-pickle: loading {path} with torch.export.load unvetted; the file's code was "
              f"allowed to run", file=sys.stderr)
    try:
        ep = torch.export.load(io.BytesIO(data))
    except Exception as e:
        raise InvalidModel(f"cannot read {path} as a torch.export program: {type(e).__name__}: {e}") from e
    return unlift(ep, str(path))


def unlift(ep, name: str = "the exported program") -> nn.Module:
    """``ep.module()`` without its shape guards, in eval mode.

    An exported graph is fixed at export time: ``eval()`` cannot change it, so a graph recorded in
    training mode (an op called with ``train=True`` / ``training=True``: dropout, batch norm) is
    refused. The ``_guards_fn`` submodule is left out (it only re-asserts shapes); the module still
    checks its input against the export's shape constraints when it runs, so a program exported
    with a fixed batch size takes one input at a time (export with
    ``dynamic_shapes=({0: torch.export.Dim("batch")},)`` for batches).
    """
    for n in ep.graph.nodes:
        schema = getattr(n.target, "_schema", None)
        if n.op != "call_function" or schema is None:
            continue
        for i, a in enumerate(schema.arguments):
            if a.name in ("train", "training"):
                v = n.kwargs.get(a.name, n.args[i] if i < len(n.args) else None)
                if v is True:
                    raise InvalidModel(f"{name} was exported in training mode (node {n.name}: {n.target} with "
                                       f"{a.name}=True): call model.eval() before torch.export.export")
    try:
        gm = ep.module(check_guards=False)
    except TypeError:  # older torch: no check_guards argument
        gm = ep.module()
    for m in gm.modules():  # GraphModule.eval() raises for exported programs; the graph is already eval
        m.training = False
    return gm


def vet_archive(data: bytes, name: str) -> None:
    """Raise :class:`InvalidModel` unless the PT2 archive ``data`` can be loaded without running
    code from it."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        names = [n for n in z.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile as e:
        raise InvalidModel(f"{name} is not a torch.export archive (.pt2 zip file): {e}") from None
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or any("/" not in n for n in names):
        raise InvalidModel(f"{name} is not a torch.export archive (one top folder expected)")
    top = tops.pop() + "/"
    rel = [n[len(top):] for n in names]
    if "archive_version" not in rel or not any(r.startswith("models/") for r in rel):
        raise _refuse(name, "an old or unknown archive layout (torch.export.load would unpickle it)")
    for r in rel:
        if r not in _FIXED_FILES and not r.startswith(_ALLOWED_DIRS):
            raise _refuse(name, f"the entry {r!r} (compiled code or an unknown payload)")
        if r.startswith(("data/weights/", "data/constants/")) and r.endswith(".pt"):
            raise _refuse(name, f"pickled weights ({r})")
    for r in rel:
        blob = z.read(top + r)
        if r.endswith("_weights_config.json") or r.endswith("_constants_config.json"):
            _vet_payloads(_json(blob, name, r), name, r)
        elif r.startswith("data/sample_inputs/"):
            try:
                torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            except Exception as e:  # torch.export.load would retry with a full unpickle
                raise _refuse(name, f"sample inputs that are not plain tensors ({r}: {_short(e)})") from None
        elif r.startswith("models/"):
            _vet_graph(_json(blob, name, r), name)


def _json(blob, name, r):
    try:
        return json.loads(blob)
    except ValueError as e:
        raise InvalidModel(f"{name}: {r} is not valid JSON: {e}") from None


def _vet_payloads(cfg, name, r):
    for fqn, meta in (cfg.get("config") or {}).items() if isinstance(cfg, dict) else []:
        if not isinstance(meta, dict) or meta.get("use_pickle"):
            raise _refuse(name, f"a pickled payload for {fqn!r} ({r})")
        if "constants" in r and not str(meta.get("path_name", "")).startswith("tensor_"):
            raise _refuse(name, f"a non-tensor constant {fqn!r} ({meta.get('path_name')})")


def _vet_graph(tree, name):
    stack = [tree]
    while stack:
        t = stack.pop()
        if isinstance(t, list):
            stack.extend(t)
        elif isinstance(t, dict):
            for k, v in t.items():
                if k in ("target", "as_operator") and isinstance(v, str):
                    _vet_target(v, name)
                elif k == "expr_str" and isinstance(v, str):
                    _vet_expr(v, name)
                elif isinstance(v, (dict, list)):
                    stack.append(v)


def _vet_target(target: str, name):
    if _TARGET_OK.match(target):
        return
    if target.startswith("_operator.") and target[len("_operator."):] in _OPERATOR_OK:
        return
    raise _refuse(name, f"a graph node calling {target!r} (lipcert only runs ATen ops and arithmetic)")


def _vet_expr(expr: str, name):
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        if m is None:
            raise _refuse(name, f"the shape expression {expr[:80]!r}")
        tok = m.group(0)
        if (tok[0].isalpha() or tok[0] == "_") and tok not in _SYMPY_OK and not _SYMBOL_NAME.match(tok):
            raise _refuse(name, f"the name {tok!r} in the shape expression {expr[:80]!r}")
        pos = m.end()


def _short(e):
    return (str(e).splitlines() or [type(e).__name__])[0][:160]


def _refuse(name, what) -> InvalidModel:
    return InvalidModel(f"{name}: refused to load a torch.export archive holding {what}, which could run code "
                        f"from the file; re-export the model with torch.export.save (plain tensors only), save it "
                        f"as ONNX, or pass --trust-pickle (trust_pickle=True) if you trust the file")
