"""ONNX import without onnx2torch: torch models exported by both exporters compute the same after
import, at batch sizes 1 and 3; the fx graph calls only the torch functions capture reads; every
unsupported node is named at once."""
import contextlib
import io
import operator

import numpy as np
import onnx
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import lipcert
from lipcert import zoo
from lipcert.graph.capture import capture
from lipcert.graph.onnx_import import onnx_to_module

ALLOWED = {F.linear, F.conv1d, F.conv2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean, torch.sum,
           F.batch_norm, torch.relu, F.leaky_relu, torch.tanh, torch.sigmoid, F.gelu, F.silu, F.elu, F.softplus,
           F.prelu, torch.clamp, torch.abs, torch.reshape, torch.permute, torch.cat, operator.getitem, operator.add,
           operator.sub, operator.mul, operator.truediv, operator.neg, torch.maximum, torch.minimum, torch.matmul,
           F.softmax, F.layer_norm, torch.exp, torch.sqrt}


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class SpatialMean(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)) + x.sum(dim=(2, 3))


class SliceCatPermute(nn.Module):
    def forward(self, x):
        y = torch.cat([x[:, 1:4], x[:, ::2], x], dim=1)  # [B, 12]
        y = y.view(y.size(0), 2, -1).permute(0, 2, 1)   # [B, 6, 2]
        return y.flatten(1)


class PairsAndProducts(nn.Module):
    def forward(self, x):
        y = x.view(x.shape[0], 2, 3)
        gram = torch.matmul(y, y.transpose(1, 2)).flatten(1)
        top = torch.maximum(x[:, :3], -x[:, 3:]).sum(1, keepdim=True)
        low = torch.minimum(x[:, :3], x[:, 3:]).unsqueeze(1).squeeze(1).mean(1, keepdim=True)
        return gram + top - low


class Smooth(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(6)

    def forward(self, x):
        return torch.softmax(self.norm(x), -1) + torch.exp(x) * torch.sqrt(x.abs() + 1) - x / 3.0


def mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Sigmoid(),
                         nn.LeakyReLU(0.2), nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.ELU(0.5), nn.Softplus(),
                         nn.PReLU(6), nn.Hardtanh(-0.5, 0.7), nn.BatchNorm1d(6), nn.Linear(6, 3))


def cnn():
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.PReLU(4),
                         nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1, stride=1), nn.Hardtanh(), nn.AvgPool2d(2, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


# name -> (model, per-sample input shape, extra legacy opsets it exports at)
MODELS = {
    "mlp": (mlp, (4,), ()),
    "cnn": (cnn, (64,), (17,)),
    "conv1d-mean": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.Unflatten(2, (2, 3)), SpatialMean()),
                    (2, 6), (17,)),
    "residual": (lambda: nn.Sequential(Residual(2), nn.Flatten(), nn.Linear(2 * 16, 2)), (2, 4, 4), (17,)),
    "slice-cat-permute": (SliceCatPermute, (6,), (17,)),
    "pairs": (PairsAndProducts, (6,), (11, 17)),
    "smooth": (Smooth, (6,), ()),
}


