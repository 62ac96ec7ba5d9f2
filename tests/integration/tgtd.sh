#!/bin/bash
# Integration tests of the iscsi backend against a real tgt target (tgtd), on 127.0.0.1.
#
#   tgtd.sh CASE
# Environment: IO_TEST (the iscsi_io_test binary), VCP_BIN (the vcp binary, for discover/guest).
#
# Each run starts its own tgtd (scripts/lib/tgtd.sh: free TCP port, free control port) with a
# file-backed LUN in a temporary directory, configures it with tgtadm, runs the case and kills
# tgtd at exit. A missing tool is a failure, never a skip.
set -euo pipefail

CASE=${1:?usage: tgtd.sh CASE}
IQN=iqn.2024-01.org.vcp.test:disk1
LUN_SIZE=${LUN_SIZE:-64M}
[[ $CASE == guest || $CASE == guest_partition ]] && LUN_SIZE=256M  # the guest tests need at least 128 MiB
SECRET="vcp-initiator-secret-0123"
MUTUAL="vcp-target-secret-4567890"

die() { echo "tgtd.sh[$CASE]: FAIL: $*" >&2; exit 1; }
log() { echo "tgtd.sh[$CASE]: $*" >&2; }

[[ -x "${IO_TEST:-}" ]] || die "IO_TEST is not set to the iscsi_io_test binary"
source "$(dirname "$0")/../../scripts/lib/tgtd.sh"
source "$(dirname "$0")/iscsi_load_check.sh"

WORK=$(mktemp -d /tmp/vcp-tgtd.XXXXXX)
OTHER_PID=""  # a second tgtd (redirect): killed by pid, its control socket removed
OTHER_CTL=""
cleanup() {
  local rc=$?
  tgtd_stop
  declare -F netns_cleanup >/dev/null && netns_cleanup
  if [[ -n "$OTHER_PID" ]]; then
    kill -KILL "$OTHER_PID" 2>/dev/null || true
    wait "$OTHER_PID" 2>/dev/null || true
    rm -f "/var/run/tgtd/socket.$OTHER_CTL" "/var/run/tgtd/socket.$OTHER_CTL.lock"
  fi
  if [[ $rc -ne 0 ]]; then
    log "tgtd log (last lines):"; tail -n 20 "$WORK/tgtd.log" >&2 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

truncate -s "$LUN_SIZE" "$WORK/lun1.img"
start_tgtd() { tgtd_start "$WORK/tgtd.log"; }

configure() {
  tgtd_target 1 "$IQN" 1 "$WORK/lun1.img"
  tgt --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1
  case "$CASE" in
    chap|wrong_secret)
      tgt --op new --mode account --user vcpuser --password "$SECRET"
      tgt --op bind --mode account --tid 1 --user vcpuser ;;
    mutual)
      tgt --op new --mode account --user vcpuser --password "$SECRET"
      tgt --op new --mode account --user vcptarget --password "$MUTUAL"
      tgt --op bind --mode account --tid 1 --user vcpuser
      tgt --op bind --mode account --tid 1 --user vcptarget --outgoing ;;
    digests|lossy)
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
    nop)
      # tgtd pings every second and drops a connection with 2 pings unanswered.
      tgt --op update --mode target --tid 1 -n nop_interval -v 1
      tgt --op update --mode target --tid 1 -n nop_count -v 2 ;;
  esac
}

# redirect_to ADDR PORT: tgtd's target 1 sends every login to ADDR:PORT (status 0x0101).
# tgtd does not redirect to the address the login came in on, so ADDR is 127.0.0.2.
redirect_to() {
  tgt --op update --mode target --tid 1 --name RedirectAddress --value "$1"
  tgt --op update --mode target --tid 1 --name RedirectPort --value "$2"
  tgt --op update --mode target --tid 1 --name RedirectReason --value Temporary
}

# A second tgtd serving $IQN from $WORK/lunb.img, also listening on 127.0.0.2:$B_PORT; the
# first stays the one `tgt` talks to.
start_other_tgtd() {
  local a_pid=$TGTD_PID a_port=$TGTD_PORT a_ctl=$TGTD_CTL
  TGTD_PID="" TGTD_PORT="" TGTD_CTL=""
  truncate -s "$LUN_SIZE" "$WORK/lunb.img"
  tgtd_start "$WORK/tgtd-b.log"
  OTHER_PID=$TGTD_PID OTHER_CTL=$TGTD_CTL
  tgtd_target 1 "$IQN" 1 "$WORK/lunb.img"
  tgt --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1
  B_PORT=$(tgtd_free_port)
  tgt --op new --mode portal --param "portal=127.0.0.2:$B_PORT"
  TGTD_PID=$a_pid TGTD_PORT=$a_port TGTD_CTL=$a_ctl
}

