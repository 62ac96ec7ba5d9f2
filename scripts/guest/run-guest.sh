#!/usr/bin/env bash
# Boots the test guest (Debian kernel, busybox initramfs, /init = guest-init.sh) under QEMU with
# one vhost-user-blk disk served on SOCK, and reports what the guest's test found.
#
#   scripts/guest/run-guest.sh --socket SOCK [--queues N] [--log FILE] [--test all|raw|fs|smoke]
#                              [--timeout S] [--discard yes|no] [--append 'ARGS']
#   --test resize needs --append 'vcpresize_to=SECTORS' (scripts/guest/guest-init.sh)
#   --test migrate: reads of a known pattern verified in a loop for vcpmigrate_s seconds
#     (--append 'vcpmigrate_s=S'), after "VCPTEST: migrate ready" on the console: for a host
#     that disturbs the disk meanwhile (a migration, a network partition)
#
# Exits 0 only when the serial console shows "VCPTEST: PASS"; otherwise non-zero, with the tail
# of the console log on stderr. QEMU is killed after S seconds (default 150). The initramfs is
# built on first use and cached under $VCP_GUEST_DIR (default build/guest).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() {
  echo "usage: $0 --socket SOCK [--queues N] [--log FILE] [--test all|raw|fs|smoke|resize|migrate] [--timeout S] [--discard yes|no] [--append 'ARGS']" >&2
  exit 2
}
die() { echo "run-guest: $*" >&2; exit 1; }

socket=""
queues=1
log=""
test_name=all
timeout_s=150
discard=yes
append=""
while [ $# -gt 0 ]; do
  case $1 in
    --socket) socket=${2:-}; shift 2 || usage ;;
    --queues) queues=${2:-}; shift 2 || usage ;;
    --log) log=${2:-}; shift 2 || usage ;;
    --test) test_name=${2:-}; shift 2 || usage ;;
    --timeout) timeout_s=${2:-}; shift 2 || usage ;;
    --discard) discard=${2:-}; shift 2 || usage ;;
    --append) append=${2:-}; shift 2 || usage ;;
    -h | --help) usage ;;
    *) echo "run-guest: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -n "$socket" ] || usage
[[ $queues =~ ^[1-9][0-9]*$ ]] || die "--queues must be a positive number, not '$queues'"
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds, not '$timeout_s'"
case $test_name in all | raw | fs | smoke | resize | migrate) ;; *) die "--test must be all, raw, fs, smoke, resize or migrate, not '$test_name'" ;; esac
[[ $append =~ ^[a-z0-9_=\ ]*$ ]] || die "--append takes guest-init options (vcpNAME=VALUE ...), not '$append'"
case $discard in yes | no) ;; *) die "--discard must be yes or no, not '$discard'" ;; esac
[ -S "$socket" ] || die "$socket is not a unix socket (is the vhost-user-blk server running?)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (package qemu-system-x86)"

work=$(mktemp -d "${TMPDIR:-/tmp}/vcp-guest.XXXXXX")
qemu_pid=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  if [ -n "$qemu_pid" ]; then
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -n "$log" ] || log="$work/console.log"
mkdir -p "$(dirname "$log")"
: >"$log"

initrd="${VCP_GUEST_DIR:-$repo/build/guest}/initramfs.cpio.gz"
"$here/build-initramfs.sh" "$initrd"
kernel=$(cat "$initrd.kernel")

smp=$((queues > 2 ? queues : 2))
mem=512
# The guest watchdog fires first, so a hang shows the guest's view of the stuck requests.
watchdog=$((timeout_s > 40 ? timeout_s - 20 : timeout_s / 2))
# shellcheck disable=SC2054  # the commas are inside QEMU option values
qemu=(qemu-system-x86_64 -accel tcg -m "$mem" -smp "$smp"
      -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem
      -chardev "socket,id=vhost0,path=$socket"
      -device "vhost-user-blk-pci,chardev=vhost0,num-queues=$queues"
      -nodefaults -display none -serial "file:$log" -no-reboot
      -kernel "$kernel" -initrd "$initrd"
      -append "console=ttyS0 quiet panic=-1 vcptest=$test_name vcpqueues=$queues vcpdiscard=$discard vcpwatchdog=$watchdog${append:+ $append}")

start=$SECONDS
"${qemu[@]}" </dev/null >"$work/qemu.out" 2>&1 &
qemu_pid=$!
timed_out=no
deadline=$((start + timeout_s))
# Once the guest has given its verdict it powers off; a guest or QEMU stuck in that (a dead
# backend, say) gets 10 s, not the whole timeout.
verdict_deadline=""
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ -z "$verdict_deadline" ] && grep -a -q -E 'VCPTEST: (PASS|FAIL)' "$log"; then
    verdict_deadline=$((SECONDS + 10))
    [ "$verdict_deadline" -ge "$deadline" ] || deadline=$verdict_deadline
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    timed_out=yes
    kill -KILL "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 0.2
done
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=""
elapsed=$((SECONDS - start))

console_empty=no
[ -s "$log" ] || console_empty=yes
if [ -s "$work/qemu.out" ]; then
  { echo "--- QEMU's output:"; cat "$work/qemu.out"; } >>"$log"
fi

verdict=$(grep -a -o -E 'VCPTEST: (PASS|FAIL.*)' "$log" | tr -d '\r' | tail -n 1 || true)
if [ "$timed_out" = no ] && [ "$verdict" = "VCPTEST: PASS" ]; then
  echo "run-guest: PASS ($test_name, $queues queue(s), ${elapsed}s)"
  exit 0
fi

{
  echo "run-guest: FAIL ($test_name, $queues queue(s), ${elapsed}s, QEMU exit status $qemu_rc)"
  if [ "$timed_out" = yes ] && [ -n "$verdict_deadline" ]; then
    echo "run-guest: QEMU did not exit within 10 s of the guest's verdict (stuck powering off?): killed"
  elif [ "$timed_out" = yes ]; then
    echo "run-guest: QEMU killed after the ${timeout_s}s timeout"
  fi
  echo "run-guest: ${verdict:-no VCPTEST verdict on the console}"
  [ "$console_empty" = no ] || echo "run-guest: the console is empty: QEMU never started the guest (did the vhost-user handshake with the server stall?)"
  if grep -a -q 'VCPTEST: FAIL' "$log"; then
    # The guest's own report: its steps, then everything from the failure on (diagnostics).
    echo "--- the guest's steps and its report from $log:"
    grep -a 'VCPTEST: ' "$log" | grep -a -v 'VCPTEST: FAIL' | tr -d '\r'
    sed -n '/VCPTEST: FAIL/,$p' "$log" | head -n 250 | tr -d '\r'
  else
    echo "--- last 60 lines of $log:"
    tail -n 60 "$log" | tr -d '\r'
  fi
} >&2
exit 1
