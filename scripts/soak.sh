#!/bin/bash
# A soak under faults: `vcp bench --verify` (CPU 0) through `vcp serve` (the iSCSI VCP, two
# queues, CPU 1) on a `vcp target` LUN (two I/O threads, an O_DIRECT file), for SECONDS, beside
# libiscsi's iscsi-perf on another LUN of the target, while at random moments the target is
# killed and started again on its port, stopped and continued (for less and for more than the
# initiator's NOP-Out timeout), reloaded (SIGHUP) with a third LUN added or removed, sent a
# connection of random bytes, iscsi-perf is killed and started again, and both servers are
# asked for status reports (SIGUSR1). With NET=1 (the default) the target runs on a host of
# its own and the initiators on another (two network namespaces joined by a veth pair,
# scripts/lib/netns.sh: needs root and nftables), and the link between them also goes silent
# (every packet dropped) for 0.3-6 s or drops 2-9% of its packets for 2-5 s. It passes when
# the verify ends clean with no error, vcp serve and the last target end cleanly on SIGTERM,
# and no log shows a sanitizer report, an assertion or a crash.
#
#   scripts/soak.sh [BUILD_DIR] [SECONDS]     (defaults: build, 300)
# Environment: SEED (the fault schedule's; printed, so a failing run can be replayed), BS (16k),
# QD (16), NET (1; 0: everything on 127.0.0.1, no link faults), KEEP=1 keeps the logs' directory.
set -euo pipefail
build=${1:-build}
secs=${2:-300}
vcp=$(realpath "$build/vcp")
[[ -x $vcp ]] || { echo "soak: no vcp binary in $build" >&2; exit 1; }
command -v iscsi-perf >/dev/null || { echo "soak: iscsi-perf not installed (Debian package libiscsi-bin)" >&2; exit 1; }
SEED=${SEED:-$RANDOM}
RANDOM=$SEED
BS=${BS:-16k}
QD=${QD:-16}
NET=${NET:-1}
IQN=iqn.2024-01.org.vcp.soak:lun
work=$(mktemp -d /var/tmp/vcp-soak.XXXXXX)
target= serve= bench= perf=
cleanup() {
  local rc=$?
  for p in $perf $bench $serve $target; do
    kill -CONT "$p" 2>/dev/null || true
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  declare -F netns_cleanup >/dev/null && netns_cleanup
  if [[ $rc -ne 0 || ${KEEP:-0} == 1 ]]; then
    echo "soak: logs kept in $work (seed $SEED)" >&2
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
fail() { echo "soak: FAIL: $* (seed $SEED)" >&2; exit 1; }
die() { fail "$*"; }  # for scripts/lib/netns.sh
say() { echo "soak: $(date +%T) $*"; }

# Where the target listens, and what runs the target (in_target) and the initiators (in_ini).
addr=127.0.0.1
in_target=()
in_ini=()
if [[ $NET == 1 ]]; then
  source "$(dirname "$0")/lib/netns.sh"
  netns_pair
  addr=$NETNS_T_ADDR
  in_target=(ip netns exec "$NETNS_T")
  in_ini=(ip netns exec "$NETNS_I")
elif [[ $NET != 0 ]]; then
  fail "NET is 1 or 0, not '$NET'"
fi

truncate -s 256M "$work/lun.img"
# The target's settings; LUN 2 comes and goes with reloads (lun2 on or off).
lun2=off
write_config() {
  {
    printf 'iqn = "%s"\n[[lun]]\nnumber = 0\nbackend = "file:path=%s,direct=on"\n' "$IQN" "$work/lun.img"
    printf '[[lun]]\nnumber = 1\nbackend = "ram:size=64M"\n'
    if [[ $lun2 == on ]]; then printf '[[lun]]\nnumber = 2\nbackend = "ram:size=16M"\n'; fi
  } >"$work/target.toml"
}
write_config
starts=0
# start_target [PORT]: a vcp target on $addr:PORT (0: a free one); sets target and port.
start_target() {
  starts=$((starts + 1))
  local log="$work/target.$starts.log"
  "${in_target[@]}" "$vcp" target --portal "$addr:${1:-0}" --config "$work/target.toml" --cpu 0,1 >"$log" 2>&1 &
  target=$!
  local p=""
  for _ in $(seq 100); do
    p=$(sed -n "s/^vcp target: listening on ${addr//./\\.}:\([0-9]*\)\$/\1/p" "$log")
    [[ -n $p ]] && break
    kill -0 "$target" 2>/dev/null || { cat "$log" >&2; fail "vcp target did not start"; }
    sleep 0.05
  done
  [[ -n $p ]] || fail "vcp target did not print its address"
  port=$p
}

start_target 0
url="iscsi://$addr:$port/$IQN/0?timeout=2,nop_interval=1,nop_timeout=2,login_timeout=2"
"${in_ini[@]}" taskset -c 1 "$vcp" serve --socket "$work/vcp.sock" --backend "$url" --queues 2 >"$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 100); do [[ -S $work/vcp.sock ]] && break; sleep 0.1; done
[[ -S $work/vcp.sock ]] || { cat "$work/serve.log" >&2; fail "vcp serve did not start"; }
taskset -c 0 "$vcp" bench --socket "$work/vcp.sock" --rw randrw --bs "$BS" --qd "$QD" --jobs 2 --time "$secs" \
  --verify >"$work/bench.log" 2>&1 &
bench=$!
perfs=0
start_perf() {
  perfs=$((perfs + 1))
  "${in_ini[@]}" iscsi-perf -i iqn.2024-01.org.vcp.soak:perf -m 8 -b 8 -r -n -x 100000 "iscsi://$addr:$port/$IQN/1" \
    >"$work/perf.$perfs.log" 2>&1 &
  perf=$!
}
start_perf
say "seed $SEED: target pid $target on $addr:$port${NETNS_T:+ (network namespace $NETNS_T, the initiators in $NETNS_I)}, vcp serve pid $serve, bench pid $bench for $secs s, iscsi-perf pid $perf"

# A random fraction of a second: rnd_secs MIN_MS MAX_MS.
rnd_secs() {
  local ms=$(($1 + RANDOM % ($2 - $1 + 1)))
  printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}
faults=0
kinds=9
[[ $NET == 1 ]] && kinds=11  # and the link's faults
end=$((SECONDS + secs - 5))
while (( SECONDS < end )) && kill -0 "$bench" 2>/dev/null; do
  sleep "$(rnd_secs 1000 4000)"
  kill -0 "$bench" 2>/dev/null || break
  kill -0 "$target" 2>/dev/null || fail "vcp target (pid $target) died on its own"
  kill -0 "$serve" 2>/dev/null || fail "vcp serve died"
  faults=$((faults + 1))
  case $((RANDOM % kinds)) in
    0) down=$(rnd_secs 0 2000)
       say "SIGKILL target, $down s down"
       kill -KILL "$target"; wait "$target" 2>/dev/null || true
       sleep "$down"
       start_target "$port" ;;
    1) t=$(rnd_secs 2500 6000); say "SIGSTOP target for $t s (past the NOP-Out timeout)"
       kill -STOP "$target"; sleep "$t"; kill -CONT "$target" ;;
    2) t=$(rnd_secs 100 900); say "SIGSTOP target for $t s"
       kill -STOP "$target"; sleep "$t"; kill -CONT "$target" ;;
    3) say "SIGHUP target"; kill -HUP "$target" ;;
    4) say "SIGUSR1 target and vcp serve"; kill -USR1 "$target"; kill -USR1 "$serve" ;;
    5) say "SIGSTOP vcp serve for 1 s"; kill -STOP "$serve"; sleep 1; kill -CONT "$serve" ;;
    6) say "SIGKILL iscsi-perf, started again"
       kill -KILL "$perf"; wait "$perf" 2>/dev/null || true
       start_perf ;;
    7) if [[ $lun2 == on ]]; then lun2=off; else lun2=on; fi
       write_config
       say "SIGHUP target, LUN 2 $lun2"; kill -HUP "$target" ;;
    8) n=$((RANDOM % 4096 + 1))
       say "a connection of $n random bytes"
       "${in_ini[@]}" bash -c 'exec 9<>"/dev/tcp/$1/$2" && head -c "$3" /dev/urandom >&9' _ "$addr" "$port" "$n" \
         2>/dev/null || true ;;
    9) t=$(rnd_secs 300 6000); say "the link silent for $t s"
       netns_cut; sleep "$t"; say "link back ($(netns_drops) packets dropped)"; netns_heal ;;
    10) t=$(rnd_secs 2000 5000) pct=$((2 + RANDOM % 8)); say "the link dropping $pct% for $t s"
        netns_loss "$pct"; sleep "$t"; say "link clean again ($(netns_drops) packets dropped)"; netns_heal ;;
  esac
done
rc=0
wait "$bench" || rc=$?
bench=
tail -n 4 "$work/bench.log"
kill -KILL "$perf"; wait "$perf" 2>/dev/null || true; perf=
[[ $rc -eq 0 ]] || fail "vcp bench exited with $rc"
grep -q "verify: .* ok" "$work/bench.log" || fail "no clean verify"
grep -q " 0 errors" "$work/bench.log" || fail "I/O errors"
kill -TERM "$serve"
rc=0; wait "$serve" || rc=$?; serve=
[[ $rc -eq 0 ]] || fail "vcp serve exited with $rc on SIGTERM"
kill -TERM "$target"
rc=0; wait "$target" || rc=$?; target=
[[ $rc -eq 0 ]] || fail "vcp target exited with $rc on SIGTERM"
if grep -l -E "Sanitizer|runtime error|Assertion|terminate called|Segmentation|core dumped" "$work"/*.log; then
  fail "a log above shows a crash or a sanitizer report"
fi
reconnects=$(grep -c "session reinstated" "$work/serve.log" || true)
say "PASS: $faults faults ($((starts - 1)) target restarts, $((perfs - 1)) iscsi-perf restarts), $reconnects session reinstatements, verify clean"
