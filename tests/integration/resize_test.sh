#!/usr/bin/env bash
# A guest's disk grows while it runs, nothing restarted: the paper's "where the storage lives can
# change behind a stable interface". A Linux guest under QEMU reads its vhost-user-blk disk in a
# loop (scripts/guest/guest-init.sh, vcptest=resize); the host grows the image from 256 to 384 MiB
# and tells whoever serves it; the guest must see 384 MiB, write and read its new end and find its
# old data intact.
#
#   tests/integration/resize_test.sh file|iscsi|iscsi-reading
#
#   file   vcp serve --backend file:... on the image; the host sends it SIGHUP (it reads the size
#          again and sends QEMU CONFIG_CHANGE_MSG on the vhost-user back-end channel)
#   iscsi  vcp serve --backend iscsi://... on a `vcp target` serving the image as LUN 0; the host
#          sends the target SIGHUP (it takes the new size and answers the next command of each
#          session with CAPACITY DATA HAS CHANGED), the VCP's initiator reports the unit attention
#          to vcp serve, which reads the capacity again and tells QEMU. The guest does no I/O
#          while it waits: the command that brings the unit attention is the idle session's own
#          TEST UNIT READY (nop_interval=1 here, so within a second or two)
#   iscsi-reading  the same, the guest reading block 0 every 0.2 s: its reads bring it; then, the
#          target stopped (SIGSTOP), vcp serve's size read waits on it while vcp serve still
#          answers (SIGUSR1's status report) and gives up within its bounds
#
# Environment: VCP_BIN (default build/vcp), VCP_GUEST_DIR (initramfs cache).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "resize_test: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 file|iscsi|iscsi-reading"
mode=$1
reads=yes
case $mode in
  file | iscsi-reading) ;;
  iscsi) reads=no ;;
  *) die "the mode must be file, iscsi or iscsi-reading, not '$mode'" ;;
esac
vcp=${VCP_BIN-$repo/build/vcp}
{ [ -n "$vcp" ] && [ -x "$vcp" ]; } || die "vcp is not built ('$vcp')"
for tool in qemu-system-x86_64 truncate; do
  command -v "$tool" >/dev/null || die "'$tool' is missing on the host"
done

# shellcheck source=scripts/lib/scratch.sh
source "$repo/scripts/lib/scratch.sh"
scratch_init resize

