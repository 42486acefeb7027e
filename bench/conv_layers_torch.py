"""PyTorch's side of the per-layer benchmark (bench/conv_layers.rs): the same layers of ReconResNet at
256², batch 1, with as many threads as cores; prints `name,median_ms` lines.

Usage: python3 bench/conv_layers_torch.py [WIDTH]
"""
import os
import sys
import time

import torch

torch.set_grad_enabled(False)
torch.set_num_threads(os.cpu_count())
w = int(sys.argv[1]) if len(sys.argv) > 1 else 64
nn = torch.nn


def timed(f, x, budget=3.0):
    f(x)
    f(x)
    ts = []
    start = time.perf_counter()
    while len(ts) < 10 or (time.perf_counter() - start < budget and len(ts) < 200):
        t = time.perf_counter()
        f(x)
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


layers = [
    ("head 7x7", nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(1, w, 7)), (1, 256)),
    ("down1 3x3s2", nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), (w, 256)),
    ("down2 3x3s2", nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), (2 * w, 128)),
    ("res 3x3", nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(4 * w, 4 * w, 3)), (4 * w, 64)),
    ("up1 convT", nn.ConvTranspose2d(4 * w, 2 * w, 3, stride=2, padding=1, output_padding=1), (4 * w, 64)),
    ("up2 convT", nn.ConvTranspose2d(2 * w, w, 3, stride=2, padding=1, output_padding=1), (2 * w, 128)),
    ("tail 7x7", nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w, 1, 7), nn.Sigmoid()), (w, 256)),
    ("head2 7x7", nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(2, w, 7)), (2, 256)),
    ("tail2 7x7", nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w, 2, 7)), (w, 256)),
    ("norm+prelu @256", nn.Sequential(nn.InstanceNorm2d(w), nn.PReLU()), (w, 256)),
    ("norm+prelu @64", nn.Sequential(nn.InstanceNorm2d(4 * w), nn.PReLU()), (4 * w, 64)),
]
for name, layer, (c, size) in layers:
    layer.eval()
    print(f"{name},{timed(layer, torch.randn(1, c, size, size)):.4f}", flush=True)
