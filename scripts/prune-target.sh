#!/usr/bin/env bash
# Keeps a persistent cargo target directory from filling its disk. Repeated builds leave every old
# test binary (one per hash), every old library build and rustc's incremental caches behind; on a
# machine that runs many builds they grow without bound. When the disk holding the target directory
# has less than MIN_FREE_GIB free (default 20), this removes the incremental caches and every output
# of inferd's own crates (test and example binaries, the library) that a newer build of the same name
# has superseded; dependencies are left alone (several builds of one dependency, with different
# features or for build scripts, are all in use). If that is still not enough, it removes the whole
# target directory (the next build starts from scratch).
#
# Usage: scripts/prune-target.sh [TARGET_DIR]   (default: $CARGO_TARGET_DIR, else /var/tmp/inferd-target)
set -euo pipefail

target=${1:-${CARGO_TARGET_DIR:-/var/tmp/inferd-target}}
min_free_gib=${MIN_FREE_GIB:-20}
[ -d "$target" ] || exit 0

free_gib() { df -Pk "$target" | awk 'NR == 2 { print int($4 / 1048576) }'; }

[ "$(free_gib)" -ge "$min_free_gib" ] && exit 0
echo "prune-target: $(free_gib) GiB free under $target (want $min_free_gib); removing superseded build outputs"

for profile in "$target"/*/; do
  rm -rf "${profile}incremental"
  for dir in "${profile}deps" "${profile}examples"; do
    [ -d "$dir" ] || continue
    # Newest first; any later file with the same stem (name without its -<16 hex> hash) is stale.
    declare -A seen=()
    while IFS= read -r file; do
      if [[ "$file" =~ ^(.+)-[0-9a-f]{16}(\..*)?$ ]]; then
        stem="${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
        # inferd's outputs: binaries (no extension) and the library; not dependencies' rlibs
        own=""
        [ -z "${BASH_REMATCH[2]}" ] && own=1
        [[ "$stem" == libinferd.* || "$stem" == inferd.* ]] && own=1
        if [ -n "$own" ] && [ -n "${seen[$stem]:-}" ]; then
          rm -f "$dir/$file"
        fi
        seen[$stem]=1
      fi
    done < <(ls -t "$dir")
    unset seen
  done
done

if [ "$(free_gib)" -lt "$min_free_gib" ]; then
  echo "prune-target: still $(free_gib) GiB free; removing $target"
  rm -rf "$target"
fi
echo "prune-target: $(free_gib) GiB free"
