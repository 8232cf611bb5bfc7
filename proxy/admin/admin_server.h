// The admin endpoint ([admin] listen, loopback by default): plain HTTP/1.1 for Prometheus and health
// checks. GET /metrics (text format 0.0.4), GET /healthz (the process answers: 200 "ok"), GET /readyz
// (200 "ready" when every check passes, else 503 listing the failing ones, one per line). Anything else
// is 404; methods other than GET/HEAD 405. Bounded: 8 KiB of request header, no body, 10 s to send a
// request, at most 64 connections; a connection serves requests until the client closes it.
//
// No secrets pass through here: metric labels are routes, statuses, protocols and mailbox addresses.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "proxy/config/config.h"

namespace gb::admin {

// One readiness condition: its name and whether it holds now ("" = ok, else why not).
struct ReadinessCheck {
    std::string name;
    std::function<std::string()> failure;
};

class AdminServer {
public:
    AdminServer(config::ListenAddress listen, const metrics::Registry& registry, std::vector<ReadinessCheck> checks);
    ~AdminServer();  // stop()
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    void start();  // binds (throws on failure) and serves on its own thread
    void stop();
    std::uint16_t port() const;  // the bound port (listen port 0 = ephemeral, for tests)

    // The response body and status for a path, as served (exposed for tests).
    struct Answer {
        int status = 200;
        std::string content_type;
        std::string body;
    };
    Answer answer(const std::string& method, const std::string& target) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::admin
