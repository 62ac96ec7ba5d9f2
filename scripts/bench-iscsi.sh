#!/bin/bash
# The iSCSI initiator against its peers on one tgtd LUN, side by side in one run:
#   vcp       vcp bench (CPU 0) -> vcp serve --backend iscsi:// (CPU 1)        the VCP
#   libiscsi  iscsi-perf (CPU 0)                                              reads only
#   qsd       vcp bench (CPU 0) -> qemu-storage-daemon --blockdev driver=iscsi exported over
#             vhost-user-blk (CPU 1)                                          libiscsi in QEMU
#   inproc    vcp bench --backend iscsi:// (CPU 0)                            no channel
# Workloads: 4 KiB random read, 128 KiB sequential read and write, qd $QD; then the channel's
# overhead curve (vcp against inproc) for random reads of 512 B, 4, 16 and 128 KiB.
# CPU per I/O is the initiator side's, utime + stime over the run: from /proc/PID/stat of the
# server process (vcp serve, qsd: login and vhost-user set-up included) and from getrusage of
# the client process (iscsi-perf, vcp bench --backend). tgtd (17-18 us CPU per 4 KiB read,
# ../shared/peers.md) is not pinned: it shares both CPUs with everything else.
#
#   scripts/bench-iscsi.sh [BUILD_DIR]        (default: $BUILD, else build; needs BUILD_DIR/vcp)
# Every run is repeated REPS times, round robin over the initiators so that a disturbance from
# whatever else the machine runs is spread over all of them; the table shows medians.
# Environment: SECS (seconds per run, default 10), REPS (3), QD (32), CURVE (1: also the curve),
# POLL (--poll of vcp serve and vcp bench, default never), BATCH (vcp bench --batch: completions
# reaped before issuing more, for the VCP, qsd and in-process runs alike; default 1),
# COALESCE ("US COUNT DEPTH": vcp serve --coalesce-us US --coalesce-count COUNT
# --coalesce-depth DEPTH, interrupt coalescing in the VCP; "0" turns it off; default empty:
# vcp serve's defaults),
# OUT (raw results; default a temp dir),
# WHO (default "vcp libiscsi qsd inproc"), WORKLOADS (default "randread:4k read:128k write:128k").
# Prints a markdown table for docs/performance.md.
set -euo pipefail
build=${1:-${BUILD:-build}}
vcp=$(realpath "$build/vcp")
SECS=${SECS:-10}
REPS=${REPS:-3}
QD=${QD:-32}
CURVE=${CURVE:-1}
POLL=${POLL:-never}
BATCH=${BATCH:-1}
COALESCE=${COALESCE:-}
coalesce_args=()
if [ -n "$COALESCE" ]; then
  read -r c_us c_count c_depth <<<"$COALESCE"
  coalesce_args=(--coalesce-us "$c_us" --coalesce-count "${c_count:-0}" --coalesce-depth "${c_depth:-0}")
fi
WHO=${WHO:-vcp libiscsi qsd inproc}
WORKLOADS=${WORKLOADS:-randread:4k read:128k write:128k}
IQN=iqn.2024-01.org.vcp.bench:lun1
for tool in iscsi-perf qemu-storage-daemon taskset python3; do
  command -v "$tool" >/dev/null || { echo "bench-iscsi: $tool is needed" >&2; exit 2; }
done
[ -x "$vcp" ] || { echo "bench-iscsi: $vcp not built (cmake --build $build --target vcp)" >&2; exit 2; }

work=$(mktemp -d /tmp/vcp-bench-iscsi.XXXXXX)
out=${OUT:-$(mktemp -d /tmp/vcp-bench-iscsi-results.XXXXXX)}
mkdir -p "$out"
server_pid=""
source "$(dirname "$0")/lib/tgtd.sh"
stop_pid() {  # PID: SIGTERM, then SIGKILL after 5 s
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  [ -n "$server_pid" ] && stop_pid "$server_pid"
  tgtd_stop
  rm -rf "$work"
}
trap cleanup EXIT

# tgtd (scripts/lib/tgtd.sh) with one 256 MiB file LUN, written through so that reads come
# from the page cache rather than from holes.
dd if=/dev/zero of="$work/lun.img" bs=1M count=256 status=none
tgtd_start "$work/tgtd.log"
tgtd_target 1 "$IQN" 1 "$work/lun.img"
url="iscsi://127.0.0.1:$TGTD_PORT/$IQN/1"

