#!/usr/bin/env bash
# Installs everything graphbridge needs to build, test and run its sandbox on Debian 12.
# Idempotent: packages already present are left alone; safe to run as often as you like.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libboost-dev libboost-system-dev
  libssl-dev openssl ca-certificates
  libcurl4-openssl-dev curl
  rapidjson-dev libfmt-dev libtomlplusplus-dev libsqlite3-dev
  libgmime-3.0-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 swaks msmtp isync
  dpkg-dev file adduser  # scripts/package.sh: cpack runs dpkg-shlibdeps and file; the .deb needs adduser
  default-jre-headless
  clang libclang-rt-14-dev  # scripts/fuzz.sh: libFuzzer (only a Recommends of clang, so named here)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
