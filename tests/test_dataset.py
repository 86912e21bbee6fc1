"""Dataset certification: same certificates as single calls, resumable after SIGKILL, errors
recorded, local processes and Ray give the same records."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import lipcert
from lipcert import zoo
from lipcert.dataset import read_records, summarize

FAST = dict(attack_steps=3, attack_samples=64)


@pytest.fixture(scope="module")
def digits():
    m = zoo.load_model("digits-mlp")
    X, y = zoo.digits()
    return m, X, y


def by_key(recs):
    return {(r["index"], r["eps"]): r for r in recs}


def test_dataset_equals_single_calls_and_summary_matches(digits, tmp_path):
    m, X, y = digits
    out = tmp_path / "r.jsonl"
    s = lipcert.certify_dataset(m, X[:200], [0.005, 0.02], labels=y[:200], out=out, domain=(0, 1), **FAST)
    recs = read_records(out)
    assert len(recs) == 400 and s.records == 400 and s.errors == 0 and s.done == 400
    keyed = by_key(recs)
    for i in range(0, 200, 7):
        for e in (0.005, 0.02):
            c = lipcert.local_lipschitz(m, X[i], e, domain=(0, 1), method="crown", **FAST)
            r = keyed[(i, e)]
            assert r["upper"] == pytest.approx(c.upper, rel=1e-12) and r["lower"] == pytest.approx(c.lower, rel=1e-12)
    s2 = summarize(recs)
    assert s2.mean_upper == pytest.approx(sum(r["upper"] for r in recs) / 400)
    assert s.certified == sum(r["radius"] > 0 for r in recs)
    for r in recs:  # certified radii: the prediction is right and the radius within eps
        assert 0 <= r["radius"] <= r["eps"] and (r["radius"] == 0 or r["prediction"] == r["label"])


def test_rerun_skips_and_errors_are_recorded(digits, tmp_path):
    m, X, y = digits
    out = tmp_path / "r.jsonl"
    Xb = X[:6].clone()
    Xb[2, 0] = float("nan")
    s = lipcert.certify_dataset(m, Xb, 0.01, out=out, batch_size=4, **FAST)
    assert s.errors == 1 and s.records == 6
    bad = [r for r in read_records(out) if r["error"]]
    assert bad[0]["index"] == 2 and "NaN" in bad[0]["error"]
    s = lipcert.certify_dataset(m, Xb, 0.01, out=out, **FAST)
    assert s.done == 0 and s.skipped == 6 and len(read_records(out)) == 6
    with open(out, "a") as f:  # a torn line from a killed writer
        f.write('{"index": 99, "eps"')
    s = lipcert.certify_dataset(m, Xb, [0.01, 0.02], out=out, **FAST)
    assert s.done == 6 and len(read_records(out)) == 12


KILL_SCRIPT = """
import sys, lipcert
from lipcert import zoo
m = zoo.load_model("digits-mlp"); X, y = zoo.digits()
lipcert.certify_dataset(m, X[:80], [0.005, 0.02], labels=y[:80], out=sys.argv[1], domain=(0, 1), batch_size=4,
                        attack_steps=3, attack_samples=64)
