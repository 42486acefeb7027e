#!/usr/bin/env bash
# NUFFT speed, inferd vs FINUFFT (PyPI `finufft`), in one run: golden-angle radial k-space, 256² image,
# 2N-sample spokes (60 and 402), 8 coils as one batch, type 2 (forward) and type 1 (adjoint),
# tolerances 1e-4 and 1e-6, single precision, 2 threads for both. Plan creation (inferd: checks, tile
# sort, kernel weights; FINUFFT: makeplan + setpts) is reported separately from execution; the ratio
# compares execution times (inferd / FINUFFT, below 1 = inferd faster). FINUFFT picks its own grid
# oversampling and plans its FFTs with FFTW_MEASURE (see bench/nufft_finufft.py). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
THREADS=${THREADS:-2}
REPS=${REPS:-9}
python3 -c "import finufft" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check finufft
cargo build -q --release --example nufft_speed
out=$(mktemp -d)
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), finufft $(python3 -c 'import finufft; print(finufft.__version__)'), $THREADS threads, median of $REPS"
RAYON_NUM_THREADS=$THREADS "$CARGO_TARGET_DIR/release/examples/nufft_speed" --reps "$REPS" > "$out/inferd.csv"
python3 bench/nufft_finufft.py --reps "$REPS" --threads "$THREADS" > "$out/finufft.csv"
python3 - "$out" <<'PY'
import csv, sys
d = sys.argv[1]
key = lambda r: (r["transform"], r["spokes"], f'{float(r["tolerance"]):.0e}')
a = {key(r): r for r in csv.DictReader(open(f"{d}/inferd.csv"))}
b = {key(r): r for r in csv.DictReader(open(f"{d}/finufft.csv"))}
print("| transform | spokes (samples) | tolerance | inferd kernel width | inferd plan ms | FINUFFT plan ms | inferd ms | FINUFFT ms | inferd / FINUFFT |")
print("|---|---|---|---|---|---|---|---|---|")
for k in sorted(a, key=lambda k: (int(k[1]), -float(k[2]), k[0] == "type 1")):
    r, f = a[k], b[k]
    ratio = float(r["exec_ms"]) / float(f["exec_ms"])
    samples = int(k[1]) * 512
    print(f"| {k[0]} | {k[1]} ({samples:,}) | {k[2]} | {r['width']} | {float(r['plan_ms']):.1f} | {float(f['plan_ms']):.1f} | {float(r['exec_ms']):.1f} | {float(f['exec_ms']):.1f} | {ratio:.2f}× |")
PY
rm -rf "$out"
