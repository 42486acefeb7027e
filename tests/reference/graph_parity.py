"""Reference outputs for inferd's set model from the PyTorch implementation in
scripts/train_graph_torch.py (torch.nn.GRUCell for the recurrent parts): for each aggregator, random
weights, a fixed batch of sets (sizes 1–40), and the logits. Writes DIR/<kind>.safetensors (weights in
inferd's names) and DIR/<kind>-io.safetensors (x, batch, logits).

Usage: python3 graph_parity.py DIR
"""
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from train_graph_torch import SetModel, bits  # noqa: E402

out = sys.argv[1]
rng = np.random.default_rng(5)
sizes = np.array([1, 2, 3, 7, 16, 33, 40, 5])
vals = np.concatenate([rng.integers(0, 256, s) for s in sizes])
x = torch.from_numpy(bits(vals))
seg = torch.from_numpy(np.repeat(np.arange(len(sizes)), sizes))
for kind in ("sum", "max", "gru", "lcm", "lcm-symgru"):
    torch.manual_seed(1)
    m = SetModel(kind, 32)
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.5, 0.5)
        logits = m(x, seg, sizes)
    save_file(m.inferd_state(), f"{out}/{kind}.safetensors")
    save_file({"x": x.contiguous(), "batch": seg.to(torch.int64).contiguous(), "logits": logits.contiguous()}, f"{out}/{kind}-io.safetensors")
print("ok")
