# shellcheck shell=bash
# Shared by tgtd.sh and initiator_vcp_target.sh (sourced): a verified load run of the iscsi
# backend that must stay on its first session, and the counters of its closing log line.
#
#   clean_load LOG URL SECONDS [QD]   runs `$IO_TEST load`, prints its output; calls the
#                                     caller's `die` unless it ended with VERIFY OK and the
#                                     session was never lost
#   q0_stat LOG NAME                  the number before NAME in queue 0's closing line, e.g.
#                                     q0_stat LOG "reconnects" (empty when there is none)

clean_load() {
  local log=$1 url=$2 secs=$3 qd=${4:-16}
  "$IO_TEST" load "$url" "$secs" "$qd" >"$log" 2>&1 || { cat "$log" >&2; die "load run failed"; }
  cat "$log" >&2
  grep -q "VERIFY OK" "$log" || die "no clean verify"
  ! grep -q "connection lost" "$log" || die "the session was dropped"
  [[ "$(q0_stat "$log" reconnects)" == 0 ]] || die "the session reconnected"
}

q0_stat() {
  grep "iscsi q0: .* PDUs received" "$1" | grep -o "[0-9]* $2" | head -n 1 | cut -d' ' -f1
}
