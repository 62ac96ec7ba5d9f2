#!/bin/bash
# Integration tests of the iscsi backend against a real tgt target (tgtd), on 127.0.0.1.
#
#   tgtd.sh CASE
# Environment: IO_TEST (the iscsi_io_test binary), VCP_BIN (the vcp binary, for discover/guest).
#
# Each run starts its own tgtd on a free TCP port with a free control port (-C, 100..499), with
# file-backed LUNs in a temporary directory, configures it with tgtadm, runs the case and kills
# tgtd by its pid with SIGKILL at exit (SIGTERM does not stop a tgtd with targets). A missing
# tool is a failure, never a skip.
set -euo pipefail

CASE=${1:?usage: tgtd.sh CASE}
IQN=iqn.2024-01.org.vcp.test:disk1
LUN_SIZE=${LUN_SIZE:-64M}
[[ $CASE == guest ]] && LUN_SIZE=256M  # the guest test needs at least 128 MiB
SECRET="vcp-initiator-secret-0123"
MUTUAL="vcp-target-secret-4567890"

die() { echo "tgtd.sh[$CASE]: FAIL: $*" >&2; exit 1; }
log() { echo "tgtd.sh[$CASE]: $*" >&2; }

for tool in tgtd tgtadm python3; do
  command -v "$tool" >/dev/null || die "$tool not found (install the Debian package tgt / python3)"
done
[[ -x "${IO_TEST:-}" ]] || die "IO_TEST is not set to the iscsi_io_test binary"

WORK=$(mktemp -d /tmp/vcp-tgtd.XXXXXX)
TGTD_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$TGTD_PID" ]]; then
    kill -CONT "$TGTD_PID" 2>/dev/null || true
    kill -KILL "$TGTD_PID" 2>/dev/null || true
    wait "$TGTD_PID" 2>/dev/null || true
  fi
  # A SIGKILLed tgtd leaves its control socket and lock file behind: ours, so ours to remove.
  [[ -n "${CTL:-}" ]] && rm -f "/var/run/tgtd/socket.$CTL" "/var/run/tgtd/socket.$CTL.lock"
  if [[ $rc -ne 0 ]]; then
    log "tgtd log (last lines):"; tail -n 20 "$WORK/tgtd.log" >&2 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# A control port nobody uses: tgtd listens on the abstract/unix socket /var/run/tgtd/socket.N.
free_ctl() {
  local n
  for _ in $(seq 1 200); do
    n=$(( 100 + RANDOM % 400 ))
    if [[ ! -e /var/run/tgtd/socket.$n ]] && ! ss -xl 2>/dev/null | grep -q "socket\.$n\b"; then
      echo "$n"; return
    fi
  done
  die "no free tgtd control port in 100..499"
}

PORT=$(free_port)
CTL=$(free_ctl)
truncate -s "$LUN_SIZE" "$WORK/lun1.img"

tgt() { tgtadm -C "$CTL" --lld iscsi "$@"; }

start_tgtd() {
  local i
  for i in $(seq 1 50); do
    tgtd -f --iscsi portal=127.0.0.1:$PORT -C "$CTL" >>"$WORK/tgtd.log" 2>&1 &
    TGTD_PID=$!
    for _ in $(seq 1 50); do
      if tgt --op show --mode sys >/dev/null 2>&1; then return 0; fi
      kill -0 "$TGTD_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$TGTD_PID" 2>/dev/null || true
    wait "$TGTD_PID" 2>/dev/null || true
    TGTD_PID=""
    sleep 0.2  # the port may still be held by the previous tgtd's connections
  done
  die "tgtd did not start on 127.0.0.1:$PORT -C $CTL"
}

configure() {
  tgt --op new --mode target --tid 1 -T "$IQN"
  tgt --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/lun1.img"
  tgt --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1
  tgt --op bind --mode target --tid 1 -I ALL
  case "$CASE" in
    chap|wrong_secret)
      tgt --op new --mode account --user vcpuser --password "$SECRET"
      tgt --op bind --mode account --tid 1 --user vcpuser ;;
    mutual)
      tgt --op new --mode account --user vcpuser --password "$SECRET"
      tgt --op new --mode account --user vcptarget --password "$MUTUAL"
      tgt --op bind --mode account --tid 1 --user vcpuser
      tgt --op bind --mode account --tid 1 --user vcptarget --outgoing ;;
    digests)
      tgt --op update --mode target --tid 1 --name HeaderDigest --value CRC32C,None
      tgt --op update --mode target --tid 1 --name DataDigest --value CRC32C,None ;;
    r2t)
      tgt --op update --mode target --tid 1 --name InitialR2T --value Yes
      tgt --op update --mode target --tid 1 --name ImmediateData --value No
      tgt --op update --mode target --tid 1 --name FirstBurstLength --value 4096
      tgt --op update --mode target --tid 1 --name MaxBurstLength --value 16384
      tgt --op update --mode target --tid 1 --name MaxRecvDataSegmentLength --value 4096 ;;
    unsolicited)
      tgt --op update --mode target --tid 1 --name InitialR2T --value No
      tgt --op update --mode target --tid 1 --name ImmediateData --value Yes
      tgt --op update --mode target --tid 1 --name FirstBurstLength --value 16384
      tgt --op update --mode target --tid 1 --name MaxBurstLength --value 32768
      tgt --op update --mode target --tid 1 --name MaxRecvDataSegmentLength --value 8192 ;;
  esac
}

start_tgtd
configure
URL="iscsi://127.0.0.1:$PORT/$IQN/1"
log "tgtd pid $TGTD_PID on 127.0.0.1:$PORT (-C $CTL), LUN $WORK/lun1.img"

