"""Small trained networks on data that ships with scikit-learn, trained at first use and cached.

Each model is deterministic for a seed, trains in seconds on a CPU, and is cached under
``$LIPCERT_CACHE`` (default ``~/.cache/lipcert``) as a ``state_dict``.

  name               data                         architecture
  digits-mlp         load_digits, 8x8 in [0, 1]   64-128-128-10 ReLU (the reference benchmark's)
  digits-cnn         load_digits, 1x8x8           conv 8 k3 s1 p1, conv 16 k3 s2 p1, fc 64, fc 10
  digits-resnet      load_digits, 1x8x8           conv 8, two residual blocks, avgpool, fc 10
  diabetes-mlp       load_diabetes (10 features)  10-64-64-1 ReLU regression
  digits-maxpool-cnn load_digits, 1x8x8           conv 8 k3 p1, maxpool 2, conv 16 k3 p1, maxpool 2, fc 10
  digits-gelu-mlp    load_digits, 8x8 in [0, 1]   64-64-64-10 GELU
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def cache_dir() -> Path:
    d = Path(os.environ.get("LIPCERT_CACHE", Path.home() / ".cache" / "lipcert"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def digits(split: str = "test", flat: bool = True):
    """``(X, y)`` of scikit-learn's digits scaled to [0, 1]; a fixed 80/20 split."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.RandomState(0)
    idx = rng.permutation(len(X))
    cut = int(0.8 * len(X))
    idx = idx[:cut] if split == "train" else idx[cut:]
    X, y = torch.from_numpy(X[idx]), torch.from_numpy(y[idx]).long()
    return (X, y) if flat else (X.reshape(-1, 1, 8, 8), y)


def diabetes(split: str = "test"):
    """``(X, y)`` of scikit-learn's diabetes data, features min-max scaled to [0, 1], y standardised."""
    from sklearn.datasets import load_diabetes
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.min(0)) / (X.max(0) - X.min(0))
    y = (y - y.mean()) / y.std()
    rng = np.random.RandomState(0)
    idx = rng.permutation(len(X))
    cut = int(0.8 * len(X))
    idx = idx[:cut] if split == "train" else idx[cut:]
    return torch.from_numpy(X[idx].astype(np.float32)), torch.from_numpy(y[idx].astype(np.float32)).reshape(-1, 1)


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


def _digits_mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def _digits_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def _digits_resnet():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), ResBlock(8), ResBlock(8), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def _digits_maxpool_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 2 * 2, 10))


def _digits_gelu_mlp():
    return nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 10))


def _diabetes_mlp():
    return nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], nn.Module]
    data: str            # "digits" | "diabetes"
    flat: bool
    epochs: int
    description: str

    def input_shape(self):
        return {"digits": (64,) if self.flat else (1, 8, 8), "diabetes": (10,)}[self.data]

    def dataset(self, split="test"):
        return digits(split, self.flat) if self.data == "digits" else diabetes(split)


ZOO = {e.name: e for e in [
    ZooEntry("digits-mlp", _digits_mlp, "digits", True, 60, "64-128-128-10 ReLU MLP on 8x8 digits"),
    ZooEntry("digits-cnn", _digits_cnn, "digits", False, 40, "2-conv + 2-dense ReLU CNN on 1x8x8 digits"),
    ZooEntry("digits-resnet", _digits_resnet, "digits", False, 40, "residual CNN (2 blocks, avgpool) on 1x8x8 digits"),
    ZooEntry("diabetes-mlp", _diabetes_mlp, "diabetes", True, 200, "10-64-64-1 ReLU regression MLP on diabetes"),
    ZooEntry("digits-maxpool-cnn", _digits_maxpool_cnn, "digits", False, 40,
             "2-conv ReLU CNN with 2x2 max pooling on 1x8x8 digits"),
    ZooEntry("digits-gelu-mlp", _digits_gelu_mlp, "digits", True, 40, "64-64-64-10 GELU MLP on 8x8 digits"),
]}


def names() -> list[str]:
    return list(ZOO)


def _train(entry: ZooEntry, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = entry.build()
    X, y = entry.dataset("train")
    return fit(model, X, y, entry.epochs, seed, classify=entry.data == "digits")


def fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0,
        classify: bool = True) -> nn.Module:
    """Train ``model`` in place as the zoo does (Adam, lr 3e-3, batches of 64 shuffled by ``seed``;
    cross-entropy when ``classify``, else MSE) and return it in eval mode. Seed torch before
    building ``model`` for deterministic initial weights."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(model(X[b]), y[b]).backward()
            opt.step()
    return model.eval()


def load_model(name: str, seed: int = 0, retrain: bool = False) -> nn.Module:
    """The trained zoo model ``name`` (eval mode), from the cache or trained now."""
    if name not in ZOO:
        from .errors import InvalidInput
        raise InvalidInput(f"unknown zoo model {name!r}; available: {', '.join(ZOO)}")
    entry = ZOO[name]
    path = cache_dir() / f"{name}-seed{seed}.pt"
    model = entry.build()
    if path.exists() and not retrain:
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except Exception:
            pass  # stale or corrupt cache: train again
    model = _train(entry, seed)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model


def accuracy(name: str, seed: int = 0) -> float:
    """Test accuracy (digits) or test R^2 (diabetes)."""
    entry = ZOO[name]
    model = load_model(name, seed)
    X, y = entry.dataset("test")
    with torch.no_grad():
        out = model(X)
    if entry.data == "digits":
        return float((out.argmax(1) == y).float().mean())
    return float(1 - ((out - y) ** 2).mean() / y.var())
