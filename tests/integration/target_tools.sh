#!/bin/bash
# Integration test of `vcp target` against libiscsi's tools on 127.0.0.1.
#
#   target_tools.sh VCP_BIN tools           iscsi-inq, iscsi-readcapacity16, iscsi-ls, iscsi-perf
#   target_tools.sh VCP_BIN chap            one-way and mutual CHAP; a wrong secret is refused;
#                                           discovery CHAP (iscsi-ls, vcp discover)
#   target_tools.sh VCP_BIN acl             --allow-initiator / --allow-address: who is let in,
#                                           who is refused (and told why), who sees the target;
#                                           SIGHUP: the new list for new logins, sessions it
#                                           refuses dropped, the others going on
#   target_tools.sh VCP_BIN digests         header and data digests (CRC32C)
#   target_tools.sh VCP_BIN sessions        several initiators at once; reinstatement; with two I/O
#                                           threads, a new connection goes to the one with fewer
#   target_tools.sh VCP_BIN initiator       our own initiator (vcp bench --backend iscsi://...) with
#                                           --verify, plain and with digests
#   target_tools.sh VCP_BIN shrink          a file LUN's file shrinks under reads sent in place (from
#                                           its mapping, and with --sendfile on from the file): the
#                                           connection is closed, the target keeps serving
#   target_tools.sh VCP_BIN wildcard        a target on 0.0.0.0 and on [::] reports, in SendTargets,
#                                           the address the initiator reached (iscsi-ls, vcp discover);
#                                           runs in a network namespace of its own, so the
#                                           wildcard listener is open on nothing but that loopback;
#                                           and sendfile auto: READs for an initiator in a second
#                                           namespace (behind a veth pair) go out with sendfile,
#                                           those for one on loopback do not
#   target_tools.sh VCP_BIN fdlimit         out of file descriptors (ulimit -n 32, 60 connections
#                                           held open): the target sheds the extra connections
#                                           instead of spinning on accept, says so once, and serves
#                                           again once they are gone
#   target_tools.sh VCP_BIN noread          an initiator that sends 1 MiB READs (on a direct=on file
#                                           LUN, so each has a buffer of its own) and never reads
#                                           the answers, and one that sends 128 READs of 16 MiB at
#                                           once: the target stops reading from the first, holds
#                                           no more than its buffer room for the second, and
#                                           serves other initiators; a session not reading ends on
#                                           its unanswered NOP-In and its connection is freed
#                                           though the peer holds it open
#   target_tools.sh VCP_BIN limits          max_connections: one too many is told "out of resources"
#                                           at login (libiscsi and our initiator say so), a flood
#                                           beyond is closed at once, service is back after; the
#                                           thread's buffer room (buffer_bytes): three initiators
#                                           that do not read hold no more than it, another one's
#                                           INQUIRY is served meanwhile, and the waiting commands
#                                           run, in turn, once the first initiator reads
#   target_tools.sh VCP_BIN targets         two targets on one portal (the second a TOML [[target]]
#                                           with its LUNs and access list): iscsi-ls lists each to
#                                           whom may use it, each serves its own LUNs (libiscsi
#                                           tools, our initiator with --verify), SIGHUP reloads the
#                                           second one's list, adds a LUN to the first while a
#                                           session runs, and adds a third target; SIGUSR1 logs a
#                                           status report
#   target_tools.sh VCP_BIN portals         two portals: SendTargets through either names both,
#                                           iscsi-inq and our initiator (--verify) through the
#                                           second, iscsi-test-cu MultipathIO with a path each;
#                                           then a reload removes one portal and adds another
#                                           while sessions verify through both, and a portal
#                                           that cannot be bound leaves them as they were
#   target_tools.sh VCP_BIN multipath       our initiator in a second network namespace, two veth
#                                           pairs to the target's two portals (two paths, one
#                                           portal group; the URL names both, portal=): under
#                                           verified load the first path's link goes down; the
#                                           session moves to the second portal, the target ends
#                                           the old session (reinstatement), the verify ends clean
#                                           (runs in a network namespace of its own)
#   target_tools.sh VCP_BIN reinstate       a session whose connection stopped reading with READ
#                                           answers unsent (open, or already closing on an
#                                           unanswered NOP-In) is reinstated by a new login of its
#                                           initiator: the login is answered within seconds (the
#                                           old connection shut at once), the new session serves
#   target_tools.sh VCP_BIN names           a portal named by a host name of two addresses (::1,
#                                           then 127.0.0.1; the target on the second only): our
#                                           initiator and vcp discover take the second within the
#                                           same attempt; both refusing, each is named; a name of
#                                           no address says so (a network and mount namespace of
#                                           its own: its own /etc/hosts)
#   target_tools.sh VCP_BIN reload-limits   [limits] changed by a reload: a session logged in keeps
#                                           what it negotiated, the next one gets the new limits
#                                           (our initiator's login line), the status report gives
#                                           them; a key that needs a restart is said to
#   target_tools.sh VCP_BIN aptpl           persistent reservations kept through a crash (--state-dir,
#                                           APTPL): registrations and a reservation are back after
#                                           SIGKILL and a restart; a register without APTPL ends
#                                           it; a damaged file, an unusable directory are refused
#   target_tools.sh VCP_BIN cu SUITE...     iscsi-test-cu for the given test specs: every test passes
#                                           (SCSI.MultipathIO.* over two paths: the URL twice)
#   target_tools.sh VCP_BIN cu-threads SUITE...  the same against two I/O threads (--cpu 0,1): the
#                                           tests' second initiator connects while the first is
#                                           on, so it goes to the other thread (the one with fewer
#                                           connections; shared LU state)
#
# The target listens on port 0 (the kernel picks a free one; we read it from its first line),
# with a file LUN 0 and a ram LUN 1 in a temporary directory; everything is removed at the end.
# A missing tool is a failure, never a skip. CU_LOG=FILE appends iscsi-test-cu's whole output there.
set -u
VCP_BIN=${1:?usage: target_tools.sh VCP_BIN MODE [ARGS]}
MODE=${2:?mode}
shift 2

fail() { echo "FAIL: $*" >&2; exit 1; }
if { [ "$MODE" = wildcard ] || [ "$MODE" = multipath ] || [ "$MODE" = names ]; } && [ -z "${VCP_IN_NETNS:-}" ]; then
  command -v unshare >/dev/null || fail "unshare not installed (Debian package util-linux)"
  ns=(unshare --net)  # not root: a user namespace of our own holds the network namespace
  [ "$(id -u)" = 0 ] || ns=(unshare --user --map-root-user --net)
  # names: a mount namespace too, for an /etc/hosts of the test's own (bind-mounted over it there only)
  [ "$MODE" = names ] && ns+=(--mount)
  VCP_IN_NETNS=1 exec "${ns[@]}" "$0" "$VCP_BIN" "$MODE" "$@"
fi
for tool in iscsi-inq iscsi-readcapacity16 iscsi-ls iscsi-perf iscsi-test-cu; do
  command -v "$tool" >/dev/null || fail "$tool not installed (Debian package libiscsi-bin)"
done
[ -x "$VCP_BIN" ] || fail "vcp binary '$VCP_BIN' missing"

# raw_iscsi.py (beside this script): the bare initiator the noread and limits modes use.
export PYTHONPATH="$(cd "$(dirname "$0")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree
IQN=iqn.2024-01.org.vcp:itest
INI=iqn.2024-01.org.vcp:itest-initiator
DIR=$(mktemp -d /tmp/vcp-target-it.XXXXXX)
PID=
PEER_NS=  # a process holding a second network namespace (wildcard, multipath)
cleanup() {
  [ -n "$PEER_NS" ] && { kill "$PEER_NS" 2>/dev/null; wait "$PEER_NS" 2>/dev/null; }
  if [ -n "$PID" ]; then
    kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT

# start_target [extra vcp target options...]: sets PORT and URL. LISTEN: the address to listen
# on (default 127.0.0.1; "[::]" for IPv6), PORTAL stays on 127.0.0.1. FD_LIMIT: its ulimit -n.
# listening_port N: the port of the Nth "listening on" line the target printed at start.
listening_port() {
  sed -n 's/^vcp target: listening on .*:\([0-9]*\)$/\1/p' "$DIR/target.log" | sed -n "${1}p"
}

start_target() {
  truncate -s 64M "$DIR/lun0.img"
  local limit=()
  [ -n "${FD_LIMIT:-}" ] && limit=(bash -c 'ulimit -n "$0" && exec "$@"' "$FD_LIMIT")
  "${limit[@]}" "$VCP_BIN" target --portal "${LISTEN:-127.0.0.1}:0" --iqn "$IQN" --lun "0=file:path=$DIR/lun0.img" \
    --lun 1=ram:size=16M "$@" >"$DIR/target.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    PORT=$(listening_port 1)
    [ -n "$PORT" ] && break
    kill -0 "$PID" 2>/dev/null || { cat "$DIR/target.log"; fail "vcp target exited"; }
    sleep 0.05
  done
  [ -n "$PORT" ] || fail "vcp target did not print its address"
  PORTAL=127.0.0.1:$PORT
  URL=iscsi://$PORTAL/$IQN
}

# check_reinstated "TOOK STATUS" NAME LIMIT: a reinstating login of iqn.2024-01.org.vcp:NAME took
# TOOK s, under LIMIT, waited for the session it replaced, and TEST UNIT READY on the new session
# answered STATUS 0. Sets TOOK.
check_reinstated() {
  local status
  read -r TOOK status <<<"$1"
  [ "$status" = 0 ] || fail "TEST UNIT READY on the new session: status $status"
  awk -v t="$TOOK" -v l="$3" 'BEGIN { exit !(t < l) }' ||
    fail "the reinstating login took $TOOK s (the old connection's output waited for?)"
  grep -q "login of iqn.2024-01.org.vcp:$2 from 127.0.0.1 (TSIH [0-9]*) waits for the session it reinstates to end" \
    "$DIR/target.log" || fail "the login did not wait for the old session: $(grep "$2" "$DIR/target.log")"
}

# Stops the target with SIGTERM and checks it ends cleanly (exit 0).
stop_target() {
  kill -TERM "$PID"
  local rc=0
  wait "$PID" || rc=$?
  PID=
  [ "$rc" = 0 ] || { cat "$DIR/target.log"; fail "vcp target exited with $rc after SIGTERM"; }
}

# bench_verify LUN_URL_SUFFIX "RW BS QD" [NOTE]: one second of our initiator (vcp bench
# --backend) with --verify against $URL/LUN_URL_SUFFIX; fails unless it ends, verifies and
# counts no errors. NOTE goes into the first failure message. BENCH_IN: a command prefix to run
# the initiator with (nsenter into another network namespace).
bench_verify() {
  local target=$1 load=$2 note=${3:-} out
  set -- $load
  out=$(${BENCH_IN:-} timeout 60 "$VCP_BIN" bench --backend "$URL/$target" --rw $1 --bs $2 --qd $3 --time 1 --verify 2>&1) ||
    { echo "$out" | tail -5; fail "vcp bench $load on $target$note"; }
  grep -q "verify: .* ok" <<<"$out" || { echo "$out" | tail -5; fail "vcp bench $load on $target: verify"; }
  grep -q " 0 errors" <<<"$out" || { echo "$out" | tail -5; fail "vcp bench $load on $target: errors"; }
}

# reload_until TEXT [STEPS]: SIGHUP to the target, then up to STEPS x 50 ms (default 100: 5 s)
# for TEXT to show in its log.
reload_until() {
  kill -HUP "$PID"
  for _ in $(seq "${2:-100}"); do grep -q -- "$1" "$DIR/target.log" && return 0; sleep 0.05; done
  return 0  # the caller's own check says what is missing
}

# expect_capacity URL BYTES WHAT: iscsi-readcapacity16 (as $INI) gives BYTES for URL.
expect_capacity() {
  local out
  out=$(timeout 20 iscsi-readcapacity16 -i $INI "$1") || fail "readcapacity16 ($3): $out"
  grep -q "Total size:$2" <<<"$out" || fail "$3: $out"
}

case "$MODE" in
tools)
  start_target
  out=$(timeout 20 iscsi-inq -i $INI "$URL/0") || fail "iscsi-inq: $out"
  grep -q "Vendor:VCP" <<<"$out" || fail "iscsi-inq: no vendor: $out"
  out=$(timeout 20 iscsi-inq -i $INI -e 1 -c 131 "$URL/0") || fail "iscsi-inq VPD 0x83: $out"
  grep -q "$IQN" <<<"$out" || fail "device identification lacks the target name: $out"
  out=$(timeout 20 iscsi-readcapacity16 -i $INI "$URL/0") || fail "iscsi-readcapacity16: $out"
  grep -q "Total size:67108864" <<<"$out" || fail "LUN 0 size: $out"
  out=$(timeout 20 iscsi-readcapacity16 -i $INI "$URL/1") || fail "iscsi-readcapacity16 LUN 1: $out"
  grep -q "Total size:16777216" <<<"$out" || fail "LUN 1 size: $out"
  out=$(timeout 20 iscsi-ls -i $INI -s "iscsi://$PORTAL") || fail "iscsi-ls: $out"
  grep -q "Target:$IQN Portal:$PORTAL,1" <<<"$out" || fail "iscsi-ls target line: $out"
  grep -q "Lun:0 *Type:DIRECT_ACCESS" <<<"$out" || fail "iscsi-ls LUN 0: $out"
  grep -q "Lun:1 *Type:DIRECT_ACCESS" <<<"$out" || fail "iscsi-ls LUN 1: $out"
  out=$(timeout 30 iscsi-perf -i $INI -m 32 -b 8 -r -t 2 "$URL/0" 2>&1) || fail "iscsi-perf: $out"
  iops=$(grep -o 'iops average [0-9]*' <<<"$out" | tail -1 | awk '{print $3}')
  [ -n "$iops" ] && [ "$iops" -gt 1000 ] || fail "iscsi-perf: $out"
  echo "iscsi-perf 4 KiB random read qd 32: $iops IOPS"
  # A LUN the target does not have: the login works, the LUN is reported missing.
  out=$(timeout 20 iscsi-inq -i $INI "$URL/5" 2>&1) && fail "iscsi-inq on LUN 5 succeeded: $out"
  stop_target
  ;;