# The network cases: tgtd and the initiator on two hosts of their own (network namespaces
# joined by a veth pair, scripts/lib/netns.sh), the link between them made to fail.
case "$CASE" in
  partition|lossy|guest_partition)
    source "$(dirname "$0")/../../scripts/lib/netns.sh"
    netns_pair
    TGTD_NETNS=$NETNS_T TGTD_ADDR=$NETNS_T_ADDR
    IO_WRAP=(ip netns exec "$NETNS_I")
    log "tgtd in network namespace $NETNS_T ($NETNS_T_ADDR), the initiator in $NETNS_I ($NETNS_I_ADDR)" ;;
esac

start_tgtd
configure
PORT=$TGTD_PORT
URL="iscsi://$TGTD_ADDR:$PORT/$IQN/1"
log "tgtd pid $TGTD_PID on $TGTD_ADDR:$PORT (-C $TGTD_CTL), LUN $WORK/lun1.img"

# Runs the load generator in the background and disturbs tgtd while it runs.
under_load() { disturbed_load "$WORK/load.log" "$URL" "$2" "$1"; }
stop_cont() {
  log "SIGSTOP tgtd for 7 s"
  kill -STOP "$TGTD_PID"; sleep 7; kill -CONT "$TGTD_PID"; log "SIGCONT"
}
delete_conn() {
  local sid
  sid=$(tgt --op show --mode conn --tid 1 | awk '/^Session:/ {print $2; exit}')
  [[ -n "$sid" ]] || die "no session to delete"
  log "tgtadm --op delete --mode conn --sid $sid --cid 0"
  tgt --op delete --mode conn --tid 1 --sid "$sid" --cid 0
}
cut_link() {
  log "the link goes silent (every packet dropped) for 10 s"
  netns_cut; sleep 10
  log "link back ($(netns_drops) packets dropped)"
  netns_heal
}
kill_restart() {
  log "SIGKILL tgtd, restart in 1 s"
  tgtd_kill
  sleep 1
  start_tgtd; configure; log "tgtd restarted (pid $TGTD_PID)"
}

# vcp serve on $URL (and OPTIONS, if given), listening on $sock; $serve is its pid. In the
# network cases it runs on the initiator's host (the socket is a file: QEMU reaches it).
start_serve() {
  [[ -x "${VCP_BIN:-}" ]] || die "VCP_BIN is not set to the vcp binary"
  sock="$WORK/vcp.sock"
  "${IO_WRAP[@]}" "$VCP_BIN" serve --socket "$sock" --backend "$URL${1:-}" >"$WORK/serve.log" 2>&1 &
  serve=$!
  for _ in $(seq 1 100); do [[ -S $sock ]] && break; sleep 0.1; done
  [[ -S $sock ]] || { cat "$WORK/serve.log" >&2; die "vcp serve did not create $sock"; }
}

