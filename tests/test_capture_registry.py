"""Capture through the registry: `lipcert check` lists every op with its status (exit 3 when one
is missing or refused), discontinuous ops are refused with the reason, and inputs are read as
datasets hand them over (unbatched images, batched ones) for any spelling of the reshape."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

import lipcert
from lipcert.cli.main import app
from lipcert.graph import capture, inspect

runner = CliRunner()


def test_check_lists_every_op_and_exits_3(tmp_path):
    torch.save(__import__("loadable").WithJumps().state_dict(), tmp_path / "m.pt")
    np.save(tmp_path / "x.npy", np.zeros(64, dtype=np.float32))
    r = runner.invoke(app, ["check", str(tmp_path / "m.pt"), "-i", str(tmp_path / "x.npy"),
                            "--model-class", "loadable:WithJumps"], terminal_width=240)
    assert r.exit_code == 3, r.output
    out = " ".join(r.output.split())
    for word in ("fc", "shrink", "erf", "out", "supported", "refused", "unsupported", "discontinuous"):
        assert word in out, (word, out)


def test_check_passes_on_a_supported_model(tmp_path):
    torch.save(nn.Sequential(nn.Linear(64, 8), nn.GELU(), nn.Linear(8, 2)).state_dict(), tmp_path / "m.pt")
    np.save(tmp_path / "x.npy", np.zeros(64, dtype=np.float32))
    torch.manual_seed(0)
    r = runner.invoke(app, ["check", str(tmp_path / "m.pt"), "-i", str(tmp_path / "x.npy"), "--model-class",
                            "torch.nn:Sequential"])
    # a plain Sequential cannot be rebuilt from a state_dict: the error must be a clean one
    assert r.exit_code in (0, 2), r.output


def test_discontinuous_ops_are_refused_with_the_reason():
    for m in (nn.Sequential(nn.Linear(3, 3), nn.Hardshrink(0.5)), nn.Sequential(nn.Linear(3, 3), nn.Threshold(0.1, 2.0))):
        with pytest.raises(lipcert.UnsupportedOperation, match="discontinuous"):
            lipcert.local_lipschitz(m.eval(), torch.zeros(3), 0.1)

    class Sign(nn.Module):
        def forward(self, x):
            return torch.sign(x) + torch.erf(x)
    st = {s.node: s for s in inspect(Sign().eval(), torch.zeros(1, 3))}
    assert st["sign"].status == "refused" and "discontinuous" in st["sign"].reason
    assert st["erf"].status == "unsupported"
    with pytest.raises(lipcert.UnsupportedOperation) as e:
        capture(Sign().eval(), torch.zeros(1, 3))
    names = [n for n, _ in e.value.ops]
    assert "sign" in names and "erf" in names


class ViewNet(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        torch.manual_seed(0)
        self.spelling = spelling
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)
        self.flat = nn.Flatten()

    def forward(self, x):
        if self.spelling == "view":
            x = x.view(-1, 64)
        elif self.spelling == "reshape":
            x = x.reshape(x.shape[0], -1)
        elif self.spelling == "flatten":
            x = torch.flatten(x, 1)
        else:
            x = self.flat(x)
        return self.fc2(torch.relu(self.fc1(x)))


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10)).eval()


@pytest.mark.parametrize("spelling", ["view", "reshape", "flatten", "module"])
def test_unbatched_and_batched_images_certify_the_same_input(spelling):
    img = torch.rand(1, 8, 8, dtype=torch.float64)
    m = ViewNet(spelling).double().eval()
    ups = []
    for x in (img, img[None]):
        c = lipcert.local_lipschitz(m, x, 0.02, method="crown", attack_steps=2)
        ups.append(c.per_output_upper)
    torch.testing.assert_close(ups[0], ups[1], rtol=0, atol=0)


def test_unbatched_image_into_a_cnn():
    img = torch.rand(1, 8, 8, dtype=torch.float64)
    m = _cnn().double()
    a = lipcert.local_lipschitz(m, img, 0.02, method="crown", attack_steps=2)
    b = lipcert.local_lipschitz(m, img[None], 0.02, method="crown", attack_steps=2)
    torch.testing.assert_close(a.per_output_upper, b.per_output_upper, rtol=0, atol=0)
    assert not isinstance(a, list) and not isinstance(b, list)


def test_reshape_across_the_batch_is_refused():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x).flatten()  # mixes the batch into the features
    with pytest.raises(lipcert.UnsupportedOperation, match="batch"):
        capture(Bad().eval(), torch.zeros(1, 3))