wildcard)
  ip link set lo up || fail "cannot bring up loopback in the namespace"
  for LISTEN in 0.0.0.0 "[::]"; do
    start_target
    reach=(127.0.0.1)
    [ "$LISTEN" = "[::]" ] && reach+=("[::1]")  # dual-stack: IPv4 peers too, reported as IPv4
    for host in "${reach[@]}"; do
      out=$(timeout 20 iscsi-ls -i $INI "iscsi://$host:$PORT") || fail "iscsi-ls via $host on $LISTEN: $out"
      grep -Fqx "Target:$IQN Portal:$host:$PORT,1" <<<"$out" || fail "iscsi-ls via $host on $LISTEN: $out"
      out=$("$VCP_BIN" discover "$host:$PORT") || fail "vcp discover via $host on $LISTEN: $out"
      grep -Fqx "$IQN $host:$PORT,1" <<<"$out" || fail "vcp discover via $host on $LISTEN: $out"
      # The address it names is one the initiator can log in to.
      timeout 20 iscsi-inq -i $INI "iscsi://$host:$PORT/$IQN/1" >/dev/null || fail "login via $host on $LISTEN"
      echo "listening on $LISTEN, reached at $host: SendTargets names $host:$PORT,1"
    done
    stop_target
  done
  # sendfile auto: READs for an initiator on another machine go out with sendfile(2), for one on
  # this machine (loopback) from the file's mapping. "Another machine" is a second network
  # namespace behind a veth pair, so the peer's address is neither loopback nor ours.
  command -v nsenter >/dev/null || fail "nsenter not installed (Debian package util-linux)"
  unshare --net sleep 120 &
  PEER_NS=$!
  sleep 0.2
  ip link add vcp-t type veth peer name vcp-i netns "$PEER_NS" || fail "cannot make a veth pair"
  ip addr add 10.213.0.1/24 dev vcp-t && ip link set vcp-t up || fail "cannot set up vcp-t"
  PEER_NET="nsenter --net=/proc/$PEER_NS/ns/net"  # runs a command in the second namespace
  in_peer() { $PEER_NET "$@"; }
  in_peer ip addr add 10.213.0.2/24 dev vcp-i && in_peer ip link set vcp-i up && in_peer ip link set lo up ||
    fail "cannot set up vcp-i"
  LISTEN=0.0.0.0 start_target
  in_peer timeout 60 "$VCP_BIN" bench --backend "iscsi://10.213.0.1:$PORT/$IQN/0" --rw read --bs 256k --qd 4 --time 3 \
    >"$DIR/remote.log" 2>&1 &
  REMOTE=$!
  timeout 60 "$VCP_BIN" bench --backend "$URL/0" --rw read --bs 256k --qd 4 --time 3 >"$DIR/local.log" 2>&1 &
  LOCAL=$!
  sleep 1.5
  kill -USR1 "$PID"
  sleep 0.5
  wait "$REMOTE" || { cat "$DIR/remote.log"; fail "256 KiB reads through the veth pair"; }
  wait "$LOCAL" || { cat "$DIR/local.log"; fail "256 KiB reads on loopback"; }
  grep -q "session of .* from 10.213.0.2 .*, [1-9][0-9]* Data-In segments by sendfile" "$DIR/target.log" ||
    { grep "session of" "$DIR/target.log"; fail "the initiator behind the veth pair got no Data-In by sendfile"; }
  grep "session of .* from 127.0.0.1 " "$DIR/target.log" | grep -q "KiB unsent$" ||
    { grep "session of" "$DIR/target.log"; fail "the initiator on loopback got Data-In by sendfile (or no status line)"; }
  bench_verify 0 "randrw 256k 8" " (loopback, sendfile auto)"
  BENCH_IN=$PEER_NET URL=iscsi://10.213.0.1:$PORT/$IQN \
    bench_verify 0 "randrw 256k 8" " (veth, sendfile auto)"
  echo "sendfile auto: Data-In by sendfile for 10.213.0.2 (another namespace), from the mapping for 127.0.0.1"
  stop_target
  ;;
multipath)
  # Two paths from a second network namespace: veth pairs 10.213.1.0/24 and 10.213.2.0/24, the
  # target listening on one address of each (this namespace is the script's own).
  [ "$(id -u)" = 0 ] || fail "multipath needs root (veth pairs into a second namespace)"
  command -v nsenter >/dev/null || fail "nsenter not installed (Debian package util-linux)"
  ip link set lo up
  unshare --net sleep 300 &
  PEER_NS=$!
  sleep 0.2
  PEER_NET="nsenter --net=/proc/$PEER_NS/ns/net"
  for p in 1 2; do
    ip link add "vcp-t$p" type veth peer name "vcp-i$p" netns "$PEER_NS" || fail "cannot make veth pair $p"
    ip addr add "10.213.$p.1/24" dev "vcp-t$p" && ip link set "vcp-t$p" up || fail "cannot set up vcp-t$p"
    $PEER_NET ip addr add "10.213.$p.2/24" dev "vcp-i$p" && $PEER_NET ip link set "vcp-i$p" up ||
      fail "cannot set up vcp-i$p"
  done
  LISTEN=10.213.1.1 start_target --portal 10.213.2.1:0
  PORT_B=$(listening_port 2)
  [ -n "$PORT_B" ] || { cat "$DIR/target.log"; fail "no second portal"; }
  A=10.213.1.1:$PORT URL_MP="iscsi://$A/$IQN/0?portal=10.213.2.1:$PORT_B,timeout=2,nop_interval=1,login_timeout=2"
  $PEER_NET timeout 60 "$VCP_BIN" bench --backend "$URL_MP" --rw randrw --bs 16k --qd 16 --time 10 --verify \
    >"$DIR/mp.log" 2>&1 &
  LOAD=$!
  sleep 3
  grep -q "iscsi q0: logged in to $IQN on $A " "$DIR/mp.log" || { cat "$DIR/mp.log"; fail "the load is not on path A"; }
  ip link set vcp-t1 down || fail "cannot take path A down"
  echo "path A ($A) down under load"
  wait "$LOAD" || { cat "$DIR/mp.log"; fail "the load over two paths failed"; }
  grep -E "verify: .* ok|errors|reconnect|reinstated|connection lost" "$DIR/mp.log"
  grep -q "verify: .* ok" "$DIR/mp.log" || fail "no clean verify over two paths"
  grep -q " 0 errors" "$DIR/mp.log" || fail "I/O errors over two paths"
  grep -q "iscsi q0: connection lost: no answer to NOP-Out .*reconnecting through 10.213.2.1:$PORT_B" "$DIR/mp.log" ||
    fail "the session did not leave the silent path for path B"
  grep -q "iscsi q0: session reinstated on 10.213.2.1:$PORT_B " "$DIR/mp.log" || fail "no session on path B"
  kill -USR1 "$PID"  # the status report: the old session is gone by now
  sleep 0.5
  grep -q "target: session of .* ended: session reinstated by a new login" "$DIR/target.log" ||
    { grep "session of" "$DIR/target.log"; fail "the target did not end the session on path A"; }
  echo "path A down: the session moved to path B, the target ended the old one, verify clean"
  stop_target
  ;;
reinstate)
  # An initiator whose connection stops reading with 64 MiB of READ answers unsent (a path that
  # went down under load) logs in again with its ISID on a new connection: the target ends the
  # old session and answers the new login once the old connection is gone, which it shuts at
  # once (not after nop_timeout, 20 s: the new login would time out first); the new session
  # serves.
  truncate -s 64M "$DIR/lun2.img"
  start_target --lun "2=file:path=$DIR/lun2.img,direct=on"
  out=$(timeout 60 python3 - "$PORT" "$IQN" <<'PY'
import socket, sys, time
from raw_iscsi import login, read16, tur_status
socket.setdefaulttimeout(30)
port, iqn = int(sys.argv[1]), sys.argv[2].encode()
old, cmd_sn = login(port, iqn, b"path", 13)
old.sendall(b"".join(read16(i + 2, cmd_sn + i, 0, 32768) for i in range(4)))
time.sleep(1)  # the answers fill the socket buffers and stop there
t0 = time.monotonic()
new, cmd_sn = login(port, iqn, b"path", 13)
took = time.monotonic() - t0
status = tur_status(new, cmd_sn)[0]
status2 = tur_status(new, cmd_sn + 1)[0]  # after the unit attention, if any
print("%.2f %d" % (took, status2))
PY
  ) || fail "the reinstating login failed: $out"
  check_reinstated "$out" path 5
  grep -q "session of iqn.2024-01.org.vcp:path (TSIH [0-9]*) ended: session reinstated by a new login" "$DIR/target.log" ||
    fail "the old session was not ended"
  echo "reinstated over a connection with 64 MiB of answers unsent: login answered in $TOOK s, the new session serves"
  stop_target
  # The same when the old connection was already closing for another reason: its session ended
  # on an unanswered NOP-In (1 s + 4 s here) and its unsent output is given nop_timeout_ms (4 s)
  # more; a login that reinstates it meanwhile must not wait for that (login_timeout_ms is 2 s
  # here: it would be closed unanswered), the connection is shut at once.
  printf '[limits]\nlogin_timeout_ms = 2000\nnop_interval_ms = 1000\nnop_timeout_ms = 4000\n' >"$DIR/nop.toml"
  start_target --lun "2=file:path=$DIR/lun2.img,direct=on" --config "$DIR/nop.toml"
  out=$(timeout 60 python3 - "$PORT" "$IQN" "$DIR/target.log" <<'PY'
import re, socket, sys, time
from raw_iscsi import login, read16, tur_status
socket.setdefaulttimeout(30)
port, iqn, log = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
old, cmd_sn = login(port, iqn, b"closing", 14)
old.sendall(b"".join(read16(i + 2, cmd_sn + i, 0, 32768) for i in range(4)))
ended = re.compile(r"session of iqn.2024-01.org.vcp:closing \(TSIH [0-9]+\) ended: NOP-In ping unanswered")
deadline = time.monotonic() + 20
while not ended.search(open(log).read()):
    if time.monotonic() > deadline: sys.exit("the session of a connection not reading did not end")
    time.sleep(0.05)
t0 = time.monotonic()
new, cmd_sn = login(port, iqn, b"closing", 14)
took = time.monotonic() - t0
tur_status(new, cmd_sn)
print("%.2f %d" % (took, tur_status(new, cmd_sn + 1)[0]))
PY
  ) || fail "the login reinstating a closing session failed: $out"
  check_reinstated "$out" closing 1.5
  echo "reinstated over a connection already closing with its answers unsent: login answered in $TOOK s"
  stop_target
  ;;
names)
  # A portal named by a host name standing for two addresses, ::1 first (as localhost does where
  # /etc/hosts has both), the target listening on 127.0.0.1 only: our initiator and vcp discover
  # are refused on ::1 and take 127.0.0.1 within the same attempt. A name with no address fails
  # saying so. The hosts file is the namespace's own (a bind mount in our mount namespace).
  ip link set lo up || fail "cannot bring up loopback in the namespace"
  printf '::1 vcp-target.test\n127.0.0.1 vcp-target.test\n' >"$DIR/hosts"
  mount --bind "$DIR/hosts" /etc/hosts || fail "cannot mount a hosts file of our own"
  out=$(getent ahosts vcp-target.test | awk '{ print $1 }' | uniq | paste -sd' ')
  [ "$out" = "::1 127.0.0.1" ] || fail "vcp-target.test does not resolve to ::1, then 127.0.0.1: $out"
  start_target
  NAMED=vcp-target.test:$PORT
  out=$(timeout 20 "$VCP_BIN" discover "$NAMED" 2>&1) || fail "vcp discover $NAMED: $out"
  grep -Fqx "$IQN 127.0.0.1:$PORT,1" <<<"$out" || fail "vcp discover $NAMED: $out"
  out=$(timeout 60 "$VCP_BIN" bench --backend "iscsi://$NAMED/$IQN/0" --rw randrw --bs 16k --qd 8 --time 1 --verify 2>&1) ||
    { echo "$out" | tail -5; fail "vcp bench on $NAMED"; }
  grep -q "verify: .* ok" <<<"$out" && grep -q " 0 errors" <<<"$out" || { echo "$out" | tail -5; fail "verify on $NAMED"; }
  grep -Fq "cannot connect to $NAMED at [::1]:$PORT: Connection refused; trying 127.0.0.1:$PORT" <<<"$out" ||
    { echo "$out" | head -5; fail "::1 was not tried first, or not said"; }
  grep -Fq "logged in to $IQN on $NAMED (127.0.0.1:$PORT)" <<<"$out" || { echo "$out" | head -5; fail "no login line naming the address"; }
  ! grep -q "connection lost" <<<"$out" || { echo "$out" | head -5; fail "the second address was a reconnect"; }
  echo "$NAMED (::1, 127.0.0.1): refused on ::1, logged in through 127.0.0.1, verify clean; vcp discover too"
  stop_target
  # Both addresses refusing (nothing listens there now); a name with no address at all.
  out=$(timeout 20 "$VCP_BIN" bench --backend "iscsi://$NAMED/$IQN/0" --time 1 2>&1) && fail "a login with nothing listening"
  grep -Fq "cannot connect to $NAMED: [::1]:$PORT: Connection refused; 127.0.0.1:$PORT: Connection refused" <<<"$out" ||
    { echo "$out" | tail -3; fail "the error does not name both addresses"; }
  out=$(timeout 20 "$VCP_BIN" discover "$NAMED" 2>&1) && fail "discovery with nothing listening"
  grep -Fq "cannot connect to $NAMED: [::1]:$PORT: Connection refused; 127.0.0.1:$PORT: Connection refused" <<<"$out" ||
    fail "vcp discover does not name both addresses: $out"
  out=$(timeout 20 "$VCP_BIN" bench --backend "iscsi://nosuch.test:$PORT/$IQN/0" --time 1 2>&1) && fail "a login to no address"
  grep -Fq "cannot resolve 'nosuch.test'" <<<"$out" || { echo "$out" | tail -3; fail "no word of the name"; }
  echo "nothing listening: both addresses named; nosuch.test: cannot resolve"
  ;;