cpu_ticks() {  # utime + stime of PID (all threads), in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
wait_socket() {
  for _ in $(seq 200); do [ -S "$1" ] && return 0; kill -0 "$server_pid" 2>/dev/null || break; sleep 0.05; done
  echo "bench-iscsi: no server on $1" >&2; cat "$work/server.log" >&2; exit 1
}
# result NAME WORKLOAD BS IOS SECONDS CPU_SECONDS [CLIENT_CPU_SECONDS]: one line of raw results
# (the client's CPU for a served run: vcp bench driving the VCP or qsd)
result() { echo "$1 $2 $3 $4 $5 $6 ${7:-}" >>"$out/results.txt"; }
bench_args() {  # WORKLOAD BS -> vcp bench arguments
  case "$1" in
    randread) echo "--rw randread --bs $2 --qd $QD --batch $BATCH --time $SECS --poll $POLL --json" ;;
    read) echo "--rw read --bs $2 --qd $QD --batch $BATCH --time $SECS --poll $POLL --json" ;;
    write) echo "--rw write --bs $2 --qd $QD --batch $BATCH --time $SECS --poll $POLL --json" ;;
  esac
}
json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }

# A server (vcp serve or qsd) on CPU 1 driven by vcp bench on CPU 0; the server's CPU counts.
run_served() {  # NAME WORKLOAD BS SERVER-COMMAND...
  local name=$1 workload=$2 bs=$3; shift 3
  local sock=$work/$name.sock
  rm -f "$sock"
  taskset -c 1 "$@" >"$work/server.log" 2>&1 &
  server_pid=$!
  wait_socket "$sock"
  local t0 t1 json
  t0=$(cpu_ticks "$server_pid")
  # shellcheck disable=SC2046
  json=$(taskset -c 0 "$vcp" bench --socket "$sock" $(bench_args "$workload" "$bs") 2>"$work/bench.log") \
    || { cat "$work/bench.log" "$work/server.log" >&2; exit 1; }
  t1=$(cpu_ticks "$server_pid")
  stop_pid "$server_pid"; server_pid=""
  result "$name" "$workload" "$bs" "$(json_field ios <<<"$json")" "$(json_field seconds <<<"$json")" \
    "$(python3 -c "print(($t1 - $t0) / $(getconf CLK_TCK))")" "$(json_field client_cpu_s <<<"$json")"
  echo "$json" >>"$out/$name.json"
}
run_vcp() {
  run_served vcp "$1" "$2" "$vcp" serve --socket "$work/vcp.sock" --backend "$url" --poll "$POLL" "${coalesce_args[@]}"
}
run_qsd() {
  run_served qsd "$1" "$2" qemu-storage-daemon \
    --blockdev "driver=iscsi,node-name=i0,transport=tcp,portal=127.0.0.1:$TGTD_PORT,target=$IQN,lun=1,cache.direct=on" \
    --export "type=vhost-user-blk,id=e0,node-name=i0,addr.type=unix,addr.path=$work/qsd.sock,writable=on,num-queues=1"
}
# The in-process initiator: the bench process's own CPU counts (load generator included).
run_inproc() {
  local json
  # shellcheck disable=SC2046
  json=$(taskset -c 0 "$vcp" bench --backend "$url" $(bench_args "$1" "$2") 2>"$work/bench.log") \
    || { cat "$work/bench.log" >&2; exit 1; }
  result inproc "$1" "$2" "$(json_field ios <<<"$json")" "$(json_field seconds <<<"$json")" \
    "$(json_field client_cpu_s <<<"$json")"
  echo "$json" >>"$out/inproc.json"
}
# iscsi-perf reads only; its CPU from getrusage of the child, IOPS from its final average.
run_libiscsi() {
  local workload=$1 bs=$2 random=()
  [ "$workload" = write ] && return 0
  [ "$workload" = randread ] && random=(-r)
  python3 - "$out" "$workload" "$bs" "$SECS" taskset -c 0 iscsi-perf -m "$QD" -b $(( bs / 512 )) "${random[@]}" \
    -t "$SECS" "$url" <<'PY'
import re, resource, subprocess, sys, time
out, workload, bs, secs, cmd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
t0 = time.monotonic()
p = subprocess.run(cmd, capture_output=True, text=True)
elapsed = time.monotonic() - t0
if p.returncode != 0:
    sys.exit("iscsi-perf failed: " + p.stdout + p.stderr)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
iops = int(re.findall(r"iops average (\d+)", p.stdout)[-1])
with open(out + "/results.txt", "a") as f:
    f.write(f"libiscsi {workload} {bs} {iops * secs} {secs} {ru.ru_utime + ru.ru_stime}\n")
PY
}

size_of() { case "$1" in 512) echo 512 ;; *k) echo $(( ${1%k} * 1024 )) ;; esac; }
echo "bench-iscsi: tgtd pid $TGTD_PID on 127.0.0.1:$TGTD_PORT, $SECS s per run, $REPS runs each, qd $QD, poll $POLL, batch $BATCH" >&2
for rep in $(seq "$REPS"); do
  for w in $WORKLOADS; do
    bs=$(size_of "${w#*:}")
    for who in $WHO; do
      echo "bench-iscsi: [$rep/$REPS] $who $w ..." >&2
      "run_$who" "${w%%:*}" "$bs"
    done
  done
  if [ "$CURVE" = 1 ]; then
    for b in 512 16k 128k; do  # 4k is in the table above
      bs=$(size_of "$b")
      for who in vcp inproc; do
        echo "bench-iscsi: [$rep/$REPS] curve $who randread $b ..." >&2
        "run_$who" randread "$bs"
      done
    done
  fi
