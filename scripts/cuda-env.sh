# Sourced by scripts/cuda-check.sh and scripts/gpu-bundle.sh: nvcc from NVIDIA's PyPI wheels (one pinned
# CUDA 13.0 release: nvcc, ptxas, nvvm and headers must match, or PTX assembly fails with "Unsupported
# .version"), installed once into $INFERD_CUDA_WHEELS, and the variables candle's build reads.
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
