#!/usr/bin/env bash
# The device side of a GPU check with prebuilt binaries (machines with a GPU but no Rust toolchain):
# unpacks .gpu/bin.tar.xz made by scripts/gpu-bundle.sh, finds the driver and the CUDA libraries of the
# NVIDIA pip wheels, runs the CUDA tests (cuda_parity, grpc_recon with the GPU as serving device) and the
# benchmarks (recon_forward on cuda and cpu, PyTorch on the same machine, LightSB, LCM), writing $OUT.
# Run from the repository root:  OUT=/some/dir bash scripts/gpu-bundle-run.sh   (about 70 s on an H200)
# Ends within ~8 minutes: every step gets min(its own limit, time left before the deadline).
# No `set -e`: a failing step is recorded and the script goes on.
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
: > "$LOG"
START=$(date +%s)
DEADLINE=$((START + ${RUN_BUDGET_S:-460}))
BIN=/tmp/gpubin
STEPS=()

log() { echo "$*" | tee -a "$LOG"; }
left() { echo $((DEADLINE - $(date +%s))); }
# step NAME LIMIT_S OUTFILE -- CMD...   (stdout of CMD appended to OUTFILE and log.txt, stderr to log.txt;
# with MERGE=1 stderr goes to OUTFILE too)
step() {
  local name=$1 lim=$2 outf=$3; shift 4
  local l; l=$(left)
  [ "$lim" -gt "$l" ] && lim=$l
  if [ "$lim" -le 5 ]; then log "== $name: SKIPPED (no time left)"; STEPS+=("$name: skipped"); return; fi
  log ""; log "== $name (limit ${lim}s) $(date +%T)"
  local t0=$(date +%s)
  if [ "${MERGE:-0}" = 1 ]; then
    timeout -k 10 "$lim" "$@" > >(tee -a "$outf" >> "$LOG") 2>&1
  else
    timeout -k 10 "$lim" "$@" > >(tee -a "$outf" >> "$LOG") 2> >(tee -a "$LOG" >&2)
  fi
  local rc=$?
  sleep 0.2
  local dt=$(( $(date +%s) - t0 ))
  [ "$rc" = 124 ] && rc="124 (timeout)"
  log "== $name: exit $rc, ${dt}s"
  STEPS+=("$name: exit $rc, ${dt}s")
}

log "inferd GPU bundle run, $(date -u +%FT%TZ), repo $REPO"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 | tee -a "$LOG"
nvidia-smi -L 2>&1 | tee -a "$LOG"

# 1. binaries
rm -rf "$BIN"; mkdir -p "$BIN"
tar -xJf .gpu/bin.tar.xz -C "$BIN" 2>&1 | tee -a "$LOG"
ls -la "$BIN" | tee -a "$LOG"

# 2. the test binaries use CARGO_MANIFEST_DIR (/work/main) for models/: point it at this checkout.
BUILD_REPO=$(cat "$BIN/BUILD_REPO" 2>/dev/null || echo /work/main)
if [ "$BUILD_REPO" != "$REPO" ] && [ ! -e "$BUILD_REPO/models/recon-lite.safetensors" ]; then
  if [ ! -e "$BUILD_REPO" ] && [ ! -L "$BUILD_REPO" ]; then
    mkdir -p "$(dirname "$BUILD_REPO")" && ln -s "$REPO" "$BUILD_REPO" \
      && log "linked $BUILD_REPO -> $REPO" || log "WARNING: could not link $BUILD_REPO -> $REPO"
  else
    log "WARNING: $BUILD_REPO exists without models/: cuda_parity's recon test may fail"
  fi
fi

# 3. libraries: driver libcuda.so.1, then cuBLAS/cuBLASLt/cuRAND/NVRTC/cudart from the nvidia pip wheels.
LIBDIRS=()
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -e "$d/libcuda.so.1" ] && LIBDIRS+=("$d"); done
PYS=(/opt/torch/.venv/bin/python3 python3)
for py in "${PYS[@]}"; do
  SP=$("$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null) && [ -n "$SP" ] && break
done
log "site-packages with nvidia: ${SP:-not found}"
want="libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13"
for lib in $want; do
  f=""
  [ -n "$SP" ] && f=$(find "$SP/nvidia" -maxdepth 4 -name "$lib" 2>/dev/null | head -1)
  [ -z "$f" ] && f=$(find /opt /usr/local /usr/lib /usr/lib64 -maxdepth 8 -name "$lib" 2>/dev/null | head -1)
  if [ -n "$f" ]; then LIBDIRS+=("$(dirname "$f")"); else log "WARNING: $lib not found"; fi
done
LDP=$(printf '%s\n' "${LIBDIRS[@]}" | awk '!s[$0]++' | paste -sd:)
export LD_LIBRARY_PATH="$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$BIN/inferd" 2>&1 | grep -E "cuda|cublas|curand|nvrtc|cudart|not found|stdc" | tee -a "$LOG"
"$BIN/inferd" --version 2>&1 | head -2 | tee -a "$LOG"

export RUST_BACKTRACE=1
T=$OUT/tests.txt; : > "$T"
# 4. tests, GPU as the device (from the repo root: relative paths such as models/)
MERGE=1 step "test cuda_parity" 120 "$T" -- env INFERD_TEST_DEVICE=cuda:0 "$BIN/cuda_parity" --test-threads 4
SKIP=()
command -v bart >/dev/null || SKIP=(--skip streams_a_multicoil_bart_volume)   # needs the BART tool
[ ${#SKIP[@]} -gt 0 ] && log "bart not installed: skipping the BART-based grpc_recon test"
MERGE=1 step "test grpc_recon" 180 "$T" -- env INFERD_TEST_DEVICE=cuda:0 "$BIN/grpc_recon" --test-threads 4 "${SKIP[@]}"

# 5. benchmarks as scripts/gpu-check.sh
R=$OUT/recon_forward.jsonl; : > "$R"
for w in full lite; do
  step "recon_forward $w 256 cuda:0 b1/8/32" 90 "$R" -- env INFERD_BENCH_DEVICE=cuda:0 "$BIN/recon_forward" $w 256 10 1 8 32
  step "recon_forward $w 256 cpu b1" 60 "$R" -- env INFERD_BENCH_DEVICE=cpu "$BIN/recon_forward" $w 256 2 1
done
step "recon_forward full 256 cpu b1 stock (INFERD_FAST_CONV=0)" 60 "$R" -- env INFERD_FAST_CONV=0 INFERD_BENCH_DEVICE=cpu "$BIN/recon_forward" full 256 2 1
step "pytorch recon forward cuda+cpu" 150 "$R" -- env PYTHONUNBUFFERED=1 /opt/torch/.venv/bin/python3 bench/recon_forward_torch.py
: > "$OUT/lightsb.csv"
step "lightsb_speed cuda:0" 90 "$OUT/lightsb.csv" -- env INFERD_BENCH_DEVICE=cuda:0 "$BIN/lightsb_speed"
: > "$OUT/lcm.csv"
step "lcm_speed small cuda:0" 90 "$OUT/lcm.csv" -- env LCM_BENCH_GRAPHS=small INFERD_BENCH_DEVICE=cuda:0 "$BIN/lcm_speed" /tmp/inferd-lcm-gpu

log ""; log "== summary ($(( $(date +%s) - START ))s total)"
for s in "${STEPS[@]}"; do log "  $s"; done
grep -E "^test result|FAILED|panicked" "$T" | tee -a "$LOG"
exit 0
