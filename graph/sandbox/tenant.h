// The emulated tenant: directory objects the identity platform and Graph need.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gb::sandbox {

struct AppCertificate {
    std::string der;            // the uploaded public certificate (DER)
    std::string sha1;           // raw 20-byte SHA-1 of der (matches header x5t)
    std::string sha256;         // raw 32-byte SHA-256 of der (matches header x5t#S256)
    std::int64_t not_before = 0;  // unix seconds
    std::int64_t not_after = 0;
};

struct AppSecret {
    std::string id;      // the "Secret ID" shown in the portal (a GUID); sending it instead of the value fails
    std::string value;   // the secret value
    std::int64_t expires_at = 0;  // unix seconds; 0 = never
};

struct App {
    std::string client_id;  // GUID
    std::string display_name;
    bool enabled = true;          // false -> AADSTS7000112
    bool public_client = false;   // true -> AADSTS700025 for any credential
    std::vector<AppCertificate> certificates;
    std::vector<AppSecret> secrets;
    // Application permissions with admin consent, e.g. "Mail.Send", "Mail.ReadWrite". Empty = consent
    // missing: the token is still issued but carries no roles claim (as Entra does).
    std::vector<std::string> roles;
};

struct Mailbox {
    std::string address;       // user principal name, lower case
    std::string display_name;
    std::string id;            // the user object id (GUID); /users/{id} accepts either
};

struct Tenant {
    std::string tenant_id;              // GUID
    std::vector<std::string> domains;   // verified domains, e.g. "sandbox.test"; first is the default
    std::vector<App> apps;
    std::vector<Mailbox> mailboxes;
};

struct SandboxOptions {
    std::string login_base;   // e.g. "https://127.0.0.1:8443" (no trailing slash)
    std::string graph_base;   // resource URI for scopes, e.g. "https://127.0.0.1:8443"
    std::int64_t token_lifetime = 3599;      // expires_in of issued tokens (seconds)
    std::int64_t clock_skew = 300;           // allowed skew for assertion exp/nbf (seconds)
    std::int64_t max_assertion_lifetime = 600;  // exp - (nbf|iat) longer than this is refused
    int mailbox_concurrency = 4;             // concurrent Graph requests per mailbox before 429
    int throttle_retry_after = 1;            // Retry-After (seconds) on concurrency throttling
    std::size_t max_request_body = 4 * 1024 * 1024;  // Graph's ~4 MB request cap -> 413
};

}  // namespace gb::sandbox
