#!/usr/bin/env bash
# Set up (if needed), build, and run the whole test suite twice: the normal
# (Release) build, then a second build with AddressSanitizer +
# UndefinedBehaviorSanitizer (build-asan) that must be just as clean.
#
#   scripts/test.sh [ctest args...]      e.g. scripts/test.sh -R Merge
#   CHATVEC_SKIP_ASAN=1 scripts/test.sh  local shortcut: Release build only
#                                        (.ci/run never skips it)
#
# Under the sanitizers, tests labelled "no-asan" are left out: each such
# label carries its reason next to it (see docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# The time of each phase, printed at the end (also when a phase fails), so
# that CI's cost is visible run by run (docs/reliability.md: CI budget).
PHASES=()
phase_start=$(date +%s)
phase_done() {
  local now
  now=$(date +%s)
  PHASES+=("$1 $((now - phase_start))")
  phase_start=$now
}
print_phases() {
  local total=0 p
  ((${#PHASES[@]})) || return 0
  echo "test.sh: time per phase (s):" >&2
  for p in "${PHASES[@]}"; do
    printf 'test.sh:   %-18s %6s\n' "${p% *}" "${p##* }" >&2
    total=$((total + ${p##* }))
  done
  printf 'test.sh:   %-18s %6s\n' total "$total" >&2
}
trap print_phases EXIT

CHATVEC_SETUP_NO_BUILD=1 scripts/setup.sh
phase_done setup
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
phase_done release-build
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)" "$@"
phase_done release-tests

if [ -n "${CHATVEC_SKIP_ASAN:-}" ]; then
  echo "test.sh: CHATVEC_SKIP_ASAN set: sanitizer build skipped" >&2
  exit 0
fi
ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
cmake -S . -B "$ASAN_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHATVEC_SANITIZE=ON -DCHATVEC_BUILD_BENCH=OFF >/dev/null
cmake --build "$ASAN_BUILD_DIR" -j"$(nproc)"
phase_done sanitizer-build
# halt_on_error / -fno-sanitize-recover: the first report fails the test.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/reliability/lsan.supp:print_suppressions=0}
ctest --test-dir "$ASAN_BUILD_DIR" --output-on-failure -j"$(nproc)" -LE no-asan "$@"
phase_done sanitizer-tests