def _randomize(model):
    """Eval mode, with BatchNorm statistics that are not the identity."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


def export(model, shape, path, exporter, opset=None):
    """``legacy`` and ``legacy<opset>``: batch 1 fixed; ``legacy-dynamic`` and ``dynamo``: a dynamic batch."""
    kw = {}
    if exporter == "legacy-dynamic":
        kw = dict(input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    elif exporter == "dynamo":
        kw = dict(dynamic_shapes=({0: torch.export.Dim("batch")},))
    if opset is not None:
        kw["opset_version"] = opset
    x = torch.randn(1 if exporter == "legacy" else 2, *shape)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=exporter == "dynamo", **kw)
    return onnx.load(str(path))


def assert_plain_graph(gm: fx.GraphModule):
    ops = [n.op for n in gm.graph.nodes]
    assert ops.count("placeholder") == 1 and ops.count("output") == 1
    assert set(ops) <= {"placeholder", "get_attr", "call_function", "output"}
    called = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert called <= ALLOWED, called - ALLOWED
    assert all(b.is_floating_point() for b in gm.buffers()), "shape computations were not folded"
    assert not gm.training


def assert_same(gm, model, shape):
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            torch.testing.assert_close(gm(x), model(x))


CASES = [(name, exporter, None) for name in MODELS for exporter in ("legacy", "legacy-dynamic", "dynamo")]
CASES += [(name, "legacy", opset) for name, (_, _, opsets) in MODELS.items() for opset in opsets]


@pytest.mark.parametrize("name,exporter,opset", CASES)
def test_exported_models_compute_the_same_after_import(name, exporter, opset, tmp_path):
    build, shape, _ = MODELS[name]
    model = _randomize(build())
    gm = onnx_to_module(export(model, shape, tmp_path / "m.onnx", exporter, opset))
    assert_plain_graph(gm)
    assert_same(gm, model, shape)


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_models_import_and_capture(name, tmp_path):
    model = zoo.load_model(name)
    shape = zoo.ZOO[name].input_shape()
    x = zoo.ZOO[name].dataset("test")[0][:1]
    for exporter in ("legacy", "dynamo"):
        gm = onnx_to_module(export(model, shape, tmp_path / f"{exporter}.onnx", exporter))
        assert_plain_graph(gm)
        assert_same(gm, model, shape)
        assert len(capture(gm, x).nodes) == len(capture(model, x).nodes)


def test_load_onnx_gives_the_graph_module(tmp_path):
    model = _randomize(mlp())
    export(model, (4,), tmp_path / "m.onnx", "legacy")
    gm = lipcert.load(tmp_path / "m.onnx")
    assert isinstance(gm, fx.GraphModule)
    assert_same(gm, model, (4,))
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(lipcert.InvalidModel, match="cannot read"):
        lipcert.load(tmp_path / "bad.onnx")


# hand-made graphs, checked against onnx's reference evaluator

def make_model(nodes, in_shape, out_name="y", inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def assert_matches_reference(model, shape):
    gm = onnx_to_module(model)
    assert_plain_graph(gm)
    x = torch.randn(*shape)
    (want,) = ReferenceEvaluator(model).run(None, {"x": x.numpy()})
    torch.testing.assert_close(gm(x), torch.from_numpy(want))
    return gm


def f32(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_gemm_variants_and_matmul():
    inits = [("B", f32(4, 3)), ("Bt", f32(3, 4)), ("c_row", f32(1, 3)), ("c_full", f32(2, 3)), ("W", f32(3, 5)),
             ("d", f32(5))]
    nodes = [helper.make_node("Gemm", ["x", "B", "c_row"], ["g1"], alpha=0.5, beta=2.0),
             helper.make_node("Gemm", ["x", "Bt", "c_full"], ["g2"], transB=1),
             helper.make_node("Add", ["g1", "g2"], ["g"]),
             helper.make_node("MatMul", ["g", "W"], ["m"]),
             helper.make_node("Add", ["m", "d"], ["y"])]
    gm = assert_matches_reference(make_model(nodes, [2, 4], inits=inits), (2, 4))
    assert sum(n.target is F.linear for n in gm.graph.nodes) == 3


def test_old_opset_attributes_and_shape_ops():
    nodes = [helper.make_node("Clip", ["x"], ["c"], min=-0.5, max=0.5),                 # opset 6 attributes
             helper.make_node("Unsqueeze", ["c"], ["u"], axes=[2]),                     # [N, 6, 1]
             helper.make_node("Slice", ["u"], ["s"], starts=[1], ends=[100], axes=[1]),  # [N, 5, 1]
             helper.make_node("Squeeze", ["s"], ["q"]),                                 # per-sample size-1 dims
             helper.make_node("Dropout", ["q"], ["d", "mask"]),
             helper.make_node("Softmax", ["d"], ["y"], axis=1)]
    assert_matches_reference(make_model(nodes, [2, 6], opset=9), (2, 6))


def test_shape_of_a_symbolic_batch_reshapes_with_minus_one():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])]
    model = make_model(nodes, ["N", 6], inits=[("zero", np.array(0)), ("axes", np.array([0])), ("rest", np.array([2, 3]))])
    gm = onnx_to_module(model)
    reshape = next(n for n in gm.graph.nodes if n.target is torch.reshape)
    assert reshape.args[1] == (-1, 2, 3)
    for batch in (1, 4):
        x = torch.randn(batch, 6)
        torch.testing.assert_close(gm(x), x.view(batch, 2, 3).permute(0, 2, 1))


def test_every_unsupported_node_is_named_at_once():
    inits = [("w", f32(2, 1, 3, 3))]
    nodes = [helper.make_node("Softsign", ["x"], ["a"], name="soft1"),
             helper.make_node("Softsign", ["a"], ["b"], name="soft2"),
             helper.make_node("Hardmax", ["b"], ["h"], name="hard"),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 0, 0], name="lopsided"),
             helper.make_node("Add", ["h", "c"], ["y"])]
    with pytest.raises(lipcert.UnsupportedOperation) as e:
        onnx_to_module(make_model(nodes, [1, 1, 5, 5], inits=inits))
    assert e.value.ops == [("soft1", "Softsign"), ("soft2", "Softsign"), ("hard", "Hardmax"), ("lopsided", "Conv")]
    assert "asymmetric pads" in str(e.value)
    assert {"Gemm", "Conv", "Relu", "Reshape"} <= set(e.value.supported)


@pytest.mark.parametrize("nodes,inits,match", [
    ([helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2]),
      helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT), helper.make_node("Add", ["p", "f"], ["y"])],
     [], "first output"),
    ([helper.make_node("Reshape", ["x", "s"], ["y"])], [("s", np.array([-1]))], "batch"),
    ([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2, 3])], [], "batch"),
    ([helper.make_node("ReduceSum", ["x", "a"], ["y"])], [("a", np.array([0, 1]))], "batch"),
    ([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["z"]),
      helper.make_node("Add", ["x", "z"], ["y"])], [], "batch size"),
    ([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER")], [("w", f32(2, 1, 2, 2))], "auto_pad"),
])
def test_refused_nodes_say_why(nodes, inits, match):
    with pytest.raises(lipcert.UnsupportedOperation, match=match):
        onnx_to_module(make_model(nodes, ["N", 1, 4, 4], inits=inits))


def test_models_need_one_input_one_output_and_an_input_dependent_output():
    two_in = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "z"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in "xz"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]))
    with pytest.raises(lipcert.UnsupportedOperation, match="one tensor input"):
        onnx_to_module(two_in)
    constant = make_model([helper.make_node("Constant", [], ["y"], value_floats=[1.0])], [1, 2])
    with pytest.raises(lipcert.UnsupportedOperation, match="does not depend on the input"):
        onnx_to_module(constant)
