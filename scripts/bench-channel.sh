#!/bin/bash
# The channel's benchmarks side by side in one run, with their ratios:
#   round trip (qd 1, both sides polling; and with interrupts) / cache-line ping-pong,
#   batched null-request IOPS (qd 128) / io_uring NOP IOPS (batches of 128),
#   IOPS per server CPU-second of `vcp serve` / qemu-storage-daemon's (same libvcp client).
# The client (and the floor's measuring thread) runs on CPU 0, the server process on CPU 1.
#
#   scripts/bench-channel.sh [BUILD_DIR]     (default: $BUILD, else build; needs bench_floor, bench_channel)
# Prints a markdown table for docs/performance.md; raw JSON stays in $OUT (default a temp dir).
set -euo pipefail
build=${1:-${BUILD:-build}}
floor=$build/bench/bench_floor
channel=$build/bench/bench_channel
for b in "$floor" "$channel"; do
  [ -x "$b" ] || { echo "bench-channel: $b not built (cmake --build $build --target bench_floor bench_channel)" >&2; exit 2; }
done
command -v qemu-storage-daemon >/dev/null || { echo "bench-channel: qemu-storage-daemon is needed" >&2; exit 2; }
out=${OUT:-$(mktemp -d /tmp/vcp-bench-channel.XXXXXX)}
mkdir -p "$out"

export VCP_BENCH_CPUS=0,1  # client / measuring side, server / echo side
echo "bench-channel: floor ..." >&2
"$floor" --benchmark_filter='CacheLinePingPong|IoUringNopBatch/128' --benchmark_format=json >"$out/floor.json"
echo "bench-channel: channel ..." >&2
"$channel" --benchmark_format=json >"$out/channel.json"

python3 - "$out/floor.json" "$out/channel.json" <<'PY'
import json, sys, platform, subprocess
floor = {b["name"].split("/")[0] + ("/128" if "/128" in b["name"] else ""): b for b in json.load(open(sys.argv[1]))["benchmarks"]}
chan = {b["name"].split("/")[0]: b for b in json.load(open(sys.argv[2]))["benchmarks"]}
def ns(b): return b["real_time"] * {"ns": 1, "us": 1e3, "ms": 1e6}[b["time_unit"]]
pp = ns(floor["CacheLinePingPong"])
nop = floor["IoUringNopBatch/128"]["ops_per_s"]
rt_poll, rt_irq = ns(chan["ChannelRoundTrip_polling"]), ns(chan["ChannelRoundTrip_interrupts"])
vcp, qsd = chan["ChannelBatch128_vcp"], chan["ChannelBatch128_qsd"]
model = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?")
load = open("/proc/loadavg").read().split()[:3]
print(f"machine: {model}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs, kernel {platform.release()}, load average {' '.join(load)}")
print("client on CPU 0, server process on CPU 1\n")
print("| measurement | value | anchor | ratio | aim |")
print("| --- | --- | --- | --- | --- |")
print(f"| null round trip qd 1, both polling | {rt_poll:.0f} ns | ping-pong {pp:.0f} ns | {rt_poll/pp:.2f}x | <= 2x |")
print(f"| null round trip qd 1, interrupts | {rt_irq:.0f} ns | ping-pong {pp:.0f} ns | {rt_irq/pp:.2f}x | (none) |")
print(f"| batched null reads qd 128, vcp serve | {vcp['items_per_second']/1e3:.0f}k IOPS | io_uring NOP {nop/1e6:.2f}M ops/s | {vcp['items_per_second']/nop:.2f}x | >= 1x |")
print(f"| batched null reads qd 128, qemu-storage-daemon | {qsd['items_per_second']/1e3:.0f}k IOPS | vcp serve | {qsd['items_per_second']/vcp['items_per_second']:.2f}x of vcp | |")
print(f"| IOPS per server CPU-second, vcp serve | {vcp['ops_per_server_cpu_s']/1e3:.0f}k ({vcp['server_cpu_ns_per_op']:.0f} ns/op) | qsd {qsd['ops_per_server_cpu_s']/1e3:.0f}k ({qsd['server_cpu_ns_per_op']:.0f} ns/op) | {vcp['ops_per_server_cpu_s']/qsd['ops_per_server_cpu_s']:.2f}x | >= 1.5x |")
print(f"| client CPU per op (vcp / qsd run) | {vcp['client_cpu_ns_per_op']:.0f} / {qsd['client_cpu_ns_per_op']:.0f} ns | | | |")
PY
echo "bench-channel: raw results in $out" >&2
