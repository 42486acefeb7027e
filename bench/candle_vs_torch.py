"""Side-by-side forward-pass latency of ReconResNet: inferd (candle, CPU) vs PyTorch (CPU), same
weights, same machine, same run. Prints a markdown table with the ratio candle / PyTorch.

Usage: python3 bench/candle_vs_torch.py [--width 64 --blocks 14 --size 256 --batches 1 4 --iters 3]
Needs: torch, safetensors, numpy; builds the Rust side with cargo.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
from reconresnet import ReconResNet, randomise  # noqa: E402


def torch_time(net, size, batch, iters):
    x = torch.rand(batch, 1, size, size)
    with torch.no_grad():
        net(x)
        ts = []
        for _ in range(iters):
            t = time.perf_counter()
            net(x)
            ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=14)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--weights", help="use these weights instead of random ones")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    root = os.path.join(HERE, "..")
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", "/var/tmp/inferd-target")
    # The dev profile compiles every dependency (candle included) at opt-level 3 (Cargo.toml), and the
    # forward pass is candle code, so it runs as fast as a release build without a second full build.
    profile = os.environ.get("INFERD_BENCH_PROFILE", "dev")
    subprocess.run(["cargo", "build", "--profile", profile, "--example", "recon_forward"], cwd=root, env=env, check=True)
    exe = os.path.join(env["CARGO_TARGET_DIR"], "debug" if profile == "dev" else profile, "examples", "recon_forward")
    with tempfile.TemporaryDirectory() as d:
        if args.weights:
            from safetensors.torch import load_file
            sd = load_file(args.weights)
            width = sd["model.1.weight"].shape[0]
            blocks = sum(1 for k in sd if k.endswith("conv_block.1.weight"))
            net = ReconResNet(width, blocks)
            net.load_state_dict(sd)
            wpath = args.weights
        else:
            net = randomise(ReconResNet(args.width, args.blocks), 0)
            wpath = os.path.join(d, "w.safetensors")
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, wpath)
        net.eval()
        params = sum(p.numel() for p in net.parameters())
        rows = []
        for b in args.batches:
            t_torch = torch_time(net, args.size, b, args.iters)
            out = subprocess.run([exe, wpath, str(args.size), str(args.iters), str(b)], capture_output=True, text=True, check=True)
            t_candle = json.loads(out.stdout.strip().splitlines()[-1])["median_s"]
            rows.append((b, t_torch, t_candle))
    print(f"ReconResNet {params/1e6:.2f} M parameters, {args.size}², {os.cpu_count()} threads, torch {torch.__version__}")
    print("| batch | PyTorch s/batch | candle s/batch | candle / PyTorch |")
    print("|---|---|---|---|")
    for b, tt, tc in rows:
        print(f"| {b} | {tt:.3f} | {tc:.3f} | {tc/tt:.2f}× |")


if __name__ == "__main__":
    main()
