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
    for mod in ("highspy", "onnx"):
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
                   "outputs": None if outputs is None else list(outputs),
                   "as_certified": d.get("region") or None},
        "dtype": cert.dtype,
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


# one line of a dataset run (lipcert.dataset); ``$defs.dataset_record`` in the schema
DATASET_FIELDS = ("index", "eps", "method", "norm", "dtype", "region_eps", "domain", "upper", "lower", "ratio",
                  "per_output_upper", "per_output_lower", "witness_output", "status", "seconds", "prediction",
                  "error")
DATASET_LABEL_FIELDS = ("label", "radius", "radius_norm")


def dataset_record(cert, *, index: int, eps: float, seconds: float, prediction: int, domain=None,
                   label: int | None = None, radius: float | None = None) -> dict:
    """One dataset record of ``cert``: the bounds, the region as certified (``region_eps``, the
    l_inf radius of the box the bounds hold on, and ``domain``), the dtype, and with a label the
    certified radius with its norm ``radius_norm`` (the input norm p of the constants: the
    prediction is certified on the l_p ball of that radius, see ``lipcert.dataset``)."""
    region = cert.region or {}
    dom = region.get("domain", domain)
    rec = {"index": int(index), "eps": float(eps), "method": cert.method, "norm": cert.norm, "dtype": cert.dtype,
           "region_eps": float(region.get("eps", cert.eps)),
           "domain": None if dom is None else [float(dom[0]), float(dom[1])],
           "upper": cert.upper, "lower": cert.lower, "ratio": cert.ratio if math.isfinite(cert.ratio) else None,
           "per_output_upper": cert.per_output_upper.tolist(), "per_output_lower": cert.per_output_lower.tolist(),
           "witness_output": cert.witness["output"], "status": cert.status, "seconds": seconds,
           "prediction": int(prediction), "error": None}
    if label is not None:
        rec.update(label=int(label), radius=float(radius), radius_norm=cert.norm)
    return rec


def dataset_error_record(index: int, eps: float, error: str) -> dict:
    """The record of an input whose certification failed."""
    return {"index": int(index), "eps": float(eps), "error": error}


def validate_dataset_record(rec: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when a dataset record does not follow
    ``$defs.dataset_record`` of the schema."""
    import jsonschema
    s = schema()
    jsonschema.validate(rec, {"$schema": s["$schema"], "$defs": s["$defs"], "$ref": "#/$defs/dataset_record"})
