#!/usr/bin/env bash
# vcp target and vcp serve under a service manager's notification protocol (systemd Type=notify,
# sd_notify(3)): a datagram socket of the test's own stands for the manager's ($NOTIFY_SOCKET).
# Each must send READY=1 (with a STATUS= line) once it serves, and only then: at that moment
# the portal takes an iSCSI login (iscsi-inq) and the unix socket a vhost-user front-end (vcp
# bench); RELOADING=1 with MONOTONIC_USEC= on SIGHUP, then READY=1 when the reload is done;
# STATUS= on vcp serve's front-end coming and going; STOPPING=1 on SIGTERM, and a clean exit.
#
#   tests/integration/service_notify.sh [VCP_BINARY]   (default $VCP_BIN, then build/vcp)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "service_notify: FAIL: $*" >&2; exit 1; }
vcp=${1:-${VCP_BIN-$here/../../build/vcp}}
[ -x "$vcp" ] || die "$vcp is not built"
command -v iscsi-inq >/dev/null || die "iscsi-inq not installed (Debian package libiscsi-bin)"

work=$(mktemp -d "${TMPDIR:-/tmp}/vcp-notify.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The manager: every datagram to $work/notify becomes a line of $work/got ('|' for newlines).
python3 - "$work/notify" "$work/got" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", "|") + "\n")
PY
pids+=($!)
for _ in $(seq 50); do [ -S "$work/notify" ] && break; sleep 0.05; done
[ -S "$work/notify" ] || die "the manager's socket did not appear"
touch "$work/got"
export NOTIFY_SOCKET=$work/notify

# wait_for REGEX: up to 10 s for a line of the manager's to match; prints it.
wait_for() {
  for _ in $(seq 200); do
    grep -E -m1 "$1" "$work/got" && return 0
    sleep 0.05
  done
  echo "--- the manager got:" >&2; cat "$work/got" >&2
  die "no message matching '$1'"
}

# ---- vcp target
IQN=iqn.2024-01.org.vcp:notify
truncate -s 16M "$work/lun.img"
"$vcp" target --portal 127.0.0.1:0 --iqn "$IQN" --lun "0=file:path=$work/lun.img" >"$work/target.log" 2>&1 &
tpid=$!
pids+=($tpid)
line=$(wait_for '^READY=1')
port=$(sed -n 's/^vcp target: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/target.log")
[[ $line == "READY=1|STATUS=listening on 127.0.0.1:$port" ]] || die "vcp target's READY=1: '$line'"
timeout 20 iscsi-inq "iscsi://127.0.0.1:$port/$IQN/0" >/dev/null || die "no login right after READY=1"
: >"$work/got"
kill -HUP "$tpid"
wait_for '^RELOADING=1\|MONOTONIC_USEC=[0-9]+$' >/dev/null
wait_for '^READY=1\|STATUS=listening on ' >/dev/null
: >"$work/got"
kill -TERM "$tpid"
wait_for '^STOPPING=1$' >/dev/null
wait "$tpid" || die "vcp target did not end cleanly"
echo "vcp target: READY=1 with its portal, RELOADING=1/READY=1 on SIGHUP, STOPPING=1 on SIGTERM"

# ---- vcp serve
: >"$work/got"
"$vcp" serve --socket "$work/vcp.sock" --backend ram:size=16M >"$work/serve.log" 2>&1 &
spid=$!
pids+=($spid)
line=$(wait_for '^READY=1')
[[ $line == "READY=1|STATUS=serving ram "*" on $work/vcp.sock, no front-end" ]] || die "vcp serve's READY=1: '$line'"
[ -S "$work/vcp.sock" ] || die "READY=1 before the socket exists"
"$vcp" bench --socket "$work/vcp.sock" --rw randread --time 1 >"$work/bench.log" 2>&1 ||
  { cat "$work/bench.log" >&2; die "vcp bench right after READY=1"; }
wait_for "^STATUS=serving .*, front-end connected$" >/dev/null
wait_for "^STATUS=serving .*, no front-end$" >/dev/null
: >"$work/got"
kill -HUP "$spid"
wait_for '^RELOADING=1\|MONOTONIC_USEC=[0-9]+$' >/dev/null
wait_for '^READY=1$' >/dev/null
: >"$work/got"
kill -TERM "$spid"
wait_for '^STOPPING=1$' >/dev/null
wait "$spid" || die "vcp serve did not end cleanly"
echo "vcp serve: READY=1 with its socket, STATUS= for the front-end, RELOADING=1/READY=1 on SIGHUP, STOPPING=1 on SIGTERM"
echo "service_notify: PASS"
