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
    void stop();  // stops accepting, lets deliveries in flight finish

    std::vector<std::uint16_t> smtp_ports() const;  // plain listeners, then implicit-TLS ones
    std::vector<std::uint16_t> imap_ports() const;   // plain, then implicit TLS (empty: IMAP off)
    std::vector<std::uint16_t> pop3_ports() const;   // plain, then implicit TLS (empty: POP3 off)
    std::size_t recovered() const;
    std::uint16_t admin_port() const;  // the admin endpoint's bound port (0 before start)
    // When the bridge's housekeeping loop last completed a round (every second while healthy).
    std::chrono::steady_clock::time_point last_heartbeat() const;                   // messages found in the spool at start
    std::string tls_cert_path() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::runtime
