#!/usr/bin/env bash
# LightSB sampling speed, inferd vs PyTorch (CPU, same formulas), in one run; prints both tables and
# the ratio per configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
cargo build --release --example lightsb_speed >/dev/null
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), torch $(python3 -c 'import torch; print(torch.__version__)') threads $(python3 -c 'import torch; print(torch.get_num_threads())')"
$CARGO_TARGET_DIR/release/examples/lightsb_speed > /tmp/lsb-inferd.csv
python3 bench/lightsb_torch.py > /tmp/lsb-torch.csv
python3 - <<'PY'
import csv
a = {tuple(r[k] for k in ("dim", "components", "batch")): r for r in csv.DictReader(open("/tmp/lsb-inferd.csv"))}
b = {tuple(r[k] for k in ("dim", "components", "batch")): r for r in csv.DictReader(open("/tmp/lsb-torch.csv"))}
print("| D | K | batch | inferd samples/s | PyTorch samples/s | ratio |")
print("|---|---|---|---|---|---|")
for key, r in a.items():
    t = b[key]
    ratio = float(r["samples_per_s"]) / float(t["samples_per_s"])
    print(f"| {key[0]} | {key[1]} | {key[2]} | {float(r['samples_per_s']):,.0f} | {float(t['samples_per_s']):,.0f} | {ratio:.2f}× |")
PY