fdlimit)
  FD_LIMIT=32 start_target
  ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$PID/stat"; }
  # 60 connections held open for 4 s; how many the target closed at once is printed.
  python3 - "$PORT" >"$DIR/flood.out" 2>&1 <<'PY' &
import sys, time
from raw_iscsi import closed_by_peer, connect
held = connect(int(sys.argv[1]), 60)
time.sleep(1)
closed = closed_by_peer(held)
print("held", len(held), "closed", closed, flush=True)
time.sleep(3)
PY
  FLOOD=$!
  sleep 1.5
  t0=$(ticks); sleep 2; t1=$(ticks)
  wait $FLOOD || { cat "$DIR/flood.out"; fail "the connection flood failed"; }
  cat "$DIR/flood.out"
  # A spinning accept loop burns the whole 2 s (200 ticks); a shedding one next to nothing.
  [ $((t1 - t0)) -lt 50 ] || fail "target used $((t1 - t0)) ticks of CPU in 2 s while out of descriptors (spinning?)"
  closed=$(awk '{print $4}' "$DIR/flood.out")
  [ "${closed:-0}" -gt 0 ] || fail "no connection was shed: $(cat "$DIR/flood.out")"
  grep -q "cannot accept a connection: Too many open files" "$DIR/target.log" || fail "no warning in the log"
  [ "$(grep -c 'cannot accept a connection' "$DIR/target.log")" = 1 ] || fail "the warning repeats: $(cat "$DIR/target.log")"
  timeout 20 iscsi-inq -i $INI "$URL/1" >/dev/null || fail "no service after the flood"
  echo "out of descriptors: CPU $((t1 - t0)) ticks in 2 s, $closed of 60 connections shed, service back after"
  stop_target
  ;;
noread)
  truncate -s 64M "$DIR/lun2.img"
  start_target --lun "2=file:path=$DIR/lun2.img,direct=on"
  # Logs in (no digests, 1 MiB segments), then sends 640 READ(16)s of 1 MiB, 32 at a time with
  # 50 ms between (so they stay inside the CmdSN window), and reads nothing; then a second
  # session sends 128 READs of 16 MiB at once and reads nothing either; prints the target's
  # largest RSS in kB; then has another initiator served beside them.
  out=$(timeout 120 python3 - "$PORT" "$PID" "$IQN" "$URL/2" <<'PY'
import sys, time
from raw_iscsi import login, read16, rss
port, pid, iqn = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
s, cmd_sn = login(port, iqn, b"noread", 9)
peak = rss(pid)
for i in range(640):
    s.sendall(read16(i + 2, cmd_sn, 0, 2048))
    cmd_sn += 1
    if i % 32 == 31:
        time.sleep(0.05)
        peak = max(peak, rss(pid))
time.sleep(1)
peak = max(peak, rss(pid))
# A second one sends a whole CmdSN window of 16 MiB READs at once (the largest EDTL the target
# takes) and reads nothing: each READ's buffer would be filled before anything blocks (2 GiB).
s2, cmd_sn = login(port, iqn, b"burst", 10)
s2.sendall(b"".join(read16(i + 2, cmd_sn + i, 0, 32768) for i in range(128)))
for _ in range(20):
    time.sleep(0.1)
    peak = max(peak, rss(pid))
# Another initiator is served while this connection stays stuck.
import subprocess
r = subprocess.run(["iscsi-inq", "-i", "iqn.2024-01.org.vcp:other", sys.argv[4]], capture_output=True, timeout=20)
if r.returncode != 0: sys.exit("iscsi-inq beside the stuck connection: %r" % r.stderr)
print(peak)
PY
  ) || fail "the hostile initiator failed: $out"
  # Reading every command answers them all into memory: about 640 MB for the first initiator,
  # 2 GiB for the second. Bounded: each connection's buffer room (connection_buffer_bytes, 64
  # MiB) and 4 MiB of answers.
  [ "$out" -lt 204800 ] || fail "target RSS reached $out kB under initiators that do not read"
  echo "initiators not reading: target RSS at most $out kB over 640 READs of 1 MiB and 128 of 16 MiB"
  stop_target
  # The session of an initiator that reads nothing ends when it leaves a NOP-In unanswered
  # (1 s + 1 s here); its last output, 48 MiB it will never take, is given nop_timeout_ms more
  # and then its socket is shut: the connection and its buffers are gone although the peer
  # keeps the connection open (before, they stayed for as long as it did).
  printf '[limits]\nnop_interval_ms = 1000\nnop_timeout_ms = 1000\n' >"$DIR/nop.toml"
  start_target --lun "2=file:path=$DIR/lun2.img,direct=on" --config "$DIR/nop.toml"
  python3 - "$PORT" "$IQN" >"$DIR/holder.out" 2>&1 <<'PY' &
import sys, time
from raw_iscsi import login, read16
s, cmd_sn = login(int(sys.argv[1]), sys.argv[2].encode(), b"holder", 11)
s.sendall(b"".join(read16(i + 2, cmd_sn + i, 0, 32768) for i in range(4)))
time.sleep(9)
PY
  HOLDER=$!
  sleep 6
  kill -USR1 "$PID"
  sleep 0.5
  grep -q "session of iqn.2024-01.org.vcp:holder (TSIH [0-9]*) ended: NOP-In ping unanswered" "$DIR/target.log" ||
    { kill "$HOLDER"; fail "the session of an initiator not reading did not end: $(cat "$DIR/target.log")"; }
  grep -q "vcp target: status: 0 connections" "$DIR/target.log" ||
    { kill "$HOLDER"; fail "the connection of an initiator not reading outlived its session: $(cat "$DIR/target.log")"; }
  kill -0 "$HOLDER" 2>/dev/null || fail "the initiator holding its connection open went first: $(cat "$DIR/holder.out")"
  wait "$HOLDER"
  echo "initiator not reading: session ended on the unanswered NOP-In, connection and buffers freed while it held on"
  stop_target
  ;;
limits)
  truncate -s 128M "$DIR/lun2.img"
  printf '[limits]\nmax_connections = 64\nconnection_buffer_bytes = 33554432\nbuffer_bytes = 50331648\n' \
    >"$DIR/limits.toml"
  start_target --lun "2=file:path=$DIR/lun2.img,direct=on" --config "$DIR/limits.toml" --max-connections 4
  # --max-connections 4 (over the file's 64). Four connections held (not logged in): a fifth is
  # refused at login, and told why.
  python3 - "$PORT" 4 40 >"$DIR/flood.out" 2>&1 <<'PY' &
import sys, time
from raw_iscsi import closed_by_peer, connect
port, held_n, flood_n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
held = connect(port, held_n)
print("held", flush=True)
time.sleep(2)
# A flood beyond: 32 more are let in (to be refused at login), the rest closed at once.
flood = connect(port, flood_n)
time.sleep(1)
closed = closed_by_peer(flood)
print("closed", closed, flush=True)
PY
  FLOOD=$!
  for _ in $(seq 100); do grep -q held "$DIR/flood.out" && break; sleep 0.05; done
  out=$(timeout 20 iscsi-inq -i $INI "$URL/1" 2>&1) && fail "a fifth connection logged in (max_connections 4)"
  grep -qi "out of resources" <<<"$out" || fail "iscsi-inq did not say why: $out"
  out=$(timeout 20 "$VCP_BIN" bench --backend "$URL/1" --rw read --bs 4K --time 1 2>&1) &&
    fail "our initiator logged in over max_connections"
  grep -q "out of resources (0x0302)" <<<"$out" || fail "vcp bench did not say why: $out"
  grep -q "target: login from 127.0.0.1 refused: too many connections (max_connections 4)" "$DIR/target.log" ||
    fail "the target did not log the refusal: $(cat "$DIR/target.log")"
  wait $FLOOD || fail "the connection flood failed: $(cat "$DIR/flood.out")"
  closed=$(awk '/^closed/ {print $2}' "$DIR/flood.out")
  [ "$closed" = 8 ] || fail "of 40 connections beyond the 4 held, $closed were closed at once (expected 40 - 32 = 8)"
  grep -q "vcp target: 36 connections already (max_connections 4): new ones closed at once" "$DIR/target.log" ||
    fail "no warning for the connections closed at once: $(cat "$DIR/target.log")"
  # All closed: service is back.
  for _ in $(seq 50); do timeout 20 iscsi-inq -i $INI "$URL/1" >/dev/null 2>&1 && break; sleep 0.1; done
  timeout 20 iscsi-inq -i $INI "$URL/1" >/dev/null || fail "no service once the connections were gone"

  # Three initiators each send two READs of 16 MiB and read nothing: each connection's room (32
  # MiB) would take both, 96 MiB in all; the thread's room (48 MiB) holds three. The target's RSS
  # grows by no more than that; an INQUIRY from a fourth is served meanwhile; when the first
  # reads its answers, the waiting READs run and every answer comes.
  out=$(timeout 120 python3 - "$PORT" "$PID" "$IQN" "$URL/2" <<'PY'
import subprocess, sys, time
from raw_iscsi import answers, login, read16, rss, tur
port, pid, iqn = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
base = rss(pid)
conns = []
for k in range(3):
    s, cmd_sn = login(port, iqn, b"holder%d" % k, 20 + k)
    cmd_sn = tur(s, cmd_sn)
    s.sendall(b"".join(read16(0x10 + i, cmd_sn + i, (k * 2 + i) * 32768, 32768) for i in range(2)))
    conns.append(s)
peak = base
for _ in range(20):
    time.sleep(0.1)
    peak = max(peak, rss(pid))
r = subprocess.run(["iscsi-inq", "-i", "iqn.2024-01.org.vcp:other", sys.argv[4]], capture_output=True, timeout=20)
if r.returncode != 0: sys.exit("iscsi-inq beside the initiators holding the room: %r" % r.stderr)
for k, s in enumerate(conns):
    got = answers(s, 2)
    if got != {0x10: 16 << 20, 0x11: 16 << 20}: sys.exit("initiator %d got %r" % (k, got))
    peak = max(peak, rss(pid))
print((peak - base) // 1024)
PY
  ) || fail "the initiators holding the thread's room: $out"
  # 48 MiB of task buffers, plus 4 MiB of unsent output per connection at most and some slack.
  [ "$out" -lt 62 ] || fail "target RSS grew by $out MiB under three initiators not reading (thread room 48 MiB)"
  echo "thread buffer room 48 MiB: target RSS grew by $out MiB under 3 x 32 MiB of unread READs; all answered in turn"
  stop_target
  ;;
targets)
  SECOND=iqn.2024-01.org.vcp:itest-second
  OTHER=iqn.2024-01.org.vcp:stranger
  truncate -s 32M "$DIR/second.img"
  printf '[[target]]\niqn = "%s"\nallowed_initiators = ["%s"]\n[[target.lun]]\nnumber = 0\nbackend = "ram:size=8M"\n[[target.lun]]\nnumber = 4\nbackend = "file:path=%s"\n' \
    "$SECOND" "$INI" "$DIR/second.img" >"$DIR/targets.toml"
  start_target --config "$DIR/targets.toml"
  out=$(timeout 20 iscsi-ls -i $INI -s "iscsi://$PORTAL") || fail "iscsi-ls: $out"
  grep -q "Target:$IQN Portal:$PORTAL,1" <<<"$out" || fail "iscsi-ls does not list the first target: $out"
  grep -q "Target:$SECOND Portal:$PORTAL,1" <<<"$out" || fail "iscsi-ls does not list the second target: $out"
  out=$(timeout 20 iscsi-ls -i $OTHER "iscsi://$PORTAL") || fail "iscsi-ls as $OTHER: $out"
  grep -q "Target:$IQN " <<<"$out" || fail "the first target is not listed to $OTHER: $out"
  grep -q "$SECOND" <<<"$out" && fail "the second target is listed to an initiator not on its list: $out"
  # Each target its own LUNs.
  out=$(timeout 20 iscsi-readcapacity16 -i $INI "iscsi://$PORTAL/$SECOND/0") || fail "readcapacity16 $SECOND/0: $out"
  grep -q "Total size:8388608" <<<"$out" || fail "$SECOND LUN 0 size: $out"
  out=$(timeout 20 iscsi-readcapacity16 -i $INI "iscsi://$PORTAL/$SECOND/4") || fail "readcapacity16 $SECOND/4: $out"
  grep -q "Total size:33554432" <<<"$out" || fail "$SECOND LUN 4 size: $out"
  out=$(timeout 20 iscsi-readcapacity16 -i $INI "$URL/0") || fail "readcapacity16 $IQN/0: $out"
  grep -q "Total size:67108864" <<<"$out" || fail "$IQN LUN 0 size: $out"
  timeout 20 iscsi-inq -i $INI "$URL/4" >/dev/null 2>&1 && fail "the first target has no LUN 4, yet iscsi-inq found one"
  out=$(timeout 20 iscsi-inq -i $OTHER "iscsi://$PORTAL/$SECOND/0" 2>&1) && fail "$OTHER logged in to $SECOND"
  grep -qi "authorization failure" <<<"$out" || fail "iscsi-inq did not say why: $out"
  # Both at once, verified, each on its own disk.
  SAVED_URL=$URL
  URL=iscsi://$PORTAL/$SECOND
  bench_verify "4?initiator=$INI" "randrw 4K 16" &
  B1=$!
  URL=$SAVED_URL
  bench_verify 0 "randrw 4K 16"
  wait $B1 || fail "our initiator on $SECOND/4"
  # SIGHUP: the second target's list now names $OTHER instead.
  sed -i "s/$INI/$OTHER/" "$DIR/targets.toml"
  reload_until "reloaded access for new logins to $SECOND"
  grep -q "reloaded access for new logins to $SECOND: 1 initiator names" "$DIR/target.log" ||
    fail "no reload of the second target logged: $(cat "$DIR/target.log")"
  timeout 20 iscsi-inq -i $OTHER "iscsi://$PORTAL/$SECOND/0" >/dev/null || fail "$OTHER refused after the reload"
  timeout 20 iscsi-inq -i $INI "iscsi://$PORTAL/$SECOND/0" >/dev/null 2>&1 && fail "$INI let in after the reload"
  # SIGHUP with a LUN new to the first target: added while a session of ours runs on LUN 1 (it
  # takes the REPORTED LUNS DATA HAS CHANGED unit attention in its stride).
  timeout 30 "$VCP_BIN" bench --backend "$URL/1?initiator=$INI" --rw randrw --bs 4K --qd 8 --time 3 --verify \
    >"$DIR/held.log" 2>&1 &
  HELD=$!
  sleep 1
  # A bare session on LUN 1 sees REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh) once LUN 2 is there.
  python3 - "$PORT" "$IQN" "$PID" "$DIR/targets.toml" "$DIR/target.log" >"$DIR/ua.out" 2>&1 <<'PY'
