"""Certify whole datasets: batched, streamed to a JSON-lines file, resumable, on local processes
or Ray tasks.

Records: one JSON object per line per ``(index, eps)``, written by a single writer and flushed
(and fsync'ed) after every batch, so a run killed with SIGKILL loses at most the batches in
flight; a torn last line is cut off when the file is reopened. Rerunning with the same ``out``
skips every ``(index, eps)`` already recorded. An input that fails is recorded with its error.
An ``out`` ending in ``.parquet`` gets the same JSON-lines journal next to it
(``NAME.parquet.journal.jsonl``, the resumable record) and the Parquet table (``pyarrow``) is
rewritten atomically from the journal when a run ends.

Models: an ``nn.Module`` (sent to worker processes as it is), or a model file / ``zoo:NAME``
loaded with :func:`lipcert.io.load` (safe by default; ``model_class``, ``model_args``,
``trust_pickle`` as there): the parent loads it once, and worker processes and Ray tasks get the
path and those options, never a pickled model, and load it the same way.

With labels, each record also has the prediction and a certified radius with its norm
(``radius_norm``): see :func:`certified_radius_from_bounds`. The radius is measured in the input
norm ``p`` of the constants (``norm``), not in l_inf, unless ``norm="inf"``.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import InvalidInput


@dataclass
class Summary:
    total: int
    done: int              # computed in this run
    skipped: int           # already in the file
    errors: int
    mean_upper: float
    median_upper: float
    mean_lower: float
    median_ratio: float
    certified: int | None  # records with radius > 0 (when labels were given)
    seconds: float
    records: int = 0
    extra: dict = field(default_factory=dict)
    radius_norm: str | None = None       # the norm of the radii ("inf", "2", "1"), when labels were given
    median_radius: float | None = None


def as_inputs(inputs):
    """``(X [N, ...] tensor, labels or None)`` from a tensor/array, a file, or a torch Dataset."""
    from .io import load_input
    if isinstance(inputs, (str, os.PathLike)):
        return load_input(inputs), None
    if isinstance(inputs, np.ndarray):
        return torch.from_numpy(inputs), None
    if isinstance(inputs, torch.Tensor):
        return inputs, None
    if isinstance(inputs, torch.utils.data.Dataset):
        items = [inputs[i] for i in range(len(inputs))]
        if isinstance(items[0], (tuple, list)):
            return torch.stack([torch.as_tensor(it[0]) for it in items]), torch.as_tensor([int(it[1]) for it in items])
        return torch.stack([torch.as_tensor(it) for it in items]), None
    raise InvalidInput(f"inputs must be a tensor, an array, a file or a torch Dataset, not {type(inputs).__name__}")


def read_records(path) -> list:
    """All complete records of a results file (a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    out = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def journal_path(out: Path) -> Path:
    """Where records are appended: ``out`` itself, or a JSON-lines journal beside a Parquet file."""
    out = Path(out)
    return out.with_name(out.name + ".journal.jsonl") if out.suffix == ".parquet" else out


def write_parquet(records: list, out: Path) -> None:
    """All records as one Parquet table (columns: the union of the records' fields), written to a
    temporary file and renamed, so ``out`` is always a complete table."""
    import pyarrow as pa          # certify_dataset checks for it before any work
    import pyarrow.parquet as pq
    keys = list(dict.fromkeys(k for r in records for k in r))
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records])
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)


