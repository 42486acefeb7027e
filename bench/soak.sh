#!/usr/bin/env bash
# Mixed soak: the release binary with its defaults (memory budget as the cpu overlay's 4 GiB limit
# gives it) serves all four shipped model kinds at once for SECONDS (default 600) — Cartesian
# reconstructions (256², 4 coils), radial reconstructions (128², 60 golden-angle spokes), bridge
# samples and LCM set aggregation, each driven by `inferd load` (closed loop) — while
# bench/soak_hostile.py sends malformed and over-limit requests at RATE per second (default 2).
# The server's resident memory is sampled every second. Then the cost of the checks on the normal
# path is measured (bench/admission_cost.rs). Prints a Markdown summary; raw reports in $OUT.
#
#   bash bench/soak.sh [SECONDS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
RATE=${2:-2}
OUT=${OUT:-/tmp/inferd-soak}
rm -rf "$OUT" && mkdir -p "$OUT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
cargo build --release --bin inferd --example admission_cost >/dev/null
BIN=$CARGO_TARGET_DIR/release/inferd
BUDGET_MB=3276 # 80 % of the cpu overlay's 4 GiB memory limit (the default inside that container)

INFERD_LOG=warn $BIN serve --device cpu --addr 127.0.0.1:50091 --metrics-addr 127.0.0.1:59091 \
  --memory-budget-mb $BUDGET_MB >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do $BIN health --addr http://127.0.0.1:50091 >/dev/null 2>&1 && break; sleep 0.1; done

( while kill -0 $SERVER 2>/dev/null; do
    echo "$(date +%s),$(awk '/VmRSS/ {print $2}' /proc/$SERVER/status)"; sleep 1
  done ) >"$OUT/rss.csv" &
SAMPLER=$!

declare -A LOADS=(
  [recon]="--model recon --size 256 --coils 4 -c 2"
  [recon-radial]="--model recon-radial --size 128 --spokes 60 -c 1"
  [lightsb]="--model lightsb --rows 16 --samples 4 -c 4"
  [lcm]="--model lcm --sets 64 --set-size 16 -c 2"
)
pids=()
for name in "${!LOADS[@]}"; do
  # shellcheck disable=SC2086
  $BIN load --addr http://127.0.0.1:50091 --protocol kserve ${LOADS[$name]} --duration-s "$SECS" \
    --warmup-s 2 --json "$OUT/load-$name.json" >"$OUT/load-$name.txt" 2>&1 &
  pids+=($!)
done
python3 bench/soak_hostile.py 127.0.0.1:50091 "$SECS" "$RATE" "$OUT/hostile.json" >"$OUT/hostile.txt" &
pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done
alive=$(kill -0 $SERVER 2>/dev/null && echo yes || echo NO)
kill $SAMPLER 2>/dev/null || true
$CARGO_TARGET_DIR/release/examples/admission_cost --size 256 --coils 4 >"$OUT/admission.csv"

python3 - "$OUT" "$SECS" "$BUDGET_MB" "$alive" <<'PY'
import csv, glob, json, os, sys
out, secs, budget, alive = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"Soak of {secs/60:.0f} min, server alive at the end: {alive}\n")
print("| load | requests/s | p50 ms | p99 ms | OK | errors by status |")
print("|---|---|---|---|---|---|")
for path in sorted(glob.glob(f"{out}/load-*.json")):
    r = json.load(open(path))
    l = r["latency"] or {}
    name = os.path.basename(path)[5:-5]
    print(f"| {name} | {r['requests_per_s']:.2f} | {l.get('p50_ms', float('nan')):.1f} | {l.get('p99_ms', float('nan')):.1f} | {r['ok']} | {r['errors'] or 'none'} |")
h = json.load(open(f"{out}/hostile.json"))
print(f"| hostile (tritonclient) | {h['requests']/secs:.2f} | | | | {h['by_status']}; unexpected: {len(h['unexpected'])} |")
rss = [int(row[1]) / 1024 for row in csv.reader(open(f"{out}/rss.csv")) if len(row) == 2 and row[1]]
n = len(rss)
first, last = rss[: max(1, n // 10)], rss[-max(1, n // 10):]
print(f"\nResident memory, {n} samples (1 s): min {min(rss):.0f} MiB, max {max(rss):.0f} MiB, "
      f"mean of the first tenth {sum(first)/len(first):.0f} MiB, of the last tenth {sum(last)/len(last):.0f} MiB; "
      f"memory budget {budget:.0f} MiB")
a = list(csv.DictReader(open(f"{out}/admission.csv")))[0]
print(f"\nChecks on the normal path (256², 4 coils, Cartesian): {float(a['admission_us']):.0f} µs of admission "
      f"(validation, decode with finiteness scan, estimate, reservation, client ticket) per "
      f"{float(a['reconstruction_ms']):.0f} ms reconstruction = {float(a['overhead_percent']):.2f} %")
PY
