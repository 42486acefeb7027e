#!/usr/bin/env bash
# Per-layer side-by-side of ReconResNet's CPU layers at 256², batch 1, in one run: candle's stock layers,
# inferd's kernels (criterion, bench/conv_layers.rs) and PyTorch (bench/conv_layers_torch.py), with
# GFLOP/s (direct-convolution count). Prints a markdown table.
#   bash bench/run_conv_layers.sh [WIDTH]      (64 = full size, 32 = the shipped models)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-64}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
INFERD_BENCH_WIDTH=$W cargo bench -q --bench conv_layers >/dev/null 2>&1
python3 bench/conv_layers_torch.py "$W" > /tmp/inferd-conv-layers-torch.csv
python3 - "$W" "$CARGO_TARGET_DIR/criterion" /tmp/inferd-conv-layers-torch.csv <<'PY'
import csv, json, os, sys
w, root, torch_csv = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch_ms = {name: float(ms) for name, ms in csv.reader(open(torch_csv))}
def flops(name):
    conv = lambda i, o, k, px: 2 * i * o * k * k * px
    return {
        "head 7x7": conv(1, w, 7, 256 ** 2), "tail 7x7": conv(w, 1, 7, 256 ** 2),
        "head2 7x7": conv(2, w, 7, 256 ** 2), "tail2 7x7": conv(w, 2, 7, 256 ** 2),
        "down1 3x3s2": conv(w, 2 * w, 3, 128 ** 2), "down2 3x3s2": conv(2 * w, 4 * w, 3, 64 ** 2),
        "res 3x3": conv(4 * w, 4 * w, 3, 64 ** 2),
        "up1 convT": conv(4 * w, 2 * w, 3, 64 ** 2), "up2 convT": conv(2 * w, w, 3, 128 ** 2),
    }.get(name)
def crit(name, side):
    d = os.path.join(root, name.replace("/", "_"), side, "new", "estimates.json")
    return json.load(open(d))["median"]["point_estimate"] / 1e6
print(f"width {w}, 256², batch 1, {os.cpu_count()} threads")
print("| layer | candle ms | inferd ms | PyTorch ms | inferd / PyTorch | inferd GFLOP/s | PyTorch GFLOP/s |")
print("|---|---|---|---|---|---|---|")
for name, t in torch_ms.items():
    c, f = crit(name, "candle"), crit(name, "inferd")
    fl = flops(name)
    g = lambda ms: f"{fl / ms / 1e6:.0f}" if fl else "–"
    print(f"| {name} | {c:.2f} | {f:.2f} | {t:.2f} | {f / t:.2f}× | {g(f)} | {g(t)} |")
PY
