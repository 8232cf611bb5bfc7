// The running bridge: config -> credentials and token brokers, the durable spool, the SMTP front end
// and the delivery queue, wired together. `graphbridge serve` and `graphbridge sandbox` run it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proxy/config/config.h"

namespace gb::runtime {

class Bridge {
public:
    // Loads credentials, opens (and recovers) the spool, binds the listeners. Throws std::runtime_error
    // with a one-line reason (naming the file, key or address) when it cannot start.
    explicit Bridge(const config::Config& cfg);
    ~Bridge();
    Bridge(const Bridge&) = delete;
    Bridge& operator=(const Bridge&) = delete;

    void start();
    void stop();  // stops accepting, ends open sessions, lets deliveries in flight finish

    // SIGTERM: stops accepting (and /readyz says 503), lets sessions finish the transaction or command
    // in progress and deliveries in flight end, for at most `grace`; then aborts what is left (a message
    // not yet answered 250 is not accepted; a delivery cut off stays in the spool and is retried at the
    // next start) and stop()s. Returns what was still open at the deadline.
    struct ShutdownReport {
        std::size_t sessions_cut = 0;    // sessions still open at the deadline
        bool deliveries_aborted = false;  // Graph requests were still running at the deadline
        std::chrono::milliseconds took{0};
    };
    ShutdownReport shutdown(std::chrono::milliseconds grace);
    // shutdown_timeout from the config (as last reloaded).
    std::chrono::milliseconds shutdown_grace() const;

    // SIGHUP: re-reads the config file and applies accounts, relay networks, the TLS certificate and
    // the log level without closing a connection. Nothing is applied when the new config has an error
    // (the old one stays in force). Changes that need a restart (listeners, apps, state_dir, ...) are
    // named in `needs_restart` and otherwise ignored.
    struct ReloadReport {
        bool ok = false;
        std::vector<std::string> errors;         // why nothing was applied
        std::vector<std::string> applied;        // e.g. "accounts: 3 (1 added, 1 removed, 1 changed)"
        std::vector<std::string> needs_restart;  // e.g. "[smtp] listen"
    };
    ReloadReport reload();

    std::vector<std::uint16_t> smtp_ports() const;  // plain listeners, then implicit-TLS ones
    std::vector<std::uint16_t> imap_ports() const;   // plain, then implicit TLS (empty: IMAP off)
    std::vector<std::uint16_t> pop3_ports() const;   // plain, then implicit TLS (empty: POP3 off)
    std::size_t recovered() const;  // messages found in the spool at start
    std::uint16_t admin_port() const;  // the admin endpoint's bound port (0 before start)
    // When the bridge's housekeeping loop last completed a round (every second while healthy).
    std::chrono::steady_clock::time_point last_heartbeat() const;
    std::string tls_cert_path() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::runtime
