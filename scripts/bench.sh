#!/usr/bin/env bash
# `make bench`: every benchmark side by side, on this machine, now. Ratios are only ever taken
# between numbers measured in the same run (these machines are shared and noisy).
#   1. the channel's floor (cache-line ping-pong across two CPUs, io_uring NOP)
#   2. every scripts/bench-*.sh (the channel against its peers; iSCSI; target), in name order
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) CPUs), kernel $(uname -r)"
echo "== floor: $BUILD/bench/bench_floor"
"$BUILD/bench/bench_floor"
for b in scripts/bench-*.sh; do
  [ -x "$b" ] || continue
  echo "== $b"
  BUILD=$BUILD "$b"
done
