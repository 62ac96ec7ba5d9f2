#!/usr/bin/env bash
# One guest integration test: a vhost-user-blk server on a temporary socket, a Linux guest under
# QEMU testing its disk (scripts/guest/run-guest.sh), then the server is stopped and, for a file
# image, the host checks the guest's ext4 with e2fsck -fn.
#
#   tests/integration/guest_test.sh BACKEND_KIND QUEUES [SERVER]
#
#   BACKEND_KIND  ram (256 MiB), file (a 256 MiB image) or null (no data: the smoke test only)
#   SERVER        vcp (default; the binary is $VCP_BIN, default build/vcp, pinned with --cpu 1)
#                 or qsd (qemu-storage-daemon, the reference peer: file and null only)
#
# Environment: VCP_BIN, VCP_SERVE_ARGS (more vcp serve options), VCP_GUEST_DIR (initramfs cache),
# GUEST_TIMEOUT (default 150 s).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "guest_test: $*" >&2; exit 1; }

{ [ $# -ge 2 ] && [ $# -le 3 ]; } || die "usage: $0 ram|file|null QUEUES [vcp|qsd]"
kind=$1
queues=$2
server=${3:-vcp}
[[ $queues =~ ^[1-9][0-9]*$ ]] || die "QUEUES must be a positive number, not '$queues'"

for tool in qemu-system-x86_64 e2fsck truncate; do
  command -v "$tool" >/dev/null || die "'$tool' is missing on the host"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vcp-guest-test.XXXXXX")
server_pid=""
stop_server() {
  [ -n "$server_pid" ] || return 0
  local pid=$server_pid rc=0
  server_pid=""
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "guest_test: $server did not stop within 5 s of SIGTERM: killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}
cleanup() {
  stop_server || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sock="$work/blk.sock"
img="$work/disk.img"
server_log="$work/server.log"
guest_log="$work/guest.log"

show_logs() {
  echo "--- $server log ($server_log):" >&2
  tail -n 80 "$server_log" >&2 || true
}

test_name=all
discard=yes
case $kind in
  ram | file) ;;
  null) test_name=smoke; discard=no ;;
  *) die "BACKEND_KIND must be ram, file or null, not '$kind'" ;;
esac
[ "$kind" != file ] || truncate -s 256M "$img"

case $server in
  vcp)
    vcp=${VCP_BIN-$repo/build/vcp}
    [ -n "$vcp" ] || die "VCP_BIN is empty: this build has no vcp target"
    [ -x "$vcp" ] || die "$vcp is not built (cmake --build build --target vcp)"
    case $kind in
      ram) spec="ram:size=256M,serial=vcp-guest-ram,physical_block_size=4k" ;;
      file) spec="file:path=$img" ;;
      null) spec="null:size=256M" ;;
    esac
    # VCP_SERVE_ARGS: more options for vcp serve, e.g. "--poll never" (word-split on purpose).
    # shellcheck disable=SC2206
    cmd=("$vcp" serve --socket "$sock" --backend "$spec" --queues "$queues" --cpu 1 ${VCP_SERVE_ARGS:-})
    ;;
  qsd)
    command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon is missing (package qemu-system-common)"
    case $kind in
      # discard=unmap: discards punch holes in the image, so they read back as zeros.
      file) blockdev="driver=file,node-name=n0,filename=$img,discard=unmap" ;;
      null) blockdev="driver=null-co,node-name=n0,size=268435456,read-zeroes=on" ;;
      ram) die "qsd has no ram backend: use file or null" ;;
    esac
    cmd=(qemu-storage-daemon --blockdev "$blockdev"
         --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues")
    ;;
  *) die "SERVER must be vcp or qsd, not '$server'" ;;
esac

echo "guest_test: ${cmd[*]}"
"${cmd[@]}" >"$server_log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  [ -S "$sock" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ ! -S "$sock" ]; then
  show_logs
  die "$server did not listen on $sock within 10 s"
