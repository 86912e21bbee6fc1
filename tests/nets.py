"""Random small networks of every supported op, for property tests."""
from __future__ import annotations

import random

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTS = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.1), "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def mlp(sizes, act="relu", seed=0, bias_scale=1.0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.bias.mul_(bias_scale)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(ACTS[act]())
    return nn.Sequential(*layers).eval()


def cnn(act="relu", seed=0, channels=3, size=8, out=3, pool=False, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(channels, 4, 3, stride=1, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [ACTS[act](), nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=1)]
    if pool:
        layers.append(nn.AvgPool2d(2))
    layers += [ACTS[act](), nn.Flatten()]
    net = nn.Sequential(*layers)
    n = net(torch.zeros(1, channels, size, size)).shape[1]
    net.append(nn.Linear(n, out))
    if bn:
        with torch.no_grad():
            bnl = net[1]
            bnl.running_mean.uniform_(-0.5, 0.5)
            bnl.running_var.uniform_(0.5, 2)
            bnl.weight.uniform_(0.5, 1.5)
            bnl.bias.uniform_(-0.3, 0.3)
    return net.eval()


class Residual(nn.Module):
    """Functional code: F.linear-free residual block with torch.relu, x + y, .view and a constant."""

    def __init__(self, d=6, h=8, out=3, act="relu"):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.fc2 = nn.Linear(h, h)
        self.fc3 = nn.Linear(h, out)
        self.act = act
        self.register_buffer("mean", torch.linspace(-0.2, 0.2, d))

    def f(self, x):
        return {"relu": torch.relu, "leaky": lambda v: F.leaky_relu(v, 0.1), "tanh": torch.tanh,
                "sigmoid": torch.sigmoid}[self.act](x)

    def forward(self, x):
        x = (x - self.mean) / 0.5
        h = self.f(self.fc1(x))
        h = h + self.f(self.fc2(h))
        return self.fc3(h.view(h.shape[0], -1))


def residual(act="relu", seed=0, d=6, h=8, out=3):
    torch.manual_seed(seed)
    return Residual(d, h, out, act).eval()


class FunctionalMLP(nn.Module):
    """The same network as ``mlp(sizes)``, written with F.linear and torch.relu."""

    def __init__(self, seq):
        super().__init__()
        self.ws = nn.ParameterList([nn.Parameter(m.weight.detach().clone()) for m in seq if isinstance(m, nn.Linear)])
        self.bs = nn.ParameterList([nn.Parameter(m.bias.detach().clone()) for m in seq if isinstance(m, nn.Linear)])

    def forward(self, x):
        for i, (w, b) in enumerate(zip(self.ws, self.bs)):
            x = F.linear(x, w, b)
            if i < len(self.ws) - 1:
                x = torch.relu(x)
        return x


def random_net(rng: random.Random, acts=("relu", "leaky", "tanh", "sigmoid")):
    """A random MLP, CNN or residual net and its per-sample input shape."""
    act = rng.choice(list(acts))
    kind = rng.random()
    seed = rng.randrange(10**6)
    if kind < 0.6:
        d = rng.choice([2, 3, 5])
        sizes = [d] + [rng.choice([4, 8, 16]) for _ in range(rng.choice([1, 2, 3]))] + [rng.choice([1, 2, 3])]
        return mlp(sizes, act, seed), (d,)
    if kind < 0.85:
        return cnn(act, seed, channels=1, size=6, out=2, pool=rng.random() < 0.5, bn=rng.random() < 0.5), (1, 6, 6)
    return residual(act, seed), (6,)


def box_points(x0, eps, n, gen=None):
    """``n`` uniform points of the box plus all its corners when the dimension allows."""
    d = x0.numel()
    pts = x0 + eps * (2 * torch.rand((n,) + tuple(x0.shape), generator=gen, dtype=x0.dtype) - 1)
    if d <= 10:
        signs = torch.tensor([[(i >> j) & 1 for j in range(d)] for i in range(2 ** d)], dtype=x0.dtype) * 2 - 1
        pts = torch.cat([pts, x0 + eps * signs.reshape(-1, *x0.shape)])
    return pts
