#!/usr/bin/env bash
# Runs the reconstruction benchmarks side by side in one go and prints markdown for BENCHMARKS.md:
#   1. quality and time per slice: zero-filled vs BART pics vs inferd (bench/recon_vs_bart.rs)
#   2. ReconResNet forward latency: candle vs PyTorch, full size and the shipped lite model
#   3. criterion micro-benchmarks of the MR pipeline around the network (bench/mri.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(date -u +%Y-%m-%d)"
echo "BART $(bart version), torch $(python3 -c 'import torch; print(torch.__version__)')"
cargo build -q --examples
echo; echo "## quality (cargo run --example recon_vs_bart)"
"$CARGO_TARGET_DIR/debug/examples/recon_vs_bart" --synthetic 8 2>/dev/null
echo; echo "## forward pass, full size (python3 bench/candle_vs_torch.py --width 64 --blocks 14)"
python3 bench/candle_vs_torch.py --width 64 --blocks 14 --size 256 --batches 1 4 --iters 3 2>/dev/null | grep -v Compiling
echo; echo "## forward pass, shipped recon-lite (python3 bench/candle_vs_torch.py --weights models/recon-lite.safetensors)"
python3 bench/candle_vs_torch.py --weights models/recon-lite.safetensors --size 256 --batches 1 4 --iters 5 2>/dev/null | grep -v Compiling
echo; echo "## MR pipeline micro-benchmarks (cargo bench --bench mri)"
cargo bench -q --bench mri 2>/dev/null | grep -E "time:|^[a-z]" | grep -B1 "time:" || true
