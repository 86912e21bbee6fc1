"""Loading models (issue 24): no code from a model file runs unless the caller says so.

A pickle whose ``__reduce__`` would create a marker file is refused, before it runs, by every
entry point (API and CLI) with InvalidModel / exit 2; ``--trust-pickle`` loads a genuine pickled
module; ``.pt2``, state_dict + class, ``.safetensors`` + class and ONNX files of the same model
give the same certificate as the in-memory module; crafted ``.pt2`` archives that make
``torch.export.load`` run code are refused."""
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lipcert
from lipcert import zoo
from lipcert.cli.main import app
from lipcert.dataset import read_records

runner = CliRunner()
KW = dict(method="crown", attack_steps=0)


class Evil:
    """Unpickling this runs ``open(marker, "w")``: the code a malicious .pt carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loading")
    m = zoo.load_model("digits-mlp")
    X, y = zoo.digits()
    torch.save(Evil(d / "MARKER"), d / "evil.pt")
    torch.save(m, d / "whole.pt")
    torch.save(m.state_dict(), d / "sd.pt")
    torch.save({"state_dict": m.state_dict(), "epoch": 3}, d / "ckpt.pth")
    from safetensors.torch import save_file
    save_file(m.state_dict(), str(d / "w.safetensors"))
    torch.onnx.export(m, X[:1], str(d / "m.onnx"), dynamo=False)
    torch.export.save(torch.export.export(m, (X[:1],)), str(d / "m.pt2"))
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(m, (X[:2],), dynamic_shapes=({0: batch},)), str(d / "dyn.pt2"))
    np.save(d / "x.npy", X[0].numpy())
    np.save(d / "xs.npy", X[:3].numpy())
    np.save(d / "ys.npy", y[:3].numpy())
    return d, m, X, y


def _no_marker(d):
    assert not (d / "MARKER").exists(), "code from the model file ran"


# ---- refused without the flag, before any of the file's code runs ---------------------------

def test_api_refuses_pickles(files):
    d, _, X, _ = files
    for name in ("evil.pt", "whole.pt"):
        with pytest.raises(lipcert.InvalidModel, match="trust-pickle") as e:
            lipcert.load(d / name)
        assert ".pt2" in str(e.value) and "onnx" in str(e.value).lower() and "--model-class" in str(e.value)
        with pytest.raises(lipcert.InvalidModel):
            lipcert.local_lipschitz(str(d / name), X[0], 0.01, **KW)
        with pytest.raises(lipcert.InvalidModel):
            lipcert.certify_dataset(d / name, X[:2], 0.01, out=d / f"{name}.jsonl")
    _no_marker(d)
    with pytest.raises(lipcert.InvalidModel, match="model_class"):
        lipcert.load(d / "sd.pt")                      # weights without a class
    with pytest.raises(lipcert.InvalidModel, match="model_class"):
        lipcert.load(d / "w.safetensors")


@pytest.mark.parametrize("cmd", [
    ["check", "{m}", "-i", "{d}/x.npy"],
    ["bound", "{m}", "-i", "{d}/x.npy", "--eps", "0.01", "--method", "crown"],
    ["global", "{m}", "--method", "naive"],
    ["certify-dataset", "{m}", "--inputs", "{d}/xs.npy", "--eps", "0.01", "--out", "{d}/cli.jsonl"],
])
def test_cli_refuses_pickles_with_exit_2(files, cmd):
    d, _, _, _ = files
    for name in ("evil.pt", "whole.pt"):
        args = [a.format(m=d / name, d=d) for a in cmd]
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "--trust-pickle" in r.output and "Traceback" not in r.output
    _no_marker(d)
    assert not (d / "cli.jsonl").exists() or read_records(d / "cli.jsonl") == []


def test_trust_pickle_loads_a_genuine_pickled_module(files, capsys):
    d, m, X, _ = files
    net = lipcert.load(d / "whole.pt", trust_pickle=True)
    assert "allowed to run" in capsys.readouterr().err
    a = lipcert.local_lipschitz(m, X[0], 0.01, **KW)
    assert lipcert.local_lipschitz(net, X[0], 0.01, **KW).upper == pytest.approx(a.upper, rel=1e-12)
    r = runner.invoke(app, ["bound", str(d / "whole.pt"), "-i", str(d / "x.npy"), "--eps", "0.01", "--method", "crown",
                            "--trust-pickle"])
    assert r.exit_code == 0 and "allowed to run" in r.output, r.output
    r = runner.invoke(app, ["global", str(d / "whole.pt"), "--method", "naive", "--trust-pickle"])
    assert r.exit_code == 0, r.output


# ---- safe formats give the certificate of the in-memory module ------------------------------

SAFE = [("sd.pt", dict(model_class="loadable:DigitsMLP")),
        ("ckpt.pth", dict(model_class="loadable:DigitsMLP", model_args={"hidden": 128})),
        ("w.safetensors", dict(model_class="loadable:DigitsMLP", model_args='{"hidden": 128}')),
        ("m.onnx", {})]


@pytest.mark.parametrize("name,opts", SAFE)
def test_safe_formats_give_the_same_certificate(files, name, opts):
    d, m, X, _ = files
    ref = lipcert.local_lipschitz(m, X[0], 0.02, domain=(0, 1), **KW)
    net = lipcert.load(d / name, **opts)
    c = lipcert.local_lipschitz(net, X[0], 0.02, domain=(0, 1), **KW)
    torch.testing.assert_close(c.per_output_upper, ref.per_output_upper, rtol=1e-6, atol=0)
    assert c.upper == pytest.approx(ref.upper, rel=1e-6)
    _no_marker(d)


def test_class_object_and_cli_model_class(files):
    d, m, X, _ = files
    from loadable import DigitsMLP
    net = lipcert.load(d / "sd.pt", model_class=DigitsMLP)
    assert torch.equal(net(X[:4]), m(X[:4])) and not net.training
    ref = lipcert.local_lipschitz(m, X[0], 0.01, **KW)
    for name in ("sd.pt", "w.safetensors"):
        out = d / f"{name}.json"
        r = runner.invoke(app, ["bound", str(d / name), "-i", str(d / "x.npy"), "--eps", "0.01", "--method", "crown",
                                "--model-class", "loadable:DigitsMLP", "--model-args", '{"hidden": 128}',
                                "--json", str(out)])
        assert r.exit_code == 0, r.output
        assert json.loads(out.read_text())["upper"] == pytest.approx(ref.upper, rel=1e-6)


def test_pt2_loads_safely_and_runs_like_the_module(files):
    d, m, X, _ = files
    net = lipcert.load(d / "m.pt2")
    assert not net.training and torch.allclose(net(X[:1]), m(X[:1]), rtol=1e-6, atol=1e-6)
    dyn = lipcert.load(d / "dyn.pt2")
    assert torch.allclose(dyn(X[:5]), m(X[:5]), rtol=1e-6, atol=1e-6)
    ep = torch.export.load(str(d / "m.pt2"))
    assert torch.allclose(lipcert.load(ep)(X[:1]), m(X[:1]), rtol=1e-6, atol=1e-6)


def test_pt2_gives_the_same_certificate(files):
    d, m, X, _ = files
    ref = lipcert.local_lipschitz(m, X[0], 0.02, domain=(0, 1), **KW)
    c = lipcert.local_lipschitz(lipcert.load(d / "m.pt2"), X[0], 0.02, domain=(0, 1), **KW)
    torch.testing.assert_close(c.per_output_upper, ref.per_output_upper, rtol=1e-6, atol=0)


# ---- bad weights, bad classes: typed errors -------------------------------------------------

def test_mismatched_weights_and_bad_classes(files, tmp_path):
    d, m, _, _ = files
    with pytest.raises(lipcert.InvalidModel, match="missing keys.*4.weight.*unexpected keys none"):
        sd = {k: v for k, v in m.state_dict().items() if not k.startswith("4.")}
        torch.save(sd, tmp_path / "part.pt")
        lipcert.load(tmp_path / "part.pt", model_class="loadable:DigitsMLP")
    with pytest.raises(lipcert.InvalidModel, match="unexpected keys extra"):
        torch.save({**m.state_dict(), "extra": torch.zeros(1)}, tmp_path / "more.pt")
        lipcert.load(tmp_path / "more.pt", model_class="loadable:DigitsMLP")
    with pytest.raises(lipcert.InvalidModel, match="shape mismatch"):
        lipcert.load(d / "sd.pt", model_class="loadable:DigitsMLP", model_args={"hidden": 64})
    for bad in ("nosuchmodule_xyz:Net", "loadable:Nope", "not a path!"):
        with pytest.raises(lipcert.InvalidInput):
            lipcert.load(d / "sd.pt", model_class=bad)
    with pytest.raises(lipcert.InvalidInput, match="JSON"):
        lipcert.load(d / "sd.pt", model_class="loadable:DigitsMLP", model_args="{hidden: 1")
    with pytest.raises(lipcert.InvalidModel, match="failed"):
        lipcert.load(d / "sd.pt", model_class="loadable:DigitsMLP", model_args={"nope": 1})
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(lipcert.InvalidModel, match="cannot read"):
        lipcert.load(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(lipcert.InvalidModel, match="safetensors"):
        lipcert.load(tmp_path / "junk.safetensors", model_class="loadable:DigitsMLP")
    r = runner.invoke(app, ["check", str(d / "sd.pt"), "-i", str(d / "x.npy"), "--model-class", "loadable:DigitsMLP",
                            "--model-args", "[1]"])
    assert r.exit_code == 2 and "JSON object" in r.output, r.output


# ---- crafted .pt2 archives: torch.export.load alone would run their code ---------------------

def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for n in zin.namelist():
            zout.writestr(n, edit(n, zin.read(n)))


def test_crafted_pt2_archives_are_refused_before_they_run(files, tmp_path):
    d, _, X, _ = files
    marker = tmp_path / "PT2_MARKER"
    inject = f"__import__('os').system('touch {marker}') + "

    def sym(n, b):      # a shape expression: torch's deserializer hands it to sympy.sympify (eval)
        if n.endswith("models/model.json"):
            s = b.decode()
            i = s.index('"expr_str": "') + len('"expr_str": "')
            return (s[:i] + inject.replace("'", "\\u0027") + s[i:]).encode()
        return b

    def sample(n, b):   # sample inputs that fail the safe unpickler: torch falls back to a full unpickle
        if "sample_inputs" in n:
            buf = io.BytesIO()
            torch.save(Evil(marker), buf)
            return buf.getvalue()
        return b

    def target(n, b):   # a graph node calling an arbitrary torch attribute
        if n.endswith("models/model.json"):
            return b.replace(b'"torch.ops.aten.relu.default"', b'"torch.os.system"', 1)
        return b

    for edit, needle in ((sym, "shape expression"), (sample, "sample inputs"), (target, "torch.os.system")):
        bad = tmp_path / f"{edit.__name__}.pt2"
        _rewrite(d / "dyn.pt2", bad, edit)
        with pytest.raises(lipcert.InvalidModel, match=needle):
            lipcert.load(bad)
        r = runner.invoke(app, ["bound", str(bad), "-i", str(d / "x.npy"), "--eps", "0.01"])
        assert r.exit_code == 2 and "--trust-pickle" in r.output, r.output
        assert not marker.exists()
    with zipfile.ZipFile(d / "m.pt2") as zin, zipfile.ZipFile(tmp_path / "so.pt2", "w") as zout:
        for n in zin.namelist():
            zout.writestr(n, zin.read(n))
        top = zin.namelist()[0].split("/")[0]
        zout.writestr(f"{top}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(lipcert.InvalidModel, match="aotinductor"):
        lipcert.load(tmp_path / "so.pt2")


# ---- dataset runs and workers load files the same safe way ----------------------------------

def test_dataset_workers_load_the_path_safely(files):
    d, m, X, y = files
    ref = d / "ref.jsonl"
    lipcert.certify_dataset(m, X[:3], 0.01, labels=y[:3], out=ref, attack_steps=0, attack_samples=16)
    out = d / "workers.jsonl"
    s = lipcert.certify_dataset(d / "w.safetensors", d / "xs.npy", 0.01, labels=d / "ys.npy", out=out, workers=2,
                                batch_size=1, model_class="loadable:DigitsMLP", attack_steps=0, attack_samples=16)
    assert s.errors == 0 and s.records == 3
    a = {r["index"]: r for r in read_records(ref)}
    for r in read_records(out):
        assert r["upper"] == pytest.approx(a[r["index"]]["upper"], rel=1e-6)
    r = runner.invoke(app, ["certify-dataset", str(d / "sd.pt"), "--inputs", str(d / "xs.npy"), "--eps", "0.01",
                            "--out", str(d / "cli_sd.jsonl"), "--model-class", "loadable:DigitsMLP", "--workers", "2",
                            "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert len(read_records(d / "cli_sd.jsonl")) == 3
    _no_marker(d)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet", "diabetes-mlp"])
def test_pt2_of_every_zoo_model_gives_the_in_memory_certificate(name, tmp_path):
    from lipcert import zoo
    m = zoo.load_model(name)
    X = zoo.digits("test", False)[0] if name in ("digits-cnn", "digits-resnet") else \
        (zoo.digits("test")[0] if name == "digits-mlp" else zoo.diabetes("test")[0])
    x = X[:1].float()
    torch.export.save(torch.export.export(m, (x,)), str(tmp_path / "m.pt2"))
    kw = dict(method="crown", attack_samples=8, attack_steps=1)
    ref = lipcert.local_lipschitz(m, x[0], 0.02, **kw)
    c = lipcert.local_lipschitz(str(tmp_path / "m.pt2"), x[0], 0.02, **kw)
    torch.testing.assert_close(c.per_output_upper, ref.per_output_upper, rtol=1e-6, atol=0)
