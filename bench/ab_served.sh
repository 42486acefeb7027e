#!/usr/bin/env bash
# Two inferd binaries side by side on one machine: both serve the defaults, and closed-loop KServe
# `recon` load (one caller, single-coil Cartesian 4×) alternates between them round by round, so that
# the machine's drift falls on both alike. Prints p50/mean per round and the ratio of the medians.
#
#   bash bench/ab_served.sh OLD_BINARY NEW_BINARY [ROUNDS] [SIZE] [SECONDS]
#
# OLD_ARGS / NEW_ARGS add `serve` flags to either side (the same binary twice compares settings, e.g.
# bench/tracing_overhead.sh); LOAD_ARGS replaces the load's model and payload flags (default
# `--model recon --size SIZE --coils 1`).
#
# An old binary comes from a worktree of an earlier commit, e.g.
#   git worktree add /var/tmp/inferd-old <commit> && (cd /var/tmp/inferd-old &&
#     CARGO_TARGET_DIR=/var/tmp/inferd-target-old cargo build --release --bin inferd)
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${3:-3} SIZE=${4:-256} SECS=${5:-8}
cd "$(dirname "$0")/.."
PORTS=(50172 50173)
# shellcheck disable=SC2086 # the flag lists split on spaces
"$OLD" serve --addr 127.0.0.1:${PORTS[0]} --metrics-addr 127.0.0.1:0 ${OLD_ARGS:-} >/tmp/inferd-ab-old.log 2>&1 &
A=$!
# shellcheck disable=SC2086
"$NEW" serve --addr 127.0.0.1:${PORTS[1]} --metrics-addr 127.0.0.1:0 ${NEW_ARGS:-} >/tmp/inferd-ab-new.log 2>&1 &
B=$!
trap 'kill $A $B 2>/dev/null || true' EXIT
for p in "${PORTS[@]}"; do
  for _ in $(seq 300); do "$NEW" health --addr http://127.0.0.1:$p >/dev/null 2>&1 && break; sleep 0.2; done
done
echo "# $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), ${LOAD_ARGS:-${SIZE}²}, ${SECS} s per round; old: ${OLD_ARGS:-defaults}; new: ${NEW_ARGS:-defaults}"
echo "| round | old p50 ms | new p50 ms | old mean ms | new mean ms | new / old (p50) |"
echo "|---|---|---|---|---|---|"
ratios=()
for r in $(seq "$ROUNDS"); do
  row=()
  for p in "${PORTS[@]}"; do
    # shellcheck disable=SC2086
    line=$("$NEW" load --addr http://127.0.0.1:$p ${LOAD_ARGS:---model recon --size $SIZE --coils 1} -c 1 \
      --duration-s "$SECS" --warmup-s 1 2>&1 | grep 'latency ms')
    row+=("$(sed -E 's/.*p50 ([0-9.]+).*/\1/' <<<"$line")" "$(sed -E 's/.*mean ([0-9.]+).*/\1/' <<<"$line")")
  done
  ratio=$(python3 -c "print(f'{${row[2]}/${row[0]}:.2f}')")
  ratios+=("$ratio")
  echo "| $r | ${row[0]} | ${row[2]} | ${row[1]} | ${row[3]} | $ratio |"
done
echo "median ratio new / old: $(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (${#ratios[@]} + 1) / 2 ))p")"
