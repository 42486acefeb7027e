#!/usr/bin/env bash
# Compile gate for the CUDA build on machines without a GPU: installs nvcc from NVIDIA's PyPI wheels
# (one pinned CUDA 13.0 release: nvcc, ptxas, nvvm and headers must match, or PTX assembly fails with
# "Unsupported .version") and runs `cargo check --all-targets --features cuda`. Build scripts run, so
# candle's CUDA kernels are compiled to PTX for real; only linking (which needs the driver's libcuda) is
# skipped. On a GPU machine use scripts/gpu-check.sh instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${INFERD_PYTHON:-python3}
WHEELS=${INFERD_CUDA_WHEELS:-/var/tmp/inferd-cuda-wheels}
CU=$WHEELS/nvidia/cu13
if [ ! -x "$CU/bin/nvcc" ]; then
  echo "installing nvcc 13.0 from PyPI wheels into $WHEELS"
  "$PY" -m pip install -q --disable-pip-version-check --target "$WHEELS" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
fi
export PATH="$CU/bin:$PATH"
export CUDA_ROOT="$CU" CUDA_PATH="$CU" CUDA_HOME="$CU"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# A separate target directory: the CUDA feature set rebuilds candle, and keeping it apart keeps the
# CPU build's cache warm.
export CARGO_TARGET_DIR=${CUDA_CARGO_TARGET_DIR:-/var/tmp/inferd-target-cuda}
nvcc --version | tail -1
cargo check --all-targets --features cuda
