#!/usr/bin/env bash
# Reconstruction quality on held-out real MR, side by side in one run: zero-filled / gridding, BART 0.8
# `pics` (l1-wavelet) and inferd's served models over KServe — the shipped defaults (`recon`, i.e.
# recon-unrolled, and `recon-radial`) next to the models they replaced (recon-lite and recon-radial-v1,
# loaded with --model). Prints the markdown tables of BENCHMARKS.md (bench/recon_real_mr.py).
#
#   bash bench/run_real_mr.sh [--sizes 192,256,320] [--per-source 6] ...   (arguments go to the script)
#
# Needs the slice bank of scripts/mr_data.py (built here on first use, from the nilearn, dipy and nipy
# wheels on PyPI) and BART.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
BANK=${BANK:-/var/tmp/inferd-mr}
[ -f "$BANK/val.npz" ] || python3 scripts/mr_data.py bank --out "$BANK"
cargo build -q --release --bin inferd
BIN=$CARGO_TARGET_DIR/release/inferd
PORT=${PORT:-50091}
INFERD_LOG=warn $BIN serve --addr 127.0.0.1:$PORT --metrics-addr 127.0.0.1:$((PORT + 1)) \
  --model recon-lite=models/recon-lite.safetensors --model recon-radial-v1=models/recon-radial-v1.safetensors \
  >/tmp/inferd-real-mr-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do $BIN health --addr http://127.0.0.1:$PORT >/dev/null 2>&1 && break; sleep 0.2; done
echo "# $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), BART $(bart version)"
python3 bench/recon_real_mr.py 127.0.0.1:$PORT --bank "$BANK" \
  --models recon,recon-lite --radial-models recon-radial,recon-radial-v1 "$@"
