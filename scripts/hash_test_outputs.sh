#!/usr/bin/env bash
# Run test suites with every temporary test directory kept at a fixed path,
# then hash every file they hold: two builds can be compared output for
# output (a refactor must not change a single byte).
#
#   scripts/hash_test_outputs.sh BUILD_DIR KEEP_DIR HASHES.txt [ctest args...]
#   diff before.txt after.txt
#
# Outputs that depend on timing or randomness by design (fault tests that
# kill merges at random points) are listed too; compare them with care.
set -euo pipefail
build=$1 keep=$2 hashes=$3
shift 3
rm -rf "$keep"
mkdir -p "$keep"
CHATVEC_TEST_KEEP=$(realpath "$keep") ctest --test-dir "$build" -j"$(nproc)" "$@" >"$keep.ctest.log" 2>&1 || true
(cd "$keep" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) >"$hashes"
echo "$(wc -l <"$hashes") files hashed into $hashes; ctest log: $keep.ctest.log" >&2
