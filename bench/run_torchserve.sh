#!/usr/bin/env bash
# The same reconstruction weights (models/recon-lite.safetensors) served by inferd (KServe `recon`)
# and by TorchServe 0.12 (bench/torchserve/: the PyTorch twin of inferd's pipeline), both on this
# machine's CPU with one worker, batches of up to 4 and no batching delay, loaded one after the other
# by the same generator (`inferd load`, closed loop) with the same single-coil 4× k-space.
# Prints a markdown table: requests/s and latency per server, and the throughput ratio.
#
#   bash bench/run_torchserve.sh [SECONDS_PER_POINT]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
OUT=${OUT:-/tmp/inferd-vs-torchserve}
mkdir -p "$OUT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
cargo build -q --release --bin inferd
BIN=$CARGO_TARGET_DIR/release/inferd
export TS_STATE_DIR=$OUT/torchserve
bash bench/torchserve/run.sh start >"$OUT/torchserve-start.log"
# shellcheck disable=SC1091
source "$TS_STATE_DIR/torchserve.env"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
INFERD_LOG=warn $BIN serve --device cpu --addr 127.0.0.1:$PORT --metrics-addr 127.0.0.1:0 --workers 1 \
  --model-queue-capacity 512 --queue-capacity 1024 --client-queue-limit 0 >"$OUT/inferd.log" 2>&1 &
INFERD=$!
trap 'kill $INFERD 2>/dev/null || true; bash bench/torchserve/run.sh stop >/dev/null 2>&1 || true' EXIT
for _ in $(seq 600); do $BIN health --addr http://127.0.0.1:$PORT >/dev/null 2>&1 && break; sleep 0.1; done

echo "# $(date -u '+%F %H:%M UTC'), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); torch $(python3 -c 'import torch; print(torch.__version__)'), TorchServe $(python3 -c 'import ts; print(ts.__version__)' 2>/dev/null || echo 0.12.0), $TS_THREADS torch threads, $TS_WORKERS worker, batch $TS_BATCH_SIZE / ${TS_MAX_BATCH_DELAY_MS} ms"
echo
echo "| size | concurrency | inferd req/s | inferd p50 / p99 ms | TorchServe req/s | TorchServe p50 / p99 ms | inferd / TorchServe | errors (inferd, TorchServe) |"
echo "|---|---|---|---|---|---|---|---|"
for size in 128 256; do
  for c in 1 4 8; do
    common=(--size $size -c $c --duration-s $SECS --warmup-s 1 --timeout-s 60)
    $BIN load --addr http://127.0.0.1:$PORT --protocol kserve --model recon "${common[@]}" \
      --json "$OUT/inferd-$size-$c.json" >/dev/null
    $BIN load --addr http://127.0.0.1:$TS_GRPC_PORT --protocol torchserve --model "$TS_MODEL_NAME" "${common[@]}" \
      --json "$OUT/torchserve-$size-$c.json" >/dev/null
    python3 - "$OUT/inferd-$size-$c.json" "$OUT/torchserve-$size-$c.json" $size $c <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
size, c = sys.argv[3:5]
lat = lambda r: f"{r['latency']['p50_ms']:.0f} / {r['latency']['p99_ms']:.0f}" if r["latency"] else "—"
err = lambda r: sum(r["errors"].values())
ratio = a["requests_per_s"] / b["requests_per_s"] if b["requests_per_s"] else float("nan")
print(f"| {size}² | {c} | {a['requests_per_s']:.1f} | {lat(a)} | {b['requests_per_s']:.1f} | {lat(b)} | {ratio:.2f}× | {err(a)}, {err(b)} |")
PY
  done
done
