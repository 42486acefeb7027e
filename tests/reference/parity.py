"""Writes a randomly initialised PyTorch ReconResNet (state dict as safetensors), an input batch and
PyTorch's output, for inferd's parity test.

Usage: python3 parity.py OUT_DIR WIDTH BLOCKS SIZE BATCH SEED [WEIGHTS]
With WEIGHTS (a state dict, e.g. a shipped model; the radial marker tensor is ignored) those weights are
used instead of random ones; WIDTH and BLOCKS must match them.
"""
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from reconresnet import ReconResNet, randomise  # noqa: E402

out, width, blocks, size, batch, seed = sys.argv[1], *map(int, sys.argv[2:7])
torch.manual_seed(seed)
if len(sys.argv) > 7:
    from safetensors.torch import load_file
    sd = {k: v for k, v in load_file(sys.argv[7]).items() if k.startswith("model.")}
    net = ReconResNet(width, blocks)
    net.load_state_dict(sd)
    net.eval()
else:
    net = randomise(ReconResNet(width, blocks), seed).eval()
x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed + 1))
with torch.no_grad():
    y = net(x)
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(out, "weights.safetensors"))
np.save(os.path.join(out, "input.npy"), x.numpy().astype(np.float32))
np.save(os.path.join(out, "output.npy"), y.numpy().astype(np.float32))
