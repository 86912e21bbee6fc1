"""Ray tasks for dataset certification (``pip install lipcert[ray]``): each task certifies one
batch; results come back in order of completion to the caller's single writer."""
from __future__ import annotations

from .errors import InvalidInput


def ray_results(tasks, cluster):
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
        return _safe(model, X, idx, eps, labels, kw)

    model_ref = ray.put(tasks[0][0]) if tasks else None
    pending = [run.remote(model_ref, *t[1:]) for t in tasks]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])
