"""Every layer of the registry on a small random net that uses it: capture reproduces the torch
forward; every applicable method's bound is above the gradient norms sampled in the region (the
oracle: autograd on the user's own module); at eps = 0 the bound matches autograd at x0; the
witness is below. A layer without an example here fails ``test_every_layer_has_an_example``."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lipcert
from lipcert.graph import capture, run
from lipcert.rules import registry

DT = torch.float64
# torch's own backward of a few activations (Hardsigmoid, CELU) rounds its constants to float32:
# the autograd oracle is good to ~1e-7 relative there
TOL = 1e-7


class Fn(nn.Module):
    """A module whose forward is a function of ``x`` (functional spellings, methods)."""

    def __init__(self, fn, d_in, d_out=3, pre=None):
        super().__init__()
        torch.manual_seed(1)
        self.fc1 = nn.Linear(d_in, 6) if pre is None else pre
        self.fn = fn
        self.fc2 = nn.LazyLinear(d_out)

    def forward(self, x):
        return self.fc2(self.fn(self.fc1(x)).flatten(1))


def mlp(act, d=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 6), act, nn.Linear(6, 3))


def cnn(layer, c=2, hw=6):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), layer, nn.Flatten(), nn.LazyLinear(3))


class PReLUch(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = nn.PReLU(3)
        with torch.no_grad():
            self.act.weight.copy_(torch.tensor([-0.5, 0.3, 1.7]))
        self.fc = nn.Linear(3 * 36, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


class Unflat(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.u = nn.Unflatten(1, (1, 6, 6))
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(self.u(x))).view(x.shape[0], -1))


class Slicing(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        a = h[:, 1:5]
        b = h[..., 5]
        c = h[:, None, 0:2].squeeze(1)
        s = torch.stack([b, b], dim=1)
        return self.fc2(torch.cat([a, c, s[:, :1]], dim=1))


class Perm(nn.Module):
    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 36, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = h.permute(0, 2, 3, 1) if self.kind == "permute" else h.transpose(1, 3)
        return self.fc(h.reshape(x.shape[0], -1))


class Reduce(nn.Module):
    def __init__(self, kind, dims, keepdim=False):
        super().__init__()
        torch.manual_seed(0)
        self.kind, self.dims, self.keepdim = kind, dims, keepdim
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.LazyLinear(3)

    def forward(self, x):
        h = F.silu(self.conv(x))
        h = h.mean(dim=self.dims, keepdim=self.keepdim) if self.kind == "mean" else \
            torch.sum(h, dim=self.dims, keepdim=self.keepdim)
        return self.fc(h.flatten(1))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv1d(2, 4, 3, padding=1)
        self.c2 = nn.Conv1d(4, 4, 3, stride=2, dilation=1, groups=2)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.LazyLinear(3)

    def forward(self, x):
        return self.fc(self.pool(F.elu(self.c2(torch.relu(self.c1(x))))).flatten(1))


class MatmulNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("W", torch.randn(4, 5))
        self.register_buffer("c", torch.randn(3, 5))

    def forward(self, x):
        h = torch.relu(x @ self.W)
        return torch.matmul(h, self.c.T) + 0.5


class MaxMinNet(nn.Module):
    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 6)
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x):
        a, b = self.fc1(x), self.fc2(torch.tanh(self.fc1(x)))
        h = torch.maximum(a, b) if self.kind == "max" else torch.minimum(a, b)
        return self.fc3(torch.max(h, torch.tensor(0.1)) if self.kind == "max" else h.clamp(max=0.4))


class Arith(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc1((x - 0.5) / 2.0)
        h = torch.relu(h) * 3 + (-h) - torch.sigmoid(h) + 1.0
        return self.fc2(h).neg()


class Casts(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 6)
        self.drop = nn.Dropout(0.3)
        self.id = nn.Identity()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.id(self.drop(torch.relu(self.fc1(x)))).contiguous().clone()
        return self.fc2(F.dropout(h, 0.2, training=False))


IMG = (2, 6, 6)
EXAMPLES = {
    "ReLU": [(mlp(nn.ReLU()), (4,)), (Fn(F.relu, 4), (4,)), (Fn(lambda v: v.relu(), 4), (4,))],
    "LeakyReLU (any slope)": [(mlp(nn.LeakyReLU(0.1)), (4,)), (mlp(nn.LeakyReLU(-0.3)), (4,)),
                              (Fn(lambda v: F.leaky_relu(v, 1.5), 4), (4,))],
    "PReLU (one or per-channel slopes)": [(mlp(nn.PReLU()), (4,)), (PReLUch(), IMG)],
    "ReLU6": [(mlp(nn.ReLU6()), (4,)), (Fn(F.relu6, 4), (4,))],
    "Hardtanh": [(mlp(nn.Hardtanh(-0.5, 0.7)), (4,)), (Fn(F.hardtanh, 4), (4,))],
    "clamp / clip (constant bounds)": [(Fn(lambda v: torch.clamp(v, -0.2, 0.3), 4), (4,)),
                                       (Fn(lambda v: v.clamp(min=0.1), 4), (4,)),
                                       (Fn(lambda v: torch.clip(v, max=0.2), 4), (4,))],
    "Hardsigmoid": [(mlp(nn.Hardsigmoid()), (4,))],
    "abs": [(Fn(torch.abs, 4), (4,)), (Fn(lambda v: v.abs(), 4), (4,))],
    "Softshrink": [(mlp(nn.Softshrink(0.3)), (4,))],
    "Hardshrink (only lambd = 0)": [(mlp(nn.Hardshrink(0.0)), (4,))],
    "Threshold (only value = threshold)": [(mlp(nn.Threshold(0.1, 0.1)), (4,))],
    "maximum of two tensors (or with a constant)": [(MaxMinNet("max"), (4,))],
    "minimum of two tensors (or with a constant)": [(MaxMinNet("min"), (4,))],
    "Tanh": [(mlp(nn.Tanh()), (4,)), (Fn(torch.tanh, 4), (4,))],
    "Sigmoid": [(mlp(nn.Sigmoid()), (4,)), (Fn(lambda v: v.sigmoid(), 4), (4,))],
    "Tanhshrink": [(mlp(nn.Tanhshrink()), (4,))],
    "GELU (exact and tanh forms)": [(mlp(nn.GELU()), (4,)), (mlp(nn.GELU(approximate="tanh")), (4,)),
                                    (Fn(F.gelu, 4), (4,))],
    "SiLU / swish": [(mlp(nn.SiLU()), (4,)), (Fn(F.silu, 4), (4,))],
    "ELU (any alpha >= 0)": [(mlp(nn.ELU()), (4,)), (mlp(nn.ELU(0.5)), (4,)), (Fn(lambda v: F.elu(v, 2.0), 4), (4,))],
    "CELU": [(mlp(nn.CELU(0.7)), (4,))],
    "SELU": [(mlp(nn.SELU()), (4,))],
    "Softplus (any beta)": [(mlp(nn.Softplus()), (4,)), (mlp(nn.Softplus(beta=3.0)), (4,))],
    "Linear": [(mlp(nn.ReLU()), (4,)), (Fn(torch.tanh, 4, pre=nn.Linear(4, 6)), (4,))],
    "matmul with a constant matrix": [(MatmulNet(), (4,))],
    "Conv2d (zero padding, any stride/dilation/groups)": [(cnn(nn.Conv2d(3, 4, 3, stride=2, dilation=1, groups=1)), IMG),
                                                          (cnn(nn.Conv2d(3, 3, 3, padding="same", groups=3)), IMG)],
    "Conv1d (zero padding, any stride/dilation/groups)": [(Conv1dNet(), (2, 9))],
    "BatchNorm1d/2d (eval)": [(cnn(nn.BatchNorm2d(3)), IMG)],
    "AvgPool2d (any kernel, stride, padding, ceil_mode, count_include_pad, divisor)": [
        (cnn(nn.AvgPool2d(2)), IMG), (cnn(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)), IMG)],
    "AdaptiveAvgPool2d": [(cnn(nn.AdaptiveAvgPool2d(1)), IMG), (cnn(nn.AdaptiveAvgPool2d((4, 5))), IMG)],
    "MaxPool2d (any kernel, stride, padding, dilation, ceil_mode)": [
        (cnn(nn.MaxPool2d(2)), IMG), (cnn(nn.MaxPool2d(3, 2, 1)), IMG), (cnn(nn.MaxPool2d(3, 2, ceil_mode=True)), IMG),
        (cnn(nn.MaxPool2d(2, 1, dilation=2)), IMG)],
    "MaxPool1d": [(Conv1dNet(), (2, 9))],
    "AdaptiveMaxPool2d": [(cnn(nn.AdaptiveMaxPool2d((4, 4))), IMG)],
    "Flatten / Unflatten / view / reshape / squeeze / unsqueeze": [(Unflat(), (36,))],
    "Identity, Dropout (eval), contiguous / clone / detach / dtype casts": [(Casts(), (4,))],
    "indexing with slices, integers, None": [(Slicing(), (4,))],
    "cat": [(Slicing(), (4,))],
    "stack": [(Slicing(), (4,))],
    "permute": [(Perm("permute"), IMG)],
    "transpose": [(Perm("transpose"), IMG)],
    "mean over dimensions": [(Reduce("mean", (2, 3)), IMG), (Reduce("mean", (1,), True), IMG)],
    "sum over dimensions": [(Reduce("sum", -1), IMG)],
    "x + y": [(Arith(), (4,))],
    "x - y": [(Arith(), (4,))],
    "x * constant": [(Arith(), (4,))],
    "x / constant": [(Arith(), (4,))],
    "-x": [(Arith(), (4,))],
    "slice (ATen graphs)": [],  # reached only from torch.export graphs: tests/test_loading.py
}
CASES = [(name, i) for name, exs in EXAMPLES.items() for i in range(len(exs))]


def test_every_layer_has_an_example():
    names = {lay.name for lay in registry.LAYERS if lay.refuse is None}
    assert names == set(EXAMPLES), (names - set(EXAMPLES), set(EXAMPLES) - names)


def _model(name, i):
    m, shape = EXAMPLES[name][i]
    m = m.double().eval()
    with torch.no_grad():
        m(torch.zeros(1, *shape, dtype=DT))  # materialise lazy layers
    return m, shape


def _grad_norms(m, pts):
    """``||grad f_k||_1`` at each point, by autograd on the user's module: ``[N, K]``."""
    pts = pts.clone().requires_grad_(True)
    y = m(pts)
    out = []
    for k in range(y.shape[1]):
        (g,) = torch.autograd.grad(y[:, k].sum(), pts, retain_graph=True)
        out.append(g.flatten(1).abs().sum(1))
    return torch.stack(out, 1)


