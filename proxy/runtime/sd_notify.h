// systemd's service notification protocol (sd_notify(3)) without libsystemd: datagrams to the Unix socket
// named by $NOTIFY_SOCKET ("@name" = abstract namespace). No-ops when the variable is not set, so the
// same binary runs under systemd (Type=notify, WatchdogSec=) and anywhere else.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace gb::runtime {

// Sends one notification ("READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=..."); false when not under
// systemd or the send failed.
bool sd_notify(std::string_view state);

// $WATCHDOG_USEC (for this process, per $WATCHDOG_PID when set): how often systemd expects WATCHDOG=1.
std::optional<std::chrono::microseconds> sd_watchdog_interval();

}  // namespace gb::runtime