fi

t0=$SECONDS
guest_rc=0
"$repo/scripts/guest/run-guest.sh" --socket "$sock" --queues "$queues" --log "$guest_log" \
  --test "$test_name" --discard "$discard" --timeout "${GUEST_TIMEOUT:-150}" || guest_rc=$?
guest_s=$((SECONDS - t0))

server_alive=yes
kill -0 "$server_pid" 2>/dev/null || server_alive=no
server_rc=0
stop_server || server_rc=$?

fail=""
[ "$guest_rc" -eq 0 ] || fail="the guest's test failed (run-guest exit status $guest_rc)"
if [ "$server_alive" = no ]; then
  fail="${fail:+$fail; }$server exited while the guest ran (exit status $server_rc)"
elif [ "$server_rc" -ne 0 ] && [ "$server_rc" -ne 143 ]; then
  # 143: ended by our SIGTERM. A clean exit on SIGTERM is vcp_serve_sigterm's business; here any
  # other status (a crash, a sanitizer report) fails.
  fail="${fail:+$fail; }$server ended with exit status $server_rc when stopped with SIGTERM"
fi
# The disk's serial as the guest's kernel has it (GET_ID): the one given, or for a file one of
# its own ("vcp-" and 16 hex digits), never a name that other disks share.
if [ "$server" = vcp ] && [ -z "$fail" ]; then
  guest_serial=$(sed -n "s/.*VCPTEST: serial '\([^']*\)'.*/\1/p" "$guest_log" | head -n 1)
  case $kind in
    ram) [ "$guest_serial" = vcp-guest-ram ] || fail="the guest sees serial '$guest_serial', not vcp-guest-ram" ;;
    file) [[ $guest_serial =~ ^vcp-[0-9a-f]{16}$ ]] || fail="the guest sees serial '$guest_serial', not vcp-<16 hex>" ;;
  esac
  # The physical block the backend has (ram: physical_block_size=4k; a file: its 512-byte
  # block) reaches the guest's block layer.
  guest_physical=$(sed -n "s/.*VCPTEST: physical block \([0-9]*\), minimum I\/O \([0-9]*\).*/\1 \2/p" "$guest_log" | head -n 1)
  want=512
  [ "$kind" = ram ] && want=4096
  [ "$guest_physical" = "$want $want" ] ||
    fail="${fail:+$fail; }the guest sees physical block and minimum I/O '$guest_physical', not $want"
fi
if [ -n "$fail" ]; then
  show_logs
  die "$kind/$queues queue(s) on $server: $fail"
fi

# Options that name a queue setting must show in every queue's start line (they reached the
# queue threads, not only the command line).
if [[ "${VCP_SERVE_ARGS:-}" =~ --coalesce-us[[:space:]]+([0-9]+) ]] && [ "${BASH_REMATCH[1]}" != 0 ]; then
  grep -q "queue started .*coalescing ${BASH_REMATCH[1]} us" "$server_log" || {
    show_logs
    die "$kind/$queues queue(s) on $server: the queues did not start with --coalesce-us ${BASH_REMATCH[1]}"
  }
fi

echo "--- the guest's console (test lines):"
grep -a -E 'VCPTEST|^vda|^queue|^fs:|^discard:|trimmed' "$guest_log" | tr -d '\r'
echo "--- $server log (last lines):"
tail -n 12 "$server_log"

if [ "$kind" = file ]; then
  if ! e2fsck -fn "$img" >"$work/e2fsck.out" 2>&1; then
    cat "$work/e2fsck.out" >&2
    die "$kind/$queues queue(s) on $server: host e2fsck -fn found the guest's file system damaged"
  fi
  echo "guest_test: host e2fsck -fn: $(tail -n 1 "$work/e2fsck.out")"
fi
echo "guest_test: PASS: $kind, $queues queue(s), $server (guest ${guest_s}s)"
