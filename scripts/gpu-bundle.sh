#!/usr/bin/env bash
# Builds inferd's CUDA binaries on a machine WITHOUT a GPU or CUDA toolkit, for a GPU machine WITHOUT a
# Rust toolchain, and packs them into .gpu/bin.tar.xz (git-ignored; about 28 MiB) for
# scripts/gpu-bundle-run.sh. About 25 minutes on 2 cores from cold (candle's CUDA kernels), 10 warm.
#
# nvcc comes from NVIDIA's PyPI wheels (scripts/cuda-env.sh, shared with scripts/cuda-check.sh). candle links the CUDA libraries
# dynamically (cudarc's dynamic-linking), so the link needs libcublas/libcublasLt/libcurand/libnvrtc
# (real ones, from the cu13 wheels) and libcuda (the driver: a stub defining every cu* function
# cudarc binds, each returning CUDA_ERROR_UNKNOWN; the real driver is found at run time). The sonames
# recorded in the binaries (libcuda.so.1, libcublas.so.13, libcurand.so.10, libcudart.so.13) match
# what the driver and PyTorch's cu130 wheels provide on the GPU machine.
#
#   bash scripts/gpu-bundle.sh        then, on the GPU machine:   bash scripts/gpu-bundle-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/cuda-env.sh
LINK=${INFERD_CUDA_LINK:-/var/tmp/inferd-cuda-link}
mkdir -p "$LINK/lib" "$LINK/stub" "$LINK/wheels"
# 1. link-time CUDA libraries from the cu13 wheels
if [ ! -e "$LINK/lib/libcublas.so.13" ]; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_12_x86_64 --python-version 3.12 -d "$LINK/wheels" \
    nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
  for w in "$LINK"/wheels/*.whl; do
    "$PY" - "$w" "$LINK/lib" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if "/lib/" in n and ".so" in os.path.basename(n):
            open(os.path.join(out, os.path.basename(n)), "wb").write(z.read(n))
PY
  done
  cp "$CU/lib/libcudart.so.13" "$LINK/lib/"
  (cd "$LINK/lib" && for f in *.so.*; do ln -sf "$f" "${f%%.so.*}.so"; done)
fi
# 2. the driver stub: every cu* function of cudarc's driver bindings
if [ ! -e "$LINK/stub/libcuda.so.1" ]; then
  SYS=$(cargo metadata --format-version 1 --features cuda 2>/dev/null | "$PY" -c '
import json, sys, os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(os.path.join(os.path.dirname(p["manifest_path"]), "src/driver/sys/mod.rs"))')
  grep -oE "^pub unsafe fn cu[A-Za-z0-9_]+" "$SYS" | awk '{print $4}' | sort -u > "$LINK/stub/symbols.txt"
  { echo "/* stub libcuda for link time only; every function returns CUDA_ERROR_UNKNOWN (999) */"
    sed 's/.*/int &(void){return 999;}/' "$LINK/stub/symbols.txt"; } > "$LINK/stub/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/stub/libcuda.so.1" "$LINK/stub/libcuda_stub.c"
  ln -sf libcuda.so.1 "$LINK/stub/libcuda.so"
fi
# 3. build
export CARGO_TARGET_DIR=${CUDA_BUNDLE_TARGET_DIR:-/var/tmp/inferd-target-cuda}
export RUSTFLAGS="-L native=$LINK/lib -L native=$LINK/stub"
export CARGO_PROFILE_RELEASE_DEBUG=0
cargo build --release --features cuda --bin inferd --example recon_forward --example lightsb_speed --example lcm_speed
cargo test --release --features cuda --test cuda_parity --test grpc_recon --no-run 2>&1 | tee "$LINK/testpaths.log"
R=$CARGO_TARGET_DIR/release; S=$LINK/stage; rm -rf "$S"; mkdir -p "$S"
cp "$R/inferd" "$S/"; for e in recon_forward lightsb_speed lcm_speed; do cp "$R/examples/$e" "$S/"; done
for t in cuda_parity grpc_recon; do cp "$(grep -oE "/[^ ]*/deps/$t-[0-9a-f]+" "$LINK/testpaths.log" | tail -1)" "$S/$t"; done
strip --strip-debug "$S"/*
echo "$ROOT" > "$S/BUILD_REPO"
{ git rev-parse HEAD; git diff | sha256sum | cut -c1-12; date -u +%FT%TZ; } > "$S/BUILD_INFO"
mkdir -p .gpu
(cd "$S" && tar -cf - BUILD_REPO BUILD_INFO inferd cuda_parity grpc_recon recon_forward lcm_speed lightsb_speed) \
  | xz -T1 --lzma2=preset=6,dict=256MiB > .gpu/bin.tar.xz
readelf -d "$S/inferd" | grep NEEDED
du -sh .gpu/bin.tar.xz
