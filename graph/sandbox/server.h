// The sandbox's HTTPS front end: Beast + OpenSSL on loopback, serving the emulated identity platform,
// the Graph mail API, upload URLs and a small admin API for tests (fault injection, counters).
//
// Routes
//   POST /{tenant}/oauth2/v2.0/token           identity (Identity::handle_token)
//   *    /v1.0/...                              Graph (bearer checked, per-mailbox throttling, faults)
//   PUT  /upload/...                            upload-session URLs (no Authorization header)
//   GET  /sandbox/stats                         counters as JSON
//   POST /sandbox/faults                        {"target":"token|graph|upload|any","kind":"status|reset|delay",
//                                                "status":429|503|504,"count":N,"retry_after":S,"delay_ms":MS}
//   DELETE /sandbox/faults                      clear queued faults
//   POST /sandbox/faults {"target":"token","kind":"aadsts","code":N[,"status":400|401]}: an identity error
//   POST /sandbox/settings                      {"graph_latency_ms":MS,"clock_offset_s":S}: hold each Graph
//                                                request (throttling tests); shift the sandbox clock
//   POST /sandbox/apps/{client_id}              {"enabled":B,"public_client":B,"roles":[...]}: change the app
//   POST /sandbox/tokens/revoke                 every access token issued so far answers 401 from now on
//   POST /sandbox/delta/expire                  expire every delta token issued so far
//   GET  /sandbox/requests                      the request log: {"requests":[{"method":"PATCH",
//                                                "route":"/messages/{id}","mailbox":"bob@...","status":200},
//                                                ...]}, oldest first; every /v1.0 request (not token,
//                                                upload or admin), the last 20,000; see GraphApi::route_of
//   DELETE /sandbox/requests                    clear the request log
// The admin API is unauthenticated: the server only ever binds loopback addresses.
// Hostile input: everything on the socket. Limits: header 16 KiB, body options.max_request_body (413),
// 30 s to read a request, TLS 1.2+.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "graph/sandbox/graph_api.h"
#include "graph/sandbox/identity.h"
#include "graph/sandbox/tenant.h"

namespace gb::sandbox {

struct ServerCredentials {
    std::string cert_chain_pem;  // server certificate (+ CA) presented to clients
    std::string key_pem;         // its private key
    std::string token_signing_key_pem;  // key that signs issued access tokens
};

struct Fault {
    enum class Target { Token, Graph, Upload, Any } target = Target::Any;
    enum class Kind { Status, Reset, Delay, Aadsts } kind = Kind::Status;
    int status = 503;
    int retry_after = 0;  // seconds; 0 = no Retry-After header
    int delay_ms = 0;
    std::int64_t aadsts = 0;  // Kind::Aadsts: answer the token request with this AADSTS code
    std::string path_suffix;  // only requests whose path ends with this ("" = any), e.g. "/send"
    bool after = false;       // Status/Reset after the request was carried out (a lost response)
    // > 0: the fault hits every matching request for this long (an outage) instead of `count` requests.
    int duration_ms = 0;
    std::chrono::steady_clock::time_point until{};  // set when a duration fault is added
};

// One Graph request as the client saw it (request log, for tests that check which calls a bridge made).
struct RequestRecord {
    std::string method;   // "GET", "PATCH", ...
    std::string route;    // GraphApi::route_of, e.g. "/mailfolders/{id}/messages/delta"
    std::string mailbox;  // lower-case address the request addressed; "" if none or unknown
    int status = 0;       // the status answered; 0 if the connection was reset instead
};

struct ServerStats {
    std::uint64_t token_requests = 0;
    std::uint64_t tokens_issued = 0;
    std::uint64_t graph_requests = 0;
    std::uint64_t throttled = 0;
    std::uint64_t faults_injected = 0;
};

class SandboxServer {
public:
    // options.login_base / graph_base are filled in by start() from the bound port when empty.
    SandboxServer(Tenant tenant, SandboxOptions options, ServerCredentials credentials);
    ~SandboxServer();
    SandboxServer(const SandboxServer&) = delete;
    SandboxServer& operator=(const SandboxServer&) = delete;

    // Binds (port 0 = ephemeral) and serves on `threads` threads until stop(). Throws on bind failure.
    void start(const std::string& bind_address, std::uint16_t port, int threads = 2);
    void stop();
    std::uint16_t port() const;
    const SandboxOptions& options() const;

    Identity& identity();
    GraphApi& graph();

    void inject(Fault fault, int count);
    void clear_faults();
    void set_graph_latency_ms(int ms);
    ServerStats stats() const;
    // The request log (oldest first, the last kRequestLogSize) and clearing it; see GET /sandbox/requests.
    static constexpr std::size_t kRequestLogSize = 20000;
    std::vector<RequestRecord> requests() const;
    void clear_requests();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::sandbox
