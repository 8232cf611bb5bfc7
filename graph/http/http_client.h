// Blocking HTTPS client on libcurl for the identity platform and Graph.
//
// TLS is always verified (system trust store plus an optional extra CA file), TLS 1.2 at least.
// A proxy comes from the standard environment variables (https_proxy, HTTPS_PROXY, no_proxy), which
// libcurl reads itself. Response bodies are capped so a misbehaving server cannot exhaust memory.
// Thread-safe: each call uses its own easy handle; connections are shared through a curl share
// handle (DNS, TLS sessions, connection pool).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gb::http {

struct Request {
    std::string method = "GET";
    std::string url;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    long timeout_ms = 30000;
};

struct Response {
    long status = 0;            // 0 when the transfer failed (see error)
    std::string error;          // transport error (DNS, TLS, timeout, reset), empty on success
    bool timed_out = false;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    std::optional<std::string> header(std::string_view lower_name) const;
};

struct ClientOptions {
    std::string ca_file;             // extra trust anchors (PEM), added to the system store
    std::string system_ca_bundle = "/etc/ssl/certs/ca-certificates.crt";
    std::size_t max_response_body = 64 * 1024 * 1024;
    long connect_timeout_ms = 10000;
};

class Client {
public:
    explicit Client(ClientOptions options = {});
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    Response perform(const Request& request);

    // Shutdown past its grace period: transfers in progress end within about a second with an error
    // ("aborted: shutting down"), as do later calls. Thread-safe; cannot be undone.
    void abort_transfers();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::http
