// Compact JWS (RFC 7515) with RS256 / PS256 on OpenSSL 3 EVP, and the Microsoft identity platform's
// client-assertion JWT (RFC 7523, GRAPH-FACTS A.1/A.2).
//
// Hostile input: the compact JWS given to parse_jws / verify_signature (a client assertion or a bearer
// token received over the network). Parsing only splits and decodes; JSON validation is the caller's.
// PS256 here always means RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt, for signing AND
// verification (RFC 7518 §3.5); OpenSSL's default (maximum salt) is never used.
#pragma once

#include "auth/pki.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gb::auth {

enum class JwsAlg { RS256, PS256 };

std::string_view jws_alg_name(JwsAlg alg);                   // "RS256" / "PS256"
std::optional<JwsAlg> parse_jws_alg(std::string_view name);  // exact, case-sensitive; nullopt otherwise

// Raw signature over `input` (SHA-256). Throws PkiError if the key cannot sign (e.g. not RSA).
std::string sign_bytes(JwsAlg alg, EVP_PKEY* key, std::string_view input);
// PS256 requires salt length 32 exactly. False on any failure (never throws).
bool verify_bytes(JwsAlg alg, EVP_PKEY* public_key, std::string_view input, std::string_view signature);

// "b64url(header).b64url(payload).b64url(sig)". header_json is used verbatim (the caller keeps its "alg"
// consistent with `alg`; tests use that freedom to forge headers).
std::string sign_jws(JwsAlg alg, EVP_PKEY* key, std::string_view header_json, std::string_view payload_json);

struct ParsedJws {
    std::string header_json;    // decoded header (not yet validated JSON)
    std::string payload_json;   // decoded payload
    std::string signing_input;  // "<b64url header>.<b64url payload>" exactly as received
    std::string signature;      // raw signature bytes (may be empty for alg "none")
};

// Exactly three parts of unpadded base64url ("=" padding, whitespace and other characters are refused);
// header and payload must be non-empty. nullopt otherwise.
std::optional<ParsedJws> parse_jws(std::string_view compact);

// Verify a parsed JWS with the given algorithm (the caller decides the algorithm from the header after
// checking it is allowed).
bool verify_jws(const ParsedJws& jws, JwsAlg alg, EVP_PKEY* public_key);

// --- client assertion -------------------------------------------------------------------------------

enum class ThumbprintHeader {
    X5t,      // "x5t": base64url(SHA-1(DER)), paired with RS256 by older docs and ADFS
    X5tS256,  // "x5t#S256": base64url(SHA-256(DER)), paired with PS256 by the current docs
};

struct ClientAssertionParams {
    std::string client_id;  // iss and sub
    std::string audience;   // the exact token endpoint URL: https://login.../{tenant}/oauth2/v2.0/token
    std::string cert_der;   // the registered certificate: its thumbprint goes in the header
    JwsAlg alg = JwsAlg::RS256;
    ThumbprintHeader thumbprint = ThumbprintHeader::X5t;
    std::int64_t now = 0;         // nbf and iat (unix seconds, UTC)
    std::int64_t lifetime = 300;  // exp = now + lifetime; Entra advises 5-10 minutes at most
    std::string jti;              // empty: a fresh UUID v4
    bool include_x5c = false;     // add "x5c": [base64(DER)] (needed only for SN+I configured apps)
    // Optional JSON object whose members are added to the claims, replacing claims of the same name
    // (e.g. R"({"nbf":123})"). Throws std::invalid_argument if it is not a JSON object.
    std::string extra_claims_json;
};

// Header {"alg","typ":"JWT","x5t" | "x5t#S256"[,"x5c"]} and claims {aud, iss, sub, jti, nbf, iat, exp}.
std::string make_client_assertion(const ClientAssertionParams& params, EVP_PKEY* private_key);

}  // namespace gb::auth
