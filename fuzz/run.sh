#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan+UBSan) and run each for a set time,
# one after the other, one process at a time.
#
#   fuzz/run.sh [seconds-per-target] [target...]   (default 60 s, all targets)
#
# Seeds come from fuzz/corpus/<target>/ (read only); the growing corpus lives
# in $FUZZ_BUILD/corpus/<target>/ and crash/timeout/oom inputs in
# $FUZZ_BUILD/artifacts/<target>/.  A summary (executions, corpus size,
# findings) is printed and appended to $FUZZ_BUILD/fuzz-summary.tsv.  Exit 1
# when any target found something.  Each finding goes into
# tests/reliability/fuzz_regressions/<target>/ and gets fixed.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-60}
shift || true
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
JOBS=${JOBS:-2}

if ! command -v clang++ >/dev/null; then
  echo "fuzz/run.sh: clang++ not found (scripts/setup.sh installs clang and libclang-rt-14-dev)" >&2
  exit 2
fi
if [ -z "${FUZZ_NO_BUILD:-}" ]; then  # FUZZ_NO_BUILD=1: use the binaries as they are
  CC=clang CXX=clang++ cmake -S . -B "$FUZZ_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHATVEC_FUZZ=ON \
    -DCHATVEC_BUILD_TESTS=OFF -DCHATVEC_BUILD_BENCH=OFF >/dev/null || exit 2
  cmake --build "$FUZZ_BUILD" -j"$JOBS" --target fuzzers >/dev/null || exit 2
fi

TARGETS=("$@")
if ((${#TARGETS[@]} == 0)); then
  for f in fuzz/fuzz_*.cpp; do
    t=$(basename "$f" .cpp)
    [ -x "$FUZZ_BUILD/fuzz/$t" ] && TARGETS+=("${t#fuzz_}")
  done
fi

dict_for() {
  case "$1" in
    chat_template) echo fuzz/dict/jinja.dict ;;
    pytorch_bin | pytorch_pickle) echo fuzz/dict/pytorch.dict ;;
    sp_model) echo "" ;;
    *) echo fuzz/dict/json.dict ;;
  esac
}

found=0
printf 'target\tseconds\texecutions\texec_per_s\tcorpus_files\tfindings\n'
for t in "${TARGETS[@]}"; do
  bin="$FUZZ_BUILD/fuzz/fuzz_$t"
  work="$FUZZ_BUILD/corpus/$t"
  art="$FUZZ_BUILD/artifacts/$t"
  log="$FUZZ_BUILD/logs/$t.log"
  mkdir -p "$work" "$art" "$(dirname "$log")"
  args=(-max_total_time="$SECONDS_PER" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024
        -print_final_stats=1 -artifact_prefix="$art/")
  d=$(dict_for "$t")
  [ -n "$d" ] && args+=(-dict="$d")
  # Keep going after a finding: one run per finding until the time is spent.
  start=$(date +%s)
  execs=0
  while :; do
    left=$((SECONDS_PER - ($(date +%s) - start)))
    ((left > 0)) || break
    args[0]=-max_total_time=$left
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 "$bin" "${args[@]}" "$work" $([ -d "fuzz/corpus/$t" ] && echo "fuzz/corpus/$t") >>"$log" 2>&1
    rc=$?
    n=$(grep -a 'stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}')
    execs=$((execs + ${n:-0}))
    ((rc == 0)) && break
    found=1
  done
  elapsed=$(($(date +%s) - start))
  files=$(ls "$work" | wc -l)
  findings=$(ls "$art" | wc -l)
  line=$(printf '%s\t%s\t%s\t%s\t%s\t%s' "$t" "$elapsed" "$execs" "$((execs / (elapsed > 0 ? elapsed : 1)))" "$files" "$findings")
  echo "$line"
  echo -e "$(date -u +%FT%TZ)\t$line" >>"$FUZZ_BUILD/fuzz-summary.tsv"
done
exit $found
