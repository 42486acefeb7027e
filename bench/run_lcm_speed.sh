#!/usr/bin/env bash
# Aggregation speed, inferd vs PyTorch Geometric on the same graphs, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
DIR=${1:-/tmp/inferd-lcm-bench}
python3 -c "import torch_geometric" 2>/dev/null || python3 -m pip install -q torch_geometric
cargo build --release --example lcm_speed >/dev/null
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), torch $(python3 -c 'import torch; print(torch.__version__)'), torch_geometric $(python3 -c 'import torch_geometric as g; print(g.__version__)' 2>/dev/null)"
$CARGO_TARGET_DIR/release/examples/lcm_speed "$DIR"
python3 bench/lcm_pyg.py "$DIR" | tail -n +2
