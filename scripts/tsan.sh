#!/usr/bin/env bash
# ThreadSanitizer run of the concurrency-heavy tests: the token broker (single flight, background
# refresh), the spool (group commit across writers), the queue runner (workers, per-mailbox limits), the
# sync engine and MailService (pollers, sessions, body downloads) and the SMTP server (network threads).
#
#   scripts/tsan.sh [BUILD_DIR]       (default build-tsan)
#
# Builds only those tests with -fsanitize=thread (GCC) and runs them under ctest; any report fails.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-tsan}
tests=(token_broker_test spool_test queue_runner_test sync_test smtp_server_test)
generator=()
command -v ninja >/dev/null && [[ ! -f "$build/CMakeCache.txt" ]] && generator=(-G Ninja)
# -Wno-tsan: GCC 12 warns that TSan does not model the std::atomic_thread_fence in Asio's
# std_fenced_block; Asio's scheduler orders handlers with mutexes as well.
flags="-fsanitize=thread -fno-omit-frame-pointer -g -O1 -Wno-tsan"
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug -DGB_WERROR=ON -DGB_BUILD_TESTS=ON \
  -DGB_BUILD_BENCH=OFF -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
cmake --build "$build" -j "$(nproc)" --target "${tests[@]}"
# second_deadlock_stack: both stacks of a lock-order inversion; halt_on_error: the first report fails.
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:history_size=4}
# GLib is not built with TSan: its slice allocator hands memory between threads in ways TSan cannot
# see. Plain malloc instead (GLib 2.74 honours G_SLICE=always-malloc).
export G_SLICE=always-malloc
regex="^($(IFS='|'; echo "${tests[*]}"))\$"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -R "$regex"
