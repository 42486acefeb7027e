#!/usr/bin/env bash
# Compile gate for the CUDA build on machines without a GPU: installs nvcc from NVIDIA's PyPI wheels
# (scripts/cuda-env.sh) and runs `cargo check --all-targets --features cuda`. Build scripts run, so
# candle's CUDA kernels are compiled to PTX for real; only linking (which needs the driver's libcuda) is
# skipped. On a GPU machine use scripts/gpu-check.sh instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cuda-env.sh
# A separate target directory: the CUDA feature set rebuilds candle, and keeping it apart keeps the
# CPU build's cache warm.
export CARGO_TARGET_DIR=${CUDA_CARGO_TARGET_DIR:-/var/tmp/inferd-target-cuda}
bash scripts/prune-target.sh "$CARGO_TARGET_DIR"
nvcc --version | tail -1
cargo check --all-targets --features cuda
