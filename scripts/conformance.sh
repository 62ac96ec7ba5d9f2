#!/bin/bash
# Conformance of `vcp target` judged by libiscsi's iscsi-test-cu, side by side with tgt's tgtd,
# in one run: the same suites, the same LUN size (a 256 MiB file each), 127.0.0.1 only.
# Writes the per-family table of docs/conformance.md (or the file given as $2).
#
#   scripts/conformance.sh [VCP_BIN] [OUT.md]
#   VCP_LUN_OPTIONS=,physical_block_size=4k scripts/conformance.sh ...   (appended to our LUN's spec)
#
# CUnit counts a test that prints [SKIPPED] as passed; we count those apart.
# Needs: iscsi-test-cu (libiscsi-bin), tgtd/tgtadm (tgt). A missing one is an error.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VCP_BIN=${1:-$ROOT/build-target/vcp}
OUT=${2:-$ROOT/docs/conformance.md}
SUITES=("SCSI.*" "iSCSI.*")
IQN_VCP=iqn.2024-01.org.vcp:conformance
IQN_TGT=iqn.2024-01.org.tgt:conformance
INI=iqn.2024-01.org.vcp:conformance-initiator

fail() { echo "conformance.sh: $*" >&2; exit 1; }
for t in iscsi-test-cu python3; do command -v $t >/dev/null || fail "$t not installed"; done
die() { fail "$@"; }
source "$(dirname "$0")/lib/tgtd.sh"
[ -x "$VCP_BIN" ] || fail "no vcp binary at $VCP_BIN (build it: cmake --build build-target --target vcp)"

DIR=$(mktemp -d /tmp/vcp-conformance.XXXXXX)
VCP_PID=
cleanup() {
  [ -n "$VCP_PID" ] && { kill -TERM "$VCP_PID" 2>/dev/null; wait "$VCP_PID" 2>/dev/null; }
  tgtd_stop
  rm -rf "$DIR"
}
trap cleanup EXIT

truncate -s 256M "$DIR/vcp.img" "$DIR/tgt.img"

