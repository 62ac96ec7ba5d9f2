#!/usr/bin/env bash
# `make test`: the whole suite, as CI runs it.
#  1. release build (warnings as errors): unit + integration tests (real peers: QEMU guests,
#     qemu-storage-daemon, ...)
#  2. ASan+UBSan build: unit tests
#  3. TSan build: unit tests (the rings and the queue threads)
#  4. libFuzzer build: every fuzzer for FUZZ_SECONDS (default 30) from its seed corpus, JOBS at a time
# Ends with one line "N passed, N failed" summing every stage; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
total_pass=0
total_fail=0
failed_stages=()
timings=()     # "stage: N s", printed at the end: where CI's minutes go
stage_t0=$SECONDS
# Closes the current stage's clock.
took() { timings+=("$1: $((SECONDS - stage_t0)) s"); stage_t0=$SECONDS; }

# Runs ctest and adds its counts to the totals.
run_ctest() {
  local stage=$1; shift
  local log
  log=$(mktemp)
  echo "=== $stage: ctest $*"
  ctest "$@" --output-on-failure 2>&1 | tee "$log"
  took "$stage"
  local line
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  rm -f "$log"
  if [ -z "$line" ]; then
    echo "$stage: ctest ran no test" >&2
    total_fail=$((total_fail + 1))
    failed_stages+=("$stage (no tests ran)")
    return
  fi
  local failed all
  failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  all=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
  total_pass=$((total_pass + all - failed))
  total_fail=$((total_fail + failed))
  [ "$failed" -eq 0 ] || failed_stages+=("$stage")
}

build_preset() {
  local preset=$1; shift
  echo "=== build: $preset"
  local rc=0
  cmake --preset "$preset" >/dev/null && cmake --build "$@" -j "$JOBS" || rc=1
  took "build $preset"
  return $rc
}

# 1. Release: unit and integration.
if build_preset release build; then
  run_ctest "release unit" --test-dir build -L unit -j "$JOBS"
  run_ctest "integration" --test-dir build -L integration
else
  total_fail=$((total_fail + 1)); failed_stages+=("release build")
fi

# 2./3. Sanitizers on the unit tests.
for san in asan tsan; do
  if build_preset "$san" "build-$san"; then
    # halt_on_error: the first report fails the test, it is never a warning lost in the log.
    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
      run_ctest "$san unit" --test-dir "build-$san" -L unit -j "$JOBS"
  else
    total_fail=$((total_fail + 1)); failed_stages+=("$san build")
  fi
done

# 4. Fuzzers, each for FUZZ_SECONDS from its seed corpus (a copy: runs must not grow the tree),
#    JOBS of them at a time (each is one process on one CPU); results reported in name order.
if build_preset fuzz build-fuzz; then
  fuzz_dir=$(mktemp -d)
  fuzzers=()
  for f in build-fuzz/tests/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    fuzzers+=("$name")
    mkdir -p "$fuzz_dir/$name"
    [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$fuzz_dir/$name/"
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    echo "=== fuzz: $name for ${FUZZ_SECONDS}s"
    ( "$f" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 "$fuzz_dir/$name" >"$fuzz_dir/$name.log" 2>&1
      echo $? >"$fuzz_dir/$name.rc" ) &
  done
  wait
  took "fuzz (${#fuzzers[@]} fuzzers, $JOBS at a time)"
  [ ${#fuzzers[@]} -gt 0 ] || { total_fail=$((total_fail + 1)); failed_stages+=("fuzz (no fuzzers built)"); }
  for name in "${fuzzers[@]}"; do
    if [ "$(cat "$fuzz_dir/$name.rc" 2>/dev/null)" = 0 ]; then
      total_pass=$((total_pass + 1))
      echo "fuzz $name: $(grep -E 'stat::number_of_executed_units' "$fuzz_dir/$name.log" | tail -1)"
    else
      total_fail=$((total_fail + 1)); failed_stages+=("fuzz $name")
      echo "fuzz $name failed:"; tail -40 "$fuzz_dir/$name.log"
    fi
  done
  rm -rf "$fuzz_dir"
else
  total_fail=$((total_fail + 1)); failed_stages+=("fuzz build")
fi

echo
printf 'time per stage:'; printf ' %s;' "${timings[@]}"; echo " total $SECONDS s"
if [ ${#failed_stages[@]} -gt 0 ]; then
  echo "failed: ${failed_stages[*]}"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