"""


def test_sigkill_then_rerun_gives_exactly_one_record_each(digits, tmp_path):
    m, X, y = digits
    out = tmp_path / "killed.jsonl"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), str(out)], env=dict(os.environ))
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and len(read_records(out)) >= 60:
            break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    n_before = len(read_records(out))
    assert 0 < n_before < 160
    lipcert.certify_dataset(m, X[:80], [0.005, 0.02], labels=y[:80], out=out, domain=(0, 1), batch_size=4, **FAST)
    recs = read_records(out)
    keys = [(r["index"], r["eps"]) for r in recs]
    assert len(keys) == 160 and len(set(keys)) == 160
    ref = tmp_path / "ref.jsonl"
    lipcert.certify_dataset(m, X[:80], [0.005, 0.02], labels=y[:80], out=ref, domain=(0, 1), **FAST)
    a, b = by_key(recs), by_key(read_records(ref))
    for k in a:
        assert a[k]["upper"] == pytest.approx(b[k]["upper"], rel=1e-12)
        assert a[k]["lower"] == pytest.approx(b[k]["lower"], rel=1e-12)


def test_local_workers_and_ray_give_the_same_records(digits, tmp_path):
    ray = pytest.importorskip("ray")
    m, X, y = digits
    serial, local, viaray = tmp_path / "s.jsonl", tmp_path / "l.jsonl", tmp_path / "r.jsonl"
    lipcert.certify_dataset(m, X[:24], 0.01, labels=y[:24], out=serial, batch_size=6, **FAST)
    lipcert.certify_dataset(m, X[:24], 0.01, labels=y[:24], out=local, batch_size=6, workers=2, **FAST)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = lipcert.certify_dataset(m, X[:24], 0.01, labels=y[:24], out=viaray, batch_size=6, cluster="local", **FAST)
        assert s.records == 24 and s.errors == 0
        # resumable through Ray too
        s = lipcert.certify_dataset(m, X[:24], [0.01, 0.02], labels=y[:24], out=viaray, batch_size=6, cluster="local",
                                    **FAST)
        assert s.done == 24 and s.skipped == 24
    finally:
        ray.shutdown()
    a, b, c = by_key(read_records(serial)), by_key(read_records(local)), by_key(read_records(viaray))
    for k in a:
        assert a[k]["upper"] == b[k]["upper"] == c[k]["upper"]
        assert a[k]["lower"] == b[k]["lower"] == c[k]["lower"]


def test_cli_certify_dataset_and_report(digits, tmp_path):
    import numpy as np
    from typer.testing import CliRunner
    from lipcert.cli.main import app
    m, X, y = digits
    np.save(tmp_path / "x.npy", X[:10].numpy())
    np.save(tmp_path / "y.npy", y[:10].numpy())
    torch.save(m.state_dict(), tmp_path / "m.pt")
    r = CliRunner().invoke(app, ["certify-dataset", str(tmp_path / "m.pt"), "--inputs", str(tmp_path / "x.npy"),
                                 "--labels", str(tmp_path / "y.npy"), "--eps", "0.005,0.01", "--out",
                                 str(tmp_path / "r.jsonl"), "--domain", "0,1", "--model-class", "loadable:DigitsMLP"])
    assert r.exit_code == 0, r.output
    assert "radii are linf radii" in r.output
    assert len(read_records(tmp_path / "r.jsonl")) == 20
    r = CliRunner().invoke(app, ["report", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "distribution.png").stat().st_size > 1000


def test_parquet_output_resumes_from_its_journal_and_reports(digits, tmp_path):
    pytest.importorskip("pyarrow", reason="the parquet extra (make test installs it)")
    import numpy as np
    from typer.testing import CliRunner
    from lipcert.cli.main import app
    from lipcert.dataset import journal_path
    m, X, y = digits
    out = tmp_path / "results.parquet"
    Xb = X[:5].clone()
    Xb[1, 3] = float("nan")                    # an error record: its fields differ from the others
    lipcert.certify_dataset(m, Xb[:3], 0.01, labels=y[:3], out=out, **FAST)
    assert len(read_records(out)) == 3 and len(read_records(journal_path(out))) == 3
    s = lipcert.certify_dataset(m, Xb, [0.01, 0.02], labels=y[:5], out=out, **FAST)
    assert s.skipped == 3 and s.done == 7 and s.errors == 2
    table = read_records(out)                  # the Parquet table: one row per (input, eps)
    assert sorted((r["index"], r["eps"]) for r in table) == [(i, e) for i in range(5) for e in (0.01, 0.02)]
    def strip(recs):  # a table row has every column; absent fields read back as None
        return {k: {f: v for f, v in r.items() if v is not None} for k, r in by_key(recs).items()}
    assert strip(table) == strip(read_records(journal_path(out)))
    journal_path(out).unlink()                 # the table alone is enough to resume from
    s = lipcert.certify_dataset(m, Xb, [0.01, 0.02], labels=y[:5], out=out, **FAST)
    assert s.done == 0 and s.skipped == 10
    np.save(tmp_path / "x.npy", X[:4].numpy())
    torch.save(m.state_dict(), tmp_path / "m.pt")
    r = CliRunner().invoke(app, ["certify-dataset", str(tmp_path / "m.pt"), "--inputs", str(tmp_path / "x.npy"),
                                 "--eps", "0.01", "--out", str(tmp_path / "cli.parquet"),
                                 "--model-class", "loadable:DigitsMLP"])
    assert r.exit_code == 0, r.output
    assert len(read_records(tmp_path / "cli.parquet")) == 4
    r = CliRunner().invoke(app, ["report", str(tmp_path / "cli.parquet"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output


def _project(x, x0, r, p, lo=0.0, hi=1.0):
    """A point of the l_p ball B_p(x0, r) ∩ [lo, hi]^n near x: clip to the box, then project on
    the ball along shrinking coordinates (scaling for l2, soft-thresholding for l1, clipping for
    l_inf), which keeps every coordinate between x0's and the clipped x's, so still in the box."""
    d = x.clamp(lo, hi) - x0                                            # [B, n]
    if p == "inf":
        return x0 + d.clamp(-r, r)
    if p == "2":
        n = d.norm(dim=1, keepdim=True)
        return x0 + d * torch.clamp(r / n.clamp_min(1e-30), max=1.0)
    a = d.abs()                                                         # l1: Duchi et al.'s projection
    inside = a.sum(1) <= r
    s, _ = a.sort(1, descending=True)
    cs = s.cumsum(1) - r
    k = torch.arange(1, a.shape[1] + 1, dtype=a.dtype)
    rho = ((s - cs / k) > 0).sum(1, keepdim=True).clamp_min(1)
    theta = cs.gather(1, rho - 1) / rho
    out = d.sign() * (a - theta).clamp_min(0)
    return x0 + torch.where(inside[:, None], d, out)


def _pgd_min_margin(model, x0, y, r, p, steps=40, restarts=4, seed=0):
    """Smallest margin f_y - max_{j != y} f_j found by projected gradient descent over
    B_p(x0, r) ∩ [0, 1]^n (random starts in the ball)."""
    g = torch.Generator().manual_seed(seed)
    x0 = x0.double().reshape(1, -1).expand(restarts, -1)
    x = _project(x0 + r * (2 * torch.rand(x0.shape, generator=g, dtype=x0.dtype) - 1), x0, r, p)
    best = float("inf")
    lr = r / 8
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        out = model(x)
        other = out.clone()
        other[:, y] = -float("inf")
        margin = out[:, y] - other.max(1).values
        best = min(best, float(margin.detach().min()))
        (grad,) = torch.autograd.grad(margin.sum(), x)
        if p == "inf":
            step = grad.sign()
        else:
            step = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
        x = _project(x - lr * step, x0, r, p)
    with torch.no_grad():
        out = model(x)
        other = out.clone()
        other[:, y] = -float("inf")
        return min(best, float((out[:, y] - other.max(1).values).min()))


@pytest.mark.parametrize("norm,eps", [("inf", 0.02), ("2", 0.1), ("1", 0.3)])
def test_radius_is_certified_in_its_own_norm(digits, tmp_path, norm, eps):
    """Issue 13: a record's radius is an l_p radius for p = the norm of the constants; PGD in the
    l_p ball of that radius (within the domain) never flips the prediction, while for p = 1 the
    same attack in the l_inf ball of that radius (the old label) does: the check has teeth."""
    import copy
    from lipcert.report.records import validate_dataset_record
    m, X, y = digits
    out = tmp_path / f"r{norm}.jsonl"
    s = lipcert.certify_dataset(m, X[:12], eps, labels=y[:12], norm=norm, out=out, domain=(0, 1), **FAST)
    recs = read_records(out)
    assert s.radius_norm == norm and s.certified and s.median_radius is not None
    m64 = copy.deepcopy(m).double()
    attacked = broken_as_linf = 0
    for r in recs:
        validate_dataset_record(r)
        assert r["radius_norm"] == norm == r["norm"] and r["dtype"] == "float64"
        assert r["region_eps"] == pytest.approx(eps) and r["domain"] == [0.0, 1.0]
        assert 0 <= r["radius"] <= r["region_eps"]
        if r["radius"] > 0:
            attacked += 1
            worst = _pgd_min_margin(m64, X[r["index"]], r["label"], r["radius"], norm)
            assert worst > 0, (r["index"], r["radius"], worst)
            if norm == "1":   # the bug: the same radius read as an l_inf radius is broken by the same attack
                broken_as_linf += _pgd_min_margin(m64, X[r["index"]], r["label"], r["radius"], "inf") < 0
    assert attacked >= 6
    assert norm != "1" or broken_as_linf > 0
