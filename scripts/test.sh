#!/usr/bin/env bash
# Configure, build and run the whole test suite. Usage: scripts/test.sh [BUILD_DIR] [extra cmake args]
#   GB_SANITIZE=1 scripts/test.sh build-asan     same under AddressSanitizer + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
args=(-DGB_WERROR=ON -DGB_BUILD_TESTS=ON)
if [ "${GB_SANITIZE:-0}" = "1" ]; then
  args+=(-DGB_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" "${args[@]}" "$@"
cmake --build "$build" -j "$(nproc)"
# Twice as many tests as cores: most system tests spend their time waiting (outages, backoffs, idle
# timeouts), not computing.
ctest --test-dir "$build" --output-on-failure -j "$(( $(nproc) * 2 ))"
