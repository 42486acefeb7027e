#!/usr/bin/env bash
# What exporting every request's spans costs: one inferd binary twice side by side, without and with
# `--otlp-endpoint` (sample ratio 1: every request is traced), exporting to the OTLP receiver of the
# tests (tests/reference/otlp_collector.py, which also writes every span to disk). Closed-loop load
# alternates between the two round by round (bench/ab_served.sh): KServe `recon` (one 128² slice,
# single coil, 4×: ~40 spans per request) and KServe `lightsb` (a small bridge request, ~6 spans:
# where a fixed per-request cost shows most).
#
#   bash bench/tracing_overhead.sh [BINARY=target/release/inferd] [ROUNDS=3] [SECONDS=8]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/inferd} ROUNDS=${2:-3} SECS=${3:-8}
WORK=$(mktemp -d)
python3 tests/reference/otlp_collector.py "$WORK/port" "$WORK/spans.jsonl" &
COLLECTOR=$!
trap 'kill $COLLECTOR 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [ -f "$WORK/port" ] && break; sleep 0.1; done
export NEW_ARGS="--otlp-endpoint http://127.0.0.1:$(cat "$WORK/port")"
for load in "--model recon --size 128 --coils 1" "--model lightsb"; do
  LOAD_ARGS=$load bash bench/ab_served.sh "$BIN" "$BIN" "$ROUNDS" 128 "$SECS"
  echo
done
echo "spans received: $(wc -l < "$WORK/spans.jsonl")"
