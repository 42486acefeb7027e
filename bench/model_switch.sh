#!/usr/bin/env bash
# Model lifecycle under load, one run: inferd serves a model repository in poll mode; `inferd load`
# calls KServe `recon` (256², 4 coils) for DURATION seconds at concurrency C; a new version of the
# model appears a third of the way in and is removed again at two thirds (two version switches under
# load); a large LightSB model is loaded and unloaded by the scan meanwhile to measure the resident
# memory it takes and gives back. Prints: requests failed during the switches (target 0), the load +
# warm-up time of every shipped model (from the server's log), and RSS before/after the large model.
#
#   bash bench/model_switch.sh [DURATION_S=40] [CONCURRENCY=4]
# INFERD_BIN (default target/release/inferd) is the binary; build it with `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-40}
C=${2:-4}
BIN=${INFERD_BIN:-target/release/inferd}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first (or set INFERD_BIN)"; exit 1; }
WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
REPO=$WORK/repo
put() { mkdir -p "$REPO/$1/$2"; cp "$3" "$REPO/$1/$2/model.safetensors.part"; mv "$REPO/$1/$2/model.safetensors.part" "$REPO/$1/$2/model.safetensors"; }
for m in recon-unrolled recon-radial lightsb lcm; do put "$m" 1 "models/$m.safetensors"; done
put recon 1 models/recon-lite.safetensors

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
INFERD_LOG=info "$BIN" serve --addr "127.0.0.1:$PORT" --metrics-addr 127.0.0.1:0 --model-repository "$REPO" \
  --model-control poll --repository-poll-s 0.5 --client-queue-limit 0 > "$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 600); do grep -q "ready: health SERVING" "$WORK/server.log" && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2/1024}' "/proc/$PID/status"; }

"$BIN" load --addr "http://127.0.0.1:$PORT" --protocol kserve --model recon --size 256 --coils 4 \
  -c "$C" --duration-s "$DURATION" --json "$WORK/load.json" > "$WORK/load.txt" 2>&1 &
LOAD=$!
sleep "$(python3 -c "print($DURATION / 3)")"
put recon 2 models/recon-unrolled.safetensors          # switch 1: version 2 appears
sleep "$(python3 -c "print($DURATION / 6)")"
RSS_BEFORE=$(rss)
python3 - "$WORK/big.safetensors" <<'EOF'
import sys, numpy as np
from safetensors.numpy import save_file
k, d = 4096, 4096   # 2 x 64 MiB of weights
save_file({"log_alpha": np.zeros(k, np.float32), "r": np.full((k, d), 0.01, np.float32),
           "log_s": np.full((k, d), -1.0, np.float32), "epsilon": np.array([0.1], np.float32)}, sys.argv[1])
EOF
put big 1 "$WORK/big.safetensors"
for _ in $(seq 600); do grep -q 'model="big".*serving\|model=big.*serving' "$WORK/server.log" && break; sleep 0.1; done
RSS_LOADED=$(rss)
sleep "$(python3 -c "print(max(0.0, $DURATION / 6 - 2))")"
rm -rf "$REPO/recon/2"                                     # switch 2: back to version 1
rm -rf "$REPO/big"
for _ in $(seq 600); do grep -q 'model="big".*memory freed\|model=big.*memory freed' "$WORK/server.log" && break; sleep 0.1; done
RSS_AFTER=$(rss)
wait "$LOAD" || true
cat "$WORK/load.txt"
echo
echo "== load + warm-up per model (server log, seconds)"
grep "model loaded and warmed up" "$WORK/server.log" | sed -E 's/.*model="?([^" ]+)"?.*version="?([^" ]+)"?.*seconds=([0-9.]+).*/\1 v\2 \3/' | sort -u
echo "== switches seen in the log"
grep -E "model version serving|memory freed" "$WORK/server.log" | grep -oE '(model version serving|model version unloaded; memory freed).*' | cut -c1-100
echo "== resident memory of the server (MiB): before the large model ${RSS_BEFORE}, loaded ${RSS_LOADED}, after unload ${RSS_AFTER}"
python3 - "$WORK/load.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("== requests: ok", r.get("ok"), "errors", r.get("errors"))
EOF