import sys
from raw_iscsi import unit_attention_across
port, iqn, pid, toml, log = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def add_lun_2():
    with open(toml, "a") as f:
        f.write('[[lun]]\nnumber = 2\nbackend = "ram:size=4M"\n')
unit_attention_across(port, iqn, b"watcher", 30, 1, pid, log, "LUN 2 of", add_lun_2)
PY
  grep -q "vcp target: LUN 2 of $IQN added (ram:size=4M)" "$DIR/target.log" ||
    fail "LUN 2 was not added: $(cat "$DIR/ua.out" "$DIR/target.log")"
  grep -q "after: (2, 63, 14) then: (0, None, None)" "$DIR/ua.out" ||
    fail "no REPORTED LUNS DATA HAS CHANGED unit attention on LUN 1: $(cat "$DIR/ua.out")"
  out=$(timeout 20 iscsi-readcapacity16 -i $INI "$URL/2") || fail "readcapacity16 of the added LUN: $out"
  grep -q "Total size:4194304" <<<"$out" || fail "added LUN 2 size: $out"
  out=$(timeout 20 iscsi-ls -i $INI -s "iscsi://$PORTAL") || fail "iscsi-ls after adding a LUN: $out"
  grep -q "Lun:2 " <<<"$out" || fail "REPORT LUNS does not show the added LUN: $out"
  # SIGUSR1: a status report in the log, with the added LUN and the session running.
  kill -USR1 "$PID"
  for _ in $(seq 100); do grep -q "vcp target: I/O thread 0" "$DIR/target.log" && break; sleep 0.05; done
  grep -q "vcp target: status: [0-9]* connections (max_connections 1024), 1 I/O threads" "$DIR/target.log" ||
    fail "no status report: $(cat "$DIR/target.log")"
  grep -q "vcp target: target $IQN: LUN 0 file:path=$DIR/lun0.img (64 MiB); LUN 1 ram:size=16M (16 MiB); LUN 2 ram:size=4M (4 MiB); access: 0 initiator names" \
    "$DIR/target.log" || fail "the status report lacks the first target's LUNs: $(grep 'vcp target: ' "$DIR/target.log")"
  grep -q "vcp target: target $SECOND: LUN 0 ram:size=8M (8 MiB); LUN 4 file:path=$DIR/second.img (32 MiB); access: 1 initiator names" \
    "$DIR/target.log" || fail "the status report lacks the second target: $(grep 'vcp target: ' "$DIR/target.log")"
  grep -q "vcp target:   session of $INI from 127.0.0.1 to $IQN (TSIH [0-9]*, up [0-9]* s): [0-9]* commands" \
    "$DIR/target.log" || fail "the status report lacks the running session: $(grep 'vcp target: ' "$DIR/target.log")"
  bench_verify "2?initiator=$INI" "randrw 4K 8"
  wait "$HELD" || fail "the session running while LUN 2 was added: $(tail -5 "$DIR/held.log")"
  grep -q "verify: .* ok" "$DIR/held.log" || fail "the session running while LUN 2 was added: $(tail -5 "$DIR/held.log")"
  # The same LUN number with another backend: the new one opened first, then it takes the
  # old one's place (closed after its last commands). One that cannot be opened changes nothing.
  sed -i 's/ram:size=4M/ram:size=8M/' "$DIR/targets.toml"
  reload_until "vcp target: LUN 2 closed"
  grep -q "vcp target: LUN 2 of $IQN replaced: ram:size=8M in place of ram:size=4M" "$DIR/target.log" ||
    fail "LUN 2 was not given its new backend: $(cat "$DIR/target.log")"
  grep -q "vcp target: LUN 2 closed: its last commands have ended" "$DIR/target.log" ||
    fail "LUN 2's old backend was not closed: $(cat "$DIR/target.log")"
  grep -q "need a restart" "$DIR/target.log" && fail "a LUN's new backend was said to need a restart"
  expect_capacity "$URL/2" 8388608 "LUN 2 with its new backend"
  sed -i "s|ram:size=8M|file:path=$DIR/no-such.img|" "$DIR/targets.toml"
  reload_until "keep their backends"
  grep -q "vcp target: reload: LUNs of $IQN keep their backends: LUN 2 'file:path=$DIR/no-such.img': cannot open" \
    "$DIR/target.log" || fail "a backend that cannot be opened was not reported: $(cat "$DIR/target.log")"
  expect_capacity "$URL/2" 8388608 "LUN 2 after a backend that cannot be opened"
  sed -i "s|file:path=$DIR/no-such.img|ram:size=8M|" "$DIR/targets.toml"
  bench_verify "2?initiator=$INI" "randrw 4K 8" " (LUN 2 on its new backend)"
  # LUN 0's file grown by 32 MiB: on SIGHUP the LUN takes the new size, a bare session gets
  # CAPACITY DATA HAS CHANGED (2Ah/09h), READ CAPACITY and our initiator see the new size. A file
  # that shrank is not shrunk (said so).
  python3 - "$PORT" "$IQN" "$PID" "$DIR/lun0.img" "$DIR/target.log" >"$DIR/grow.out" 2>&1 <<'PY'
import os, sys
from raw_iscsi import unit_attention_across
port, iqn, pid, img, log = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]), sys.argv[4], sys.argv[5]
unit_attention_across(port, iqn, b"grower", 31, 0, pid, log, "LUN 0 grew", lambda: os.truncate(img, 96 << 20))
PY
  grep -q "vcp target: LUN 0 grew from 67108864 to 100663296 bytes (file:path=$DIR/lun0.img)" "$DIR/target.log" ||
    fail "LUN 0 did not grow: $(cat "$DIR/grow.out" "$DIR/target.log")"
  grep -q "after: (2, 42, 9) then: (0, None, None)" "$DIR/grow.out" ||
    fail "no CAPACITY DATA HAS CHANGED unit attention on LUN 0: $(cat "$DIR/grow.out")"
  expect_capacity "$URL/0" 100663296 "the grown LUN 0"
  out=$(timeout 60 "$VCP_BIN" bench --backend "$URL/0?initiator=$INI" --rw randrw --bs 4K --qd 8 --time 1 --verify 2>&1) ||
    fail "vcp bench on the grown LUN 0: $out"
  grep -q "over 96 MiB" <<<"$out" || fail "our initiator does not see LUN 0's new size: $(head -3 <<<"$out")"
  grep -q "verify: .* ok" <<<"$out" && grep -q " 0 errors" <<<"$out" ||
    fail "vcp bench on the grown LUN 0 did not verify: $(tail -3 <<<"$out")"
  truncate -s 80M "$DIR/lun0.img"
  reload_until "is smaller than the"
  grep -q "vcp target: LUN 0 (file:path=$DIR/lun0.img) is smaller than the 100663296 bytes it serves: not shrunk" \
    "$DIR/target.log" || fail "a shrunk file was not reported: $(cat "$DIR/target.log")"
  expect_capacity "$URL/0" 100663296 "LUN 0 after its file shrank (not shrunk)"
  truncate -s 96M "$DIR/lun0.img"
  # A LUN taken out of the file while our initiator writes and reads it (64 KiB, qd 16) and
  # another session verifies LUN 0 of the same target: commands to the removed LUN fail from
  # then on (those in flight end first), its file is closed after them, the other session
  # verifies to its end and the LUN is gone from REPORT LUNS.
  timeout 30 "$VCP_BIN" bench --backend "iscsi://$PORTAL/$SECOND/0?initiator=$OTHER" --rw randrw --bs 4K --qd 8 \
    --time 4 --verify >"$DIR/kept.log" 2>&1 &
  KEPT=$!
  timeout 60 "$VCP_BIN" bench --backend "iscsi://$PORTAL/$SECOND/4?initiator=$OTHER&recovery_timeout=3" --rw randrw \
    --bs 64K --qd 16 --time 6 >"$DIR/gone.log" 2>&1 &
  GONE=$!
  sleep 1.5
  ls -l "/proc/$PID/fd" | grep -q "$DIR/second.img" || fail "vcp target does not have LUN 4's file open"
  python3 - "$DIR/targets.toml" <<'PY'
