#!/bin/bash
# `vcp bench --backend SPEC`: the load generator on a backend in-process (no channel).
#
#   bench_backend_test.sh BACKEND      BACKEND: null | ram | file
# Environment: VCP_BIN (the vcp binary).
# Runs verified loads (random mixed, large sequential write then read, every poll mode) where
# the backend keeps data; on null, a verified run must fail and name the LBA (proves --verify
# checks what it reads in this engine too). Also: --socket and --backend exclude each other,
# and a bad spec is reported.
set -u
backend=${1:?backend: null, ram or file}
: "${VCP_BIN:?VCP_BIN must name the vcp binary}"

dir=$(mktemp -d /tmp/vcp-bench-backend.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "bench_backend_test[$backend]: FAIL: $*" >&2; exit 1; }

case "$backend" in
  null) spec=null:size=1G ;;
  ram) spec=ram:size=256M ;;
  file) truncate -s 256M "$dir/img"; spec="file:path=$dir/img" ;;
  *) echo "bench_backend_test: unknown backend $backend" >&2; exit 2 ;;
esac

bench() { "$VCP_BIN" bench --backend "$spec" "$@"; }

if [ "$backend" = null ]; then
  bench --rw randread --bs 4k --qd 32 --jobs 2 --time 1 || fail "randread"
  bench --rw randwrite --bs 512 --qd 1 --time 1 --poll always --json >"$dir/out.json" || fail "randwrite poll always"
  grep -q '"iops":' "$dir/out.json" || fail "no JSON result"
  if bench --rw randrw --bs 4k --qd 8 --time 1 --size 1M --verify >"$dir/neg.log" 2>&1; then
    fail "--verify passed on a backend that keeps no data"
  fi
  grep -q "verify failed: LBA" "$dir/neg.log" || fail "--verify did not name the LBA"
else
  for poll in never adaptive always; do
    bench --rw randrw --bs 4k --qd 16 --jobs 2 --time 1 --size 64M --verify --poll "$poll" \
      || fail "randrw --verify --poll $poll"
  done
  bench --rw write --bs 1M --qd 4 --time 1 --size 64M --verify || fail "write 1M --verify"
  bench --rw read --bs 1M --qd 4 --time 1 --size 64M --verify || fail "read 1M --verify"
  bench --rw randread --bs 512 --qd 64 --time 1 --verify || fail "randread 512 --verify"
fi

# Exactly one of --socket and --backend.
if "$VCP_BIN" bench --socket "$dir/nosock" --backend "$spec" --time 1 >"$dir/both.log" 2>&1; then
  fail "--socket with --backend was accepted"
fi
if "$VCP_BIN" bench --time 1 >"$dir/none.log" 2>&1; then
  fail "neither --socket nor --backend was accepted"
fi
grep -q "either --socket or --backend" "$dir/none.log" || fail "no clear message without --socket/--backend"
if "$VCP_BIN" bench --backend "nosuch:size=1G" --time 1 >"$dir/bad.log" 2>&1; then
  fail "a bad backend spec was accepted"
fi
grep -q "bad --backend" "$dir/bad.log" || fail "no clear message for a bad backend spec"
echo "bench_backend_test: $backend passed"
