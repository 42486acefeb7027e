#!/usr/bin/env bash
# One prepared run for a machine with an NVIDIA GPU (about 10 minutes): build with --features cuda,
# run the whole test suite with the GPU as the serving device (INFERD_TEST_DEVICE) including the
# CPU-vs-CUDA parity tests, then the benchmarks on the GPU, and print one summary table.
#
# Needs the CUDA toolkit (nvcc, cuBLAS, cuRAND, NVRTC) or the matching NVIDIA PyPI wheels, and the
# driver. Results go to $OUT (default ./gpu-check-out).
#
#   bash scripts/gpu-check.sh [cuda:N]
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cuda:0}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target-gpu}
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
echo "GPU: $GPU (compute capability $CUDA_COMPUTE_CAP), device $DEV" | tee "$OUT/summary.txt"

step() { echo; echo "== $*"; }
step "build (release, --features cuda)"
time cargo build --release --features cuda --all-targets 2>&1 | tail -3

step "tests on $DEV"
INFERD_TEST_DEVICE=$DEV cargo test --release --features cuda --all-targets 2>&1 | tee "$OUT/tests.log" \
  | grep -E "^test result|FAILED|panicked" || true
grep -q "FAILED\|panicked" "$OUT/tests.log" && echo "TESTS FAILED" | tee -a "$OUT/summary.txt" \
  || echo "tests: all passed on $DEV" | tee -a "$OUT/summary.txt"

step "ReconResNet forward, full size and lite, 256², batch 1/8/32"
for w in full lite; do
  INFERD_BENCH_DEVICE=$DEV $CARGO_TARGET_DIR/release/examples/recon_forward $w 256 10 1 8 32 | tee -a "$OUT/recon_forward.jsonl"
  INFERD_BENCH_DEVICE=cpu $CARGO_TARGET_DIR/release/examples/recon_forward $w 256 2 1 | tee -a "$OUT/recon_forward.jsonl"
done

step "LightSB sampling"
INFERD_BENCH_DEVICE=$DEV $CARGO_TARGET_DIR/release/examples/lightsb_speed | tee "$OUT/lightsb_gpu.csv"

step "LCM / GRU / sum aggregation on $DEV (10⁴ nodes, 10⁵ edges, uniform and power-law)"
LCM_BENCH_GRAPHS=small INFERD_BENCH_DEVICE=$DEV $CARGO_TARGET_DIR/release/examples/lcm_speed /tmp/inferd-lcm-gpu | tee "$OUT/lcm_gpu.csv"

step "served throughput (batching off vs on) on $DEV"
CARGO_FEATURES=cuda INFERD_SERVE_DEVICE=$DEV KINDS="live lightsb lightsb128 recon128" bash bench/run_serving.sh 3 | tee "$OUT/serving.csv"

step "summary"
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, csv
out = sys.argv[1]
print("| benchmark | configuration | value |")
print("|---|---|---|")
for line in open(f"{out}/recon_forward.jsonl"):
    r = json.loads(line)
    print(f"| ReconResNet forward {r['size']}² | {r['device']}, batch {r['batch']} | {r['median_s']*1000:.1f} ms ({r['median_s']/r['batch']*1000:.1f} ms/slice) |")
for r in csv.DictReader(open(f"{out}/lightsb_gpu.csv")):
    if r["batch"] == "4096":
        print(f"| LightSB samples/s | D={r['dim']} K={r['components']} batch 4096 | {float(r['samples_per_s']):,.0f} |")
for r in csv.DictReader(open(f"{out}/lcm_gpu.csv")):
    print(f"| {r['aggregator']} aggregation | {r['graph']}, F={r['features']} | {float(r['ms']):.2f} ms |")
rows = [l for l in open(f"{out}/serving.csv") if l.startswith(("off,", "on,"))]
for r in csv.reader(rows):
    if r[2] == "64":
        print(f"| served {r[1]} | batching {r[0]}, concurrency 64 | {float(r[3]):,.0f} req/s, p99 {r[5]} ms |")
PY