@pytest.mark.parametrize("name,i", CASES)
def test_capture_reproduces_forward(name, i):
    m, shape = _model(name, i)
    x = torch.randn(5, *shape, dtype=DT)
    g = capture(m, x[:1])
    y = run(g, {g.input: x})[g.output]
    torch.testing.assert_close(y.reshape(5, -1), m(x).reshape(5, -1), rtol=1e-10, atol=1e-10)


def _piecewise_linear(m, shape):
    return capture(m, torch.zeros(1, *shape, dtype=DT)).is_piecewise_linear()


@pytest.mark.parametrize("name,i", CASES)
def test_bounds_are_sound_for_every_method(name, i):
    m, shape = _model(name, i)
    torch.manual_seed(3)
    x0 = torch.randn(*shape, dtype=DT) * 0.5
    eps = 0.15
    methods = ["crown", "alpha-crown", "ibp", "naive"]
    if _piecewise_linear(m, shape):
        methods.append("bab")
    pts = x0 + eps * (2 * torch.rand(300, *shape, dtype=DT) - 1)
    corners = x0 + eps * torch.sign(torch.randn(50, *shape, dtype=DT))
    sampled = _grad_norms(m, torch.cat([pts, corners, x0[None]])).max(0).values
    for method in methods:
        kw = {"bab_time": 0.3} if method == "bab" else {}
        c = lipcert.local_lipschitz(m, x0, eps, method=method, attack_steps=2, attack_samples=32, alpha_steps=3, **kw)
        assert (c.per_output_upper >= sampled * (1 - TOL)).all(), (method, c.per_output_upper, sampled)
        assert (c.per_output_lower <= c.per_output_upper).all()


