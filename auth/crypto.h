// Small crypto and encoding primitives on OpenSSL: base64 (standard and URL-safe), digests, randomness.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gb::auth {

std::string base64_encode(std::string_view bytes);                 // standard alphabet, padded
std::optional<std::string> base64_decode(std::string_view text);   // standard alphabet; ignores CR/LF/space
std::string base64url_encode(std::string_view bytes);              // RFC 4648 §5, no padding
std::optional<std::string> base64url_decode(std::string_view text);  // accepts with or without padding

std::string sha1(std::string_view data);    // raw 20 bytes
std::string sha256(std::string_view data);  // raw 32 bytes
std::string hex_upper(std::string_view bytes);  // "84E05C..." as the Azure portal prints thumbprints
std::string hex_lower(std::string_view bytes);

std::string random_bytes(std::size_t n);  // from the OpenSSL CSPRNG; throws on failure
std::string uuid_v4();                    // "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", lower case

// Constant-time comparison for secrets.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace gb::auth