import re, sys
p = sys.argv[1]
t = open(p).read()
t2 = re.sub(r'\[\[target\.lun\]\]\nnumber = 4\nbackend = "[^"]*"\n', '', t)
assert t2 != t, "no LUN 4 in " + p
open(p, "w").write(t2)
PY
  reload_until "vcp target: LUN 4 of $SECOND closed" 200
  grep -q "vcp target: LUN 4 of $SECOND removed (file:path=$DIR/second.img); its commands in flight end first" \
    "$DIR/target.log" || fail "LUN 4 was not removed: $(cat "$DIR/target.log")"
  grep -q "vcp target: LUN 4 of $SECOND closed: its last commands have ended" "$DIR/target.log" ||
    fail "LUN 4 was not closed: $(cat "$DIR/target.log")"
  ls -l "/proc/$PID/fd" | grep -q "$DIR/second.img" && fail "LUN 4's file is still open after it was closed"
  wait "$KEPT" || fail "the session on LUN 0 of $SECOND while LUN 4 was removed: $(tail -5 "$DIR/kept.log")"
  grep -q "verify: .* ok" "$DIR/kept.log" || fail "the session on LUN 0 of $SECOND did not verify: $(tail -5 "$DIR/kept.log")"
  grep -q " 0 errors" "$DIR/kept.log" || fail "the session on LUN 0 of $SECOND had errors: $(tail -5 "$DIR/kept.log")"
  rc=0
  wait "$GONE" || rc=$?
  [ "$rc" != 124 ] || fail "our initiator on the removed LUN 4 hung: $(tail -5 "$DIR/gone.log")"
  grep -q "CHECK CONDITION: ILLEGAL REQUEST, ASC/ASCQ 25/00" "$DIR/gone.log" ||
    fail "our initiator on LUN 4 was not told the LUN is gone (rc $rc): $(tail -5 "$DIR/gone.log")"
  kill -0 "$PID" || fail "vcp target exited after a LUN was removed under I/O"
  out=$(timeout 20 iscsi-ls -i $OTHER -s "iscsi://$PORTAL") || fail "iscsi-ls after removing LUN 4: $out"
  grep -q "Target:$SECOND " <<<"$out" || fail "iscsi-ls lost $SECOND: $out"
  sed -n "/Target:$SECOND /,/Target:/p" <<<"$out" | grep -q "Lun:4 " && fail "REPORT LUNS still shows the removed LUN 4: $out"
  sed -n "/Target:$SECOND /,/Target:/p" <<<"$out" | grep -q "Lun:0 " || fail "REPORT LUNS lost LUN 0 of $SECOND: $out"
  timeout 20 iscsi-inq -i $OTHER "iscsi://$PORTAL/$SECOND/4" >/dev/null 2>&1 && fail "iscsi-inq found the removed LUN 4"
  # A target added to the file is added, after the others, with its LUNs and access list:
  # iscsi-ls lists it to whom may use it, libiscsi's tools and our initiator use it, and the
  # others go on. One removed from the file needs a restart: said so, and it is still served.
  THIRD=iqn.2024-01.org.vcp:itest-third
  cp "$DIR/targets.toml" "$DIR/targets-two.toml"
  printf '[[target]]\niqn = "%s"\nallowed_initiators = ["%s"]\n[[target.lun]]\nnumber = 3\nbackend = "ram:size=2M"\n' \
    "$THIRD" "$INI" >>"$DIR/targets.toml"
  reload_until "target $THIRD added"
  grep -q "vcp target: target $THIRD added: LUN 3 (ram:size=2M); 1 initiator names, 0 address ranges" \
    "$DIR/target.log" || fail "an added target was not added: $(cat "$DIR/target.log")"
  grep -q "changes to the targets" "$DIR/target.log" && fail "an added target was reported as needing a restart"
  out=$(timeout 20 iscsi-ls -i $INI -s "iscsi://$PORTAL") || fail "iscsi-ls after adding $THIRD: $out"
  grep -q "Target:$THIRD Portal:$PORTAL,1" <<<"$out" || fail "iscsi-ls does not list the added target: $out"
  grep -q "Lun:3 " <<<"$out" || fail "iscsi-ls does not show the added target's LUN: $out"
  out=$(timeout 20 iscsi-ls -i $OTHER "iscsi://$PORTAL") || fail "iscsi-ls as $OTHER: $out"
  grep -q "$THIRD" <<<"$out" && fail "the added target is listed to an initiator not on its list: $out"
  out=$(timeout 20 iscsi-readcapacity16 -i $INI "iscsi://$PORTAL/$THIRD/3") || fail "readcapacity16 $THIRD/3: $out"
  grep -q "Total size:2097152" <<<"$out" || fail "$THIRD LUN 3 size: $out"
  timeout 20 iscsi-inq -i $OTHER "iscsi://$PORTAL/$THIRD/3" >/dev/null 2>&1 && fail "$OTHER logged in to $THIRD"
  SAVED_URL=$URL
  URL=iscsi://$PORTAL/$THIRD
  bench_verify "3?initiator=$INI" "randrw 4K 16" " (a target added on SIGHUP)"
  URL=$SAVED_URL
  timeout 20 iscsi-inq -i $OTHER "iscsi://$PORTAL/$SECOND/0" >/dev/null || fail "$OTHER refused after adding $THIRD"
  bench_verify 0 "randrw 4K 16" " (after adding $THIRD)"
  # The same file again: nothing new is added.
  kill -HUP "$PID"
  sleep 0.5
  [ "$(grep -c "target $THIRD added" "$DIR/target.log")" = 1 ] || fail "$THIRD was added twice"
  # An alias given to the third target: logins from then on are answered with it (TargetAlias).
  sed -i "s/^iqn = \"$THIRD\"\$/&\nalias = \"third-disk\"/" "$DIR/targets.toml"
  grep -q 'alias = "third-disk"' "$DIR/targets.toml" || fail "no alias written into $DIR/targets.toml"
  reload_until "target $THIRD has the alias"
  grep -q "vcp target: target $THIRD has the alias 'third-disk' for logins from now on" "$DIR/target.log" ||
    fail "the alias was not taken: $(cat "$DIR/target.log")"
  out=$(python3 - "$PORT" "$THIRD" 2>&1 <<'PY'
import sys
from raw_iscsi import login
s, _ = login(int(sys.argv[1]), sys.argv[2].encode(), b"itest-initiator", 9)
print("alias:", login.keys.get(b"TargetAlias", b"").decode())
PY
) || fail "a login to $THIRD: $out"
  grep -q "^alias: third-disk$" <<<"$out" || fail "the login to $THIRD did not carry the new alias: $out"
  # The second target taken out of the file while a session of ours reads from it: the
  # session is dropped (Async Message), the target is listed and found no more, its LUN is
  # removed and closed. Put back under the same name with another LUN, it is served again.
  timeout 30 "$VCP_BIN" bench --backend "iscsi://$PORTAL/$SECOND/0?initiator=$OTHER&recovery_timeout=2" --rw randread \
    --bs 4K --qd 4 --time 8 >"$DIR/dropped.log" 2>&1 &
  DROPPED=$!
  sleep 1
  cp "$DIR/targets-two.toml" "$DIR/targets.toml"
  sed -i '/^\[\[target\]\]$/,$d' "$DIR/targets.toml"
  printf '[[target]]\niqn = "%s"\nalias = "third-disk"\nallowed_initiators = ["%s"]\n[[target.lun]]\nnumber = 3\nbackend = "ram:size=2M"\n' \
    "$THIRD" "$INI" >>"$DIR/targets.toml"
  reload_until "vcp target: LUN 0 of $SECOND closed"
  grep -q "vcp target: target $SECOND removed: its sessions end, its 1 LUNs are removed" "$DIR/target.log" ||
    fail "the second target was not removed: $(cat "$DIR/target.log")"
  grep -q "vcp target: LUN 0 of $SECOND closed: its last commands have ended" "$DIR/target.log" ||
    fail "the removed target's LUN was not closed: $(cat "$DIR/target.log")"
  grep -q "need a restart" "$DIR/target.log" && fail "a removed target was said to need a restart"
  rc=0
  wait "$DROPPED" || rc=$?
  [ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "our initiator on the removed target: rc $rc: $(tail -5 "$DIR/dropped.log")"
  grep -q "the target dropped all connections" "$DIR/dropped.log" ||
    fail "our initiator on the removed target was not told: $(tail -5 "$DIR/dropped.log")"
  grep -q "to $SECOND (TSIH [0-9]*) ended: the target was removed by a reload" "$DIR/target.log" ||
    fail "the removed target's session did not end: $(cat "$DIR/target.log")"
  out=$(timeout 20 iscsi-ls -i $OTHER "iscsi://$PORTAL") || fail "iscsi-ls after removing $SECOND: $out"
  grep -q "$SECOND" <<<"$out" && fail "iscsi-ls still lists the removed target: $out"
  grep -q "Target:$IQN " <<<"$out" || fail "iscsi-ls lost the first target: $out"
  timeout 20 iscsi-inq -i $OTHER "iscsi://$PORTAL/$SECOND/0" >/dev/null 2>&1 && fail "$SECOND still served after its removal"
  bench_verify 0 "randrw 4K 16" " (after removing $SECOND)"
  # (A new file: the writes of the run on the removed LUN 4 left blocks a verify run would reject.)
  truncate -s 32M "$DIR/again.img"
  printf '[[target]]\niqn = "%s"\nallowed_initiators = ["%s"]\n[[target.lun]]\nnumber = 5\nbackend = "file:path=%s"\n' \
    "$SECOND" "$OTHER" "$DIR/again.img" >>"$DIR/targets.toml"
  reload_until "target $SECOND added"
  grep -q "vcp target: target $SECOND added: LUN 5 (file:path=$DIR/again.img)" "$DIR/target.log" ||
    fail "the second target was not added back: $(cat "$DIR/target.log")"
  out=$(timeout 20 iscsi-readcapacity16 -i $OTHER "iscsi://$PORTAL/$SECOND/5") || fail "readcapacity16 $SECOND/5: $out"
  grep -q "Total size:33554432" <<<"$out" || fail "$SECOND LUN 5 size: $out"
  SAVED_URL=$URL
  URL=iscsi://$PORTAL/$SECOND
  bench_verify "5?initiator=$OTHER" "randrw 4K 16" " ($SECOND added back)"
  URL=$SAVED_URL
  # SIGUSR1: the status report lists the added target too.
  kill -USR1 "$PID"
  for _ in $(seq 100); do grep -q "vcp target: target $THIRD (third-disk): " "$DIR/target.log" && break; sleep 0.05; done
  grep -q "vcp target: target $THIRD (third-disk): LUN 3 ram:size=2M (2 MiB); access: 1 initiator names" "$DIR/target.log" ||
    fail "the status report does not list the added target: $(cat "$DIR/target.log")"
  [ "$(grep -c "vcp target: target $SECOND: " "$DIR/target.log")" = 2 ] ||
    fail "the status reports should list $SECOND once before its removal and once added back: $(cat "$DIR/target.log")"
  grep -q "vcp target: target $SECOND: LUN 5 file:path=$DIR/again.img (32 MiB); access: 1 initiator names" \
    "$DIR/target.log" || fail "the status report does not list $SECOND added back: $(cat "$DIR/target.log")"
  stop_target
  echo "targets on one portal: each listed to whom may use it, each its own LUNs, verified together; reload per target; LUNs and targets added, replaced and removed live"
  ;;
acl)
  # Only $INI from 127.0.0.0/8 may log in: others get "authorization failure" (libiscsi and our
  # initiator say so) and SendTargets does not show them the target.
  OTHER=iqn.2024-01.org.vcp:stranger
  start_target --allow-initiator "$INI" --allow-address 127.0.0.0/8
  timeout 20 iscsi-inq -i $INI "$URL/0" >/dev/null || fail "a listed initiator was refused"
  out=$(timeout 20 iscsi-inq -i $OTHER "$URL/0" 2>&1) && fail "an initiator not listed logged in"
  grep -qi "authorization failure" <<<"$out" || fail "iscsi-inq did not say why: $out"
  grep -q "target: login of $OTHER from 127.0.0.1 refused: initiator $OTHER may not log in to $IQN" "$DIR/target.log" ||
    fail "the target did not log the refusal: $(cat "$DIR/target.log")"
  out=$(timeout 20 "$VCP_BIN" bench --backend "$URL/0?initiator=$OTHER" --rw read --bs 4K --time 1 2>&1) &&
    fail "our initiator logged in unlisted"
  grep -q "authorization failure (0x0202)" <<<"$out" || fail "vcp bench did not say why: $out"
  out=$(timeout 20 iscsi-ls -i $INI -s "iscsi://$PORTAL") || fail "iscsi-ls: $out"
  grep -q "Target:$IQN " <<<"$out" || fail "the target is not listed to a listed initiator: $out"
  out=$(timeout 20 iscsi-ls -i $OTHER -s "iscsi://$PORTAL" 2>&1)
  grep -q "$IQN" <<<"$out" && fail "the target is listed to an initiator not allowed in: $out"
  stop_target
  start_target --allow-address 10.0.0.0/8 --allow-address ::1
  out=$(timeout 20 iscsi-inq -i $INI "$URL/0" 2>&1) && fail "a login from 127.0.0.1 passed a list without it"
  grep -qi "authorization failure" <<<"$out" || fail "iscsi-inq did not say why: $out"
  stop_target
  "$VCP_BIN" target --portal 127.0.0.1:0 --iqn "$IQN" --lun 0=ram:size=1M --allow-address 10.0.0.0/33 \
    >"$DIR/bad.log" 2>&1 && fail "a malformed --allow-address was accepted"
  grep -q "allow-address: '10.0.0.0/33': the prefix length is at most 32" "$DIR/bad.log" ||
    fail "no clear error for a malformed --allow-address: $(cat "$DIR/bad.log")"
  # SIGHUP reads the access list again (here from the TOML file): new logins follow it, a
  # session the new list refuses is ended (told so first), one it allows goes on; a file that
  # does not read changes nothing.
  KEEP=iqn.2024-01.org.vcp:itest-kept
  printf 'allowed_initiators = ["%s", "%s"]\n' "$INI" "$KEEP" >"$DIR/acl.toml"
  start_target --config "$DIR/acl.toml"
  timeout 20 iscsi-inq -i $INI "$URL/0" >/dev/null || fail "the initiator listed in the file was refused"
  timeout 20 iscsi-inq -i $OTHER "$URL/0" >/dev/null 2>&1 && fail "an initiator not in the file logged in"
  # (Refused at every login after, it fails its I/O once recovery_timeout has run out.)
  timeout 30 "$VCP_BIN" bench --backend "$URL/1?initiator=$INI&recovery_timeout=2" --rw randread --bs 4K --time 4 \
    --verify >"$DIR/revoked.log" 2>&1 &
  REVOKED=$!
  timeout 30 "$VCP_BIN" bench --backend "$URL/1?initiator=$KEEP" --rw randrw --bs 4K --time 4 --verify \
    >"$DIR/held.log" 2>&1 &
  HELD=$!
  sleep 1
  printf 'allowed_initiators = ["%s", "%s"]\n[limits]\nmax_tasks = 64\n' "$OTHER" "$KEEP" >"$DIR/acl.toml"
  reload_until "reloaded access for new logins to $IQN: 2 initiator names"
  grep -q "reloaded access for new logins to $IQN: 2 initiator names, 0 address ranges" "$DIR/target.log" ||
    fail "no reload logged: $(cat "$DIR/target.log")"
  grep -q "reload: changes to \[limits\] max_tasks need a restart and are not applied" "$DIR/target.log" ||
    fail "a change that needs a restart was not reported: $(cat "$DIR/target.log")"
  timeout 20 iscsi-inq -i $OTHER "$URL/0" >/dev/null || fail "the initiator listed after the reload was refused"
  out=$(timeout 20 iscsi-inq -i $INI "$URL/0" 2>&1) && fail "an initiator taken off the list logged in after the reload"
  grep -qi "authorization failure" <<<"$out" || fail "iscsi-inq did not say why: $out"
  wait "$HELD" || fail "the session the new list still allows did not go on: $(cat "$DIR/held.log")"
  grep -q "verify: .* ok" "$DIR/held.log" || fail "the session kept: verify: $(cat "$DIR/held.log")"
  wait "$REVOKED" && fail "the session taken off the list went on: $(cat "$DIR/revoked.log")"
  grep -q "target: session of $INI from 127.0.0.1 to $IQN (TSIH [0-9]*) ended: the access list reloaded does not allow it" \
    "$DIR/target.log" || fail "the session taken off the list was not ended: $(cat "$DIR/target.log")"
  grep -q "the target dropped all connections" "$DIR/revoked.log" ||
    fail "our initiator was not told the target dropped the session: $(cat "$DIR/revoked.log")"
  grep -q "no session for 2 s: failing" "$DIR/revoked.log" ||
    fail "our initiator did not fail its I/O after recovery_timeout: $(cat "$DIR/revoked.log")"
  printf 'allowed_initiators = [\n' >"$DIR/acl.toml"
  reload_until "reload refused, settings unchanged"
  grep -q "reload refused, settings unchanged: .*acl.toml" "$DIR/target.log" ||
    fail "a broken file on reload was not reported: $(cat "$DIR/target.log")"
  timeout 20 iscsi-inq -i $OTHER "$URL/0" >/dev/null || fail "a broken file on reload changed the access list"
  stop_target
  echo "access lists: listed initiator served; another name, another address refused and not shown;" \
    "SIGHUP reloads the list for new logins, ends the sessions it refuses, keeps the others, refuses a broken file"
  ;;
