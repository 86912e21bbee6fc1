"""Model classes importable by path (``loadable:DigitsMLP``), for loading weights files in tests.
Their state_dict keys are those of the zoo's ``nn.Sequential`` models."""
import torch.nn as nn


class DigitsMLP(nn.Sequential):
    """The zoo's digits-mlp: 64-hidden-hidden-10 ReLU."""

    def __init__(self, hidden: int = 128):
        super().__init__(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


class TinyChain(nn.Sequential):
    """A 3-12-12-2 chain (ReLU, Tanh) for the global command."""

    def __init__(self, width: int = 12):
        super().__init__(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2))


class WithJumps(nn.Module):
    """A 64-input net with an op lipcert does not know (erf) and one it refuses (Hardshrink, a jump)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 8)
        self.shrink = nn.Hardshrink(0.5)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        import torch
        return self.out(torch.erf(self.shrink(self.fc(x))))
