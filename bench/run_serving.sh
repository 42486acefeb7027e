#!/usr/bin/env bash
# Serving throughput and latency, batching off vs on, side by side in one run.
# Two servers run at once (same binary, same models): "off" with --max-batch 1 --max-queue-delay-ms 0,
# "on" with the per-family defaults (lightsb: up to 64 items; recon: up to 4; no queue delay).
# For each workload and concurrency the two are measured back to back with `inferd load` (closed
# loop). Workloads: ServerLive (the overhead floor), the shipped 2-D bridge (1 row, 4 samples), a
# bridge with D = 128 and K = 500 (fitted briefly to random data here: its speed does not depend on
# the fit), and 128² single-coil reconstructions.
#
#   bash bench/run_serving.sh [SECONDS_PER_POINT]     (JSON reports kept in $OUT, default /tmp/inferd-serving)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
OUT=${OUT:-/tmp/inferd-serving}
mkdir -p "$OUT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
cargo build --release ${CARGO_FEATURES:+--features $CARGO_FEATURES} --bin inferd >/dev/null
BIN=$CARGO_TARGET_DIR/release/inferd

start() { # name port metrics-port extra-args...
  local name=$1 port=$2 mport=$3; shift 3
  INFERD_LOG=warn $BIN serve --device ${INFERD_SERVE_DEVICE:-cpu} --addr 127.0.0.1:$port --metrics-addr 127.0.0.1:$mport \
    --queue-capacity 1024 --model-queue-capacity 512 --client-queue-limit 0 "$@" >"$OUT/server-$name.log" 2>&1 &
  echo $!
}
BIG=/tmp/inferd-bench-lightsb128.safetensors
if [ ! -f $BIG ]; then
  python3 -c "import numpy as np; r=np.random.default_rng(0); np.save('/tmp/lsb-x.npy', r.standard_normal((5000,128)).astype('f4')); np.save('/tmp/lsb-y.npy', (1+r.standard_normal((5000,128))).astype('f4'))"
  $BIN train bridge --source /tmp/lsb-x.npy --target /tmp/lsb-y.npy --epsilon 1 --components 500 --steps 50 --out $BIG >/dev/null
fi
OFF=$(start off 50071 59071 --model lightsb128=$BIG --max-batch 1 --max-queue-delay-ms 0)
ON=$(start on 50072 59072 --model lightsb128=$BIG)
trap 'kill $OFF $ON 2>/dev/null || true' EXIT
for port in 50071 50072; do
  for _ in $(seq 600); do $BIN health --addr http://127.0.0.1:$port >/dev/null 2>&1 && break; sleep 0.1; done
done

# kind -> load arguments
load_args() {
  case $1 in
    live) echo "--protocol live" ;;
    lightsb) echo "--protocol kserve --model lightsb --rows 1 --samples 4" ;;
    lightsb128) echo "--protocol kserve --model lightsb128 --rows 1 --samples 4" ;;
    recon128) echo "--protocol kserve --model recon --size 128" ;;
  esac
}
row() { # batching kind concurrency json
  python3 - "$@" <<'PY'
import json, sys
b, kind, c, path = sys.argv[1:]
r = json.load(open(path))
l = r["latency"] or {}
print(f"{b},{kind},{c},{r['requests_per_s']:.1f},{l.get('p50_ms', float('nan')):.2f},{l.get('p99_ms', float('nan')):.2f},{r['ok']},{sum(r['errors'].values())}")
PY
}

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "batching,kind,concurrency,requests_per_s,p50_ms,p99_ms,requests,errors"
for kind in ${KINDS:-live lightsb lightsb128 recon128}; do
  for c in 1 4 16 64; do
    for side in off:50071 on:50072; do
      b=${side%%:*}; port=${side##*:}
      json="$OUT/$b-$kind-$c.json"
      # shellcheck disable=SC2046
      $BIN load --addr http://127.0.0.1:$port $(load_args $kind) -c $c --duration-s $SECS --warmup-s 0.5 \
        --json "$json" >/dev/null
      row $b $kind $c "$json"
    done
  done
done