chap)
  printf 'user initiator-secret\n' >"$DIR/chap"
  printf 'tgtuser target-secret-1\n' >"$DIR/mutual"
  start_target --chap-file "$DIR/chap"
  timeout 20 iscsi-inq -i $INI "iscsi://user%initiator-secret@$PORTAL/$IQN/0" >/dev/null ||
    fail "CHAP login refused"
  timeout 20 iscsi-inq -i $INI "iscsi://user%wrong-secret-99@$PORTAL/$IQN/0" >/dev/null 2>&1 &&
    fail "a wrong CHAP secret was accepted"
  timeout 20 iscsi-inq -i $INI "$URL/0" >/dev/null 2>&1 && fail "a login without CHAP was accepted"
  stop_target
  start_target --chap-file "$DIR/chap" --mutual-chap-file "$DIR/mutual"
  timeout 20 iscsi-inq -i $INI \
    "iscsi://user%initiator-secret@$PORTAL/$IQN/0?target_user=tgtuser&target_password=target-secret-1" \
    >/dev/null || fail "mutual CHAP login refused"
  timeout 20 iscsi-inq -i $INI \
    "iscsi://user%initiator-secret@$PORTAL/$IQN/0?target_user=tgtuser&target_password=not-the-secret" \
    >/dev/null 2>&1 && fail "the initiator accepted a target with the wrong mutual secret"
  grep -q "session of $INI from .*: authentication mutual CHAP MD5," "$DIR/target.log" ||
    fail "libiscsi's mutual CHAP login is not logged as MD5: $(grep "session of" "$DIR/target.log")"
  # Our initiator with stronger algorithms offered first (chap_algs=): the target takes the
  # first of the list, both sides say which; each algorithm, with verified I/O.
  printf 'initiator-secret\ntarget-secret-1\n' >"$DIR/secrets"
  for algs in SHA256:MD5 SHA3-256 SHA1:SHA256 MD5; do
    name=${algs%%:*}
    want=$(case $name in SHA256) echo SHA-256 ;; SHA1) echo SHA-1 ;; *) echo "$name" ;; esac)
    ini=iqn.2024-01.org.vcp:chap-$(tr 'A-Z:' 'a-z-' <<<"$algs")
    out=$(timeout 30 "$VCP_BIN" bench --backend \
      "iscsi://user@$PORTAL/$IQN/1?initiator=$ini&mutual_user=tgtuser&secret_file=$DIR/secrets&chap_algs=$algs" \
      --rw randrw --bs 4k --qd 4 --time 0.5 --verify 2>&1) || fail "chap_algs=$algs: $out"
    grep -q "logged in to $IQN on .*authentication mutual CHAP $want," <<<"$out" ||
      fail "chap_algs=$algs: our initiator does not say mutual CHAP $want: $out"
    grep -q "session of $ini from .*: authentication mutual CHAP $want," "$DIR/target.log" ||
      fail "chap_algs=$algs: the target does not say mutual CHAP $want: $(grep "session of" "$DIR/target.log")"
  done
  stop_target
  # A target that accepts SHA-256 and SHA3-256 only (--chap-algs): libiscsi (MD5 alone) is
  # refused, and the target says why; our initiator offering MD5 then SHA-256 gets SHA-256.
  start_target --chap-file "$DIR/chap" --chap-algs SHA256:SHA3-256
  timeout 20 iscsi-inq -i $INI "iscsi://user%initiator-secret@$PORTAL/$IQN/0" >/dev/null 2>&1 &&
    fail "an MD5 login was accepted by a target that takes SHA-256 and SHA3-256 only"
  grep -q "no CHAP algorithm in common: the initiator offers CHAP_A=5; accepted here: SHA-256, SHA3-256" "$DIR/target.log" ||
    fail "the target did not say why the MD5 login was refused: $(grep -i chap "$DIR/target.log")"
  out=$(timeout 30 "$VCP_BIN" bench --backend \
    "iscsi://user@$PORTAL/$IQN/1?initiator=iqn.2024-01.org.vcp:strict&secret_file=$DIR/secrets&chap_algs=MD5:SHA256" \
    --rw randrw --bs 4k --qd 4 --time 0.5 --verify 2>&1) || fail "chap_algs=MD5:SHA256 against --chap-algs: $out"
  grep -q "authentication CHAP SHA-256," <<<"$out" || fail "our initiator was not given SHA-256: $out"
  stop_target
  # The same from the TOML file, and a reload that lets MD5 in again takes it for new logins.
  printf 'chap_algorithms = ["SHA256"]\n' >"$DIR/algs.toml"
  start_target --chap-file "$DIR/chap" --config "$DIR/algs.toml"
  timeout 20 iscsi-inq -i $INI "iscsi://user%initiator-secret@$PORTAL/$IQN/0" >/dev/null 2>&1 &&
    fail "an MD5 login was accepted with chap_algorithms = [\"SHA256\"]"
  printf 'chap_algorithms = ["SHA256", "MD5"]\n' >"$DIR/algs.toml"
  kill -HUP "$PID"
  for _ in $(seq 50); do grep -q "CHAP algorithms accepted for new logins: SHA-256, MD5" "$DIR/target.log" && break; sleep 0.1; done
  grep -q "CHAP algorithms accepted for new logins: SHA-256, MD5" "$DIR/target.log" || fail "the reload did not take chap_algorithms"
  ! grep -q "need a restart" "$DIR/target.log" || fail "the reload took chap_algorithms for a restart-only change"
  timeout 20 iscsi-inq -i $INI "iscsi://user%initiator-secret@$PORTAL/$IQN/0" >/dev/null ||
    fail "an MD5 login was refused after the reload let MD5 in"
  stop_target
  # Credentials a target does not ask for: libiscsi offers CHAP,None, is answered None, and
  # names itself again in its next PDU; that passes.
  start_target
  timeout 20 iscsi-inq -i $INI "iscsi://user%initiator-secret@$PORTAL/$IQN/0" >/dev/null ||
    fail "libiscsi with credentials the target does not need was refused"
  stop_target
  # Discovery CHAP: SendTargets only after authenticating (libiscsi uses the URL's credentials for
  # both its discovery and its target login: the same file serves both here).
  start_target --chap-file "$DIR/chap" --discovery-chap-file "$DIR/chap"
  out=$(timeout 20 iscsi-ls -i $INI -s "iscsi://$PORTAL" 2>&1) && fail "discovery without CHAP passed: $out"
  grep -q "$IQN" <<<"$out" && fail "the target was listed without discovery CHAP: $out"
  out=$(timeout 20 iscsi-ls -i $INI -s "iscsi://user%initiator-secret@$PORTAL") || fail "iscsi-ls with CHAP: $out"
  grep -q "Target:$IQN Portal:$PORTAL,1" <<<"$out" || fail "iscsi-ls with discovery CHAP: $out"
  printf 'initiator-secret\n' >"$DIR/secret"
  out=$(timeout 20 "$VCP_BIN" discover --user user --secret-file "$DIR/secret" "$PORTAL") ||
    fail "vcp discover with CHAP: $out"
  grep -q "$IQN" <<<"$out" || fail "vcp discover with CHAP did not list the target: $out"
  out=$(timeout 20 "$VCP_BIN" discover --user user --secret-file "$DIR/secret" --chap-algs SHA3-256:MD5 "$PORTAL") ||
    fail "vcp discover with CHAP SHA3-256: $out"
  grep -q "$IQN" <<<"$out" || fail "vcp discover with CHAP SHA3-256 did not list the target: $out"
  grep -q "discovery session of .* from .*: authentication CHAP SHA3-256$" "$DIR/target.log" ||
    fail "the discovery session with SHA3-256 is not logged so: $(grep "session of" "$DIR/target.log")"
  out=$(timeout 20 "$VCP_BIN" discover "$PORTAL" 2>&1) && fail "vcp discover without CHAP passed: $out"
  grep -q "authentication failure (0x0201)" <<<"$out" || fail "vcp discover did not say why: $out"
  stop_target
  # Mutual CHAP in discovery sessions with an identity of their own: libiscsi's iscsi-ls and
  # vcp discover authenticate the target as "portal" there (and as "tgtuser" in the target's
  # own logins); one expecting tgtuser's secret in discovery is refused.
  printf 'portal portal-secret-9\n' >"$DIR/portal"
  start_target --chap-file "$DIR/chap" --mutual-chap-file "$DIR/mutual" --discovery-chap-file "$DIR/chap" \
    --discovery-mutual-chap-file "$DIR/portal"
  out=$(timeout 20 iscsi-ls -i $INI "iscsi://user%initiator-secret@$PORTAL?target_user=portal&target_password=portal-secret-9") ||
    fail "iscsi-ls with discovery mutual CHAP: $out"
  grep -q "Target:$IQN Portal:$PORTAL,1" <<<"$out" || fail "iscsi-ls with discovery mutual CHAP: $out"
  printf 'initiator-secret\nportal-secret-9\n' >"$DIR/secrets"
  out=$(timeout 20 "$VCP_BIN" discover --user user --mutual-user portal --secret-file "$DIR/secrets" "$PORTAL") ||
    fail "vcp discover with mutual CHAP: $out"
  grep -q "$IQN" <<<"$out" || fail "vcp discover with mutual CHAP did not list the target: $out"
  printf 'initiator-secret\ntarget-secret-1\n' >"$DIR/secrets"
  out=$(timeout 20 "$VCP_BIN" discover --user user --mutual-user tgtuser --secret-file "$DIR/secrets" "$PORTAL" 2>&1) &&
    fail "vcp discover accepted the first target's identity in discovery: $out"
  timeout 20 iscsi-inq -i $INI \
    "iscsi://user%initiator-secret@$PORTAL/$IQN/0?target_user=tgtuser&target_password=target-secret-1" \
    >/dev/null || fail "mutual CHAP login to the target itself refused"
  stop_target
  ;;
digests)
  start_target
  for d in "header_digest=crc32c" "header_digest=crc32c&data_digest=crc32c"; do
    out=$(timeout 20 iscsi-readcapacity16 -i $INI "$URL/0?$d") || fail "digests $d: $out"
    out=$(timeout 30 iscsi-perf -i $INI -m 16 -b 64 -t 1 "$URL/0?$d" 2>&1) || fail "iscsi-perf $d: $out"
  done
  stop_target
  ;;
sessions)
  start_target
  pids=()
  for i in 1 2 3 4; do
    timeout 30 iscsi-perf -i "$INI-$i" -m 8 -b 8 -r -t 2 "$URL/$((i % 2))" >"$DIR/perf$i.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || fail "one of four concurrent iscsi-perf runs failed"; done
  # The same initiator logging in again and again (same default ISID): each login reinstates
  # the session before it.
  for i in 1 2 3; do timeout 20 iscsi-inq -i $INI "$URL/0" >/dev/null || fail "login $i"; done
  stop_target
  # Two I/O threads. Sessions a, b, c come in turn (threads 0, 1, 0); a and c leave; d goes to
  # thread 0, which has none, where turns alone would have put it beside b on thread 1.
  start_target --cpu 0,1
  timeout 30 python3 - "$PORT" "$PID" "$IQN" <<'PY' || fail "the sessions for the thread check failed"
import os, signal, sys, time
from raw_iscsi import login
port, pid, iqn = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
a, _ = login(port, iqn, b"spread-a", 21)
b, _ = login(port, iqn, b"spread-b", 22)
c, _ = login(port, iqn, b"spread-c", 23)
a.close()
c.close()
time.sleep(0.5)  # the threads see them go
d, _ = login(port, iqn, b"spread-d", 24)
os.kill(pid, signal.SIGUSR1)
time.sleep(0.5)
PY
  report=$(sed -n '/vcp target: status: /,$p' "$DIR/target.log")
  grep -A1 "I/O thread 0 (CPU 0): 1 connections" <<<"$report" | grep -q "session of iqn.2024-01.org.vcp:spread-d " ||
    fail "the new connection did not go to the thread with fewer connections: $report"
  grep -A1 "I/O thread 1 (CPU 1): 1 connections" <<<"$report" | grep -q "session of iqn.2024-01.org.vcp:spread-b " ||
    fail "thread 1 does not hold just the one session left on it: $report"
  stop_target
  ;;