case "$CASE" in
  plain|digests|r2t|unsolicited)
    opts=""
    [[ $CASE == digests ]] && opts=",header_digest=crc32c,data_digest=crc32c"
    [[ $CASE == r2t ]] && opts=",max_recv_segment=4096"
    "$IO_TEST" verify "$URL$opts"
    if [[ $CASE == plain ]]; then
      # Digests required of a tgtd not set up for them: it answers None (not Reject, as the
      # RFC has it); the error names the key, its answer and our offer.
      "$IO_TEST" expect-fail "$URL,header_digest=crc32c" \
        "failed: the target's answer cannot be taken: peer refused a required value: HeaderDigest=None (we offered CRC32C)"
    fi ;;
  chap)
    VCP_ISCSI_SECRET="$SECRET" "$IO_TEST" verify "iscsi://vcpuser@127.0.0.1:$PORT/$IQN/1"
    # Stronger algorithms offered first: tgt knows MD5 and its own 7 (SHA-1 by its numbering),
    # so "6,5" gets MD5; "7,5" gets tgt's 7, which to us is SHA-256: the login fails, and the
    # error says what was chosen (docs/iscsi.md, "CHAP algorithms").
    VCP_ISCSI_SECRET="$SECRET" "$IO_TEST" verify "iscsi://vcpuser@127.0.0.1:$PORT/$IQN/1?chap_algs=SHA1:MD5"
    VCP_ISCSI_SECRET="$SECRET" "$IO_TEST" expect-fail "iscsi://vcpuser@127.0.0.1:$PORT/$IQN/1?chap_algs=SHA256:MD5" \
      "after the target chose CHAP SHA-256 (CHAP_A=7)" ;;
  mutual)
    printf '%s\n%s\n' "$SECRET" "$MUTUAL" >"$WORK/secrets"
    "$IO_TEST" verify "iscsi://vcpuser@127.0.0.1:$PORT/$IQN/1?mutual_user=vcptarget&secret_file=$WORK/secrets" ;;
  wrong_secret)
    VCP_ISCSI_SECRET="not-the-right-secret-xx" "$IO_TEST" expect-fail "iscsi://vcpuser@127.0.0.1:$PORT/$IQN/1" \
      "authentication failure" ;;
  absent_target)
    "$IO_TEST" expect-fail "iscsi://127.0.0.1:$PORT/iqn.2024-01.org.vcp.test:nosuch/1" "not found" ;;
  no_listener)
    "$IO_TEST" expect-fail "iscsi://127.0.0.1:$(tgtd_free_port)/$IQN/1" "Connection refused" ;;
  stop_cont)
    under_load stop_cont 20 ;;
  restart)
    under_load kill_restart 14 ;;
  delete_conn)
    under_load delete_conn 10 ;;
  partition)
    # The cable pulled for 10 s under verified load: no RST, no ICMP, tgtd alive and holding
    # the session. The initiator's commands and NOP-Out go unanswered, it drops the
    # connection; its logins then get no answer at all (SYNs dropped) until the link is back,
    # when it reinstates the session tgtd still holds and reissues what was outstanding.
    under_load cut_link 20
    grep -q "no login to $TGTD_ADDR:$PORT within 2 s" "$WORK/load.log" ||
      die "no login went unanswered while the link was down"
    grep -q "^load: [0-9]* operations, 0 errors" "$WORK/load.log" || die "the load saw errors" ;;
  lossy)
    # 3% of the packets each way dropped, digests on, the initiator's default timeouts: TCP
    # sends again, the session is never dropped, nothing times out, every byte verifies.
    netns_loss 3
    clean_load "$WORK/load.log" "$URL,header_digest=crc32c,data_digest=crc32c" 6
    drops=$(netns_drops) resent=$(netns_retransmits "$NETNS_I")
    log "$drops packets dropped, $resent TCP segments sent again by the initiator"
    [[ -n "$drops" && "$drops" -ge 100 ]] || die "the link dropped too few packets ($drops) to test anything"
    [[ "$(q0_stat "$WORK/load.log" aborts)" == 0 ]] || die "a command was aborted"
    # A PDU's tail held up by a lost segment is late, not a smaller PDU from tgtd
    # (Session::check_lowat_stall): whole-PDU receives stay on.
    ! grep "the target sent a PDU smaller than" "$WORK/load.log" || die "a late PDU was taken for a smaller one" ;;
  nop)
    # 10 s of verified load with tgtd pinging every second: every ping is answered, so the
    # session is never dropped (our own keep-alive is off: nop_interval=60).
    clean_load "$WORK/load.log" "$URL,timeout=5,nop_interval=60" 10
    answered=$(q0_stat "$WORK/load.log" "target NOP-In pings answered")
    log "target pings answered: ${answered:-none}"
    [[ -n "$answered" && "$answered" -ge 8 ]] || die "expected at least 8 target NOP-In pings answered in 10 s" ;;
  redirect)
    # tgtd A sends the login to tgtd B's portal: the initiator follows, and the data lands on B.
    start_other_tgtd
    redirect_to 127.0.0.2 "$B_PORT"
    "$IO_TEST" verify "$URL" >"$WORK/verify.log" 2>&1 || { cat "$WORK/verify.log" >&2; die "verify through a redirect failed"; }
    cat "$WORK/verify.log" >&2
    grep -q "VERIFY OK" "$WORK/verify.log" || die "no clean verify"
    grep -q "target redirects us (temporarily) to 127.0.0.2:$B_PORT" "$WORK/verify.log" || die "no redirect seen"
    cmp -s -n "$(stat -c %s "$WORK/lun1.img")" "$WORK/lun1.img" /dev/zero || die "data was written on tgtd A"
    ! cmp -s -n "$(stat -c %s "$WORK/lunb.img")" "$WORK/lunb.img" /dev/zero || die "no data reached tgtd B" ;;
  redirect_loop)
    # tgtd redirects to its own second portal: the initiator gives up with a clear error.
    A2_PORT=$(tgtd_free_port)
    tgt --op new --mode portal --param "portal=127.0.0.2:$A2_PORT"
    redirect_to 127.0.0.2 "$A2_PORT"
    timeout 20 "$IO_TEST" expect-fail "$URL" "redirect loop" ;;
  readonly)
    # tgtd's LUN made read-only: MODE SENSE says WP, the VCP serves the disk read-only (the
    # client refuses writes before the channel), reads work.
    tgt --op update --mode logicalunit --tid 1 --lun 1 --params readonly=1
    start_serve
    grep -q "write-protected: read-only" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; die "WP not seen"; }
    "$VCP_BIN" bench --socket "$sock" --rw read --bs 64k --qd 4 --time 1 || die "reads of the read-only LUN"
    if "$VCP_BIN" bench --socket "$sock" --rw write --bs 4k --qd 4 --time 1; then die "writes succeeded"; fi
    kill -TERM "$serve"; wait "$serve" || true
    last=$(grep "queue stopped" "$WORK/serve.log" | tail -1)
    grep -q " 0.0 MiB written, 0 I/O errors" <<<"$last" || die "writes reached the VCP: $last" ;;
  discover)
    [[ -x "${VCP_BIN:-}" ]] || die "VCP_BIN is not set to the vcp binary"
    out=$("$VCP_BIN" discover "127.0.0.1:$PORT")
    echo "$out"
    grep -q "^$IQN 127.0.0.1:$PORT,1$" <<<"$out" || die "discover did not list $IQN at 127.0.0.1:$PORT,1"
    spec=$("$VCP_BIN" discover "127.0.0.1:$PORT" --url 1)
    [[ "$spec" == "iscsi://127.0.0.1:$PORT/$IQN/1" ]] || die "discover --url 1 gave '$spec'"
    "$IO_TEST" verify "$spec" >/dev/null || die "verify on the discovered spec" ;;
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
  guest_partition)
    # A QEMU guest reads a known pattern in a loop (verifying every round) from a disk served
    # by vcp serve on the initiator's host, while the link to tgtd goes silent for 10 s: the
    # VCP reinstates the session and reissues what was outstanding; the guest sees a stall,
    # no error, and every byte right (the paper's fault containment, on a real link).
    [[ -x "${GUEST_RUNNER:-}" ]] || die "GUEST_RUNNER is not set to scripts/guest/run-guest.sh"
    start_serve ",timeout=2,nop_interval=1,login_timeout=2"
    rc=0
    "$GUEST_RUNNER" --socket "$sock" --queues 1 --log "$WORK/guest.log" --test migrate \
      --append "vcpmigrate_s=24" --timeout 240 >"$WORK/runner.log" 2>&1 &
    runner=$!
    for _ in $(seq 1200); do
      grep -a -q "VCPTEST: migrate ready" "$WORK/guest.log" 2>/dev/null && break
      kill -0 "$runner" 2>/dev/null || break
      sleep 0.1
    done
    grep -a -q "VCPTEST: migrate ready" "$WORK/guest.log" || { cat "$WORK/runner.log" >&2; die "the guest did not get ready"; }
    sleep 4
    cut_link
    wait "$runner" || rc=$?
    kill -TERM "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true
    cat "$WORK/runner.log" >&2
    grep -a "VCPTEST: migrate reader" "$WORK/guest.log" >&2 || true
    grep -E "connection lost|reinstated" "$WORK/serve.log" >&2 || true
    [[ $rc -eq 0 ]] || { tail -n 20 "$WORK/serve.log" >&2; die "the guest's verified reads failed (exit $rc)"; }
    grep -q "session reinstated" "$WORK/serve.log" || die "the partition did not reach the VCP (no reinstatement)" ;;
  *) die "unknown case" ;;
esac
log "PASS"
