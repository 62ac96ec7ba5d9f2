# shellcheck shell=bash
# A two-host network for tests (sourced, not run): two network namespaces of the test's own,
# joined by a veth pair, and faults put on the link with nftables. Nothing touches the
# machine's own namespace but the two names it creates (removed by netns_cleanup).
#
#   source scripts/lib/netns.sh
#   netns_pair             # $NETNS_T (the target, $NETNS_T_ADDR 10.77.0.1) and $NETNS_I
#                          # (the initiator, $NETNS_I_ADDR 10.77.0.2); `in_t CMD...` and
#                          # `in_i CMD...` run a command in one of them (exec'd: same pid)
#   netns_cut              # the link goes silent: every packet into or out of $NETNS_T is
#                          # dropped (a pulled cable or a dead switch: no RST, no ICMP)
#   netns_loss PCT         # PCT per cent of the packets into and out of $NETNS_T dropped
#   netns_heal             # the link as it was (drops off; a rate stays)
#   netns_rate RATE        # the link carries RATE (tc's units: 8mbit) each way (tbf)
#   netns_drops            # how many packets the fault has dropped so far
#   netns_retransmits NS   # TCP segments NS has sent again (TcpRetransSegs)
#   netns_cleanup          # in the caller's EXIT trap; never fails
# Needs root, iproute2 and nftables (scripts/install-deps.sh). Failures call the caller's
# `die` if it has one, else print and exit 1.

NETNS_T=""
NETNS_I=""
NETNS_VT=""  # the veth ends, in $NETNS_T and $NETNS_I
NETNS_VI=""
NETNS_T_ADDR=10.77.0.1
NETNS_I_ADDR=10.77.0.2

_netns_die() {
  if declare -F die >/dev/null; then die "$*"; fi
  echo "netns: $*" >&2
  exit 1
}

for _netns_tool in ip nft nstat; do
  command -v "$_netns_tool" >/dev/null ||
    _netns_die "$_netns_tool not found (scripts/install-deps.sh installs iproute2 and nftables)"
done
[[ $(id -u) -eq 0 ]] || _netns_die "network namespaces need root"

in_t() { exec_in "$NETNS_T" "$@"; }
in_i() { exec_in "$NETNS_I" "$@"; }
exec_in() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

netns_pair() {
  # Named after this shell's pid: tests running at once get namespaces of their own (the
  # addresses may repeat: each pair is a network of its own).
  NETNS_T="vcp-t-$$" NETNS_I="vcp-i-$$"
  local vt="vcpt$$" vi="vcpi$$"
  NETNS_VT=$vt NETNS_VI=$vi
  ip netns add "$NETNS_T" || _netns_die "ip netns add $NETNS_T"
  ip netns add "$NETNS_I" || _netns_die "ip netns add $NETNS_I"
  ip link add "$vt" netns "$NETNS_T" type veth peer name "$vi" netns "$NETNS_I" ||
    _netns_die "cannot make a veth pair"
  if ! { ip -n "$NETNS_T" addr add "$NETNS_T_ADDR/24" dev "$vt" &&
    ip -n "$NETNS_I" addr add "$NETNS_I_ADDR/24" dev "$vi" &&
    ip -n "$NETNS_T" link set lo up && ip -n "$NETNS_I" link set lo up &&
    ip -n "$NETNS_T" link set "$vt" up && ip -n "$NETNS_I" link set "$vi" up; }; then
    _netns_die "cannot set up the veth pair"
  fi
  # Up when a connection crosses it (IPv4 needs no duplicate address detection).
  local ok=""
  for _ in $(seq 50); do
    if in_i python3 - "$NETNS_T_ADDR" <<'PY' 2>/dev/null; then ok=1; break; fi
import socket, sys
s = socket.socket(); s.settimeout(0.2)
try:
    s.connect((sys.argv[1], 9))
except ConnectionRefusedError:
    sys.exit(0)  # the other side answered (RST): the link carries packets
sys.exit(1)
PY
    sleep 0.1
  done
  [[ -n $ok ]] || _netns_die "the veth pair does not carry packets"
}

# The fault table, in $NETNS_T: one rule in each direction.
_netns_fault() {
  local verdict=$1
  netns_heal
  in_t nft -f - <<EOF || _netns_die "nft: cannot put the fault on the link"
table inet vcp_fault {
  counter dropped { }
  chain in { type filter hook input priority 0; policy accept; iifname "lo" accept; $verdict counter name "dropped" drop; }
  chain out { type filter hook output priority 0; policy accept; oifname "lo" accept; $verdict counter name "dropped" drop; }
}
EOF
}

netns_cut() { _netns_fault ""; }
netns_loss() { _netns_fault "numgen random mod 100 < ${1:?netns_loss PCT}"; }
netns_heal() { in_t nft delete table inet vcp_fault 2>/dev/null || true; }
netns_rate() {
  local rate=${1:?netns_rate RATE}
  # A queue of up to 1 s at the rate: deep enough for TCP to fill the link, as a slow
  # router's buffer would be.
  if ! { in_t tc qdisc replace dev "$NETNS_VT" root tbf rate "$rate" burst 32kb latency 1000ms &&
    in_i tc qdisc replace dev "$NETNS_VI" root tbf rate "$rate" burst 32kb latency 1000ms; }; then
    _netns_die "tc: cannot limit the link to $rate"
  fi
}
netns_drops() {
  in_t nft list counter inet vcp_fault dropped 2>/dev/null | sed -n 's/.*packets \([0-9]*\).*/\1/p'
}
netns_retransmits() {
  exec_in "${1:?netns_retransmits NS}" nstat -az TcpRetransSegs | awk '$1 == "TcpRetransSegs" {print $2}'
}

netns_cleanup() {
  [[ -n "$NETNS_T" ]] && ip netns del "$NETNS_T" 2>/dev/null
  [[ -n "$NETNS_I" ]] && ip netns del "$NETNS_I" 2>/dev/null
  NETNS_T="" NETNS_I=""
  return 0
}
