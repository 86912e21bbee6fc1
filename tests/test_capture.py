import numpy as np
import pytest
import torch
import torch.nn as nn

import lipcert
from lipcert.graph import capture, run

from nets import FunctionalMLP, cnn, mlp, residual


@pytest.mark.parametrize("make,shape", [
    (lambda: mlp([5, 8, 8, 3], "relu"), (5,)),
    (lambda: mlp([5, 8, 3], "leaky"), (5,)),
    (lambda: mlp([5, 8, 3], "tanh"), (5,)),
    (lambda: mlp([5, 8, 3], "sigmoid"), (5,)),
    (lambda: cnn("relu", pool=True, bn=True), (3, 8, 8)),
    (lambda: cnn("tanh", size=7), (3, 7, 7)),
    (lambda: residual("relu"), (6,)),
    (lambda: FunctionalMLP(mlp([4, 6, 2])).eval(), (4,)),
])
def test_graph_reproduces_model(make, shape):
    net = make()
    x = torch.randn((4,) + shape)
    g = capture(net, x)
    out = run(g.to(torch.float64), {g.input: x.double()})[g.output]
    torch.testing.assert_close(out.float(), net(x), rtol=1e-5, atol=1e-5)


def test_dropout_identity_removed_and_bn_folded():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Identity(), nn.ReLU(), nn.Linear(4, 2)).eval()
    g = capture(net, torch.randn(1, 3))
    assert [n.op for n in g.nodes] == ["input", "linear", "affine", "relu", "linear"]


def test_unsupported_names_node():
    class Rnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 4, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.fc(y[:, -1])

    with pytest.raises(lipcert.UnsupportedOperation, match="lstm") as e:
        lipcert.bounds.output_bounds(Rnn().eval(), torch.randn(1, 3, 4), 0.1)
    assert "Supported" in str(e.value) and e.value.ops

    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, x):
            return self.att(x, x, x)[0].flatten(1)

    with pytest.raises(lipcert.UnsupportedOperation, match="att"):
        lipcert.bounds.output_bounds(Att().eval(), torch.randn(1, 3, 4), 0.1)


def test_bad_inputs_raise_specific_errors():
    net = mlp([3, 4, 2])
    x = torch.rand(3)
    with pytest.raises(lipcert.InvalidModel, match="training"):
        lipcert.bounds.output_bounds(net.train(), x, 0.1)
    net.eval()
    bad = mlp([3, 4, 2])
    with torch.no_grad():
        bad[0].weight[0, 0] = float("nan")
    with pytest.raises(lipcert.InvalidModel, match="NaN"):
        lipcert.local_lipschitz(bad, x, 0.1)
    with pytest.raises(lipcert.InvalidInput, match="eps"):
        lipcert.local_lipschitz(net, x, -0.1)
    with pytest.raises(lipcert.InvalidInput):
        lipcert.local_lipschitz(net, torch.rand(5), 0.1)
    with pytest.raises(lipcert.InvalidInput, match="NaN"):
        lipcert.local_lipschitz(net, torch.tensor([0.1, float("nan"), 0.2]), 0.1)
    with pytest.raises(lipcert.InvalidInput, match="outside the declared domain"):
        lipcert.local_lipschitz(net, torch.tensor([0.5, 1.5, 0.2]), 0.1, domain=(0, 1))
    with pytest.raises(lipcert.InvalidInput, match="method"):
        lipcert.local_lipschitz(net, x, 0.1, method="magic")
    with pytest.raises(lipcert.InvalidInput, match="norm"):
        lipcert.local_lipschitz(net, x, 0.1, norm="3")


def test_batch_dimension_optional_and_numpy():
    net = mlp([3, 4, 2])
    x = torch.rand(3)
    a = lipcert.bounds.output_bounds(net, x, 0.1)
    b = lipcert.bounds.output_bounds(net, x[None], 0.1)
    c = lipcert.bounds.output_bounds(net, x.numpy().astype(np.float64), 0.1)
    assert a[0].shape == (2,) and b[0].shape == (1, 2)
    torch.testing.assert_close(a[0], b[0][0])
    torch.testing.assert_close(a[1], c[1])
    conv = cnn()
    lo, up = lipcert.bounds.output_bounds(conv, torch.rand(3, 8, 8), 0.01)
    assert lo.shape == (3,)
