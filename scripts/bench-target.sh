#!/bin/bash
# vcp target against tgt's tgtd, side by side in one run: the same initiator, the same LUN size
# (a 256 MiB file each), on 127.0.0.1. The target process is pinned to CPU 1 and the initiator
# to CPU 0. For each load: IOPS, the target's CPU time per I/O (utime+stime from /proc/PID/stat
# over the run), the initiator side's (CPU 0's busy time from /proc/stat: the initiator and the
# kernel's work for it) and the ratio of IOPS per target CPU-second, vcp over tgtd.
#
#   scripts/bench-target.sh [VCP_BIN] [SECONDS]   (default: $BUILD/vcp, BUILD defaulting to build)
#   LOADS="randread-4k-qd32" scripts/bench-target.sh ...   (a subset of the loads below)
#   VCP_TARGET_ARGS="--sendfile on" scripts/bench-target.sh ...   (more options for vcp target)
#   LUN_DIR=/dev/shm scripts/bench-target.sh ...           (where the two LUN files go; default
#                                                         a temporary folder in /tmp. On tmpfs
#                                                         the file system's share of a write,
#                                                         which both targets pay, is small)
#
# Loads:
#   randread-4k-qd32   iscsi-perf -r -m 32 -b 8          (4 KiB random reads)
#   write-4k-qd32      qemu-img bench -w -d 32 -s 4k     (4 KiB writes; qemu-img bench writes
#                                                         sequentially: iscsi-perf 1.19 cannot write)
#   seqread-256k-qd8   iscsi-perf -m 8 -b 512            (256 KiB sequential reads)
#   seqwrite-256k-qd8  qemu-img bench -w -d 8 -s 256k    (256 KiB sequential writes)
#   randwrite-4k-qd32  vcp bench --backend iscsi://... --rw randwrite --qd 32
#                                                        (4 KiB random writes: neither libiscsi
#                                                         tool writes at random, so our own
#                                                         initiator drives both targets)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VCP_BIN=${1:-$ROOT/${BUILD:-build}/vcp}
SECS=${2:-10}
IQN_VCP=iqn.2024-01.org.vcp:bench
IQN_TGT=iqn.2024-01.org.tgt:bench
INI=iqn.2024-01.org.vcp:bench-initiator

fail() { echo "bench-target.sh: $*" >&2; exit 1; }
die() { fail "$@"; }
source "$(dirname "$0")/lib/tgtd.sh"
for t in iscsi-perf qemu-img taskset python3; do command -v $t >/dev/null || fail "$t not installed"; done
[ -x "$VCP_BIN" ] || fail "no vcp binary at $VCP_BIN"
[ -f /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ] || fail "qemu-img has no iscsi driver: install qemu-block-extra"
[ "$(nproc)" -ge 2 ] || fail "needs 2 CPUs (target on CPU 1, initiator on CPU 0)"

DIR=$(mktemp -d /tmp/vcp-bench-target.XXXXXX)
LUNS=$DIR
if [ -n "${LUN_DIR:-}" ]; then
  LUNS=$(mktemp -d "$LUN_DIR/vcp-bench-target-luns.XXXXXX") || fail "cannot make a folder in LUN_DIR=$LUN_DIR"
fi
VCP_PID=
cleanup() {
  [ -n "$VCP_PID" ] && { kill -TERM "$VCP_PID" 2>/dev/null; wait "$VCP_PID" 2>/dev/null; }
  tgtd_stop
  rm -rf "$DIR" "$LUNS"
}
trap cleanup EXIT
# CPU ticks (utime + stime, all threads) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

truncate -s 256M "$LUNS/vcp.img" "$LUNS/tgt.img"
# Fill the files so reads hit allocated blocks in both.
# FILL=direct writes the files past the page cache (oflag=direct), so it holds none of their
# pages when the loads start.
fill_flags=""
[ "${FILL:-}" = direct ] && fill_flags="oflag=direct"
dd if=/dev/zero of="$LUNS/vcp.img" bs=1M count=256 conv=notrunc status=none $fill_flags
dd if=/dev/zero of="$LUNS/tgt.img" bs=1M count=256 conv=notrunc status=none $fill_flags

# shellcheck disable=SC2086  # VCP_TARGET_ARGS: words
taskset -c 1 "$VCP_BIN" target --portal 127.0.0.1:0 --iqn $IQN_VCP --lun "0=file:path=$LUNS/vcp.img" --cpu 1 \
  ${VCP_TARGET_ARGS:-} >"$DIR/vcp.log" 2>&1 &
