# shellcheck shell=bash
# Starting and stopping tgt's tgtd for tests and benchmarks (sourced, not run).
#
#   source scripts/lib/tgtd.sh
#   tgtd_start LOGFILE [CPU]       # tgtd on $TGTD_ADDR:$TGTD_PORT, control port $TGTD_CTL
#                                  # (TGTD_ADDR: 127.0.0.1 unless set; TGTD_NETNS set: tgtd
#                                  # runs in that network namespace, scripts/lib/netns.sh)
#   tgtd_target TID IQN LUN IMAGE  # a target with one file-backed LUN, open to every initiator
#   tgt --op ...                   # tgtadm on this tgtd (--lld iscsi)
#   tgtd_stop                      # in the caller's EXIT trap
#
# tgtd listens on a free TCP port and on a free control socket /var/run/tgtd/socket.N
# (N in 100..499, so several tests and sessions can run their own tgtd at once). A tgtd with
# targets configured ignores SIGTERM: it is stopped with SIGKILL by pid, and its control socket
# and lock file, which a killed tgtd leaves behind, are removed. Failures call the caller's
# `die` if it has one, else print and exit 1.

TGTD_PID=""
TGTD_PORT=""
TGTD_CTL=""
TGTD_ADDR=${TGTD_ADDR:-127.0.0.1}
TGTD_NETNS=${TGTD_NETNS:-}

_tgtd_die() {
  if declare -F die >/dev/null; then die "$*"; fi
  echo "tgtd: $*" >&2
  exit 1
}

for _tgtd_tool in tgtd tgtadm python3 ss; do
  command -v "$_tgtd_tool" >/dev/null ||
    _tgtd_die "$_tgtd_tool not found (scripts/install-deps.sh installs tgt, python3, iproute2)"
done

tgtd_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

_tgtd_free_ctl() {
  local n
  for _ in $(seq 1 200); do
    n=$((100 + RANDOM % 400))
    if [[ ! -e /var/run/tgtd/socket.$n ]] && ! ss -xl 2>/dev/null | grep -q "socket\.$n\b"; then
      echo "$n"
      return 0
    fi
  done
  return 1
}

tgt() { tgtadm -C "$TGTD_CTL" --lld iscsi "$@"; }

# tgtd_start LOGFILE [CPU]: starts tgtd (pinned to CPU if given) and waits until it answers
# tgtadm. Keeps $TGTD_PORT and $TGTD_CTL across calls, so a restarted tgtd comes back on the
# same portal; retries while the port is still held by the previous tgtd's connections.
tgtd_start() {
  local log=${1:?tgtd_start LOGFILE [CPU]} cpu=${2:-}
  local -a pin=()
  [[ -n "$cpu" ]] && pin=(taskset -c "$cpu")
  [[ -n "$TGTD_NETNS" ]] && pin=(ip netns exec "$TGTD_NETNS" "${pin[@]}")
  [[ -n "$TGTD_PORT" ]] || TGTD_PORT=$(tgtd_free_port)
  [[ -n "$TGTD_CTL" ]] || TGTD_CTL=$(_tgtd_free_ctl) || _tgtd_die "no free tgtd control port in 100..499"
  for _ in $(seq 1 50); do
    "${pin[@]}" tgtd -f --iscsi portal=$TGTD_ADDR:$TGTD_PORT -C "$TGTD_CTL" >>"$log" 2>&1 &
    TGTD_PID=$!
    for _ in $(seq 1 50); do
      if tgt --op show --mode sys >/dev/null 2>&1; then return 0; fi
      kill -0 "$TGTD_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$TGTD_PID" 2>/dev/null || true
    wait "$TGTD_PID" 2>/dev/null || true
    TGTD_PID=""
    sleep 0.2
  done
  tail -n 20 "$log" >&2 2>/dev/null || true
  _tgtd_die "tgtd did not start on $TGTD_ADDR:$TGTD_PORT -C $TGTD_CTL"
}

# tgtd_target TID IQN LUN IMAGE: a target, one LUN on IMAGE (tgtd keeps LUN 0 for its
# controller), bound to every initiator.
tgtd_target() {
  local tid=${1:?} iqn=${2:?} lun=${3:?} image=${4:?}
  tgt --op new --mode target --tid "$tid" -T "$iqn" || _tgtd_die "tgtadm: new target $iqn"
  tgt --op new --mode logicalunit --tid "$tid" --lun "$lun" -b "$image" || _tgtd_die "tgtadm: LUN $lun on $image"
  tgt --op bind --mode target --tid "$tid" -I ALL || _tgtd_die "tgtadm: bind target $tid"
}

# tgtd_kill: SIGKILL (after SIGCONT, in case a test stopped it) and reap; keeps the control
# socket name so tgtd_start can bring it back on the same port.
tgtd_kill() {
  [[ -n "$TGTD_PID" ]] || return 0
  kill -CONT "$TGTD_PID" 2>/dev/null || true
  kill -KILL "$TGTD_PID" 2>/dev/null || true
  wait "$TGTD_PID" 2>/dev/null || true
  TGTD_PID=""
  [[ -n "$TGTD_CTL" ]] && rm -f "/var/run/tgtd/socket.$TGTD_CTL" "/var/run/tgtd/socket.$TGTD_CTL.lock"
  return 0
}

# tgtd_stop: for EXIT traps; never fails.
tgtd_stop() {
  tgtd_kill
  TGTD_CTL=""
  return 0
}
