#!/usr/bin/env bash
# Builds the Debian package (CPack DEB) from a build directory and prints the .deb's path on standard
# output (the build's and cpack's messages go to standard error): deb=$(scripts/package.sh build)
# Usage: scripts/package.sh [BUILD_DIR]      (default: build, the directory scripts/test.sh uses)
# An existing build directory is reused as configured (CI packages the binary it has just tested); a
# missing one is configured without tests and benchmarks. Sanitizer and Debug builds are refused.
# Install the result with: apt-get install ./BUILD_DIR/graphbridge_VERSION_ARCH.deb
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

if [ ! -f "$build/CMakeCache.txt" ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGB_BUILD_TESTS=OFF \
        -DGB_BUILD_BENCH=OFF >&2
fi
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
if [ "$(cache GB_SANITIZE)" = "ON" ] || [ "$(cache CMAKE_BUILD_TYPE)" = "Debug" ]; then
  echo "package.sh: $build is a sanitizer or Debug build; package an optimised one (e.g. scripts/test.sh build)" >&2
  exit 1
fi

# What the package holds (a no-op after scripts/test.sh); cpack then installs into its staging directory.
cmake --build "$build" -j "$(nproc)" --target graphbridge graphbridge_package_files >&2
rm -f "$build"/graphbridge_*.deb
(cd "$build" && cpack -G DEB) >&2

debs=("$build"/graphbridge_*.deb)
if [ ! -f "${debs[0]}" ]; then
  echo "package.sh: cpack made no graphbridge_*.deb in $build" >&2
  exit 1
fi
realpath "${debs[0]}"