def _repair(path: Path) -> None:
    """Cut a torn last line (a writer killed mid-line) so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut != len(data):
        with open(path, "r+b") as f:
            f.truncate(cut)


@dataclass(frozen=True)
class ModelSource:
    """A model file and how to load it (the arguments of :func:`lipcert.io.load`): what worker
    processes get instead of a module, so that each loads it the same safe way."""

    path: str
    model_class: object = None     # a class or "pkg.module:Class" (weights files)
    model_args: object = None      # dict or JSON object string
    trust_pickle: bool = False

    def load(self):
        from .io import load
        return load(self.path, model_class=self.model_class, model_args=self.model_args,
                    trust_pickle=self.trust_pickle)


_LOADED: dict = {}   # per process: ModelSource -> module, so a worker loads each file once


def _model(model):
    if not isinstance(model, ModelSource):
        return model
    key = repr(model)
    if key not in _LOADED:
        _LOADED[key] = model.load()
    return _LOADED[key]


def certify_batch(model, X, idx, eps, labels, kw) -> list:
    """Records for inputs ``X`` (global indices ``idx``) at radius ``eps``; never raises."""
    from .bounds import output_bounds
    from .lipschitz.local import local_lipschitz
    from .report.records import dataset_record
    model = _model(model)
    t0 = time.perf_counter()
    try:
        certs = local_lipschitz(model, X, eps, **kw)
        certs = certs if isinstance(certs, list) else [certs]
    except Exception:
        if len(idx) == 1:
            raise
        out = []  # one bad input must not sink the others: retry one by one
        for j in range(len(idx)):
            out += _safe(model, X[j:j + 1], idx[j:j + 1], eps, None if labels is None else labels[j:j + 1], kw)
        return out
    seconds = (time.perf_counter() - t0) / len(certs)
    recs = []
    with torch.no_grad():
        p = next(iter(model.parameters()))
        logits = model(X.to(p.dtype)).double()
        # the margins at x0 are enclosed by outward interval arithmetic (lipcert.rounding), not
        # read off one floating-point forward pass
        enc = None if labels is None else output_bounds(model, X, 0.0, method="ibp")
    for j, c in enumerate(certs):
        y = None if labels is None else int(labels[j])
        radius = None if y is None else certified_radius_from_bounds(
            logits[j], c.per_output_upper, y, eps, enclosure=None if enc is None else
            (enc[0].reshape(len(certs), -1)[j], enc[1].reshape(len(certs), -1)[j]))
        recs.append(dataset_record(c, index=int(idx[j]), eps=eps, seconds=seconds, prediction=int(logits[j].argmax()),
                                   domain=kw.get("domain"), label=y, radius=radius))
    return recs


def _safe(model, X, idx, eps, labels, kw):
    from .report.records import dataset_error_record
    try:
        return certify_batch(model, X, idx, eps, labels, kw)
    except Exception as e:  # noqa: BLE001 - recorded, the run goes on
        return [dataset_error_record(i, eps, f"{type(e).__name__}: {e}".splitlines()[0]) for i in idx]


def certified_radius_from_bounds(logits, ups, y: int, eps: float, enclosure=None) -> float:
    """Radius of a certified prediction from per-output Lipschitz upper bounds.

    Let ``U_j`` bound the Lipschitz constant of ``f_j`` w.r.t. ``||.||_p`` (``p`` the input norm
    the bounds were computed for) on the region ``R = {x : ||x - x0||_inf <= eps} ∩ domain``.
    ``R`` is convex and holds ``x0``, so for ``x`` in ``R`` the margin ``m_j = f_y - f_j`` obeys
    ``m_j(x) >= m_j(x0) - (U_y + U_j) ||x - x0||_p``. With
    ``r = min(eps, min_{j != y} m_j(x0) / (U_y + U_j))`` every ``x`` of the l_p ball
    ``B_p(x0, r)`` that is in ``R`` keeps ``m_j(x) >= 0``, i.e. the prediction ``y`` (up to ties).
    ``B_p(x0, r)`` lies inside the l_inf box of radius ``eps`` exactly when ``r <= eps`` (for every
    p, since ``||v||_inf <= ||v||_p`` and ``r e_1`` is in the ball), hence the ``min`` with eps; the
    domain clipping only removes points that are not valid inputs, so the certified set is
    ``B_p(x0, r) ∩ domain``.

    Args:
        logits: ``[K]`` outputs at ``x0``; ups: ``[K]`` per-output upper bounds; y: the label.
        enclosure: optional ``(lower [K], upper [K])`` enclosing the exact outputs at ``x0``; the
            margins are then taken from it (rounded down) rather than from ``logits``.
    Returns:
        ``r`` (a radius in the l_p norm of the bounds), or 0 when the prediction at ``x0`` is not ``y``.
    """
    if int(logits.argmax()) != y:
        return 0.0
    lo, hi = (logits, logits) if enclosure is None else enclosure
    u = 2.0 ** -52
    best = float(eps)
    for j in range(len(logits)):
        if j != y:
            den = float(ups[y] + ups[j]) * (1 + u)           # rounded up
            margin = float(lo[y] - hi[j])
            margin = margin * (1 - u) if margin > 0 else margin  # rounded down
            if margin <= 0:
                return 0.0
            if den > 0:
                best = min(best, margin / den * (1 - u))
    return max(best, 0.0)


def _local_worker(args):
    model, X, idx, eps, labels, kw = args
    torch.set_num_threads(1)
    return _safe(model, X, idx, eps, labels, kw)


def certify_dataset(model, inputs, eps, *, method: str = "crown", norm="inf", labels=None, out=None,
                    workers: int = 1, cluster=None, batch_size: int = 32, domain=None, progress: bool = False,
                    trust_pickle: bool = False, model_class=None, model_args=None, **options) -> Summary:
    """Certify every input at every radius, streaming one record per ``(input, eps)`` to ``out``
    (JSON lines); see the module docstring for resuming and failure handling.

    Each record's bounds hold on the l_inf box of radius ``eps`` around its input, clipped to
    ``domain`` (recorded as ``region_eps`` and ``domain``, with the ``dtype``); ``norm`` is the
    input norm p of the constants. With labels a record's ``radius`` certifies the prediction on
    the l_p ball of that radius (``radius_norm`` = p) intersected with the domain; it is at most
    ``eps`` (see :func:`certified_radius_from_bounds`).

    Args:
        model: an ``nn.Module``, or a model file / ``"zoo:NAME"`` (see :func:`lipcert.io.load`).
        inputs: tensor/array ``[N, ...]``, a ``.npy``/``.pt``/``.csv`` file, or a torch Dataset
            (items ``x`` or ``(x, label)``).
        eps: a radius or a list of radii (of the l_inf box).
        labels: optional ``[N]`` labels (records then carry a certified radius).
        out: results file (``.jsonl``, or ``.parquet`` with a JSON-lines journal beside it); required.
        workers: local processes (without Ray); cluster: ``"auto"``, ``"local"`` or a Ray address.
        trust_pickle, model_class, model_args: how a model file is loaded, as in :func:`lipcert.load`
            (in this process and in every worker).
    """
    if out is None:
        raise InvalidInput("certify_dataset needs out=PATH (a .jsonl or .parquet file)")
    worker_model = model
    if isinstance(model, (str, os.PathLike)):
        worker_model = ModelSource(os.fspath(model), model_class, model_args, bool(trust_pickle))
        model = worker_model.load()      # fails here, before any work, when the file is refused
    elif model_class is not None or model_args is not None:
        raise InvalidInput("model_class/model_args are for a model file; model is already a "
                           f"{type(model).__name__}")
    X, ds_labels = as_inputs(inputs)
    if labels is None:
        labels = ds_labels
    elif isinstance(labels, (str, os.PathLike)):
        from .io import load_input
        labels = load_input(labels)
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).long()
        if len(labels) != len(X):
            raise InvalidInput(f"{len(labels)} labels for {len(X)} inputs")
    eps_list = [float(e) for e in (eps if isinstance(eps, (list, tuple)) else [eps])]
    if any(not math.isfinite(e) or e < 0 for e in eps_list):
        raise InvalidInput(f"eps must be finite and >= 0, got {eps_list}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = journal_path(out)
    if journal != out:
        try:
            import pyarrow  # noqa: F401  (fail before the work, not after it)
        except ImportError:
            raise InvalidInput("Parquet output needs pyarrow: pip install lipcert[parquet], or use a .jsonl file") from None
    if journal != out and out.exists() and not journal.exists():   # a Parquet file without its journal
        with open(journal, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in read_records(out))
    _repair(journal)
    have = {(r["index"], r["eps"]) for r in read_records(journal)}
    kw = dict(method=method, norm=norm, domain=domain, **options)
    tasks = []   # (X, idx, eps, labels, kw); the model is added where the task runs
    for e in eps_list:
        todo = [i for i in range(len(X)) if (i, e) not in have]
        for s in range(0, len(todo), batch_size):
            idx = torch.tensor(todo[s:s + batch_size])
            tasks.append((X[idx], idx, e, None if labels is None else labels[idx], kw))
    skipped = len(X) * len(eps_list) - sum(len(t[1]) for t in tasks)
    t0 = time.perf_counter()
    done = errors = 0
    bar = _Bar(progress, sum(len(t[1]) for t in tasks))
    with open(journal, "a") as f:
        for recs in _results(tasks, model, worker_model, workers, cluster):
            for r in recs:
                f.write(json.dumps(r) + "\n")
                done += 1
                errors += r.get("error") is not None
                bar.advance(r)
            f.flush()
            os.fsync(f.fileno())
    bar.close()
    records = read_records(journal)
    if journal != out:
        write_parquet(records, out)
    return summarize(records, done=done, skipped=skipped, seconds=time.perf_counter() - t0,
                     total=len(X) * len(eps_list))


def _results(tasks, model, worker_model, workers, cluster):
    """Batches of records in order of completion. ``model`` runs here; other processes get
    ``worker_model`` (the module, or the :class:`ModelSource` of a file)."""
    if cluster is not None:
        from .distributed import ray_results
        yield from ray_results(worker_model, tasks, cluster)
    elif workers > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap_unordered(_local_worker, [(worker_model, *t) for t in tasks])
    else:
        for t in tasks:
            yield _safe(model, *t)


def summarize(records, done=0, skipped=0, seconds=0.0, total=None) -> Summary:
    ok = [r for r in records if r.get("error") is None]
    ups = [r["upper"] for r in ok]
    lows = [r["lower"] for r in ok]
    ratios = [r["ratio"] for r in ok if r.get("ratio") is not None]
    radii = [r["radius"] for r in ok if r.get("radius") is not None]
    norms = sorted({str(r.get("radius_norm", r.get("norm"))) for r in ok if r.get("radius") is not None})
    mean = lambda v: float(statistics.fmean(v)) if v else float("nan")  # noqa: E731
    med = lambda v: float(statistics.median(v)) if v else float("nan")  # noqa: E731
    return Summary(total if total is not None else len(records), done, skipped, len(records) - len(ok), mean(ups),
                   med(ups), mean(lows), med(ratios), sum(r > 0 for r in radii) if radii else None, seconds,
                   len(records), radius_norm=",".join(norms) or None, median_radius=med(radii) if radii else None)


class _Bar:
    def __init__(self, on, total):
        self.bar = None
        self.sum = 0.0
        self.n = 0
        self.seen = 0
        self.t0 = time.perf_counter()
        if on and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("certifying"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.description}"), TextColumn("ETA"), TimeRemainingColumn())
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def advance(self, r):
        if self.bar is None:
            return
        self.seen += 1
        if r.get("error") is None:
            self.sum += r["upper"]
            self.n += 1
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(self.task, advance=1,
                        description=f"{rate:.1f} points/s, mean upper {self.sum / max(self.n, 1):.4g}")

    def close(self):
        if self.bar is not None:
            self.bar.stop()
