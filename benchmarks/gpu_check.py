"""GPU path check (run on a machine with CUDA): every method with device="cuda" must give the
CPU certificate (float64, 1e-9 relative), and the CIFAR-sized CNN's timing on the GPU.

    python benchmarks/gpu_check.py
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, "tests")
import lipcert  # noqa: E402
from nets import cnn, mlp, residual  # noqa: E402


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    print(torch.__version__, torch.cuda.get_device_name())
    bad = 0
    for name, net, x in (("mlp", mlp([8, 32, 32, 3], "relu", 0), torch.randn(8)),
                         ("tanh-mlp", mlp([8, 32, 3], "tanh", 1), torch.randn(8)),
                         ("cnn", cnn("relu", seed=2, pool=True, bn=True), torch.randn(3, 8, 8)),
                         ("resnet", residual("leaky", 3), torch.randn(6))):
        for method in ("ibp", "crown", "recurjac", "alpha-crown", "naive"):
            a = lipcert.local_lipschitz(net, x, 0.05, method=method, attack_steps=3)
            b = lipcert.local_lipschitz(net, x, 0.05, method=method, attack_steps=3, device="cuda")
            d = float(((a.per_output_upper - b.per_output_upper.cpu()).abs() / a.per_output_upper).max())
            ok = d < 1e-9
            bad += not ok
            print(f"{name:9s} {method:12s} cpu {a.upper:.8g} cuda {b.upper:.8g} rel diff {d:.1e} {'ok' if ok else 'MISMATCH'}")
        lo, up = lipcert.bounds.output_bounds(net, x, 0.05, device="cuda")
        lo2, up2 = lipcert.bounds.output_bounds(net, x, 0.05)
        print(f"{name:9s} output_bounds cuda vs cpu max diff {float((up.cpu() - up2).abs().max()):.1e}")
    b = lipcert.local_lipschitz(mlp([2, 16, 16, 2], "relu", 4), torch.randn(2), 0.1, method="bab", bab_time=5,
                                device="cuda")
    print("bab on cuda", b)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64 * 8 * 8, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    x = torch.rand(3, 32, 32)
    for method in ("crown", "alpha-crown"):
        torch.cuda.synchronize()
        t = time.perf_counter()
        c = lipcert.local_lipschitz(net, x, 1 / 255, domain=(0, 1), method=method, dtype=torch.float32, device="cuda",
                                    attack_steps=5, attack_samples=64, max_memory_gb=20)
        torch.cuda.synchronize()
        print(f"cifar-cnn {method} cuda float32: {c} bound {c.timings['bound']:.2f}s total {time.perf_counter() - t:.2f}s "
              f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print("mismatches:", bad)


if __name__ == "__main__":
    main()
