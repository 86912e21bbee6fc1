"""JSON records of certificates (schema ``lipcert/report/schema.json``), for reproducible results."""
from __future__ import annotations

import json
import math
import platform
from importlib import resources

import numpy as np
import torch

SCHEMA_VERSION = "1"


def schema() -> dict:
    return json.loads(resources.files("lipcert.report").joinpath("schema.json").read_text())


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("highspy", "onnx", "onnx2torch"):
        try:
            from importlib.metadata import version
            out[mod] = version(mod)
        except Exception:
            pass
    return out


def record(cert, *, x0, model_hash: str, model_path=None, domain=None, outputs=None) -> dict:
    """A JSON-ready dict of one certificate and the region it is about."""
    from .. import __version__
    d = cert.to_dict()
    x = torch.as_tensor(x0).detach().cpu()
    rec = {
        "schema_version": SCHEMA_VERSION, "lipcert_version": __version__,
        "model": {"path": None if model_path is None else str(model_path), "hash": model_hash},
        "region": {"x0": x.tolist(), "eps": float(cert.eps), "norm": cert.norm,
                   "domain": None if domain is None else [float(domain[0]), float(domain[1])],
                   "outputs": None if outputs is None else list(outputs)},
        "method": d["method"], "upper": d["upper"], "lower": d["lower"],
        "ratio": d["ratio"] if isinstance(d["ratio"], (int, float)) and math.isfinite(d["ratio"]) else "inf",
        "per_output_upper": d["per_output_upper"], "per_output_lower": d["per_output_lower"],
        "witness": d["witness"], "seconds": d["seconds"], "status": d["status"], "timings": d["timings"],
        "details": {k: v for k, v in d["details"].items() if k != "history"}, "versions": versions(),
    }
    return rec


def validate(rec: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when ``rec`` does not follow the schema."""
    import jsonschema
    jsonschema.validate(rec, schema())