initiator)
  # LUN 1 is ram; LUN 2 a file opened O_DIRECT, whose reads and writes go straight from the
  # target's task buffers (the kernel refuses buffers not aligned to the block size).
  truncate -s 64M "$DIR/lun2.img"
  start_target --lun "2=file:path=$DIR/lun2.img,direct=on"
  # LUN 0 is a buffered file: reads go out in place from its page cache (read_view), writes
  # inline.
  for target in "0" "1" "1?header_digest=crc32c&data_digest=crc32c" "2"; do
    for load in "randrw 4k 16" "randwrite 64k 8" "read 256k 4"; do bench_verify "$target" "$load"; done
  done
  stop_target
  # A buffer room of 1 MiB per connection and commands of 512 KiB and 1 MiB, 8 and 16 at a
  # time: most wait their turn for room (READs to start, WRITEs for their R2Ts); all complete,
  # the data verifies.
  printf '[limits]\nconnection_buffer_bytes = 1048576\n' >"$DIR/room.toml"
  start_target --config "$DIR/room.toml" --lun "2=file:path=$DIR/lun2.img,direct=on"
  for target in "1" "2"; do
    for load in "randwrite 1m 8" "read 1m 8" "randrw 512k 16"; do bench_verify "$target" "$load" ", 1 MiB buffer room"; done
  done
  out=$(timeout 20 taskset -c 0 iscsi-perf -i $INI -m 16 -b 2048 -t 1 "$URL/1" 2>&1) ||
    fail "iscsi-perf 1 MiB reads qd 16 with a 1 MiB buffer room: $out"
  stop_target
  # A write-protected LUN (MODE SENSE WP) is served read-only: the VCP's virtio-blk device says
  # RO, writes are refused before they reach the target, reads work.
  start_target --lun "3=file:path=$DIR/lun0.img,ro=on"
  "$VCP_BIN" serve --socket "$DIR/ro.sock" --backend "$URL/3" >"$DIR/serve.log" 2>&1 &
  SERVE=$!
  for _ in $(seq 100); do [ -S "$DIR/ro.sock" ] && break; sleep 0.05; done
  grep -q "write-protected: read-only" "$DIR/serve.log" || { kill $SERVE; fail "LUN 3 not seen as write-protected"; }
  out=$(timeout 30 "$VCP_BIN" bench --socket "$DIR/ro.sock" --rw read --bs 4k --qd 4 --time 1 2>&1) ||
    { kill $SERVE; echo "$out" | tail -3; fail "reads of the read-only LUN"; }
  if out=$(timeout 30 "$VCP_BIN" bench --socket "$DIR/ro.sock" --rw write --bs 4k --qd 4 --time 1 2>&1); then
    kill $SERVE; fail "writes to the read-only LUN succeeded: $out"
  fi
  kill -TERM $SERVE; wait $SERVE || true
  # The client sees VIRTIO_BLK_F_RO and refuses the writes itself: none reach the VCP.
  last=$(grep "queue stopped" "$DIR/serve.log" | tail -1)
  grep -q " 0.0 MiB written, 0 I/O errors" <<<"$last" || fail "writes reached the VCP: $last"
  echo "write-protected LUN served read-only: reads work, writes refused before the channel"
  stop_target
  ;;
shrink)
  # Reads of a buffered file LUN go out from a mapping of the file, or with sendfile(2) from the
  # file itself (--sendfile on: 256 KiB READs). Cut the file to 1 MiB under a sequential read and
  # the kernel refuses the send (EFAULT), or sendfile finds the end of the file: that connection
  # is closed, the process and its other LUNs carry on, and with the file grown back LUN 0
  # serves again (written and read back with verification, in 256 KiB READs too).
  for sendfile in off on; do
    start_target --sendfile "$sendfile"
    dd if=/dev/zero of="$DIR/lun0.img" bs=1M count=64 conv=notrunc status=none  # (verify wants zeros or its stamps)
    # iscsi-perf reconnecting in a loop may not heed SIGINT: KILL 3 s after.
    timeout -s INT -k 3 6 iscsi-perf -i $INI -m 8 -b 512 -t 4 "$URL/0" >"$DIR/perf.log" 2>&1 &
    PERF=$!
    sleep 1
    truncate -s 1M "$DIR/lun0.img"
    wait "$PERF" 2>/dev/null
    kill -0 "$PID" 2>/dev/null || { cat "$DIR/target.log"; fail "vcp target (--sendfile $sendfile) died when its file shrank"; }
    if [ "$sendfile" = on ]; then why="send failed: a file LUN's file ended before the data to send"
    else why="send failed: .*(a file LUN shrank under a read?)"; fi
    grep -q "$why" "$DIR/target.log" ||
      { tail -20 "$DIR/target.log"; fail "--sendfile $sendfile: no connection closed over the shrunk file"; }
    bench_verify 1 "randrw 4k 8" " (--sendfile $sendfile, after LUN 0 shrank)"
    truncate -s 64M "$DIR/lun0.img"
    bench_verify 0 "randrw 64k 8" " (--sendfile $sendfile, after its file grew back)"
    bench_verify 0 "randrw 256k 8" " (--sendfile $sendfile, after its file grew back)"
    if [ "$sendfile" = on ]; then
      # The status report (SIGUSR1) counts the Data-In segments each session sent by sendfile.
      timeout 60 "$VCP_BIN" bench --backend "$URL/0" --rw read --bs 256k --qd 4 --time 3 >/dev/null 2>&1 &
      BENCH=$!
      sleep 1.5
      kill -USR1 "$PID"
      sleep 0.5
      wait "$BENCH" || fail "vcp bench 256k reads with --sendfile on"
      grep -q "status: .*, sendfile on (READs from 64 KiB)" "$DIR/target.log" ||
        { tail -20 "$DIR/target.log"; fail "no sendfile setting in the status report"; }
      grep -q "session of .*, [1-9][0-9]* Data-In segments by sendfile" "$DIR/target.log" ||
        { tail -20 "$DIR/target.log"; fail "the status report shows no Data-In sent by sendfile"; }
    fi
    stop_target
  done
  ;;
qsd)
  # qemu-storage-daemon's iSCSI driver (libiscsi inside QEMU's block layer) against our target,
  # its node exported over vhost-user-blk and checked end to end by vcp bench --verify.
  command -v qemu-storage-daemon >/dev/null || fail "qemu-storage-daemon not installed (Debian package qemu-system-common)"
  start_target
  sock=$DIR/qsd.sock
  qemu-storage-daemon --blockdev "driver=iscsi,node-name=i0,transport=tcp,portal=$PORTAL,target=$IQN,lun=0,initiator-name=$INI,cache.direct=on" \
    --export "type=vhost-user-blk,id=e0,node-name=i0,addr.type=unix,addr.path=$sock,writable=on,num-queues=1" \
    >"$DIR/qsd.log" 2>&1 &
  QSD=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; kill -0 "$QSD" 2>/dev/null || break; sleep 0.05; done
  [ -S "$sock" ] || { cat "$DIR/qsd.log"; kill "$QSD" 2>/dev/null; fail "qemu-storage-daemon did not export the LUN"; }
  rc=0
  timeout 60 "$VCP_BIN" bench --socket "$sock" --rw randrw --bs 4k --qd 16 --time 3 --verify >"$DIR/bench.log" 2>&1 || rc=$?
  kill -TERM "$QSD" 2>/dev/null
  wait "$QSD" 2>/dev/null
  cat "$DIR/bench.log"
  [ "$rc" = 0 ] || { cat "$DIR/qsd.log"; fail "vcp bench --verify through qemu-storage-daemon's iscsi driver failed ($rc)"; }
  grep -q " 0 errors" "$DIR/bench.log" || fail "vcp bench reported errors"
  stop_target
  ;;
portals)
  # Two portals (a second --portal): SendTargets through either names both, one portal group;
  # each serves the LUNs; iscsi-test-cu's MultipathIO runs with one path through each.
  start_target --portal 127.0.0.1:0
  PORT2=$(listening_port 2)
  { [ -n "$PORT2" ] && [ "$PORT2" != "$PORT" ]; } || { cat "$DIR/target.log"; fail "no second portal"; }
  URL2=iscsi://127.0.0.1:$PORT2/$IQN
  for p in "$PORT" "$PORT2"; do
    out=$(iscsi-ls -i "$INI" "iscsi://127.0.0.1:$p" 2>&1) || { echo "$out"; fail "iscsi-ls through port $p"; }
    for q in "$PORT" "$PORT2"; do
      grep -q "Target:$IQN Portal:127.0.0.1:$q,1" <<<"$out" || { echo "$out"; fail "SendTargets through $p does not name portal $q"; }
    done
  done
  out=$(iscsi-inq -i "$INI" "$URL2/0" 2>&1) || { echo "$out"; fail "iscsi-inq through the second portal"; }
  grep -q "VCP" <<<"$out" || { echo "$out"; fail "iscsi-inq through the second portal: no vendor"; }
  URL=$URL2 bench_verify 1 "randrw 4k 8" " through the second portal"
  # vcp discover --url: one spec naming both portals, which our initiator takes as it is.
  spec=$("$VCP_BIN" discover "127.0.0.1:$PORT2" --url 1) || fail "vcp discover --url"
  [ "$spec" = "iscsi://127.0.0.1:$PORT/$IQN/1?portal=127.0.0.1:$PORT2" ] || fail "vcp discover --url 1 gave '$spec'"
  out=$(timeout 60 "$VCP_BIN" bench --backend "$spec" --rw randrw --bs 4k --qd 8 --time 1 --verify 2>&1) ||
    { echo "$out" | tail -5; fail "vcp bench on the discovered spec"; }
  grep -q "verify: .* ok" <<<"$out" || { echo "$out" | tail -5; fail "vcp bench on the discovered spec: verify"; }
  out=$(timeout 300 iscsi-test-cu -i $INI --dataloss --test='SCSI.MultipathIO.*' "$URL/0" "$URL2/0" 2>&1)
  summary=$(grep -E '^ +tests ' <<<"$out")
  echo "MultipathIO over two portals: $summary"
  [ -n "$summary" ] || { echo "$out" | tail -30; fail "MultipathIO: no CUnit summary"; }
  [ "$(awk '{print $5}' <<<"$summary")" = 0 ] || { grep -B1 FAILED <<<"$out" | head -20; fail "MultipathIO over two portals failed"; }
  if grep -q '\[SKIPPED\]' <<<"$out"; then grep -F '[SKIPPED]' <<<"$out" | head; fail "MultipathIO skipped with two portals"; fi
  stop_target

  # Portals changed by a reload (TOML; the command line's --portal would override it): the
  # second removed and one on 127.0.0.2 added while sessions run through both; a portal that
  # cannot be bound leaves them as they were.
  portals_toml() {
    printf 'iqn = "%s"\nportal = [%s]\n[[lun]]\nnumber = 0\nbackend = "file:path=%s"\n[[lun]]\nnumber = 1\nbackend = "ram:size=16M"\n' \
      "$IQN" "$1" "$DIR/reload.img" >"$DIR/portals.toml"
  }
  truncate -s 64M "$DIR/reload.img"  # fresh: --verify knows every block it finds
  portals_toml '"127.0.0.1:0", "127.0.0.1:0"'
  "$VCP_BIN" target --config "$DIR/portals.toml" >"$DIR/target.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    [ "$(grep -c '^vcp target: listening on' "$DIR/target.log")" = 2 ] && break
    sleep 0.05
  done
  P1=$(listening_port 1)
  P2=$(listening_port 2)
  { [ -n "$P1" ] && [ -n "$P2" ]; } || { cat "$DIR/target.log"; fail "the TOML portals did not listen"; }
  bench_pids=()
  lun=0
  for p in "$P1" "$P2"; do  # a LUN each: --verify checks what its own writes left
    timeout 60 "$VCP_BIN" bench --backend "iscsi://127.0.0.1:$p/$IQN/$lun" --rw randrw --bs 4k --qd 4 --time 4 \
      --verify >"$DIR/bench-$p.log" 2>&1 &
    bench_pids+=($!)
    lun=$((lun + 1))
  done
  sleep 1
  portals_toml "\"127.0.0.1:$P1\", \"127.0.0.2:0\""
  reload_until "no longer listening on 127.0.0.1:$P2" || { cat "$DIR/target.log"; fail "the reload did not remove a portal"; }
  P3=$(sed -n 's/.*vcp target: listening on 127\.0\.0\.2:\([0-9]*\) (added by a reload)$/\1/p' "$DIR/target.log")
  [ -n "$P3" ] || { cat "$DIR/target.log"; fail "the reload did not add a portal"; }
  out=$(iscsi-ls -i "$INI" "iscsi://127.0.0.2:$P3" 2>&1) || { echo "$out"; fail "iscsi-ls through the added portal"; }
  grep -q "Portal:127.0.0.1:$P1,1" <<<"$out" && grep -q "Portal:127.0.0.2:$P3,1" <<<"$out" ||
    { echo "$out"; fail "SendTargets after the reload does not name both portals"; }
  grep -q "Portal:127.0.0.1:$P2," <<<"$out" && { echo "$out"; fail "SendTargets still names the removed portal"; }
  iscsi-inq -i "$INI" "iscsi://127.0.0.1:$P2/$IQN/0" >/dev/null 2>&1 && fail "the removed portal still takes logins"
  kill -USR1 "$PID"
  for _ in $(seq 100); do grep -q "status: .* portals 127.0.0.1:$P1, 127.0.0.2:$P3$" "$DIR/target.log" && break; sleep 0.05; done
  grep -q "status: .* portals 127.0.0.1:$P1, 127.0.0.2:$P3$" "$DIR/target.log" ||
    { grep status: "$DIR/target.log"; fail "the status report does not list the portals now"; }
  wait "${bench_pids[@]}"  # the sessions through the kept portal and the removed one, to their end
  for p in "$P1" "$P2"; do
    grep -q "verify: .* ok" "$DIR/bench-$p.log" && grep -q " 0 errors" "$DIR/bench-$p.log" ||
      { cat "$DIR/bench-$p.log" | tail -30; fail "the session through port $p did not verify across the reload"; }
    grep -qE " [1-9][0-9]* reconnects" "$DIR/bench-$p.log" && { grep -E "reconnect|connection lost" "$DIR/bench-$p.log" | head -5; fail "the session through port $p was dropped"; }
  done
  portals_toml "\"127.0.0.1:$P1\", \"192.0.2.1:3260\""
  reload_until "the portals stay as they were" || { cat "$DIR/target.log"; fail "an unbindable portal was not refused"; }
  iscsi-inq -i "$INI" "iscsi://127.0.0.2:$P3/$IQN/0" >/dev/null 2>&1 || fail "a refused reload closed a portal"
  stop_target
  ;;
