#!/usr/bin/env bash
# `make run`: the main job of this stage, shown plainly.
#   A VCP (`vcp serve`) serves a disk image through io_uring as a vhost-user-blk device on a
#   unix socket, pinned to CPU 1; an unmodified Debian Linux guest under QEMU boots with that
#   disk, makes a file system, writes files, syncs, drops its caches, reads them back and
#   compares checksums, discards and zeroes a region; then the host checks the image with
#   e2fsck. The same again on a ram disk with two queues.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
VCP="$BUILD/vcp"
[ -x "$VCP" ] || { echo "demo: $VCP not built (run make build)" >&2; exit 1; }

work=$(mktemp -d /tmp/vcp-demo.XXXXXX)
vcp_pid=""
cleanup() {
  [ -n "$vcp_pid" ] && kill "$vcp_pid" 2>/dev/null && wait "$vcp_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

start_vcp() {  # backend queues
  local sock="$work/vcp.sock"
  rm -f "$sock"
  "$VCP" serve --socket "$sock" --backend "$1" --queues "$2" --cpu 1 >"$work/vcp.log" 2>&1 &
  vcp_pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.05; done
  echo "demo: vcp serve did not start:" >&2; cat "$work/vcp.log" >&2; exit 1
}

stop_vcp() {
  kill "$vcp_pid"; wait "$vcp_pid" 2>/dev/null || true; vcp_pid=""
  echo "-- VCP log:"; sed 's/^/   /' "$work/vcp.log"
}

run_case() {  # title backend queues
  say "$1"
  start_vcp "$2" "$3"
  echo "VCP: $VCP serve --backend $2 --queues $3 --cpu 1 (pid $vcp_pid)"
  local t0=$SECONDS
  if scripts/guest/run-guest.sh --socket "$work/vcp.sock" --queues "$3" --log "$work/guest.log"; then
    echo "-- what the guest did (its console):"
    grep -E '^(VCPTEST|vda|fs:|discard|queue |/mnt)' "$work/guest.log" | sed 's/^/   /'
    echo "guest: PASS in $((SECONDS - t0)) s"
  else
    echo "guest: FAIL (console log follows)"; tail -50 "$work/guest.log"; stop_vcp; exit 1
  fi
  stop_vcp
}

say "the guest: Debian's kernel and a busybox initramfs with its virtio-blk and ext4 modules"
export VCP_GUEST_DIR=${VCP_GUEST_DIR:-$BUILD/guest}
scripts/guest/build-initramfs.sh "$VCP_GUEST_DIR/initramfs.cpio.gz"
echo "kernel $(cat "$VCP_GUEST_DIR/initramfs.cpio.gz.kernel"), initramfs $VCP_GUEST_DIR/initramfs.cpio.gz"
img="$work/disk.img"
truncate -s 256M "$img"
run_case "guest on a file-backed VCP disk (io_uring, 1 queue)" "file:path=$img" 1
say "host: e2fsck -fn on the image the guest wrote"
e2fsck -fn "$img"
run_case "guest on a ram-backed VCP disk (2 queues)" "ram:size=256M" 2
say "done: both guests wrote, synced, re-read and verified their file systems on VCP disks"
