# shellcheck shell=bash
# A test's scratch directory and the processes it starts (sourced, not run).
#
#   source scripts/lib/scratch.sh
#   scratch_init NAME [SIGNAL]   # $work: a new temporary directory; $pids: empty
#   ... pids+=($!) for each process started ...
#
# On exit (an interrupt or SIGTERM included) every pid in $pids gets SIGNAL (default TERM) and is
# waited for, then $work is removed.
scratch_init() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/vcp-$1.XXXXXX")
  pids=()
  _scratch_signal=${2:-TERM}
  trap _scratch_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
_scratch_cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -"$_scratch_signal" "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
