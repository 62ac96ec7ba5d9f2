#!/bin/bash
# libvcp against real back-ends in their own processes: starts one server in a temporary folder,
# runs `vcp bench` (with --verify where the device keeps data) and the client's functional
# tests (client_peer_tests) against it, and stops the server whatever happens.
#
#   client_test.sh SERVER BACKEND       SERVER: vcp | qsd; BACKEND: null | ram | file
# Environment: VCP_BIN (the vcp binary), VCP_CLIENT_PEER_TESTS (client_peer_tests binary).
set -u
server=${1:?server: vcp or qsd}
backend=${2:?backend: null, ram or file}
: "${VCP_BIN:?VCP_BIN must name the vcp binary}"
: "${VCP_CLIENT_PEER_TESTS:?VCP_CLIENT_PEER_TESTS must name client_peer_tests}"

dir=$(mktemp -d /tmp/vcp-client-test.XXXXXX)
sock=$dir/sock
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "client_test: FAIL: $*" >&2; echo "--- server log:" >&2; cat "$dir/server.log" >&2; exit 1; }

keeps_data=1
discard_zeroes=0
case "$server/$backend" in
  vcp/null) args=(--backend null:size=1G); keeps_data=0 ;;
  vcp/ram) args=(--backend ram:size=256M); discard_zeroes=1 ;;
  vcp/file) truncate -s 256M "$dir/img"; args=(--backend "file:path=$dir/img"); discard_zeroes=1 ;;
  qsd/null) blockdev="driver=null-co,node-name=n0,size=1073741824"; keeps_data=0 ;;
  qsd/file) truncate -s 256M "$dir/img"; blockdev="driver=file,node-name=n0,filename=$dir/img" ;;
  *) echo "client_test: unknown case $server/$backend" >&2; exit 2 ;;
esac

if [ "$server" = vcp ]; then
  "$VCP_BIN" serve --socket "$sock" "${args[@]}" --queues 2 >"$dir/server.log" 2>&1 &
else
  command -v qemu-storage-daemon >/dev/null || { echo "client_test: qemu-storage-daemon not installed" >&2; exit 1; }
  qemu-storage-daemon --blockdev "$blockdev" \
    --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on,num-queues=2" \
    >"$dir/server.log" 2>&1 &
fi
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
[ -S "$sock" ] || fail "the server did not come up"

# The servers serve one front-end at a time: each step connects after the previous one left.
verify=()
[ "$keeps_data" = 1 ] && verify=(--verify)
"$VCP_BIN" bench --socket "$sock" --rw randrw --bs 4k --qd 16 --jobs 2 --time 2 --size 64M "${verify[@]}" \
  || fail "vcp bench randrw ${verify[*]}"
"$VCP_BIN" bench --socket "$sock" --rw write --bs 1M --qd 4 --time 1 --size 64M "${verify[@]}" \
  || fail "vcp bench write 1M ${verify[*]}"
"$VCP_BIN" bench --socket "$sock" --rw read --bs 1M --qd 4 --time 1 --size 64M "${verify[@]}" \
  || fail "vcp bench read 1M ${verify[*]}"
"$VCP_BIN" bench --socket "$sock" --rw randread --bs 512 --qd 32 --time 1 --poll always --json \
  || fail "vcp bench randread 512 poll always"
if [ "$keeps_data" = 0 ]; then
  # A device that keeps nothing must fail verification: proves --verify checks what it reads.
  if "$VCP_BIN" bench --socket "$sock" --rw randrw --bs 4k --qd 8 --time 1 --size 1M --verify >"$dir/neg.log" 2>&1; then
    fail "vcp bench --verify passed on a device that keeps no data"
  fi
  grep -q "verify failed: LBA" "$dir/neg.log" || fail "vcp bench --verify did not name the LBA"
fi
VCP_TEST_SOCKET=$sock VCP_TEST_KEEPS_DATA=$keeps_data VCP_TEST_DISCARD_ZEROES=$discard_zeroes \
  "$VCP_CLIENT_PEER_TESTS" || fail "client_peer_tests"
kill -0 "$pid" 2>/dev/null || fail "the server died"
echo "client_test: $server/$backend passed"