# ---- vcp target
"$VCP_BIN" target --portal 127.0.0.1:0 --iqn $IQN_VCP --lun "0=file:path=$DIR/vcp.img${VCP_LUN_OPTIONS:-}" >"$DIR/vcp.log" 2>&1 &
VCP_PID=$!
for _ in $(seq 100); do
  VCP_PORT=$(sed -n 's/^vcp target: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$DIR/vcp.log")
  [ -n "$VCP_PORT" ] && break
  sleep 0.05
done
[ -n "$VCP_PORT" ] || { cat "$DIR/vcp.log"; fail "vcp target did not start"; }

# ---- tgtd (LUN 1: tgtd keeps LUN 0 for its controller)
tgtd_start "$DIR/tgtd.log"
tgtd_target 1 $IQN_TGT 1 "$DIR/tgt.img"
tgt --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1 ||
  fail "tgtadm thin_provisioning"

run_suites() {  # name url
  local name=$1 url=$2
  : >"$DIR/$name.out"
  # MultipathIO runs only with a second path to the LUN (here a second session through the same
  # portal: another I_T nexus, as a second NIC would give), and first, on the fresh LUN:
  # libiscsi 1.19's MultipathIO.CompareAndWrite compares blocks 0-256 after zeroing 0-255 with
  # WRITE SAME, so it needs block 256 as a fresh LUN has it (later libiscsi stops at 255).
  # Its results stand over the same family's skips in the single-path run below.
  echo "== $name: iscsi-test-cu --dataloss --test='SCSI.MultipathIO.*' $url $url" >&2
  timeout 600 iscsi-test-cu -i $INI --dataloss --test='SCSI.MultipathIO.*' "$url" "$url" >>"$DIR/$name.out" 2>&1
  for s in "${SUITES[@]}"; do
    echo "== $name: iscsi-test-cu --dataloss --test='$s' $url" >&2
    timeout 1800 iscsi-test-cu -i $INI --dataloss --test="$s" "$url" >>"$DIR/$name.out" 2>&1
  done
}
run_suites vcp "iscsi://127.0.0.1:$VCP_PORT/$IQN_VCP/0"
run_suites tgtd "iscsi://127.0.0.1:$TGTD_PORT/$IQN_TGT/1"

VERSION=$(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null)
TGT_VERSION=$(dpkg-query -W -f='${Version}' tgt 2>/dev/null)
python3 - "$DIR/vcp.out" "$DIR/tgtd.out" "$OUT" "$VERSION" "$TGT_VERSION" "${VCP_LUN_OPTIONS:-}" <<'PY'
import re, sys, datetime
vcp_out, tgt_out, out, libiscsi_ver, tgt_ver, lun_options = sys.argv[1:7]
vcp_settings = "default settings" if not lun_options else "default settings but `" + lun_options.lstrip(",") + "`"

def parse(path):
    """family -> {test: 'pass'|'fail'|'skip'} from iscsi-test-cu's CUnit console output."""
    fams, fam, test, text = {}, None, None, []
    def close():
        if fam is None or test is None:
            return
        body = "\n".join(text)
        failed = re.search(r"(^|\.\.\.)\s*FAILED\s*$", body, re.M) is not None
        v = "fail" if failed else ("skip" if "[SKIPPED]" in body else "pass")
        # A test run twice (MultipathIO: with two paths, then skipped in the one-path run)
        # keeps its result from the run that did not skip it.
        if v != "skip" or test not in fams.get(fam, {}):
            fams.setdefault(fam, {})[test] = v
    prefix = ""
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = re.match(r"^== \S+: iscsi-test-cu .*--test='([A-Za-z]+)\.", line)
        if m:
            prefix = m.group(1)
        m = re.match(r"^Suite: (\S+)", line)
        if m:
            close(); fam, test, text = m.group(1), None, []
            continue
        m = re.match(r"^\s+Test: (\S+) \.\.\.(.*)$", line)
        if m:
            close(); test, text = m.group(1), [m.group(2)]
            continue
        if re.match(r"^Run Summary", line):
            close(); test = None
            continue
        if test is not None:
            text.append(line)
    close()
    return fams

def counts(d):
    c = {"pass": 0, "fail": 0, "skip": 0}
    for v in d.values():
        c[v] += 1
    return c

a, b = parse(vcp_out), parse(tgt_out)
fams = sorted(set(a) | set(b), key=lambda f: (f.startswith("iSCSI"), f))
rows, tot = [], {"vcp": {"pass": 0, "fail": 0, "skip": 0}, "tgtd": {"pass": 0, "fail": 0, "skip": 0}}
ours_only, theirs_only, both_fail = [], [], []
for f in fams:
    ca, cb = counts(a.get(f, {})), counts(b.get(f, {}))
    for k in ca: tot["vcp"][k] += ca[k]
    for k in cb: tot["tgtd"][k] += cb[k]
    fa = "all pass" if ca["fail"] == 0 and a.get(f) else ("-" if not a.get(f) else "fails")
    rows.append(f"| {f} | {ca['pass']} | {ca['fail']} | {ca['skip']} | {cb['pass']} | {cb['fail']} | {cb['skip']} |")
    for t in sorted(set(a.get(f, {})) | set(b.get(f, {}))):
        va, vb = a.get(f, {}).get(t), b.get(f, {}).get(t)
        if va == "fail" and vb != "fail": theirs_only.append(f"{f}.{t}")
        if vb == "fail" and va != "fail": ours_only.append(f"{f}.{t}")
        if va == "fail" and vb == "fail": both_fail.append(f"{f}.{t}")
fam_pass = lambda d: sorted(f for f in d if d[f] and all(v != "fail" for v in d[f].values()))
pa, pb = set(fam_pass(a)), set(fam_pass(b))

with open(out, "w") as o:
    o.write(f"""# Conformance: iscsi-test-cu against vcp target and tgtd

Measured by `scripts/conformance.sh` on {datetime.date.today().isoformat()}: libiscsi-bin {libiscsi_ver}
`iscsi-test-cu --dataloss --test='SCSI.*'` and `--test='iSCSI.*'`, against `vcp target` (one
256 MiB file LUN, {vcp_settings}) and tgt {tgt_ver} `tgtd` (one 256 MiB file LUN,
thin_provisioning=1), both on 127.0.0.1, in the same run. Before them, on each fresh LUN,
`--test='SCSI.MultipathIO.*'` with the LUN's URL given twice: two sessions, two paths to one
logical unit (scripts/conformance.sh says why first).

CUnit counts a test that prints `[SKIPPED]` as passed; here *skipped* is counted apart and
*passed* means passed and not skipped. A test skips when the device does not claim the feature
(e.g. SANITIZE, EXTENDED COPY, WRITE ATOMIC, read-only media, no medium).

| family | vcp passed | vcp failed | vcp skipped | tgtd passed | tgtd failed | tgtd skipped |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
""")
    o.write("\n".join(rows) + "\n")
    t1, t2 = tot["vcp"], tot["tgtd"]
    o.write(f"| **total** | **{t1['pass']}** | **{t1['fail']}** | **{t1['skip']}** | **{t2['pass']}** | **{t2['fail']}** | **{t2['skip']}** |\n\n")
    o.write(f"Families without a failure: vcp {len(pa)} of {len(fams)}, tgtd {len(pb)} of {len(fams)}.\n")
    o.write(f"Families tgtd passes and vcp does not: {', '.join(sorted(pb - pa)) or 'none'}.\n")
    o.write(f"Families vcp passes and tgtd does not: {', '.join(sorted(pa - pb)) or 'none'}.\n\n")
    o.write("Tests that fail on vcp only: " + (", ".join(theirs_only) or "none") + ".\n\n")
    o.write("Tests that fail on tgtd only: " + (", ".join(ours_only) or "none") + ".\n\n")
    o.write("Tests that fail on both: " + (", ".join(both_fail) or "none") + ".\n")
    o.write("\nWhy each of vcp's failures fails: docs/target.md, section Conformance.\n")
print(open(out).read())
PY