reload-limits)
  # [limits] changed by a reload (TOML): connections from then on negotiate the new ones, a
  # session logged in goes on with its own; a key that needs a restart is said to.
  limits_toml() {
    printf 'iqn = "%s"\nportal = "127.0.0.1:0"\n[[lun]]\nnumber = 0\nbackend = "file:path=%s"\n[limits]\nmax_burst_length = %s\nfirst_burst_length = %s\ncmd_window = %s\nmax_tasks = %s\n' \
      "$IQN" "$DIR/reload.img" "$@" >"$DIR/limits.toml"
  }
  truncate -s 64M "$DIR/reload.img"
  limits_toml 65536 16384 16 1024
  "$VCP_BIN" target --config "$DIR/limits.toml" >"$DIR/target.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do PORT=$(listening_port 1); [ -n "$PORT" ] && break; sleep 0.05; done
  [ -n "$PORT" ] || { cat "$DIR/target.log"; fail "the TOML target did not listen"; }
  timeout 60 "$VCP_BIN" bench --backend "iscsi://127.0.0.1:$PORT/$IQN/0" --rw randrw --bs 64k --qd 4 --time 4 --verify \
    >"$DIR/bench-a.log" 2>&1 &
  A=$!
  sleep 1
  grep -q "iscsi q0: logged in .*FirstBurst 16384, MaxBurst 65536, .*window 16)" "$DIR/bench-a.log" ||
    { cat "$DIR/bench-a.log"; fail "the first session did not get the first limits"; }
  limits_toml 131072 32768 32 64
  reload_until "taken for connections from now on"
  grep -q "reload: \[limits\] max_burst_length, first_burst_length, cmd_window taken for connections from now on" \
    "$DIR/target.log" || { cat "$DIR/target.log"; fail "the reload did not take the limits"; }
  grep -q "changes to \[limits\] max_tasks need a restart" "$DIR/target.log" ||
    { cat "$DIR/target.log"; fail "max_tasks was not said to need a restart"; }
  out=$(timeout 60 "$VCP_BIN" bench --backend "iscsi://127.0.0.1:$PORT/$IQN/0" --rw read --bs 64k --qd 4 --time 1 2>&1) ||
    { echo "$out" | tail; fail "a session after the reload"; }
  grep -q "iscsi q0: logged in .*FirstBurst 32768, MaxBurst 131072, .*window 32)" <<<"$out" ||
    { echo "$out"; fail "a session after the reload did not get the new limits"; }
  kill -USR1 "$PID"
  for _ in $(seq 100); do grep -q "new sessions get .*MaxBurstLength 131072" "$DIR/target.log" && break; sleep 0.05; done
  grep -q "new sessions get .*MaxBurstLength 131072, FirstBurstLength 32768, .*a window of 32 commands" "$DIR/target.log" ||
    { grep status: "$DIR/target.log"; fail "the status report does not give the new limits"; }
  wait "$A" || { tail -20 "$DIR/bench-a.log"; fail "the session from before the reload failed"; }
  grep -q "verify: .* ok" "$DIR/bench-a.log" && grep -q " 0 errors" "$DIR/bench-a.log" ||
    { tail -20 "$DIR/bench-a.log"; fail "the session from before the reload did not verify"; }
  grep -qE " [1-9][0-9]* reconnects" "$DIR/bench-a.log" && fail "the session from before the reload was dropped"
  echo "limits reloaded: the session before kept MaxBurst 65536 and window 16, the one after got 131072 and 32"
  stop_target
  ;;
aptpl)
  # Persistent reservations kept through a crash (APTPL): with --state-dir, initiator A
  # registers with APTPL and takes an Exclusive Access reservation, B registers; the target is
  # killed (SIGKILL) and started again on the same state directory: B's READ is refused
  # (RESERVATION CONFLICT), both keys and A's reservation are read back, A reads. Then a register
  # without APTPL ends the keeping (the file goes); a damaged file stops the target from
  # starting, saying where; without --state-dir APTPL is refused; a state directory that cannot
  # be made is refused at start; iscsi-test-cu's PR tests pass with PTPL_C reported.
  STATE=$DIR/state
  start_target --state-dir "$STATE"
  [ -d "$STATE" ] || fail "the state directory was not made"
  out=$(timeout 30 python3 - "$PORT" "$IQN" <<'PY'
import socket, sys
from raw_iscsi import login, pr_in, pr_out, tur_status
socket.setdefaulttimeout(20)
port, iqn = int(sys.argv[1]), sys.argv[2].encode()
a, sn_a = login(port, iqn, b"pr-a", 21)
b, sn_b = login(port, iqn, b"pr-b", 22)
tur_status(a, sn_a, 0); tur_status(b, sn_b, 0)  # the power-on unit attention
caps = pr_in(a, 2, sn_a + 1, 2)
if not caps[2] & 1 or caps[3] & 1:
    sys.exit("REPORT CAPABILITIES before APTPL: PTPL_C %d PTPL_A %d" % (caps[2] & 1, caps[3] & 1))
for s, sn, key in ((a, sn_a + 2, 0xa1), (b, sn_b + 1, 0xb1)):
    st = pr_out(s, 3, sn, 0, 0, key, aptpl=True)
    if st[0] != 0:
        sys.exit("REGISTER with APTPL: %s" % (st,))
st = pr_out(a, 4, sn_a + 3, 1, 0xa1, 0, pr_type=3)
if st[0] != 0:
    sys.exit("RESERVE: %s" % (st,))
if not pr_in(a, 5, sn_a + 4, 2)[3] & 1:
    sys.exit("PTPL_A not set after REGISTER with APTPL")
print("registered and reserved")
PY
  ) || fail "before the crash: $out"
  file=$(ls "$STATE")
  [ "$file" = "$(echo "$IQN" | tr A-Z a-z).lun0.pr" ] || fail "the state file: '$file'"
  kill -KILL "$PID"; wait "$PID" 2>/dev/null; PID=
  start_target --state-dir "$STATE"
  grep -q "LUN 0 '.*': persistent reservations restored from $STATE/$file: 2 registrations, reserved" "$DIR/target.log" ||
    fail "the restart did not say it restored them: $(cat "$DIR/target.log")"
  kill -USR1 "$PID"
  for _ in $(seq 50); do grep -q "vcp target: target $IQN: LUN 0" "$DIR/target.log" && break; sleep 0.1; done
  grep -q "LUN 0 file:path=$DIR/lun0.img (64 MiB, 2 PR registrations, reserved (Exclusive Access) by iqn.2024-01.org.vcp:pr-a, kept in $STATE/$file)" \
    "$DIR/target.log" || fail "the status report: $(grep "target $IQN" "$DIR/target.log")"
  out=$(timeout 30 python3 - "$PORT" "$IQN" <<'PY'
import socket, sys
from raw_iscsi import command, login, pr_in, pr_out, tur_status
socket.setdefaulttimeout(20)
port, iqn = int(sys.argv[1]), sys.argv[2].encode()
read16 = bytes([0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
a, sn_a = login(port, iqn, b"pr-a", 21)
b, sn_b = login(port, iqn, b"pr-b", 22)
tur_status(a, sn_a, 0); tur_status(b, sn_b, 0)
st = command(b, 2, sn_b + 1, read16, 0, data_in=512)
if st[0] != 0x18:
    sys.exit("B's READ after the restart: status %#x, not RESERVATION CONFLICT" % st[0])
gen, keys = pr_in(b, 3, sn_b + 2, 0)
if sorted(keys) != [0xa1, 0xb1]:
    sys.exit("keys after the restart: %s" % [hex(k) for k in keys])
gen, key, typ = pr_in(b, 4, sn_b + 3, 1)
if (key, typ) != (0xa1, 3):
    sys.exit("reservation after the restart: %s %s" % (key, typ))
if command(a, 2, sn_a + 1, read16, 0, data_in=512)[0] != 0:
    sys.exit("A's READ after the restart")
# B registers again without APTPL: nothing is kept from now on.
if pr_out(b, 5, sn_b + 4, 6, 0, 0xb2)[0] != 0:
    sys.exit("REGISTER AND IGNORE EXISTING KEY without APTPL")
if pr_in(b, 6, sn_b + 5, 2)[3] & 1:
    sys.exit("PTPL_A still set")
if pr_out(a, 3, sn_a + 2, 3, 0xa1, 0)[0] != 0:  # CLEAR: the LUN free for iscsi-test-cu
    sys.exit("CLEAR")
print("after the restart: B's READ in conflict, keys a1 b1, A holds Exclusive Access; APTPL off again")
PY
  ) || fail "after the restart: $out"
  echo "$out"
  [ -z "$(ls "$STATE")" ] || fail "the state file stayed after APTPL was turned off: $(ls "$STATE")"
  # iscsi-test-cu's PR tests with PTPL_C reported.
  cu=$(timeout 300 iscsi-test-cu -i $INI --dataloss --test="ALL.PrinReportCapabilities" "$URL/0" 2>&1)
  grep -qE '^ +tests +[0-9]+ +[0-9]+ +[0-9]+ +0 ' <<<"$cu" || { echo "$cu" | tail -20; fail "iscsi-test-cu PrinReportCapabilities"; }
  stop_target
  # A damaged file: the target does not start, and says which file and line.
  printf 'vcp-pr 1\nlu x\ngeneration 1\nregistration zz\n' >"$STATE/$file"
  "$VCP_BIN" target --portal 127.0.0.1:0 --iqn "$IQN" --lun "0=file:path=$DIR/lun0.img" --state-dir "$STATE" \
    >"$DIR/bad.log" 2>&1 && fail "the target started on a damaged reservations file"
  grep -q "persistent reservations cannot be restored: $STATE/$file: line 4: expected 'registration KEY ISID PORT NAME' (move the file away" \
    "$DIR/bad.log" || fail "the damaged file's error: $(cat "$DIR/bad.log")"
  # A state directory that cannot be made.
  "$VCP_BIN" target --portal 127.0.0.1:0 --iqn "$IQN" --lun 0=ram:size=1M --state-dir "$DIR/lun0.img/x" \
    >"$DIR/bad.log" 2>&1 && fail "the target started with a state directory under a file"
  grep -q "state_dir $DIR/lun0.img/x: cannot create it" "$DIR/bad.log" || fail "the state directory's error: $(cat "$DIR/bad.log")"
  # Without --state-dir: APTPL refused (INVALID FIELD IN PARAMETER LIST).
  rm -f "$STATE/$file"
  start_target
  out=$(timeout 30 python3 - "$PORT" "$IQN" <<'PY'
import socket, sys
from raw_iscsi import login, pr_in, pr_out, tur_status
socket.setdefaulttimeout(20)
port, iqn = int(sys.argv[1]), sys.argv[2].encode()
a, sn = login(port, iqn, b"pr-a", 21)
tur_status(a, sn, 0)
if pr_in(a, 2, sn + 1, 2)[2] & 1:
    sys.exit("PTPL_C without a state directory")
st = pr_out(a, 3, sn + 2, 0, 0, 0xa1, aptpl=True)
if st[:4] != (2, 5, 0x26, 0):
    sys.exit("REGISTER with APTPL and no state directory: %s" % (st[:4],))
PY
  ) || fail "without a state directory: $out"
  stop_target
  echo "without --state-dir APTPL is refused; a damaged file and a state directory that cannot be made stop the start"
  ;;
cu | cu-threads)
  [ $# -gt 0 ] || fail "$MODE needs test specs"
  if [ "$MODE" = cu-threads ]; then
    [ "$(nproc)" -ge 2 ] || fail "cu-threads needs 2 CPUs"
    start_target --cpu 0,1
  else
    start_target
  fi
  for spec in "$@"; do
    # MultipathIO needs a second path to the LUN: a second session through the same portal
    # (two I_T nexuses to one logical unit); without one its tests only skip.
    paths=("$URL/0")
    [[ "$spec" == SCSI.MultipathIO* ]] && paths=("$URL/0" "$URL/0")
    out=$(timeout 600 iscsi-test-cu -i $INI --dataloss --test="$spec" "${paths[@]}" 2>&1)
    [ -n "${CU_LOG:-}" ] && echo "$out" >>"$CU_LOG"
    summary=$(grep -E '^ +tests ' <<<"$out")
    echo "$spec: $summary"
    failed=$(awk '{print $5}' <<<"$summary")
    [ -n "$summary" ] || { echo "$out" | tail -30; fail "$spec: no CUnit summary"; }
    [ "$failed" = 0 ] || { grep -E "FAILED|Test:" <<<"$out" | grep -B1 FAILED | head -40; fail "$spec: $failed failed"; }
    # Two paths given: a test that skips did not see them (CUnit counts skips as passes).
    if [ ${#paths[@]} -gt 1 ] && grep -q '\[SKIPPED\]' <<<"$out"; then
      grep -F '[SKIPPED]' <<<"$out" | head; fail "$spec: skipped with two paths"
    fi
  done
  stop_target
  ;;
*)
  fail "unknown mode $MODE"
  ;;
esac
echo "PASS: target_tools.sh $MODE"
