"""The op registry: the one place everything else loops over.

Two tables, filled by the op files of this package (one file per op family, each with its
relaxation, gradient rule, constant and spellings together):

* ``RULES``: IR op name -> rule (``LinearRule`` / ``NonlinearRule``). A rule carries the op's
  forward, IBP, relaxation (or exact backward), its gradient rule (``gradient``: the nodes the
  gradient graph emits for it) and its region-free Lipschitz constant (``lipschitz``: the naive
  bound's factor, None when the op has none).
* ``LAYERS``: what users write (``nn.GELU``, ``F.gelu``, ``x.gelu()``, ``aten.gelu``) -> an
  emitter that turns one torch.fx node into IR nodes. A layer may lower to several IR ops (ReLU6
  is ``c + relu(x - a) - relu(x - b)``; max pooling is gathers and a tree of pairwise maxima),
  so what BaB, the MILP and the gradient graph know about the IR ops covers it.

Capture, ``lipcert check``, the gradient graph, the naive bound and the README's table of
supported layers read these tables; nothing else spells an op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

RULES: dict = {}
LAYERS: list = []
_BY_MODULE: dict = {}
_BY_FUNCTION: dict = {}
_BY_METHOD: dict = {}


def add_rule(name: str, inst) -> None:
    """Register a rule instance under an IR op name."""
    if name in RULES:
        raise RuntimeError(f"IR op {name!r} registered twice")
    RULES[name] = inst


@dataclass(frozen=True)
class Layer:
    """One user-facing op and how capture turns it into IR nodes.

    Attributes:
        name: the row of the README table (e.g. ``"GELU (exact and tanh forms)"``).
        modules: ``nn.Module`` classes (matched by type).
        functions: ``torch``/``F``/``operator`` callables and ``torch.ops.aten`` overloads.
        methods: ``Tensor`` method names.
        emit: ``emit(b, n, args, kwargs, module)``: append IR nodes for fx node ``n`` through the
            builder ``b`` (``lipcert.graph.emit.Builder``); raise ``UnsupportedOperation`` for a
            configuration without a sound rule.
        lowers_to: the IR ops it becomes (for the table and for ``check``).
        methods_note: which bound methods apply ("all", or e.g. "all but exact").
        refuse: None, or why no Lipschitz constant exists (discontinuous ops are listed, and
            refused with this reason).
    """

    name: str
    emit: Optional[Callable] = None
    modules: tuple = ()
    functions: tuple = ()
    methods: tuple = ()
    lowers_to: tuple = ()
    methods_note: str = "all, incl. BaB and exact"
    refuse: Optional[str] = None

    def spelled(self) -> list[str]:
        """Readable spellings, for the table and error messages."""
        out = []
        for m in self.modules:
            out.append(f"nn.{m.__name__}" if m.__module__.startswith("torch.nn") else m.__name__)
        for f in self.functions:
            out.append(_function_name(f))
        out.extend(f"x.{m}()" for m in self.methods)
        return out


_NAMES: dict = {}


def _function_name(f) -> str:
    if type(f).__name__ == "OpOverload":
        return f"aten.{f.__name__}"
    if not _NAMES:
        import operator

        import torch
        import torch.nn.functional as F
        for ns, prefix in ((torch, "torch."), (F, "F.")):  # F wins: F.conv2d is torch.conv2d
            for k in dir(ns):
                if not k.startswith("_"):
                    try:
                        _NAMES[id(getattr(ns, k))] = prefix + k
                    except Exception:  # noqa: BLE001
                        pass
        for k, text in (("add", "x + y"), ("sub", "x - y"), ("mul", "x * y"), ("truediv", "x / y"),
                        ("neg", "-x"), ("getitem", "x[...]"), ("matmul", "x @ y")):
            _NAMES[id(getattr(operator, k))] = text
    return _NAMES.get(id(f), getattr(f, "__name__", str(f)))


def layer(name: str, *, emit: Optional[Callable] = None, modules=(), functions=(), methods=(), lowers_to=(),
          methods_note: str = "all, incl. BaB and exact", refuse: Optional[str] = None) -> Layer:
    """Register a user-facing op (see :class:`Layer`)."""
    lay = Layer(name, emit, tuple(modules), tuple(functions), tuple(methods), tuple(lowers_to), methods_note, refuse)
    LAYERS.append(lay)
    for m in lay.modules:
        _BY_MODULE[m] = lay
    for f in lay.functions:
        _BY_FUNCTION[f] = lay
    for m in lay.methods:
        _BY_METHOD[m] = lay
    return lay


def find_module(m) -> Optional[Layer]:
    for cls in type(m).__mro__:
        if cls in _BY_MODULE:
            return _BY_MODULE[cls]
        if cls.__module__.startswith("torch.nn") and cls is not type(m):
            break  # a user subclass of a torch module is traced through, never reached here
    return None


def find_function(f) -> Optional[Layer]:
    try:
        return _BY_FUNCTION.get(f)
    except TypeError:  # unhashable target
        return None


def find_method(name: str) -> Optional[Layer]:
    return _BY_METHOD.get(name)


def supported_names() -> list[str]:
    """Every spelling capture accepts, for error messages."""
    out = []
    for lay in LAYERS:
        if lay.refuse is None:
            out.extend(s for s in lay.spelled() if not s.startswith("aten."))
    return sorted(set(out))


def markdown_table() -> str:
    """The README's table of supported layers, generated from ``LAYERS`` (a test keeps the README
    in step)."""
    from . import RULES  # noqa: F401  (fills the registry)
    rows = ["| layer | spellings | lowers to (IR ops) | methods |", "|---|---|---|---|"]
    for lay in sorted(LAYERS, key=lambda l: (l.refuse is not None, l.name.lower())):
        spell = ", ".join(f"`{s}`" for s in lay.spelled() if not s.startswith("aten."))
        aten = [s for s in lay.spelled() if s.startswith("aten.")]
        if aten:
            spell += " (and " + ", ".join(f"`{s}`" for s in aten) + ")"
        lowers = ", ".join(f"`{o}`" for o in lay.lowers_to) or "(identity)"
        methods = f"refused: {lay.refuse}" if lay.refuse else lay.methods_note
        rows.append(f"| {lay.name} | {spell} | {lowers if not lay.refuse else '-'} | {methods} |")
    return "\n".join(rows) + "\n"