@pytest.mark.parametrize("name,i", CASES)
def test_bound_at_eps_zero_is_the_gradient(name, i):
    m, shape = _model(name, i)
    torch.manual_seed(4)
    x0 = torch.randn(*shape, dtype=DT) * 0.5
    c = lipcert.local_lipschitz(m, x0, 0.0, method="crown", attack_steps=0, attack_samples=1)
    g = _grad_norms(m, x0[None])[0]
    assert (c.per_output_upper >= g * (1 - TOL)).all()
    torch.testing.assert_close(c.per_output_upper, g, rtol=1e-6, atol=1e-9)


def _tiny_pool():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 2), nn.MaxPool2d(2, 1, padding=1), nn.Flatten(), nn.LazyLinear(2))


EXACT = {"ReLU": lambda: nn.ReLU(), "LeakyReLU(-0.3)": lambda: nn.LeakyReLU(-0.3), "PReLU": lambda: nn.PReLU(),
         "ReLU6": lambda: nn.ReLU6(), "Hardtanh": lambda: nn.Hardtanh(-0.2, 0.3), "abs": lambda: AbsMod(),
         "Softshrink": lambda: nn.Softshrink(0.1)}


@pytest.mark.parametrize("name", list(EXACT) + ["MaxPool2d"])
def test_exact_on_piecewise_linear_layers(name):
    """The MILP (and its verification) runs on every piecewise-linear lowering: its certified
    value lies between the witness and CROWN's bound."""
    if name == "MaxPool2d":
        m, shape = _tiny_pool().double().eval(), (1, 3, 3)
    else:
        act = EXACT[name]()
        torch.manual_seed(0)
        m, shape = nn.Sequential(nn.Linear(3, 5), act, nn.Linear(5, 2)).double().eval(), (3,)
    with torch.no_grad():
        m(torch.zeros(1, *shape, dtype=DT))
    x0 = torch.zeros(*shape, dtype=DT) + 0.1
    c = lipcert.local_lipschitz(m, x0, 0.2, method="exact", attack_steps=2, attack_samples=32)
    crown = lipcert.local_lipschitz(m, x0, 0.2, method="crown", attack_steps=2, attack_samples=32)
    assert (c.per_output_upper <= crown.per_output_upper * (1 + 1e-9)).all()
    assert (c.per_output_lower <= c.per_output_upper).all()
    pts = x0 + 0.2 * (2 * torch.rand(300, *shape, dtype=DT) - 1)
    assert (c.per_output_upper >= _grad_norms(m, pts).max(0).values * (1 - TOL)).all()


