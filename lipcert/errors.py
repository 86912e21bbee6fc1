"""Typed errors. Every bad input gets one of these, never a silent wrong answer.

Each class carries a CLI exit code (see ``lipcert.cli``): 2 bad input, 3 unsupported model.
"""
from __future__ import annotations


class LipcertError(Exception):
    """Base class of every error lipcert raises on purpose."""

    exit_code = 1


class InvalidInput(LipcertError, ValueError):
    """The input point, radius, domain or spec is malformed (shape, NaN, negative eps, ...)."""

    exit_code = 2


class InvalidModel(LipcertError, ValueError):
    """The model cannot be analysed as given (training mode, non-finite weights, ...)."""

    exit_code = 2


class UnsupportedOperation(LipcertError, NotImplementedError):
    """The model contains operations lipcert has no sound rule for.

    Attributes:
        ops: list of ``(node_name, target)`` pairs, every unsupported node of the model.
        supported: the names lipcert does support, for the message.
    """

    exit_code = 3

    def __init__(self, ops: list[tuple[str, str]], supported: list[str] | None = None, detail: str = "",
                 refused: bool = False):
        self.ops = list(ops)
        self.detail = detail
        self.refused = refused  # the op is known and has no Lipschitz constant (e.g. a jump)
        self.supported = sorted(supported or [])
        lines = [f"node '{name}' (target {target})" for name, target in self.ops]
        msg = "unsupported operation(s): " + "; ".join(lines)
        if detail:
            msg += f". {detail}"
        if self.supported:
            msg += ". Supported: " + ", ".join(self.supported)
        super().__init__(msg)


class SolverError(LipcertError, RuntimeError):
    """An external solver (HiGHS, cvxpy) is missing or failed."""

    exit_code = 1
