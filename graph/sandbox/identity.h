// Emulated Microsoft identity platform: the v2.0 token endpoint for client credentials.
//
// Strict where Entra ID is strict (GRAPH-FACTS section A): client secret or client assertion; the
// assertion is an RS256 or PS256 JWT verified against a certificate registered on the app, found by
// x5t (SHA-1) or x5t#S256; aud must equal the exact token endpoint URL; iss = sub = client_id;
// exp/nbf within the allowed skew; a short lifetime; a jti never seen before; one resource scope
// ending in /.default. Errors use the real JSON shape and AADSTS codes.
//
// Issued access tokens are JWTs (RS256) signed by the sandbox's own token-signing key, with claims
// aud (the Graph resource), iss, tid, appid, roles (absent without admin consent), iat, nbf, exp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "graph/sandbox/http_types.h"
#include "graph/sandbox/tenant.h"

namespace gb::sandbox {

using Clock = std::function<std::int64_t()>;  // unix seconds

// Claims of a validated Graph access token.
struct AccessToken {
    std::string app_id;
    std::string tenant_id;
    std::vector<std::string> roles;
    std::int64_t expires_at = 0;
};

// Why a bearer token was refused (Graph answers 401 InvalidAuthenticationToken with this text).
struct TokenRejection {
    std::string message;
};

class Identity {
public:
    // signing_key_pem: the sandbox's token-signing RSA private key (PKCS#8 PEM).
    Identity(const Tenant& tenant, const SandboxOptions& options, std::string signing_key_pem, Clock clock);
    ~Identity();
    Identity(const Identity&) = delete;
    Identity& operator=(const Identity&) = delete;

    // POST /{tenant}/oauth2/v2.0/token. tenant_segment is the (decoded) path segment as sent.
    HttpResponse handle_token(const HttpRequest& request, std::string_view tenant_segment);

    // Validate "Authorization: Bearer <jwt>" for Graph: signature, audience, expiry.
    // Returns the claims, or the reason it was refused.
    std::variant<AccessToken, TokenRejection> validate_bearer(std::optional<std::string_view> authorization);

    // Every access token issued so far is refused by validate_bearer from now on (tests of the
    // bridge's refresh-after-401 path).
    void revoke_issued_tokens();

    // Number of token requests answered (any outcome) and tokens issued: tests read these.
    std::uint64_t token_requests() const;
    std::uint64_t tokens_issued() const;

    // Mutable tenant access for admin/test hooks (disable an app, drop consent, add a secret...).
    // Not synchronized: use it before requests are served, or use update_tenant() while they are.
    Tenant& tenant();
    // Thread-safe variants: mutate under the identity's lock / copy under the lock.
    void update_tenant(const std::function<void(Tenant&)>& mutate);
    Tenant tenant_snapshot() const;

    // The token-signing public key (SubjectPublicKeyInfo PEM), for tests and diagnostics.
    std::string signing_public_key_pem() const;
    // "<login_base>/<tenant_segment>/oauth2/v2.0/token": the only aud accepted in a client assertion.
    std::string token_endpoint(std::string_view tenant_segment) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::sandbox
