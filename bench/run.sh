#!/usr/bin/env bash
# The whole side-by-side benchmark suite in one go. Each comparison runs both sides in the same run
# on the same machine and reports ratios; the outputs go to bench/results/<UTC time>/ and the section
# between the `suite` markers at the end of BENCHMARKS.md is regenerated from them (machine, date,
# commit and commands included). The hand-written analysis above that section is left as it is.
#
#   bash bench/run.sh            quick: 2 s per serving point, 10⁴-node graphs, 8 quality images
#   bash bench/run.sh --full     the sizes the hand-written tables use (much longer)
#   bash bench/run.sh --only serving,torchserve
#
# Comparisons: reconstruction quality and time vs BART; ReconResNet forward pass candle vs PyTorch;
# LightSB sampling vs PyTorch; LCM aggregation vs PyTorch Geometric; served throughput with batching
# off vs on; the same reconstruction weights served by inferd vs TorchServe under the same load; the
# NUFFT vs FINUFFT; radial reconstruction quality and time vs BART pics -t.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=quick ONLY=all
while [ $# -gt 0 ]; do
  case $1 in
    --full) MODE=full ;;
    --only) ONLY=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
RESULTS=bench/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS"
wanted() { [ "$ONLY" = all ] || [[ ",$ONLY," == *",$1,"* ]]; }
# step NAME "COMMAND": runs it, keeps its output (and the command) for the report.
step() {
  local name=$1 cmd=$2
  wanted "$name" || return 0
  echo "== $name: $cmd"
  local t0=$SECONDS
  if bash -c "$cmd" >"$RESULTS/$name.out" 2>"$RESULTS/$name.err"; then
    echo "$cmd" >"$RESULTS/$name.cmd"
    echo "   done in $((SECONDS - t0)) s"
  else
    echo "   FAILED (see $RESULTS/$name.err)"; tail -5 "$RESULTS/$name.err"
    echo "$cmd" >"$RESULTS/$name.cmd"; echo "failed" >"$RESULTS/$name.failed"
  fi
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "mode: $MODE"
  echo "torch: $(python3 -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())' 2>/dev/null || echo missing)"
  echo "BART: $(bart version 2>/dev/null || echo missing)"
} >"$RESULTS/machine.txt"
cat "$RESULTS/machine.txt"
cargo build -q --release --bin inferd --examples

if [ $MODE = full ]; then SERVING_S=5 QUALITY=8 LCM=all; else SERVING_S=2 QUALITY=8 LCM=small; fi
step recon_quality "$CARGO_TARGET_DIR/release/examples/recon_vs_bart --synthetic $QUALITY"
step recon_radial "$CARGO_TARGET_DIR/release/examples/recon_vs_bart --radial --synthetic $QUALITY"
step nufft "bash bench/run_nufft.sh"
step recon_forward "python3 bench/candle_vs_torch.py --weights models/recon-lite.safetensors --size 256 --batches 1 4 --iters 3 && \
  python3 bench/candle_vs_torch.py --width 64 --blocks 14 --size 256 --batches 1 --iters 2"
step lightsb "bash bench/run_lightsb_speed.sh"
step lcm "LCM_BENCH_GRAPHS=$LCM bash bench/run_lcm_speed.sh /tmp/inferd-lcm-bench-$LCM"
step serving "bash bench/run_serving.sh $SERVING_S"
step torchserve "bash bench/run_torchserve.sh $((SERVING_S * 2))"

python3 bench/render_suite.py "$RESULTS" BENCHMARKS.md
echo "results in $RESULTS; BENCHMARKS.md suite section regenerated"
