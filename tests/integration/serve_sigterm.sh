#!/usr/bin/env bash
# vcp serve stops cleanly on SIGTERM: it logs that it is shutting down and exits with status 0
# within 5 s (its queue threads must not take the signal's default action). Before that, SIGUSR1
# while `vcp bench` drives it: a status report with both queues running and counting requests.
#
#   tests/integration/serve_sigterm.sh [VCP_BINARY]   (default $VCP_BIN, then build/vcp)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "serve_sigterm: $*" >&2; exit 1; }
vcp=${1:-${VCP_BIN-$here/../../build/vcp}}
[ -n "$vcp" ] || die "VCP_BIN is empty: this build has no vcp target"
[ -x "$vcp" ] || die "$vcp is not built"

work=$(mktemp -d "${TMPDIR:-/tmp}/vcp-sigterm.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$vcp" serve --socket "$work/s.sock" --backend ram:size=64M --queues 2 >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  grep -q 'vcp: ready on' "$work/log" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
grep -q 'vcp: ready on' "$work/log" || { cat "$work/log" >&2; die "vcp serve did not get ready"; }

"$vcp" bench --socket "$work/s.sock" --jobs 2 --rw randread --qd 4 --time 3 >"$work/bench.log" 2>&1 &
bench=$!
sleep 1.5
kill -USR1 "$pid"
wait "$bench" || { cat "$work/bench.log" >&2; die "vcp bench failed"; }
grep -q 'status: serving ram .*: capacity 67108864 bytes, 2 queues, front-end connected' "$work/log" ||
  { cat "$work/log" >&2; die "no status report on SIGUSR1"; }
for q in 0 1; do
  grep -q "vcp-q$q: running: [1-9][0-9]* requests" "$work/log" ||
    { cat "$work/log" >&2; die "the status report has no running queue $q with requests"; }
done

kill -TERM "$pid"
for _ in $(seq 50); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$pid" 2>/dev/null && { cat "$work/log" >&2; die "vcp serve still runs 5 s after SIGTERM"; }
rc=0
wait "$pid" || rc=$?
pid=""
if [ "$rc" -ne 0 ] || ! grep -q 'shutting down' "$work/log"; then
  cat "$work/log" >&2
  [ "$rc" -ne 143 ] || echo "serve_sigterm: status 143 is death by SIGTERM itself: a thread that does not block it took the default action" >&2
  die "vcp serve exited with status $rc on SIGTERM (expected 0, after logging that it shuts down)"
fi
echo "serve_sigterm: PASS (exit status 0, log: $(grep 'shutting down' "$work/log"))"