show_logs() {
  for f in target serve; do
    [ -f "$work/$f.log" ] || continue
    echo "--- $f:" >&2
    tail -n 40 "$work/$f.log" >&2 || true
  done
  echo "--- the guest's console (test lines and the end):" >&2
  { grep -a 'VCPTEST' "$work/console.log" || true; tail -n 40 "$work/console.log"; } | tr -d '\r' >&2 || true
}
fail() {
  show_logs
  die "$mode: $*"
}
# wait_for FILE TEXT SECONDS [PID]: until FILE has TEXT; fails when PID (if given) ends first.
wait_for() {
  local _
  for _ in $(seq $(($3 * 10))); do
    grep -a -q -- "$2" "$1" 2>/dev/null && return 0
    if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

img="$work/disk.img"
truncate -s 256M "$img"
new_bytes=$((384 << 20))
sock="$work/blk.sock"

grow_pid=""
if [ "$mode" = file ]; then
  backend="file:path=$img"
else
  iqn=iqn.2026-11.org.vcp:resize
  "$vcp" target --portal 127.0.0.1:0 --iqn "$iqn" --lun "0=file:path=$img" --cpu 0 >"$work/target.log" 2>&1 &
  pids+=($!)
  grow_pid=$!
  wait_for "$work/target.log" "listening on" 10 "$grow_pid" || fail "vcp target did not start"
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/target.log" | head -n 1)
  [ -n "$port" ] || fail "no port in the target's log"
  backend="iscsi://127.0.0.1:$port/$iqn/0?nop_interval=1"
fi
"$vcp" serve --socket "$sock" --backend "$backend" --cpu 1 >"$work/serve.log" 2>&1 &
pids+=($!)
serve_pid=$!
[ -n "$grow_pid" ] || grow_pid=$serve_pid
wait_for "$work/serve.log" "ready on" 20 "$serve_pid" || fail "vcp serve did not start"

: >"$work/console.log"
"$repo/scripts/guest/run-guest.sh" --socket "$sock" --log "$work/console.log" --test resize --discard no \
  --timeout 150 --append "vcpresize_to=$((new_bytes / 512)) vcpresize_s=60 vcpresize_reads=$reads" \
  >"$work/guest.out" 2>&1 &
guest_pid=$!
pids+=("$guest_pid")
wait_for "$work/console.log" "VCPTEST: resize ready" 120 "$guest_pid" || fail "the guest never got to the resize step"
truncate -s "$new_bytes" "$img"
kill -HUP "$grow_pid"
echo "resize_test: grew the image to $new_bytes bytes and sent SIGHUP to the $([ "$mode" = file ] && echo VCP || echo target)"
start_wait=$SECONDS
guest_rc=0
wait "$guest_pid" || guest_rc=$?
cat "$work/guest.out" >&2
[ "$guest_rc" -eq 0 ] || fail "the guest's test failed"
echo "resize_test: the guest saw the new size and finished its checks $((SECONDS - start_wait)) s after the SIGHUP"
grep -a 'VCPTEST: resize' "$work/console.log" | tr -d '\r'
grep -E 'grown|front-end told|size change|unit attention' "$work/serve.log" "$work/target.log" 2>/dev/null || true

# The way the size went: each step says so in its log.
grep -q "capacity grown from 268435456 to $new_bytes bytes" "$work/serve.log" ||
  fail "vcp serve did not log the capacity it grew to"
grep -q "front-end told of the new capacity" "$work/serve.log" || fail "vcp serve did not tell QEMU"
if [ "$mode" != file ]; then
  grep -q "the backend reported a size change" "$work/serve.log" ||
    fail "the initiator did not report the target's unit attention (the size came some other way)"
  grep -q "grew from 268435456 to $new_bytes bytes" "$work/target.log" || fail "the target did not grow the LUN"
fi
for pid in "$serve_pid" "$grow_pid"; do
  kill -0 "$pid" 2>/dev/null || fail "a server ended during the test"
done
if [ "$mode" = iscsi-reading ]; then
  # A size read that hangs on the target does not hold vcp serve's control thread (it answers
  # QEMU's messages, and here a status request, while the probe waits out its 5 s login bound).
  kill -STOP "$grow_pid"
  kill -HUP "$serve_pid"
  wait_for "$work/serve.log" "SIGHUP: reading the size again" 5 "$serve_pid" || fail "vcp serve did not take the SIGHUP"
  sleep 0.5
  kill -USR1 "$serve_pid"
  t0=$SECONDS
  wait_for "$work/serve.log" "status: serving" 2 "$serve_pid" ||
    { kill -CONT "$grow_pid"; fail "vcp serve did not answer SIGUSR1 while its size read waited on a stopped target"; }
  wait_for "$work/serve.log" "capacity not read again" 15 "$serve_pid" ||
    { kill -CONT "$grow_pid"; fail "the size read of a stopped target did not give up"; }
  kill -CONT "$grow_pid"
  echo "resize_test: status answered while the size read waited; the read gave up after $((SECONDS - t0)) s"
  grep -q "the size is unchanged (402653184 bytes)" "$work/serve.log" || fail "vcp serve did not keep its size"
  kill -0 "$serve_pid" 2>/dev/null || fail "vcp serve ended"
fi
if [ "$mode" = iscsi ]; then
  # The guest sent nothing while it waited: the idle session's own TEST UNIT READYs must have
  # brought the unit attention (the session's count is logged when vcp serve stops).
  kill -TERM "$serve_pid"
  wait "$serve_pid" 2>/dev/null || true
  grep -q "iscsi q0: .* [1-9][0-9]* of them idle TEST UNIT READYs" "$work/serve.log" ||
    fail "the idle session sent no TEST UNIT READY"
fi
echo "resize_test: $mode: PASS"
