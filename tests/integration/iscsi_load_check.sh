# shellcheck shell=bash
# Shared by tgtd.sh and initiator_vcp_target.sh (sourced): a verified load run of the iscsi
# backend that must stay on its first session, and the counters of its closing log line.
#
#   clean_load LOG URL SECONDS [QD]   runs `$IO_TEST load`, prints its output; calls the
#                                     caller's `die` unless it ended with VERIFY OK and the
#                                     session was never lost
#   disturbed_load LOG URL SECONDS DISTURB
#                                     runs `$IO_TEST load` with quick recovery options in the
#                                     background and the command DISTURB 3 s in; calls `die`
#                                     unless it ended with VERIFY OK after a reinstatement
#   q0_stat LOG NAME                  the number before NAME in queue 0's closing line, e.g.
#                                     q0_stat LOG "reconnects" (empty when there is none)
# IO_WRAP (an array, empty unless the caller sets it) goes before `$IO_TEST`: e.g.
# (ip netns exec NS) to run the initiator in a network namespace.
IO_WRAP=()

clean_load() {
  local log=$1 url=$2 secs=$3 qd=${4:-16}
  "${IO_WRAP[@]}" "$IO_TEST" load "$url" "$secs" "$qd" >"$log" 2>&1 || { cat "$log" >&2; die "load run failed"; }
  cat "$log" >&2
  grep -q "VERIFY OK" "$log" || die "no clean verify"
  ! grep -q "connection lost" "$log" || die "the session was dropped"
  [[ "$(q0_stat "$log" reconnects)" == 0 ]] || die "the session reconnected"
}

q0_stat() {
  grep "iscsi q0: .* PDUs received" "$1" | grep -o "[0-9]* $2" | head -n 1 | cut -d' ' -f1
}

disturbed_load() {
  local log=$1 url=$2 secs=$3 disturb=$4
  "${IO_WRAP[@]}" "$IO_TEST" load "$url,timeout=2,nop_interval=1,login_timeout=2" "$secs" >"$log" 2>&1 &
  local io=$!
  sleep 3
  $disturb
  local rc=0
  wait "$io" || rc=$?
  cat "$log" >&2
  [[ $rc -eq 0 ]] || die "load run failed (exit $rc)"
  grep -q "session reinstated" "$log" || die "no session reinstatement seen"
  grep -q "VERIFY OK" "$log" || die "no clean verify"
}
