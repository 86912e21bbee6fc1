"""The modules onnx2torch emits besides plain ``torch.nn`` ones, mapped to IR ops.

ONNX models come through ``onnx2torch.convert`` as a ``GraphModule`` of ``nn`` modules plus a few
of its own: constants, elementwise arithmetic (Sub/Div of input normalisation, Add of residuals),
Reshape with a constant shape, MatMul with a constant matrix, and Max/Min (the MaxMin pattern).
capture treats these as leaf modules and asks this file what each one is.
"""
from __future__ import annotations

import torch

try:  # onnx2torch is an optional extra
    from onnx2torch.utils.common import OnnxToTorchModule
except Exception:  # pragma: no cover
    OnnxToTorchModule = None


def is_onnx_module(m) -> bool:
    return OnnxToTorchModule is not None and isinstance(m, OnnxToTorchModule)


def kind(m) -> str | None:
    """'const', 'add'/'sub'/'mul'/'div', 'reshape', 'matmul', 'max', 'min' or None (unsupported)."""
    name = type(m).__name__
    if name == "OnnxConstant":
        return "const"
    if name == "OnnxBinaryMathOperation":
        if m.broadcast == 1 and m.axis is not None:
            return None
        from onnx2torch.node_converters.binary_math_operations import _TORCH_FUNCTION_FROM_ONNX_TYPE as table
        onnx_type = next((k for k, f in table.items() if f is m.math_op_function), None)
        return {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}.get(onnx_type)
    if name in ("OnnxReshape", "OnnxFlatten", "OnnxSqueezeStaticAxes", "OnnxUnsqueezeStaticAxes"):
        return "reshape"
    if name == "OnnxMatMul":
        return "matmul"
    if name == "OnnxMinMax":
        return "max" if m._operator is torch.amax else "min"
    if name == "OnnxSlice":
        return "slice"
    if name == "OnnxBatchNorm":
        return "batchnorm"
    if name == "OnnxFunction":
        return {torch.tanh: "tanh", torch.sigmoid: "sigmoid", torch.relu: "relu"}.get(m.function)
    if name == "OnnxConcat":
        return "concat"
    return None


def constant_value(m) -> torch.Tensor:
    v = m.value
    return v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(v)