# Runs the load generator in the background and disturbs tgtd while it runs.
under_load() {
  local disturb=$1 secs=$2
  "$IO_TEST" load "$URL,timeout=2,nop_interval=1,login_timeout=2" "$secs" >"$WORK/load.log" 2>&1 &
  local io=$!
  sleep 3
  $disturb
  local rc=0
  wait "$io" || rc=$?
  cat "$WORK/load.log" >&2
  [[ $rc -eq 0 ]] || die "load run failed (exit $rc)"
  grep -q "session reinstated" "$WORK/load.log" || die "no session reinstatement seen"
  grep -q "VERIFY OK" "$WORK/load.log" || die "no clean verify"
}
stop_cont() {
  log "SIGSTOP tgtd for 7 s"
  kill -STOP "$TGTD_PID"; sleep 7; kill -CONT "$TGTD_PID"; log "SIGCONT"
}
kill_restart() {
  log "SIGKILL tgtd, restart in 1 s"
  kill -KILL "$TGTD_PID"; wait "$TGTD_PID" 2>/dev/null || true; TGTD_PID=""
  sleep 1
  start_tgtd; configure; log "tgtd restarted (pid $TGTD_PID)"
}

# vcp serve on $URL, listening on $sock; $serve is its pid.
start_serve() {
  [[ -x "${VCP_BIN:-}" ]] || die "VCP_BIN is not set to the vcp binary"
  sock="$WORK/vcp.sock"
  "$VCP_BIN" serve --socket "$sock" --backend "$URL" >"$WORK/serve.log" 2>&1 &
  serve=$!
  for _ in $(seq 1 100); do [[ -S $sock ]] && break; sleep 0.1; done
  [[ -S $sock ]] || { cat "$WORK/serve.log" >&2; die "vcp serve did not create $sock"; }
}

case "$CASE" in
  plain|digests|r2t|unsolicited)
    opts=""
    [[ $CASE == digests ]] && opts=",header_digest=crc32c,data_digest=crc32c"
    [[ $CASE == r2t ]] && opts=",max_recv_segment=4096"
    "$IO_TEST" verify "$URL$opts" ;;
  chap)
    VCP_ISCSI_SECRET="$SECRET" "$IO_TEST" verify "iscsi://vcpuser@127.0.0.1:$PORT/$IQN/1" ;;
  mutual)
    printf '%s\n%s\n' "$SECRET" "$MUTUAL" >"$WORK/secrets"
    "$IO_TEST" verify "iscsi://vcpuser@127.0.0.1:$PORT/$IQN/1?mutual_user=vcptarget&secret_file=$WORK/secrets" ;;
  wrong_secret)
    VCP_ISCSI_SECRET="not-the-right-secret-xx" "$IO_TEST" expect-fail "iscsi://vcpuser@127.0.0.1:$PORT/$IQN/1" \
      "authentication failure" ;;
  absent_target)
    "$IO_TEST" expect-fail "iscsi://127.0.0.1:$PORT/iqn.2024-01.org.vcp.test:nosuch/1" "not found" ;;
  no_listener)
    "$IO_TEST" expect-fail "iscsi://127.0.0.1:$(free_port)/$IQN/1" "Connection refused" ;;
  stop_cont)
    under_load stop_cont 20 ;;
  restart)
    under_load kill_restart 14 ;;
  discover)
    [[ -x "${VCP_BIN:-}" ]] || die "VCP_BIN is not set to the vcp binary"
    out=$("$VCP_BIN" discover "127.0.0.1:$PORT")
    echo "$out"
    grep -q "^$IQN 127.0.0.1:$PORT,1$" <<<"$out" || die "discover did not list $IQN at 127.0.0.1:$PORT,1" ;;
  bench)
    # vcp bench --verify on the initiator in-process (--backend), then through the channel
    # (vcp serve --backend): small random mixed I/O and large sequential I/O, both directions.
    [[ -x "${VCP_BIN:-}" ]] || die "VCP_BIN is not set to the vcp binary"
    "$VCP_BIN" bench --backend "$URL" --rw randrw --bs 4k --qd 32 --time 3 --verify || die "in-process randrw"
    "$VCP_BIN" bench --backend "$URL" --rw write --bs 128k --qd 8 --time 2 --verify || die "in-process write 128k"
    "$VCP_BIN" bench --backend "$URL" --rw read --bs 128k --qd 8 --time 2 --verify || die "in-process read 128k"
    "$VCP_BIN" bench --backend "$URL" --rw randread --bs 512 --qd 64 --time 2 --poll always || die "in-process 512"
    start_serve
    rc=0
    "$VCP_BIN" bench --socket "$sock" --rw randrw --bs 16k --qd 32 --time 3 --verify || rc=$?
    kill -TERM "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true
    [[ $rc -eq 0 ]] || { tail -n 10 "$WORK/serve.log" >&2; die "through vcp serve: randrw 16k"; } ;;
  guest)
    [[ -x "${VCP_BIN:-}" ]] || die "VCP_BIN is not set to the vcp binary"
    [[ -x "${GUEST_RUNNER:-}" ]] || die "GUEST_RUNNER is not set to scripts/guest/run-guest.sh"
    start_serve
    rc=0
    "$GUEST_RUNNER" --socket "$sock" --queues 1 --log "$WORK/guest.log" || rc=$?
    kill -TERM "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true
    tail -n 30 "$WORK/guest.log" >&2 || true
    tail -n 10 "$WORK/serve.log" >&2 || true
    [[ $rc -eq 0 ]] || die "guest run failed (exit $rc)" ;;
  *) die "unknown case" ;;
esac
log "PASS"
