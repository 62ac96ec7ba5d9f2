#!/usr/bin/env bash
# Live migration of a Linux guest whose disk is a VCP, the way QEMU users migrate on one host
# with shared storage: two `vcp serve` processes on the same file image, a source QEMU on the
# first, a destination QEMU (-incoming) on the second. The guest (scripts/guest/guest-init.sh,
# vcptest=migrate) reads a known pattern in a loop and checks every round while QMP migrates it;
# the rounds go on at the destination. It proves the dirty page log (docs/channel.md, "Live
# migration"): QEMU refuses to migrate without VHOST_F_LOG_ALL, and a page the VCP wrote during
# the migration that the log missed reaches the destination stale (a wrong checksum there).
#
#   tests/integration/migration_test.sh
#
# Environment: VCP_BIN (default build/vcp), VCP_GUEST_DIR (initramfs cache), MIGRATE_S (how long
# the guest reads, default 30).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "migration_test: $*" >&2; exit 1; }

vcp=${VCP_BIN-$repo/build/vcp}
{ [ -n "$vcp" ] && [ -x "$vcp" ]; } || die "vcp is not built ('$vcp')"
for tool in qemu-system-x86_64 python3 truncate; do
  command -v "$tool" >/dev/null || die "'$tool' is missing on the host"
done
migrate_s=${MIGRATE_S:-30}

# shellcheck source=scripts/lib/scratch.sh
source "$repo/scripts/lib/scratch.sh"
scratch_init migration KILL

show_logs() {
  for f in serve-src serve-dst qemu-src qemu-dst; do
    echo "--- $f:" >&2
    tail -n 40 "$work/$f.log" >&2 || true
  done
  for f in console-src console-dst; do
    echo "--- $f (test lines and the end):" >&2
    { grep -a 'VCPTEST' "$work/$f.log" || true; tail -n 80 "$work/$f.log"; } | tr -d '\r' >&2 || true
  done
}
fail() {
  show_logs
  die "$*"
}

img="$work/disk.img"
truncate -s 256M "$img"
for side in src dst; do
  "$vcp" serve --socket "$work/$side.sock" --backend "file:path=$img" --cpu 1 >"$work/serve-$side.log" 2>&1 &
  pids+=($!)
done
for side in src dst; do
  for _ in $(seq 100); do [ -S "$work/$side.sock" ] && break; sleep 0.1; done
  [ -S "$work/$side.sock" ] || fail "vcp serve ($side) did not listen within 10 s"
done

initrd="${VCP_GUEST_DIR:-$repo/build/guest}/initramfs.cpio.gz"
"$repo/scripts/guest/build-initramfs.sh" "$initrd"
kernel=$(cat "$initrd.kernel")

# The same machine on both sides (as migration requires), each with its own disk socket,
# console and QMP socket. loglevel=5 lets kernel warnings through `quiet`: a guest that fails
# at the destination then shows what went before.
qemu_cmd() {
  local side=$1
  # shellcheck disable=SC2054  # the commas are inside QEMU option values
  cmd=(qemu-system-x86_64 -accel tcg -m 512 -smp 2
       -object "memory-backend-memfd,id=mem,size=512M,share=on" -numa node,memdev=mem
       -chardev "socket,id=vhost0,path=$work/$side.sock"
       -device "vhost-user-blk-pci,chardev=vhost0,num-queues=1"
       -nodefaults -display none -serial "file:$work/console-$side.log" -no-reboot
       -qmp "unix:$work/qmp-$side.sock,server=on,wait=off"
       -kernel "$kernel" -initrd "$initrd"
       -append "console=ttyS0 quiet loglevel=5 panic=-1 vcptest=migrate vcpqueues=1 vcpdiscard=no vcpwatchdog=200 vcpmigrate_s=$migrate_s")
}
qemu_cmd src
"${cmd[@]}" </dev/null >"$work/qemu-src.log" 2>&1 &
src_qemu=$!
pids+=("$src_qemu")
qemu_cmd dst
cmd+=(-incoming "unix:$work/migration.sock")
"${cmd[@]}" </dev/null >"$work/qemu-dst.log" 2>&1 &
dst_qemu=$!
pids+=("$dst_qemu")

