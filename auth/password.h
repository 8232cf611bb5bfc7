// Local account password hashes: scrypt (RFC 7914) via OpenSSL, in a self-describing string
// "$scrypt$ln=<log2 N>,r=<r>,p=<p>$<base64 salt>$<base64 hash>". Verification is constant-time.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gb::auth {

struct ScryptParams {
    int log_n = 15;  // N = 32768: ~32 MiB and ~50-100 ms per check
    int r = 8;
    int p = 1;
};

std::string hash_password(std::string_view password, ScryptParams params = {});
// False for a wrong password and for a malformed hash string.
bool verify_password(std::string_view password, std::string_view encoded);
// True when the string is a well-formed hash this version can verify.
bool is_password_hash(std::string_view encoded);

}  // namespace gb::auth
