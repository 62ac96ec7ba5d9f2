#!/bin/bash
# The iscsi backend against our own target (`vcp target`) where it makes the target push back.
#
#   initiator_vcp_target.sh task_set_full
#     vcp target with --max-tasks 4 and the initiator at queue depth 32: commands beyond 4 get
#     TASK SET FULL, the initiator backs off and retries, and the verified load run ends clean
#     (no errors, no reconnect, retries seen in the session's closing line).
# Environment: IO_TEST (the iscsi_io_test binary), VCP_BIN (the vcp binary). A missing binary
# is a failure, never a skip.
set -euo pipefail
CASE=${1:?usage: initiator_vcp_target.sh CASE}
die() { echo "initiator_vcp_target.sh[$CASE]: FAIL: $*" >&2; exit 1; }
log() { echo "initiator_vcp_target.sh[$CASE]: $*" >&2; }
[[ -x "${IO_TEST:-}" ]] || die "IO_TEST is not set to the iscsi_io_test binary"
[[ -x "${VCP_BIN:-}" ]] || die "VCP_BIN is not set to the vcp binary"
source "$(dirname "$0")/iscsi_load_check.sh"

IQN=iqn.2024-01.org.vcp.test:pushback
# /var/tmp: the LUN is opened O_DIRECT (below), which a tmpfs /tmp may refuse.
WORK=$(mktemp -d /var/tmp/vcp-initiator-target.XXXXXX)
PID=""
cleanup() {
  local rc=$?
  if [[ -n "$PID" ]]; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  [[ $rc -ne 0 ]] && tail -n 20 "$WORK/target.log" >&2 2>/dev/null
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# start_target [vcp target options...]: sets PORT.
start_target() {
  # A file LUN opened O_DIRECT: commands stay in flight in the target while io_uring works on
  # them. A ram LUN, or a buffered file (reads sent in place from the page cache, writes
  # written inline), answers each at once, so no more than one would ever be active.
  truncate -s 64M "$WORK/lun.img"
  "$VCP_BIN" target --portal 127.0.0.1:0 --iqn "$IQN" --lun "1=file:path=$WORK/lun.img,direct=on" "$@" \
    >"$WORK/target.log" 2>&1 &
  PID=$!
  PORT=""
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^vcp target: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/target.log")
    [[ -n "$PORT" ]] && break
    kill -0 "$PID" 2>/dev/null || die "vcp target exited"
    sleep 0.05
  done
  [[ -n "$PORT" ]] || die "vcp target did not print its address"
}

case "$CASE" in
  task_set_full)
    start_target --max-tasks 4
    clean_load "$WORK/load.log" "iscsi://127.0.0.1:$PORT/$IQN/1,timeout=10" 6 32
    busy=$(q0_stat "$WORK/load.log" "BUSY/TASK SET FULL")
    log "TASK SET FULL answers retried: ${busy:-none}"
    [[ -n "$busy" && "$busy" -ge 10 ]] || die "expected TASK SET FULL at queue depth 32 against 4 tasks"
    # The initiator adapts: it lowers the depth it keeps at the target instead of retrying
    # against a full task set forever (without that, nearly every command was refused first).
    done_cmds=$(q0_stat "$WORK/load.log" "commands completed")
    cuts=$(q0_stat "$WORK/load.log" "queue depth reductions")
    log "$done_cmds commands completed, $cuts queue depth reductions"
    [[ -n "$cuts" && "$cuts" -ge 1 ]] || die "TASK SET FULL did not lower the queue depth"
    [[ -n "$done_cmds" && "$busy" -lt $((done_cmds / 4)) ]] ||
      die "$busy TASK SET FULL answers for $done_cmds commands: the depth did not adapt" ;;
  *) die "unknown case" ;;
esac
log "PASS"
