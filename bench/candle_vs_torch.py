"""Side-by-side forward-pass latency of ReconResNet on the CPU, same weights, same machine, same run:
PyTorch, inferd's CPU kernels (`inferd bench recon`), and candle's stock layers (`--stock`).
Each side runs in its own process (so peak memory is its own), alternating, and the table gives the
ratio inferd / PyTorch, inferd's GFLOP/s (direct-convolution count) and each side's peak RSS.

Usage: python3 bench/candle_vs_torch.py [--width 64 --blocks 14 | --weights FILE]
           [--sizes 256 320] [--batches 1 4] [--iters 5] [--no-stock]
Needs: torch, safetensors; builds inferd in release (CARGO_TARGET_DIR, default /var/tmp/inferd-target)
unless INFERD_BIN names a prebuilt binary.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")

TORCH_SIDE = r"""
import json, resource, sys, time, torch
sys.path.insert(0, sys.argv[1])
from reconresnet import ReconResNet
from safetensors.torch import load_file
weights, width, blocks, size, batch, iters = sys.argv[2], *map(int, sys.argv[3:8])
torch.set_grad_enabled(False)
torch.set_num_threads(int(sys.argv[8]))
net = ReconResNet(width, blocks)
net.load_state_dict({k: v for k, v in load_file(weights).items() if k.startswith("model.")})
net.eval()
x = torch.rand(batch, 1, size, size)
for _ in range(2):
    net(x)
ts = []
for _ in range(iters):
    t = time.perf_counter(); net(x); ts.append(time.perf_counter() - t)
ts.sort()
print(json.dumps({"median_s": ts[len(ts) // 2], "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=14)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--weights", help="use these weights instead of random ones")
    ap.add_argument("--no-stock", action="store_true", help="skip candle's stock layers (slow)")
    args = ap.parse_args()
    threads = os.cpu_count()
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", "/var/tmp/inferd-target")
    exe = os.environ.get("INFERD_BIN")  # a prebuilt binary (machines without a Rust toolchain)
    if not exe:
        subprocess.run(["cargo", "build", "-q", "--release", "--bin", "inferd"], cwd=ROOT, env=env, check=True)
        exe = os.path.join(env["CARGO_TARGET_DIR"], "release", "inferd")
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    from reconresnet import ReconResNet, randomise

    with tempfile.TemporaryDirectory() as d:
        if args.weights:
            from safetensors.torch import load_file
            sd = load_file(args.weights)
            width = sd["model.1.weight"].shape[0]
            blocks = sum(1 for k in sd if k.endswith("conv_block.1.weight"))
            wpath = args.weights
        else:
            width, blocks = args.width, args.blocks
            net = randomise(ReconResNet(width, blocks), 0)
            wpath = os.path.join(d, "w.safetensors")
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, wpath)
        rows = []
        for size in args.sizes:
            for b in args.batches:
                iters = max(2, args.iters // b)
                torch_side = json.loads(subprocess.run(
                    [sys.executable, "-c", TORCH_SIDE, os.path.join(ROOT, "tests", "reference"), wpath,
                     str(width), str(blocks), str(size), str(b), str(iters), str(threads)],
                    capture_output=True, text=True, check=True).stdout)

                def inferd(stock):
                    cmd = [exe, "bench", "recon", "--weights", wpath, "--size", str(size), "--batch", str(b),
                           "--iters", str(iters), "--warmup", "2"] + (["--stock"] if stock else [])
                    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

                fast = inferd(False)
                stock = None if args.no_stock else inferd(True)
                rows.append((size, b, torch_side, fast, stock))
    print(f"ReconResNet width {width}, {blocks} blocks; {threads} threads; torch {torch.__version__}")
    print("| size | batch | PyTorch s | inferd s | inferd / PyTorch | inferd GFLOP/s | candle stock s | peak MiB PyTorch / inferd / stock |")
    print("|---|---|---|---|---|---|---|---|")
    for size, b, t, f, s in rows:
        stock_s = f"{s['median_s']:.3f}" if s else "–"
        stock_m = f"{s['peak_rss_mib']:.0f}" if s else "–"
        print(f"| {size}² | {b} | {t['median_s']:.3f} | {f['median_s']:.3f} | **{f['median_s'] / t['median_s']:.2f}×** | "
              f"{f['gflop_per_s']:.0f} | {stock_s} | {t['peak_rss_mib']:.0f} / {f['peak_rss_mib']:.0f} / {stock_m} |")


if __name__ == "__main__":
    main()