class AbsMod(nn.Module):
    def forward(self, x):
        return x.abs()


def test_max_pool_at_ties_covers_every_branch():
    """A constant image makes every pooling window tie at x0: the bound must cover the gradient of
    whichever tap wins at nearby points (the Clarke set), for CROWN and for BaB."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(2)).double().eval()
    with torch.no_grad():
        m(torch.zeros(1, 1, 5, 5, dtype=DT))
        m[0].bias.fill_(0.5)
    x0 = torch.full((1, 5, 5), 0.3, dtype=DT)
    eps = 1e-3
    pts = x0 + eps * (2 * torch.rand(400, 1, 5, 5, dtype=DT) - 1)
    sampled = _grad_norms(m, pts).max(0).values
    at_x0 = _grad_norms(m, x0[None])[0]
    assert (sampled > at_x0 * (1 + 1e-6)).any()  # the ties matter: nearby gradients are larger
    for method, kw in (("crown", {}), ("bab", {"bab_time": 0.5})):
        c = lipcert.local_lipschitz(m, x0, eps, method=method, attack_steps=2, attack_samples=64, **kw)
        assert (c.per_output_upper >= sampled * (1 - TOL)).all(), (method, c.per_output_upper, sampled)
        assert (c.per_output_lower <= c.per_output_upper).all()