VCP_PID=$!
for _ in $(seq 100); do
  VCP_PORT=$(sed -n 's/^vcp target: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$DIR/vcp.log")
  [ -n "$VCP_PORT" ] && break
  sleep 0.05
done
[ -n "$VCP_PORT" ] || { cat "$DIR/vcp.log"; fail "vcp target did not start"; }

tgtd_start "$DIR/tgtd.log" 1
tgtd_target 1 $IQN_TGT 1 "$LUNS/tgt.img"

# Busy ticks of CPU 0 (everything but idle and iowait), where the initiator runs.
cpu0_ticks() { awk '$1 == "cpu0" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# run PID HOST_PORT IQN LUN LOAD -> prints "iops target_us_per_io initiator_us_per_io"
run() {
  local pid=$1 portal=$2 iqn=$3 lun=$4 load=$5
  local url="iscsi://$portal/$iqn/$lun"
  local t0 t1 out iops ios w0 w1 i0 i1
  t0=$(ticks "$pid")
  i0=$(cpu0_ticks)
  w0=$(date +%s.%N)
  # iscsi-perf stops only when its once-a-second progress check lands on the exact last second:
  # a stall of more than a second on a busy machine makes it run on forever. SIGINT ends it
  # cleanly (it prints its average), and the I/O count below uses the measured wall time.
  case $load in
    randread-4k-qd32) out=$(timeout -s INT $((SECS + 5)) taskset -c 0 iscsi-perf -i $INI -r -m 32 -b 8 -t "$SECS" "$url" 2>&1) ;;
    seqread-256k-qd8) out=$(timeout -s INT $((SECS + 5)) taskset -c 0 iscsi-perf -i $INI -m 8 -b 512 -t "$SECS" "$url" 2>&1) ;;
    write-4k-qd32) out=$(taskset -c 0 qemu-img bench -f raw -t none -n -w -d 32 -s 4k -c $((SECS * 20000)) "$url" 2>&1) ;;
    seqwrite-256k-qd8) out=$(taskset -c 0 qemu-img bench -f raw -t none -n -w -d 8 -s 256k -c $((SECS * 1500)) "$url" 2>&1) ;;
    randwrite-4k-qd32) out=$(taskset -c 0 "$VCP_BIN" bench --backend "$url" --rw randwrite --bs 4096 --qd 32 \
                             --time "$SECS" --poll never --json 2>&1) ;;
  esac
  t1=$(ticks "$pid")
  i1=$(cpu0_ticks)
  w1=$(date +%s.%N)
  case $load in
    randwrite-4k-qd32)
      read -r ios iops < <(python3 -c 'import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1])
print(j["ios"], int(j["ios"] / j["seconds"]))' <<<"$out" 2>/dev/null) && [ -n "$iops" ] \
        || { echo "$out" >&2; fail "vcp bench failed"; }
      ;;
    *read*)
      iops=$(grep -o 'iops average [0-9]*' <<<"$out" | tail -1 | awk '{print $3}')
      ios=$(python3 -c "print(int(${iops:-0} * ($w1 - $w0)))")
      ;;
    *)
      # "Run completed in 3.456 seconds."
      local secs
      secs=$(grep -o 'Run completed in [0-9.]*' <<<"$out" | awk '{print $4}')
      [ -n "$secs" ] || { echo "$out" >&2; fail "qemu-img bench failed"; }
      ios=$([ "$load" = write-4k-qd32 ] && echo $((SECS * 20000)) || echo $((SECS * 1500)))
      iops=$(python3 -c "print(int($ios / $secs))")
      ;;
  esac
  [ -n "$iops" ] && [ "$iops" -gt 0 ] || { echo "$out" >&2; fail "$load against $portal produced no result"; }
  python3 -c "print($iops, round(($t1 - $t0) / $HZ * 1e6 / $ios, 2), round(($i1 - $i0) / $HZ * 1e6 / $ios, 2))"
}

printf '%-18s %10s %10s %9s %10s %10s %9s %8s\n' load "vcp IOPS" "vcp us/IO" "ini us/IO" "tgtd IOPS" "tgtd us/IO" \
  "ini us/IO" ratio
for load in ${LOADS:-randread-4k-qd32 write-4k-qd32 seqread-256k-qd8 seqwrite-256k-qd8 randwrite-4k-qd32}; do
  read -r v_iops v_us v_ini < <(run "$VCP_PID" "127.0.0.1:$VCP_PORT" $IQN_VCP 0 $load)
  read -r t_iops t_us t_ini < <(run "$TGTD_PID" "127.0.0.1:$TGTD_PORT" $IQN_TGT 1 $load)
  # IOPS per target CPU-second = 1e6 / us_per_io.
  ratio=$(python3 -c "print(round($t_us / $v_us, 2) if $v_us > 0 else 'inf')")
  printf '%-18s %10s %10s %9s %10s %10s %9s %7sx\n' $load "$v_iops" "$v_us" "$v_ini" "$t_iops" "$t_us" "$t_ini" "$ratio"
done
echo "target pinned to CPU 1 (vcp: --cpu 1 and taskset -c 1; tgtd: taskset -c 1), initiator on CPU 0;"
echo "ratio = (IOPS per target CPU-second, vcp) / (same, tgtd) = tgtd us/IO / vcp us/IO; ${SECS} s per load."
echo "ini us/IO: CPU 0's busy time per I/O (the initiator, and the kernel's work on its behalf)."
if [ -n "${VCP_TARGET_ARGS:-}" ]; then echo "vcp target run with: ${VCP_TARGET_ARGS}"; fi
echo "LUN files (256 MiB each, filled with dd bs=1M) on $(df --output=fstype "$LUNS" | tail -1) ($LUNS)."
