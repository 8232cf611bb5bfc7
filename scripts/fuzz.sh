#!/usr/bin/env bash
# Runs every libFuzzer target for a bounded time (docs/fuzzing.md).
#
#   scripts/fuzz.sh [--no-build | --build-only] [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 30; TARGET defaults to all (smtp_engine imap_parser imap_session proxy_protocol pop3_engine mime
# keystore config graph_json). Builds build-fuzz/ with clang, -DGB_FUZZ=ON and the libraries compiled
# with -fsanitize=fuzzer-no-link,address,undefined, then runs each fuzz_<target> one after the other
# on a scratch copy of fuzz/corpus/<target>/ (new inputs never land in the repository) with
# -max_total_time, -timeout=10 and -rss_limit_mb=2048. Prints executions, coverage and the verdict per
# target; exits 1 if any target crashed, hung, leaked, ran out of memory or tripped a sanitizer.
#
# Environment:
#   GB_FUZZ_BUILD_DIR  build directory (default <repo>/build-fuzz)
#   GB_FUZZ_FINDINGS   where crashers go, one directory per target (default /tmp/fuzz-findings)
#   GB_FUZZ_JOBS       parallel compile jobs (default 2)
#   GB_BUILD_LOCK      a lock file: only the build step runs under `flock $GB_BUILD_LOCK`
#   GB_FUZZ_ARGS       extra libFuzzer arguments for every target (e.g. "-use_value_profile=1")
#   GB_FUZZ_WORK       keep the working corpora here (outside the repository) and continue from them
#                      on the next run, instead of a scratch directory removed at exit
# Needs the Debian 12 packages from scripts/install-deps.sh (clang and libclang-rt-14-dev included).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
all_targets=(smtp_engine imap_parser imap_session proxy_protocol pop3_engine mime keystore config graph_json)

do_build=1
do_run=1
case "${1:-}" in
  --no-build) do_build=0; shift ;;
  --build-only) do_run=0; shift ;;
esac
seconds=30
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  if [[ ! -d "$root/fuzz/corpus/$t" ]]; then
    echo "fuzz.sh: unknown target '$t' (known: ${all_targets[*]})" >&2
    exit 2
  fi
done

build=${GB_FUZZ_BUILD_DIR:-$root/build-fuzz}
findings=${GB_FUZZ_FINDINGS:-/tmp/fuzz-findings}
jobs=${GB_FUZZ_JOBS:-2}

if [[ $do_build -eq 1 ]]; then
  if ! command -v clang++ >/dev/null; then
    echo "fuzz.sh: clang++ not found; run scripts/install-deps.sh (Debian package clang)" >&2
    exit 2
  fi
  lock=()
  [[ -n "${GB_BUILD_LOCK:-}" ]] && lock=(flock "$GB_BUILD_LOCK")
  generator=()
  command -v ninja >/dev/null && [[ ! -f "$build/CMakeCache.txt" ]] && generator=(-G Ninja)
  # Every sanitizer report is fatal; pointer-overflow is recoverable only so fuzz/ubsan.supp can
  # suppress it in rapidjson's header (halt_on_error=1 below keeps it fatal everywhere else).
  san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fsanitize-recover=pointer-overflow"
  san="$san -fno-omit-frame-pointer"
  # GB_WERROR=OFF: clang warns about things GCC does not in library code this script must not change;
  # the GCC build keeps -Werror for everything, the harnesses included.
  "${lock[@]}" cmake -S "$root" -B "$build" "${generator[@]}" \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
    -DGB_FUZZ=ON -DGB_WERROR=OFF -DGB_SANITIZE=OFF -DGB_BUILD_TESTS=OFF -DGB_BUILD_BENCH=OFF >/dev/null
  build_targets=()
  for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
  "${lock[@]}" cmake --build "$build" -j "$jobs" --target "${build_targets[@]}"
fi
[[ $do_run -eq 0 ]] && exit 0

symbolizer=$(command -v llvm-symbolizer || ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | head -1 || true)
if [[ -n "$symbolizer" ]]; then
  export ASAN_SYMBOLIZER_PATH=$symbolizer
else
  echo "fuzz.sh: no llvm-symbolizer (Debian package llvm): stack traces will be addresses only" >&2
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$root/fuzz/ubsan.supp}

if [[ -n "${GB_FUZZ_WORK:-}" ]]; then
  scratch=$GB_FUZZ_WORK
  mkdir -p "$scratch"
else
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/gb-fuzz-run.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
fi
failed=()
summary=()
for t in "${targets[@]}"; do
  bin="$build/fuzz/fuzz_$t"
  if [[ ! -x "$bin" ]]; then
    echo "fuzz.sh: $bin missing (run without --no-build)" >&2
    exit 2
  fi
  work="$scratch/$t"
  case "$(cd "$work/.." 2>/dev/null && pwd)/" in "$root"/fuzz/*) echo "fuzz.sh: GB_FUZZ_WORK inside fuzz/" >&2; exit 2 ;; esac
  mkdir -p "$work/corpus" "$work/tmp" "$findings/$t"
  cp -R "$root/fuzz/corpus/$t/." "$work/corpus/"
  log="$work/fuzz.log"
  echo "=== $t: ${seconds}s"
  rc=0
  # shellcheck disable=SC2086
  (cd "$work" && TMPDIR="$work/tmp" "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$findings/$t/" ${GB_FUZZ_ARGS:-} corpus) >"$log" 2>&1 || rc=$?
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
  [[ -z "$execs" ]] && execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 || true)
  if [[ $rc -eq 0 ]]; then
    verdict="nothing found"
  else
    what=$(grep -oE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)[^(]*' "$log" | head -1 || true)
    [[ -z "$what" ]] && what=$(grep -oE 'runtime error: .*|FUZZ INVARIANT BROKEN: .*' "$log" | head -1 || true)
    artifact=$(grep -oE 'Test unit written to [^ ]+' "$log" | head -1 | sed 's/Test unit written to //' || true)
    cp "$log" "$findings/$t/fuzz-$(date +%Y%m%d-%H%M%S).log"
    verdict="FOUND (exit $rc): ${what:-see log} ${artifact:+-> $artifact}"
    failed+=("$t")
  fi
  line=$(printf '%-12s %4ss  execs %-10s %-40s %s' "$t" "$seconds" "${execs:-?}" "${cov:-cov ?}" "$verdict")
  echo "$line"
  summary+=("$line")
done

echo
echo "=== fuzz summary (findings in $findings/<target>/)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: findings in: ${failed[*]}" >&2
  exit 1
fi
