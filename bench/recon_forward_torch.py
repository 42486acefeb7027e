"""PyTorch side of the GPU run (scripts/gpu-bundle-run.sh): ReconResNet forward (full size with random
weights, the shipped recon-lite) on cuda (fp32, TF32 off) and on the CPU, the sizes recon_forward uses.
One JSON line per point. Run from the repository root."""
import json, os, sys, time
import torch
sys.path.insert(0, "tests/reference")
from reconresnet import ReconResNet, randomise
from safetensors.torch import load_file
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.set_grad_enabled(False)

def timeit(net, dev, b, iters):
    x = torch.rand(b, 1, 256, 256, device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    for _ in range(2):
        net(x)
    sync()
    ts = []
    for _ in range(iters):
        t = time.perf_counter(); net(x); sync(); ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]

for name in ["full", "lite"]:
    if name == "full":
        net = randomise(ReconResNet(64, 14), 0)
    else:
        net = ReconResNet(32, 6); net.load_state_dict(load_file("models/recon-lite.safetensors"))
    net.eval()
    for dev, batches, iters in [("cuda", [1, 8, 32], 10), ("cpu", [1], 3)]:
        n = net.to(dev)
        for b in batches:
            t = timeit(n, dev, b, iters)
            print(json.dumps({"impl": "pytorch", "model": name, "device": dev, "threads": torch.get_num_threads(), "batch": b, "size": 256, "median_s": round(t, 5)}), flush=True)