done

# What a wake-up costs on this machine (bench/floor_bench.cpp EventfdWake): most of the channel's
# cost per I/O is notifications that wake a sleeping thread on an idle CPU, priced here.
wake="(bench_floor not built: no wake-up cost measured)"
if [ -x "$build/bench/bench_floor" ]; then
  wake=$("$build/bench/bench_floor" --benchmark_filter='EventfdWake' --benchmark_min_time=0.5 --benchmark_format=json 2>/dev/null |
    python3 -c 'import json,sys; b={x["name"].split("/")[1]: x["waker_cpu_us"] for x in json.load(sys.stdin)["benchmarks"]}; print("an eventfd write that wakes a thread asleep on the other, idle CPU costs the writer %.1f us of CPU, one that wakes nobody %.2f us (bench_floor EventfdWake)" % (b["1"], b["0"]))' ||
    echo "(bench_floor EventfdWake failed)")
fi

python3 - "$out/results.txt" "$QD" "$SECS" "$POLL" "$REPS" "$BATCH" "${COALESCE:-vcp serve default}" "$wake" <<'PY'
import platform, statistics, subprocess, sys
rows = [l.split() for l in open(sys.argv[1])]
qd, secs, poll, reps, batch, coalesce = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
runs = {}
for name, w, bs, ios, s, cpu, *client in rows:
    ios, s, cpu = int(float(ios)), float(s), float(cpu)
    client_us = float(client[0]) / ios * 1e6 if client and ios else None
    runs.setdefault((name, w, int(bs)), []).append((ios / s, ios * int(bs) / s / 1e6, cpu / ios * 1e6 if ios else 0,
                                                    client_us))
r = {k: dict(iops=statistics.median(x[0] for x in v), mbs=statistics.median(x[1] for x in v),
             us=statistics.median(x[2] for x in v),
             client=statistics.median(x[3] for x in v) if all(x[3] is not None for x in v) else None)
     for k, v in runs.items()}
model = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?")
load = " ".join(open("/proc/loadavg").read().split()[:3])
print(f"machine: {model}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs (no SMT), "
      f"kernel {platform.release()}, load average at the end {load}; qd {qd}, {secs} s per run, median of {reps} runs, poll {poll}, vcp bench --batch {batch}, VCP coalescing {coalesce}\n")
print(f"wake-up cost: {sys.argv[8]}\n")
label = {"vcp": "VCP (vcp serve, CPU 1)", "libiscsi": "libiscsi iscsi-perf (CPU 0)",
         "qsd": "qemu-storage-daemon (CPU 1)", "inproc": "in-process vcp bench --backend (CPU 0)"}
print("| workload | initiator | IOPS | MB/s | CPU us per I/O | IOPS per CPU-second | VCP vs this (per CPU-second) | client (vcp bench) CPU us per I/O |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for w, bs, title in [("randread", 4096, "4 KiB random read"), ("read", 131072, "128 KiB sequential read"),
                     ("write", 131072, "128 KiB sequential write")]:
    ours = r.get(("vcp", w, bs))
    for name in ["vcp", "libiscsi", "qsd", "inproc"]:
        x = r.get((name, w, bs))
        if not x:
            if name == "libiscsi" and w == "write" and ours:
                print(f"| {title} | {label[name]} | n/a (iscsi-perf only reads) | | | | | |")
            continue
        ratio = "" if name == "vcp" or not ours or not x["us"] else f"{x['us'] / ours['us']:.2f}x"
        per = 1e6 / x["us"] if x["us"] else 0
        client = f"{x['client']:.2f}" if x["client"] is not None else ""
        print(f"| {title} | {label[name]} | {x['iops'] / 1e3:.1f}k | {x['mbs']:.0f} | {x['us']:.2f} | {per / 1e3:.0f}k | {ratio} | {client} |")
curve = sorted({bs for (n, w, bs) in r if n == "vcp" and w == "randread"})
if len(curve) > 1:
    print("\nThe channel's overhead: random read, CPU us per I/O of the VCP process against the in-process "
          "initiator (whose figure includes the load generator)\n")
    print("| block size | VCP IOPS | VCP us/I/O | in-process IOPS | in-process us/I/O | VCP / in-process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for bs in curve:
        a, d = r.get(("vcp", "randread", bs)), r.get(("inproc", "randread", bs))
        if a and d:
            print(f"| {bs if bs < 1024 else str(bs // 1024) + ' KiB'}{' B' if bs < 1024 else ''} | {a['iops'] / 1e3:.1f}k | "
                  f"{a['us']:.2f} | {d['iops'] / 1e3:.1f}k | {d['us']:.2f} | {a['us'] / d['us']:.2f}x |")
PY
echo "bench-iscsi: raw results in $out" >&2
