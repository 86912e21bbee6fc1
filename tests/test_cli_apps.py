"""The command line (exit codes, JSON against its schema), monotonicity, certified radius, reports."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

import lipcert
from lipcert import zoo
from lipcert.cli.main import app
from lipcert.report.records import validate

runner = CliRunner()
# mlp.pt holds weights (a state_dict); the code comes from the class, so nothing in the file runs
MC = ["--model-class", "loadable:DigitsMLP"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    m = zoo.load_model("digits-mlp")
    X, y = zoo.digits()
    torch.save(m.state_dict(), d / "mlp.pt")
    torch.onnx.export(m, X[:1], str(d / "mlp.onnx"), dynamo=False)
    np.save(d / "x.npy", X[0].numpy())
    np.save(d / "xs.npy", X[:2].numpy())
    np.savetxt(d / "x.csv", X[0].numpy()[None], delimiter=",")
    np.save(d / "bad.npy", np.zeros(5, dtype=np.float32))
    return d, int(y[0])


@pytest.mark.parametrize("model", ["mlp.pt", "mlp.onnx"])
def test_bound_prints_table_and_valid_json(files, model):
    d, _ = files
    out = d / f"{model}.json"
    r = runner.invoke(app, ["bound", str(d / model), "--input", str(d / "x.npy"), "--eps", "0.01", "--domain", "0,1",
                            "--json", str(out)] + (MC if model.endswith(".pt") else []))
    assert r.exit_code == 0, r.output
    assert "upper" in r.output
    rec = json.loads(out.read_text())
    validate(rec)
    assert rec["lower"] <= rec["upper"] and len(rec["per_output_upper"]) == 10
    assert rec["model"]["hash"].startswith("sha256:")


def test_bound_batch_csv_outputs(files):
    d, _ = files
    r = runner.invoke(app, ["bound", str(d / "mlp.pt"), "-i", str(d / "xs.npy"), "--eps", "0.01", "--method", "crown",
                            "--outputs", "0,3"] + MC)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["bound", str(d / "mlp.pt"), "-i", str(d / "x.csv"), "--eps", "0.01", "--norm", "2"] + MC)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args,needle", [
    (["bound", "missing.onnx", "--input", "x.npy", "--eps", "0.1"], "not found"),
    (["bound", "mlp.pt", "--input", "bad.npy", "--eps", "0.1"], "x0"),
    (["bound", "mlp.pt", "--input", "x.npy", "--eps", "-0.1"], "eps"),
    (["bound", "mlp.pt", "--input", "x.npy", "--eps", "0.1", "--method", "magic"], "method"),
    (["bound", "mlp.pt", "--input", "x.npy", "--eps", "0.1", "--domain", "0"], "domain"),
])
def test_bad_input_exits_2_with_one_line(files, args, needle):
    d, _ = files
    args = [str(d / a) if a.endswith((".onnx", ".pt", ".npy")) else a for a in args] + MC * ("mlp.pt" in args)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0].lower() and "Traceback" not in r.output


def test_unsupported_model_exits_3(files, tmp_path):
    d, _ = files
    m = nn.Sequential(nn.Linear(64, 4), nn.Softmax(dim=1)).eval()
    torch.save(m, tmp_path / "soft.pt")
    r = runner.invoke(app, ["bound", str(tmp_path / "soft.pt"), "-i", str(d / "x.npy"), "--eps", "0.1", "--trust-pickle"])
    assert r.exit_code == 3 and "Softmax" in r.output


def test_time_budget_exit_4(files):
    d, _ = files
    r = runner.invoke(app, ["bound", str(d / "mlp.pt"), "-i", str(d / "x.npy"), "--eps", "0.05", "--bab", "1",
                            "--rtol", "0"] + MC)
    assert r.exit_code == 4, r.output


def test_other_commands(files, tmp_path):
    d, label = files
    for args in (["jacobian", "mlp.pt", "-i", "x.npy", "--eps", "0.01"],
                 ["radius", "mlp.pt", "-i", "x.npy", "--label", str(label), "--domain", "0,1"],
                 ["monotonic", "mlp.pt", "-i", "x.npy", "--eps", "0.05", "--feature", "3", "--bab", "0"],
                 ["check", "mlp.onnx", "-i", "x.npy"], ["zoo", "list"]):
        args = [str(d / a) if a.endswith((".onnx", ".pt", ".npy")) else a for a in args] + MC * ("mlp.pt" in args)
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    r = runner.invoke(app, ["report", str(d / "mlp.pt"), "-i", str(d / "x.npy"), "--eps", "0.005,0.02",
                            "--domain", "0,1", "--out", str(tmp_path / "rep")] + MC)
    assert r.exit_code == 0, r.output
    for f in ("eps_curve.png", "per_output.png", "jacobian_width.png", "index.html"):
        assert (tmp_path / "rep" / f).stat().st_size > 1000


def test_monotone_network_is_certified_and_non_monotone_has_witness():
    torch.manual_seed(0)
    mono = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)).eval()
    with torch.no_grad():
        for layer in mono:
            if isinstance(layer, nn.Linear):
                layer.weight.abs_()
    x0 = torch.rand(5)
    for f in range(5):
        r = lipcert.monotonicity(mono, x0, 1.0, feature=f, domain=(0, 1), vary="feature")
        assert r.status == "certified" and r.derivative_lower >= 0
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.linspace(-2, 2, 8)[:, None])
        net[0].bias.zero_()
        net[2].weight.copy_(torch.linspace(-1, 1, 8)[None] ** 2)  # f(x) ~ even function: not monotone
    r = lipcert.monotonicity(net, torch.tensor([0.0]), 1.0, feature=0)
    assert r.status == "violated"
    w = r.witness
    assert w["x2"][0] > w["x1"][0] and w["f_x2"] < w["f_x1"] and w["gradient"] < 0
    y1, y2 = net(w["x1"][None].float()), net(w["x2"][None].float())
    assert float(y2) < float(y1)


def test_diabetes_monotonicity_runs_on_every_feature():
    m = zoo.load_model("diabetes-mlp")
    X, _ = zoo.diabetes()
    statuses = [lipcert.monotonicity(m, X[0], 1.0, feature=f, domain=(0, 1), vary="feature", bab_time=1).status
                for f in range(10)]
    assert set(statuses) <= {"certified", "violated", "unknown"} and len(statuses) == 10


def test_certified_radius_is_certified_and_beats_naive():
    m = zoo.load_model("digits-mlp")
    X, y = zoo.digits()
    r = lipcert.certified_radius(m, X[0], int(y[0]), domain=(0, 1))
    assert r.radius > r.naive_radius > 0
    lo, up = lipcert.bounds.output_bounds(m, X[0], r.radius, domain=(0, 1))
    xs = torch.clamp(X[0] + r.radius * (2 * torch.rand(2000, 64) - 1), 0, 1)
    assert (m(xs).argmax(1) == int(y[0])).all()


def test_cli_global(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 2)).eval()
    torch.save(net.state_dict(), tmp_path / "g.pt")
    tc = ["--model-class", "loadable:TinyChain"]
    r = runner.invoke(app, ["global", str(tmp_path / "g.pt"), "--json", str(tmp_path / "g.json")] + tc)
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "g.json").read_text())
    api = lipcert.global_lipschitz(net, 2, "lipsdp")
    assert rec["upper"] == pytest.approx(api.value, rel=1e-9) and rec["upper"] <= rec["details"]["naive"]
    r = runner.invoke(app, ["global", str(tmp_path / "g.pt"), "--norm", "inf", "--method", "naive"] + tc)
    assert r.exit_code == 0 and "naive" in r.output
    r = runner.invoke(app, ["global", str(tmp_path / "g.pt"), "--norm", "inf"] + tc)   # LipSDP is l2 only
    assert r.exit_code == 2 and "l2" in r.output
    r = runner.invoke(app, ["global", str(tmp_path / "g.pt"), "--input-shape", "a,b"] + tc)
    assert r.exit_code == 2
