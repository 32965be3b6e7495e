#!/usr/bin/env bash
# Install everything chatvec needs on a Debian 12 machine (as root, or with
# sudo), then build it.  Idempotent: a second run only rebuilds.
#
#   scripts/setup.sh            # packages + npm reference programs + build
#   SKIP_PEERS=1 scripts/setup.sh   # without the npm peers (tests that need them skip)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config git
  nlohmann-json3-dev libcli11-dev libfmt-dev libsentencepiece-dev libomp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-numpy python3-torch python3-sentencepiece python3-yaml
  time
  clang libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm for the reference programs: any installation will do (some
# machines carry a newer Node.js whose npm conflicts with Debian's package).
if [ -z "${SKIP_PEERS:-}" ]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
fi
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Reference programs for cross-checks (pinned exactly in package-lock.json).
if [ -z "${SKIP_PEERS:-}" ]; then
  if [ ! -d tests/peers/node_modules ] || [ tests/peers/package-lock.json -nt tests/peers/node_modules ]; then
    echo "setup: installing npm reference programs into tests/peers" >&2
    (cd tests/peers && npm ci --no-audit --no-fund --loglevel=error)
    touch tests/peers/node_modules
  fi
fi

# (scripts/test.sh builds itself, to time the build apart from the setup.)
[ -n "${CHATVEC_SETUP_NO_BUILD:-}" ] && exit 0
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"

# The default prompt set of `chatvec tune` (build/tune-data, from ../shared;
# the script says so and skips when ../shared is absent).
/usr/bin/python3 scripts/make_tune_data.py "$BUILD_DIR/tune-data" || echo "setup: scripts/make_tune_data.py failed (chatvec tune --data $BUILD_DIR/tune-data unavailable)" >&2
