#!/usr/bin/env bash
# Serving throughput and latency, batching off vs on, side by side in one run.
# Two servers run at once (same binary, same models): "off" with --max-batch 1 --max-queue-delay-ms 0,
# "on" with the per-family defaults (lightsb: up to 64 items; recon: up to 4; no queue delay).
# For each workload and concurrency the two are measured back to back with the load generator.
# Workloads: ServerLive (the overhead floor), the shipped 2-D bridge (1 row, 4 samples), a bridge
# with D = 128 and K = 500 (fitted briefly to random data here: its speed does not depend on the
# fit), and 128² single-coil reconstructions.
#
#   bash bench/run_serving.sh [SECONDS_PER_POINT]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
cargo build --release ${CARGO_FEATURES:+--features $CARGO_FEATURES} --bin inferd --example loadgen >/dev/null
BIN=$CARGO_TARGET_DIR/release/inferd
GEN=$CARGO_TARGET_DIR/release/examples/loadgen

start() { # name port metrics-port extra-args...
  local name=$1 port=$2 mport=$3; shift 3
  INFERD_LOG=warn $BIN serve --device ${INFERD_SERVE_DEVICE:-cpu} --addr 127.0.0.1:$port --metrics-addr 127.0.0.1:$mport \
    --queue-capacity 1024 --model-queue-capacity 512 "$@" >/tmp/inferd-bench-$name.log 2>&1 &
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
for port in 59071 59072; do
  for _ in $(seq 600); do curl -sf http://127.0.0.1:$port/ready >/dev/null && break; sleep 0.1; done
done

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "batching,kind,concurrency,requests_per_s,p50_ms,p99_ms,requests,errors"
for kind in ${KINDS:-live lightsb lightsb128 recon128}; do
  for c in 1 4 16 64; do
    echo "off,$($GEN http://127.0.0.1:50071 $kind $c $SECS)"
    echo "on,$($GEN http://127.0.0.1:50072 $kind $c $SECS)"
  done
done
