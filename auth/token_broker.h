// App-only token broker: OAuth 2.0 client credentials against the Microsoft identity platform, with a
// certificate-signed client assertion (RFC 7523) or a client secret (GRAPH-FACTS A.2, A.3).
//
// One broker per app and scope. Any number of threads call get(): a valid cached token is returned at
// once; from a cold or expired cache exactly one request is in flight and the others wait for it.
// Ahead of expiry a background thread refreshes the token, so callers never wait for a refresh. A
// failed request backs off exponentially with jitter; callers during the backoff get the last error
// at once instead of hammering the endpoint. After a Graph 401, refresh_after_rejection() forces one
// new token (unless another caller already replaced the rejected one).
//
// Never logged or put in an error: the access token, the assertion, the client secret.
#pragma once

#include <openssl/evp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "auth/jwt.h"
#include "auth/pki.h"
#include "common/secret.h"

namespace gb::auth {

struct TokenHttpRequest {
    std::string url;
    std::string body;  // application/x-www-form-urlencoded
    std::vector<std::pair<std::string, std::string>> headers;
};

struct TokenHttpResponse {
    long status = 0;          // 0 = transport failure
    std::string error;        // transport error text
    std::string body;
    std::optional<std::int64_t> retry_after;  // seconds
};

using TokenTransport = std::function<TokenHttpResponse(const TokenHttpRequest&)>;

struct CertificateCredential {
    PKey key;              // RSA private key
    std::string cert_der;  // the registered certificate
    JwsAlg alg = JwsAlg::RS256;
    ThumbprintHeader thumbprint = ThumbprintHeader::X5t;
    std::int64_t assertion_lifetime = 300;
    std::string extra_claims_json;  // optional JSON object merged into the claims
};

struct TokenBrokerConfig {
    std::string app_name;        // config name, for messages
    std::string client_id;
    std::string tenant;
    std::string token_endpoint;  // full URL; also the assertion's aud
    std::string scope;           // space-separated, passed as given
    std::optional<CertificateCredential> certificate;
    std::optional<Secret> client_secret;
};

struct Token {
    std::string access_token;
    std::int64_t expires_at = 0;   // unix seconds
    std::int64_t obtained_at = 0;
    std::vector<std::string> roles;  // from the token's claims (unverified decode), for diagnostics
};

struct TokenFailure {
    long status = 0;                 // HTTP status, 0 = transport failure
    std::string error;               // OAuth "error" or the transport error
    std::vector<std::int64_t> codes; // AADSTS codes
    std::string explanation;         // one sentence: cause and fix
    bool transient = false;          // worth retrying without a config change
};

using TokenResult = std::variant<Token, TokenFailure>;

struct BrokerTiming {
    std::int64_t backoff_initial_ms = 1000;
    std::int64_t backoff_max_ms = 60 * 1000;  // once the endpoint is back, tokens (and mail) flow within a minute
    std::int64_t refresh_lead_max_s = 300;  // refresh this long before expiry (at most half the lifetime)
    std::int64_t safety_max_s = 60;         // stop handing out a token this long before expiry (at most 1/4)
};

class TokenBroker {
public:
    using Clock = std::function<std::int64_t()>;  // unix milliseconds

    TokenBroker(TokenBrokerConfig config, TokenTransport transport, Clock clock = {}, BrokerTiming timing = {});
    ~TokenBroker();
    TokenBroker(const TokenBroker&) = delete;
    TokenBroker& operator=(const TokenBroker&) = delete;

    // A usable token, or why none can be had.
    TokenResult get();
    // Graph answered 401 with `rejected`: get a fresh token (once, even with many callers).
    TokenResult refresh_after_rejection(const std::string& rejected);

    // Token requests actually sent to the endpoint.
    std::uint64_t requests_sent() const;
    // For metrics and readiness; never blocks on the network.
    struct Status {
        std::uint64_t requests = 0;   // sent to the endpoint
        std::uint64_t failures = 0;   // of those, failed (transport, 4xx/5xx, unusable answer)
        bool token_usable = false;    // a token is cached and not near expiry
        std::string last_error;       // the last failure's explanation while no usable token ("" = none)
    };
    Status status() const;
    // Roles of the most recent token obtained (kept after it expires); nullopt before the first one.
    // Never blocks on the network.
    std::optional<std::vector<std::string>> known_roles() const;

    const TokenBrokerConfig& config() const { return config_; }

    // Exposed for tests: the form body a token request sends (with a fresh assertion).
    std::string build_request_body(std::int64_t now_s) const;

private:
    TokenResult fetch_locked(std::unique_lock<std::mutex>& lock);
    void refresher();
    std::int64_t now_ms() const;
    bool usable(std::int64_t now) const;

    TokenBrokerConfig config_;
    TokenTransport transport_;
    Clock clock_;
    BrokerTiming timing_;

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::optional<Token> token_;
    std::optional<std::vector<std::string>> last_roles_;
    std::optional<TokenFailure> last_failure_;
    bool in_flight_ = false;
    int failures_ = 0;              // consecutive (backoff)
    std::uint64_t total_failures_ = 0;
    std::int64_t next_attempt_ms_ = 0;
    std::uint64_t requests_ = 0;
    bool stopping_ = false;
    std::thread refresher_;
};

// One sentence naming the cause and the fix for a token endpoint error, for `graphbridge check` and logs.
std::string explain_token_error(const TokenBrokerConfig& config, long status, const std::string& error,
                                const std::vector<std::int64_t>& codes);

// Roles claim of an access token (decoded, not verified). Empty when absent or not a JWT.
std::vector<std::string> token_roles(const std::string& access_token);

}  // namespace gb::auth
