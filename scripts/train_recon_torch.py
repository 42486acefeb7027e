"""Trains ReconResNet weights with PyTorch on training pairs written by `inferd train recon-data`.

The pairs come from inferd's own serving pipeline (zero-filled magnitude scaled to a peak of 0.5, the
target in the same scale), so the weights drop into `inferd serve` unchanged: the PyTorch module has the
official `Resnet2Dv2b14` structure and its state dict is saved as safetensors. The loss and optimiser
match `inferd train recon` (L1 + (1 - SSIM) with a 7x7 uniform window, Adam, cosine decay to 5 %).

Usage (add --radial for pairs made with `inferd train recon-data --sampling radial`):
  python3 scripts/train_recon_torch.py --data DIR --out models/recon-lite.safetensors \
      --width 32 --blocks 6 --minutes 35 [--init previous.safetensors]
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from reconresnet import ReconResNet  # noqa: E402


def ssim(x, y):
    win = torch.ones(1, 1, 7, 7, dtype=x.dtype) / 49.0
    f = lambda t: F.conv2d(t, win)
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, nargs="+", help="one or more folders of training pairs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="start from these weights (safetensors state dict)")
    ap.add_argument("--val", type=int, default=64, help="pairs held out for validation")
    ap.add_argument("--radial", action="store_true",
                    help="mark the weights as trained on gridded radial data (inferd serves them with the recon-radial contract)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x_all = torch.from_numpy(np.concatenate([np.load(os.path.join(d, "inputs.npy")) for d in args.data]))
    y_all = torch.from_numpy(np.concatenate([np.load(os.path.join(d, "targets.npy")) for d in args.data]))
    n = x_all.shape[0] - args.val
    xv, yv = x_all[n:], y_all[n:]
    net = ReconResNet(args.width, args.blocks)
    if args.init:
        from safetensors.torch import load_file
        net.load_state_dict({k: v for k, v in load_file(args.init).items() if k != "sampling.radial"})
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    budget = args.minutes * 60.0
    t0 = time.time()
    step, avg = 0, None
    ckpt = args.out + ".ckpt"
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        frac = elapsed / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        idx = torch.randint(0, n, (args.batch,))
        x, y = x_all[idx], y_all[idx]
        # flips keep the direction of 1D aliasing, so they are valid augmentations
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if torch.rand(()) < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        net.train()
        pred = net(x)
        loss = (pred - y).abs().mean() + (1 - ssim(pred, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 100 == 0:
            net.eval()
            with torch.no_grad():
                pv = torch.cat([net(xv[i:i + 16]) for i in range(0, len(xv), 16)])
                vs = ssim(pv, yv).item()
                vz = ssim(xv, yv).item()
            print(f"step {step} {elapsed/60:.1f} min lr {opt.param_groups[0]['lr']:.2e} loss {avg:.4f} "
                  f"val SSIM(net) {vs:.4f} (input {vz:.4f})", flush=True)
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, ckpt)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if args.radial:
        state["sampling.radial"] = torch.ones(1)
    save_file(state, args.out)
    print(f"done: {step} steps in {(time.time()-t0)/60:.1f} min; wrote {args.out}")


if __name__ == "__main__":
    main()
