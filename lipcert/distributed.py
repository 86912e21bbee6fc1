"""Ray tasks for dataset certification (``pip install lipcert[ray]``): each task certifies one
batch; results come back in order of completion to the caller's single writer.

The model goes to the tasks as given by :func:`lipcert.dataset.certify_dataset`: an in-memory
``nn.Module``, or a :class:`lipcert.dataset.ModelSource` (a file and its loader options) that each
task loads the same safe way as the caller did; a model file is never unpickled here.
"""
from __future__ import annotations

from .errors import InvalidInput


def ray_results(model, tasks, cluster):
    """Records of each task ``(X, idx, eps, labels, kw)`` run on Ray with ``model``."""
    try:
        import ray
    except ImportError as e:
        raise InvalidInput("cluster= needs Ray: pip install lipcert[ray]") from e
    if not ray.is_initialized():
        if cluster in ("local",):
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=cluster, include_dashboard=False, log_to_driver=False)
    from .dataset import _safe

    @ray.remote(num_cpus=1)
    def run(model, X, idx, eps, labels, kw):
        import torch
        torch.set_num_threads(1)
        return _safe(model, X, idx, eps, labels, kw)   # a ModelSource is loaded (once per worker) in _safe

    model_ref = ray.put(model) if tasks else None
    pending = [run.remote(model_ref, *t) for t in tasks]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])
