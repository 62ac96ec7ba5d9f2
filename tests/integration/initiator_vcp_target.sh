#!/bin/bash
# The iscsi backend against our own target (`vcp target`) where it makes the target push back.
#
#   initiator_vcp_target.sh task_set_full
#     vcp target with --max-tasks 4 and the initiator at queue depth 32: commands beyond 4 get
#     TASK SET FULL, the initiator backs off and retries, and the verified load run ends clean
#     (no errors, no reconnect, retries seen in the session's closing line).
#   initiator_vcp_target.sh failover_kill | failover_stop
#     two vcp targets serve one IQN from one LUN file (buffered: a write is in the file when
#     it is answered), the URL names both portals (portal=). A verified load runs through the
#     first; it is SIGKILLed (connections refused from then on) or SIGSTOPped (nothing answers:
#     the NOP-Out times out, and the silent portal is not tried again first). The session moves
#     to the second portal,
#     reissues what was outstanding, and the verify ends clean. failover_kill then opens the
#     LUN with the first portal dead (the queues start at the second), and fails clearly with
#     both dead.
#   initiator_vcp_target.sh idle_keepalive
#     vcp serve (iSCSI backend) without a front-end for 5 s, twice, against a vcp target that
#     drops initiators silent for 2 s: the session stays (NOP-Ins answered, NOP-Outs sent), the
#     front-ends that come find it (no reconnect) and verify clean.
#   initiator_vcp_target.sh partition
#     vcp target and the initiator on two hosts of their own (network namespaces joined by a
#     veth pair, scripts/lib/netns.sh); the link goes silent for 8 s under verified load (every
#     packet dropped: no RST, no ICMP). The target ends the session it can no longer reach
#     (its NOP-In unanswered) and is left with no connection; the initiator's logins get no
#     answer until the link is back, then it logs in again, reissues what was outstanding,
#     and the verify ends clean.
#   initiator_vcp_target.sh lossy
#     the same two hosts, 3% of the packets each way dropped, both digests: 6 s of verified
#     load stay on their first session, nothing aborted, every byte verifies.
#   initiator_vcp_target.sh slow_link
#     the same two hosts on a link of 4 Mbit/s each way, half the I/Os writes, the initiator
#     pinging after 1 s of silence and giving a ping 4 s and a command 3 s. 1 MiB at queue
#     depth 8 (16 s of data queued): commands wait far longer than their timeout behind
#     others that move, and none may be aborted; every read verified. Then the link at 1
#     Mbit/s, 1 MiB writes one at a time: the target says nothing for 8 s while a write's data
#     crosses (one burst), its TCP acknowledging it, and the pings wait behind it. The session
#     must stay (no reconnect, no abort) in both, and commands must have outlasted their
#     timeout (else nothing was tested).
#   initiator_vcp_target.sh slow_reads
#     the same two hosts on a link of 4 Mbit/s each way, the target pinging after 1 s of
#     silence and giving a ping 2 s, 4 MiB reads at queue depth 2 (16 s of Data-In queued; the
#     initiator, waiting for them, sends a command every 8 s): the target's pings wait behind
#     its Data-In, the initiator's TCP keeps acknowledging them, and the session must stay.
#   initiator_vcp_target.sh frontend_gone
#     vcp serve's target SIGKILLed under load, then its front-end: the requests waiting for a
#     session are given up at once and SIGTERM stops vcp serve within seconds.
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
PIDS=()
ADDR=127.0.0.1   # the targets' address
TARGET_WRAP=()   # before `vcp target`: (ip netns exec NS) in the network cases
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true  # a stopped target too
    wait "$pid" 2>/dev/null || true
  done
  declare -F netns_cleanup >/dev/null && netns_cleanup
  if [[ $rc -ne 0 ]]; then
    for f in "$WORK"/target*.log; do
      [[ -f $f ]] && { echo "--- $f (last lines)" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# launch_target LOG LUNSPEC [vcp target options...]: a vcp target on $ADDR (a free port)
# serving $IQN with LUN 1; sets PID and PORT.
launch_target() {
  local log=$1 lun=$2
  shift 2
  "${TARGET_WRAP[@]}" "$VCP_BIN" target --portal "$ADDR:0" --iqn "$IQN" --lun "1=$lun" "$@" >"$log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  PORT=""
  for _ in $(seq 100); do
    PORT=$(sed -n "s/^vcp target: listening on ${ADDR//./\\.}:\([0-9]*\)\$/\1/p" "$log")
    [[ -n "$PORT" ]] && break
    kill -0 "$PID" 2>/dev/null || { cat "$log" >&2; die "vcp target exited"; }
    sleep 0.05
  done
  [[ -n "$PORT" ]] || die "vcp target did not print its address"
}

# start_target [vcp target options...]: sets PID and PORT.
start_target() {
  # A file LUN opened O_DIRECT: commands stay in flight in the target while io_uring works on
  # them. A ram LUN, or a buffered file (reads sent in place from the page cache, writes
  # written inline), answers each at once, so no more than one would ever be active.
  truncate -s 64M "$WORK/lun.img"
  launch_target "$WORK/target.log" "file:path=$WORK/lun.img,direct=on" "$@"
}

# Two targets, A and B, one LUN file; URL names A's portal and then B's.
start_two_portals() {
  truncate -s 64M "$WORK/lun.img"
  launch_target "$WORK/target-a.log" "file:path=$WORK/lun.img"
  PID_A=$PID PORT_A=$PORT
  launch_target "$WORK/target-b.log" "file:path=$WORK/lun.img"
  PID_B=$PID PORT_B=$PORT
  URL="iscsi://127.0.0.1:$PORT_A/$IQN/1?portal=127.0.0.1:$PORT_B"
  log "target A pid $PID_A on 127.0.0.1:$PORT_A, target B pid $PID_B on 127.0.0.1:$PORT_B"
}

# failover DISTURB SECONDS: a verified load through A, DISTURB run 3 s in (disturbed_load); the
# session must move to B and the verify end clean.
failover() {
  disturbed_load "$WORK/load.log" "$URL" "$2" "$1"
  grep -q "iscsi q0: logged in to $IQN on 127.0.0.1:$PORT_A " "$WORK/load.log" || die "the load did not start on A"
  grep -q "iscsi q0: connection lost: .*reconnecting through 127.0.0.1:$PORT_B" "$WORK/load.log" ||
    die "the session did not move to portal B"
  grep -q "iscsi q0: session reinstated on 127.0.0.1:$PORT_B " "$WORK/load.log" || die "no session on portal B"
  grep -q "^load: [0-9]* operations, 0 errors" "$WORK/load.log" || die "the load saw errors"
  [[ "$(q0_stat "$WORK/load.log" reconnects)" -ge 1 ]] || die "no reconnect counted"
}
kill_a() { log "SIGKILL target A"; kill -KILL "$PID_A"; }
stop_a() { log "SIGSTOP target A"; kill -STOP "$PID_A"; }

# The network cases: the target in one network namespace, the initiator in another, joined
# by a veth pair (scripts/lib/netns.sh).
two_hosts() {
  source "$(dirname "$0")/../../scripts/lib/netns.sh"
  netns_pair
  ADDR=$NETNS_T_ADDR
  TARGET_WRAP=(ip netns exec "$NETNS_T")
  IO_WRAP=(ip netns exec "$NETNS_I")
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
  failover_kill)
    start_two_portals
    failover kill_a 10
    # Opened with A dead: the probe passes A over, the queues start at B.
    "$IO_TEST" verify "$URL" >"$WORK/verify.log" 2>&1 || { cat "$WORK/verify.log" >&2; die "verify with A dead failed"; }
    cat "$WORK/verify.log" >&2
    grep -q "VERIFY OK" "$WORK/verify.log" || die "no clean verify with A dead"
    grep -q "iscsi probe: connection lost: cannot connect to 127.0.0.1:$PORT_A: Connection refused" "$WORK/verify.log" ||
      die "the probe did not try A first"
    grep -q "the queues start at portal 127.0.0.1:$PORT_B" "$WORK/verify.log" || die "the queues did not start at B"
    grep -q "iscsi q0: logged in to $IQN on 127.0.0.1:$PORT_B " "$WORK/verify.log" || die "queue 0 not on B"
    ! grep -q "iscsi q0: connection lost" "$WORK/verify.log" || die "queue 0 tried the dead portal"
    # vcp serve on it: its status report (SIGUSR1) says which portal each queue is on.
    "$VCP_BIN" serve --socket "$WORK/serve.sock" --backend "$URL" >"$WORK/serve.log" 2>&1 &
    serve=$!
    PIDS+=("$serve")
    for _ in $(seq 100); do [[ -S $WORK/serve.sock ]] && break; sleep 0.1; done
    [[ -S $WORK/serve.sock ]] || { cat "$WORK/serve.log" >&2; die "vcp serve did not start"; }
    kill -USR1 "$serve"
    for _ in $(seq 50); do grep -q "q0: logged in to $IQN through" "$WORK/serve.log" && break; sleep 0.1; done
    grep -q "q0: logged in to $IQN through 127.0.0.1:$PORT_B (portal 2 of 2), 0 commands in flight" "$WORK/serve.log" ||
      { cat "$WORK/serve.log" >&2; die "vcp serve's status report does not say queue 0 is on portal B"; }
    kill -TERM "$serve"
    wait "$serve" || die "vcp serve did not end cleanly"
    # Both dead: the open fails, naming both.
    kill -KILL "$PID_B"
    wait "$PID_B" 2>/dev/null || true  # gone, its socket closed: no connection reaches it
    timeout 20 "$IO_TEST" expect-fail "$URL" "no login through any of the 2 portals" >"$WORK/fail.log" 2>&1 ||
      { cat "$WORK/fail.log" >&2; die "no clear error with both portals dead"; }
    grep -q "cannot connect to 127.0.0.1:$PORT_A: Connection refused; cannot connect to 127.0.0.1:$PORT_B: Connection refused" \
      "$WORK/fail.log" || { cat "$WORK/fail.log" >&2; die "the error does not name both portals"; } ;;
  frontend_gone)
    # vcp serve's target dies under load, then its front-end (vcp bench) is killed: the queue
    # gives up the requests waiting for a session at once (not after recovery_timeout, 120 s,
    # which held vcp serve's control thread, its SIGTERM and the next front-end), and SIGTERM
    # then stops vcp serve within seconds.
    start_target
    "$VCP_BIN" serve --socket "$WORK/serve.sock" --backend "iscsi://127.0.0.1:$PORT/$IQN/1" >"$WORK/serve.log" 2>&1 &
    serve=$!
    PIDS+=("$serve")
    for _ in $(seq 100); do [[ -S $WORK/serve.sock ]] && break; sleep 0.1; done
    [[ -S $WORK/serve.sock ]] || { cat "$WORK/serve.log" >&2; die "vcp serve did not start"; }
    "$VCP_BIN" bench --socket "$WORK/serve.sock" --rw randrw --qd 8 --time 60 >"$WORK/bench.log" 2>&1 &
    bench=$!
    PIDS+=("$bench")
    sleep 2
    kill -KILL "$PID"
    wait "$PID" 2>/dev/null || true
    sleep 1
    kill -KILL "$bench"
    wait "$bench" 2>/dev/null || true
    for _ in $(seq 50); do grep -q "given up unanswered" "$WORK/serve.log" && break; sleep 0.1; done
    grep -q "vcp-q0: [1-9][0-9]* request(s) given up unanswered: the front-end is gone" "$WORK/serve.log" ||
      { tail -5 "$WORK/serve.log" >&2; die "the queue did not give up the requests waiting for a session"; }
    kill -TERM "$serve"
    stopped=""
    for _ in $(seq 50); do kill -0 "$serve" 2>/dev/null || { stopped=1; break; }; sleep 0.1; done
    [[ -n $stopped ]] || { tail -5 "$WORK/serve.log" >&2; die "vcp serve did not stop within 5 s of SIGTERM"; }
    wait "$serve" || die "vcp serve did not end cleanly"
    log "front-end gone with the target dead: requests given up at once, vcp serve stopped on SIGTERM" ;;
  idle_keepalive)
    # vcp serve with no front-end keeps its session alive: it answers the target's NOP-In pings
    # and sends its own, so a target that drops silent initiators (vcp target after
    # nop_interval + nop_timeout, 1 s + 1 s here) keeps it, before the first front-end and
    # between two; each front-end finds the session there (no reconnect).
    printf '[limits]\nnop_interval_ms = 1000\nnop_timeout_ms = 1000\n' >"$WORK/nop.toml"
    start_target --config "$WORK/nop.toml"
    "$VCP_BIN" serve --socket "$WORK/serve.sock" --backend "iscsi://127.0.0.1:$PORT/$IQN/1" >"$WORK/serve.log" 2>&1 &
    serve=$!
    PIDS+=("$serve")
    for _ in $(seq 100); do [[ -S $WORK/serve.sock ]] && break; sleep 0.1; done
    [[ -S $WORK/serve.sock ]] || { cat "$WORK/serve.log" >&2; die "vcp serve did not start"; }
    for round in 1 2; do
      sleep 5
      "$VCP_BIN" bench --socket "$WORK/serve.sock" --rw randrw --qd 8 --time 1 --verify >"$WORK/bench$round.log" 2>&1 ||
        { cat "$WORK/bench$round.log" >&2; die "vcp bench (front-end $round) failed"; }
    done
    # (the start-up probe's session logs out: "ended: logout")
    ! grep "ended: " "$WORK/target.log" | grep -v "ended: logout" || die "the target ended the session of an idle vcp serve"
    ! grep -E "connection lost|reconnecting" "$WORK/serve.log" || die "vcp serve's session was lost while idle"
    kill -TERM "$serve"
    wait "$serve" || die "vcp serve did not end cleanly"
    log "10 s without a front-end against a target that drops silent initiators after 2 s: session kept" ;;
  lossy)
    two_hosts
    start_target
    netns_loss 3
    clean_load "$WORK/load.log" "iscsi://$ADDR:$PORT/$IQN/1?header_digest=crc32c,data_digest=crc32c" 6
    drops=$(netns_drops)
    log "$drops packets dropped, TCP segments sent again: $(netns_retransmits "$NETNS_I") by the initiator, $(netns_retransmits "$NETNS_T") by the target"
    [[ -n "$drops" && "$drops" -ge 100 ]] || die "the link dropped too few packets ($drops) to test anything"
    [[ "$(q0_stat "$WORK/load.log" aborts)" == 0 ]] || die "a command was aborted"
    # Nothing the target warns of (a digest error, a PDU rejected, a session ended but by logout).
    ! grep -E " [WE] \[" "$WORK/target.log" || die "the target saw something wrong" ;;
  slow_link)
    two_hosts
    start_target
    for shape in "4mbit randrw 8 10" "1mbit write 1 6"; do
      read -r rate rw qd secs <<<"$shape"
      netns_rate "$rate"
      # (a session dropped and reinstated over and over never ends its last write: timeout)
      # A 3 s command timeout, where a 1 MiB request alone takes 2 s (4 Mbit/s) or 8 s (1
      # Mbit/s) and the last of 8 waits 16 s: commands moving, or waiting behind ones that
      # move, are given more time, and none is aborted.
      timeout 60 "${IO_WRAP[@]}" "$VCP_BIN" bench --backend "iscsi://$ADDR:$PORT/$IQN/1?nop_interval=1,nop_timeout=4,timeout=3" \
        --rw "$rw" --rwmixread 50 --size 4M --bs 1m --qd "$qd" --time "$secs" --verify >"$WORK/bench.log" 2>&1 ||
        { cat "$WORK/bench.log" >&2; die "vcp bench over the slow link failed ($rate, qd $qd)"; }
      grep -v '^\[' "$WORK/bench.log" >&2
      grep -q " 0 errors" "$WORK/bench.log" || die "I/O errors ($rate, qd $qd)"
      [[ $rw == write ]] || grep -q "verify: [1-9][0-9]* blocks checked, ok" "$WORK/bench.log" ||
        die "no clean verify ($rate, qd $qd)"
      ! grep -E "connection lost|reinstated" "$WORK/bench.log" ||
        die "the session was dropped on a slow but working link ($rate, qd $qd)"
      grep -q "iscsi q0: .* 0 reconnects, .* 0 aborts" "$WORK/bench.log" || die "a reconnect or an abort ($rate, qd $qd)"
      put_off=$(q0_stat "$WORK/bench.log" "command timeouts put off")
      log "$rate, qd $qd: command timeouts put off: ${put_off:-none}"
      [[ -n "$put_off" && "$put_off" -ge 1 ]] || die "no command outlasted its timeout: nothing here tested the timeouts"
      # Writes alone: the pings were sent and waited behind them (else nothing here was
      # tested). With reads the target's Data-In, arriving all along, is hearing from it and
      # pings are rarely needed.
      nops=$(q0_stat "$WORK/bench.log" "NOP-Out pings sent")
      log "$rate, qd $qd: NOP-Out pings sent: ${nops:-none}"
      [[ $rw != write || ( -n "$nops" && "$nops" -ge 1 ) ]] ||
        die "no ping was sent: the link was not slow enough to test anything"
    done ;;
  slow_reads)
    two_hosts
    printf '[limits]\nnop_interval_ms = 1000\nnop_timeout_ms = 2000\n' >"$WORK/nop.toml"
    start_target --config "$WORK/nop.toml"
    netns_rate 4mbit
    "${IO_WRAP[@]}" "$VCP_BIN" bench --backend "iscsi://$ADDR:$PORT/$IQN/1" --rw randread --bs 4m --qd 2 --time 4 \
      >"$WORK/bench.log" 2>&1 || { cat "$WORK/bench.log" >&2; die "vcp bench over the slow link failed"; }
    grep -v '^\[' "$WORK/bench.log" >&2
    grep -q " 0 errors" "$WORK/bench.log" || die "I/O errors"
    ! grep -q "ended: NOP-In ping unanswered" "$WORK/target.log" || die "the target dropped a peer that took its output"
    ! grep -E "connection lost|reinstated" "$WORK/bench.log" || die "the session was dropped on a slow but working link"
    pings=$(q0_stat "$WORK/bench.log" "target NOP-In pings answered")
    log "target pings answered: ${pings:-none}"
    [[ -n "$pings" && "$pings" -ge 1 ]] || die "the target sent no ping: the link was not slow enough to test anything" ;;
  partition)
    two_hosts
    # The target gives up on a silent initiator after 1 s + 2 s.
    printf '[limits]\nnop_interval_ms = 1000\nnop_timeout_ms = 2000\n' >"$WORK/nop.toml"
    start_target --config "$WORK/nop.toml"
    log "vcp target pid $PID on $ADDR:$PORT in $NETNS_T, the initiator in $NETNS_I"
    cut_link() {
      log "the link goes silent (every packet dropped) for 8 s"
      netns_cut
      local cut_at=$SECONDS
      # The target ends the session on its own while the link is down.
      local ended=""
      for _ in $(seq 70); do
        grep -q "ended: NOP-In ping unanswered" "$WORK/target.log" && { ended=1; break; }
        sleep 0.1
      done
      [[ -n $ended ]] || die "the target did not end the session it cannot reach within 7 s"
      sleep 1
      kill -USR1 "$PID"
      for _ in $(seq 50); do grep -q "vcp target: status: " "$WORK/target.log" && break; sleep 0.1; done
      grep -q "vcp target: status: 0 connections" "$WORK/target.log" ||
        die "the target still holds a connection: $(grep "status: " "$WORK/target.log")"
      while ((SECONDS - cut_at < 8)); do sleep 0.2; done
      local drops
      drops=$(netns_drops)
      netns_heal
      log "link back ($drops packets dropped); the target said: $(grep -o "session of .* ended: NOP.*" "$WORK/target.log")"
    }
    disturbed_load "$WORK/load.log" "iscsi://$ADDR:$PORT/$IQN/1" 16 cut_link
    grep -q "no login to $ADDR:$PORT within 2 s" "$WORK/load.log" || die "no login went unanswered while the link was down"
    grep -q "^load: [0-9]* operations, 0 errors" "$WORK/load.log" || die "the load saw errors"
    # A new session at the target (the old one is gone): the probe's, the first, and this.
    [[ $(grep -c "target: session of iqn.2024-01.org.vcp:initiator from $NETNS_I_ADDR (TSIH" "$WORK/target.log") -ge 3 ]] ||
      die "no new session at the target: $(cat "$WORK/target.log")" ;;
  failover_stop)
    start_two_portals
    failover stop_a 12
    # A portal that stopped answering is not tried again first (that would cost a login
    # timeout): the session goes to B as soon as its NOP-Out is not answered.
    grep -q "iscsi q0: connection lost: no answer to NOP-Out .*reconnecting through 127.0.0.1:$PORT_B" "$WORK/load.log" ||
      die "the silent portal was not left at once"
    ! grep -q "no login to 127.0.0.1:$PORT_A" "$WORK/load.log" || die "the silent portal was tried again" ;;
  *) die "unknown case" ;;
esac
log "PASS"