# The guest boots on the source and starts its readers.
for _ in $(seq 1200); do
  grep -a -q 'VCPTEST: migrate ready' "$work/console-src.log" 2>/dev/null && break
  grep -a -q 'VCPTEST: FAIL' "$work/console-src.log" 2>/dev/null && fail "the guest failed before the migration"
  kill -0 "$src_qemu" 2>/dev/null || fail "the source QEMU exited before the migration"
  sleep 0.1
done
grep -a -q 'VCPTEST: migrate ready' "$work/console-src.log" || fail "the guest was not ready within 120 s"
sleep 3  # some rounds on the source first

# QMP: migrate, wait for the end, stop the source.
python3 - "$work/qmp-src.sock" "unix:$work/migration.sock" <<'EOF' || fail "the migration failed"
import json, socket, sys, time

def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rw")
    json.loads(f.readline())  # greeting
    return f

def call(f, cmd, **args):
    f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            if "error" in r:
                raise SystemExit(f"{cmd}: {r['error']}")
            return r["return"]

f = connect(sys.argv[1])
call(f, "qmp_capabilities")
# A downtime limit generous enough that QEMU stops the guest after its first pass over memory
# (the pass the readers run through, so the VCP's writes during it still need the log); why not
# less: tests/integration/README.md (an extra live pass exposes QEMU 7.2 TCG's dirty tracking).
call(f, "migrate-set-parameters", **{"max-bandwidth": 4 << 30, "downtime-limit": 2000})
t0 = time.time()
call(f, "migrate", uri=sys.argv[2])
while True:
    st = call(f, "query-migrate")
    status = st.get("status")
    if status == "completed":
        ram = st.get("ram", {})
        print(f"migration_test: migrated in {time.time() - t0:.1f} s: {ram.get('transferred', 0) >> 20} MiB sent, "
              f"{ram.get('dirty-sync-count', '?')} dirty syncs, downtime {st.get('downtime', '?')} ms")
        break
    if status in ("failed", "cancelled"):
        raise SystemExit(f"migration {status}: {st.get('error-desc', '')}")
    if time.time() - t0 > 180:
        raise SystemExit(f"migration still {status} after 180 s")
    time.sleep(0.2)
call(f, "quit")
EOF

# The guest goes on at the destination, finishes its rounds and powers off.
for _ in $(seq 1800); do
  kill -0 "$dst_qemu" 2>/dev/null || break
  grep -a -q -E 'VCPTEST: (PASS|FAIL)' "$work/console-dst.log" 2>/dev/null && sleep 2 && break
  sleep 0.1
done
grep -a -q 'VCPTEST: PASS' "$work/console-dst.log" || fail "no VCPTEST: PASS from the guest at the destination"
grep -a 'VCPTEST: migrate' "$work/console-dst.log" | tr -d '\r'

# The source VCP logged while the guest moved; both VCPs are still up.
grep -q 'dirty page logging on' "$work/serve-src.log" || fail "the source VCP never turned dirty logging on"
grep -q 'dirty log of' "$work/serve-src.log" || fail "the source VCP never mapped a dirty log"
if grep -q 'could not be marked' "$work/serve-src.log"; then fail "the source VCP missed pages"; fi
for i in 0 1; do kill -0 "${pids[$i]}" 2>/dev/null || fail "a vcp serve exited during the test"; done
echo "migration_test: source VCP: $(grep -c 'dirty' "$work/serve-src.log") dirty-log events; destination VCP:"
grep -E 'queue started|queue stopped' "$work/serve-dst.log" | tail -n 2
echo "migration_test: PASS"
