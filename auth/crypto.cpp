#include "auth/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <stdexcept>

namespace gb::auth {
namespace {

constexpr char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kUrl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string encode(std::string_view in, const char* alphabet, bool pad) {
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(in[k]); };
    for (; i + 3 <= in.size(); i += 3) {
        std::uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
        out.push_back(alphabet[(v >> 18) & 63]);
        out.push_back(alphabet[(v >> 12) & 63]);
        out.push_back(alphabet[(v >> 6) & 63]);
        out.push_back(alphabet[v & 63]);
    }
    std::size_t rest = in.size() - i;
    if (rest == 1) {
        std::uint32_t v = byte(i) << 16;
        out.push_back(alphabet[(v >> 18) & 63]);
        out.push_back(alphabet[(v >> 12) & 63]);
        if (pad) out.append("==");
    } else if (rest == 2) {
        std::uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8);
        out.push_back(alphabet[(v >> 18) & 63]);
        out.push_back(alphabet[(v >> 12) & 63]);
        out.push_back(alphabet[(v >> 6) & 63]);
        if (pad) out.push_back('=');
    }
    return out;
}

std::optional<std::string> decode(std::string_view in, bool url, bool skip_space) {
    std::array<int, 256> table;
    table.fill(-1);
    const char* alphabet = url ? kUrl : kStd;
    for (int k = 0; k < 64; ++k) table[static_cast<unsigned char>(alphabet[k])] = k;
    std::string out;
    out.reserve(in.size() * 3 / 4);
    std::uint32_t acc = 0;
    int bits = 0;
    std::size_t padding = 0, symbols = 0;
    for (char ch : in) {
        auto c = static_cast<unsigned char>(ch);
        if (skip_space && (c == '\r' || c == '\n' || c == ' ' || c == '\t')) continue;
        if (c == '=') {
            ++padding;
            continue;
        }
        if (padding) return std::nullopt;  // data after padding
        int v = table[c];
        if (v < 0) return std::nullopt;
        ++symbols;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xFF));
        }
    }
    if (symbols % 4 == 1) return std::nullopt;
    if (padding > 2) return std::nullopt;
    if (padding && (symbols + padding) % 4 != 0) return std::nullopt;
    if (!url && !padding && symbols % 4 != 0) return std::nullopt;  // standard base64 must be padded
    // Leftover bits must be zero (canonical encoding).
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
    return out;
}

std::string digest(const EVP_MD* md, std::string_view data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), out, &len, md, nullptr) != 1)
        throw std::runtime_error("digest failed");
    return std::string(reinterpret_cast<char*>(out), len);
}

std::string hex(std::string_view bytes, const char* digits) {
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char c : bytes) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 15]);
    }
    return out;
}

}  // namespace

std::string base64_encode(std::string_view bytes) { return encode(bytes, kStd, true); }
std::optional<std::string> base64_decode(std::string_view text) { return decode(text, false, true); }
std::string base64url_encode(std::string_view bytes) { return encode(bytes, kUrl, false); }
std::optional<std::string> base64url_decode(std::string_view text) { return decode(text, true, false); }

std::string sha1(std::string_view data) { return digest(EVP_sha1(), data); }
std::string sha256(std::string_view data) { return digest(EVP_sha256(), data); }
std::string hex_upper(std::string_view bytes) { return hex(bytes, "0123456789ABCDEF"); }
std::string hex_lower(std::string_view bytes) { return hex(bytes, "0123456789abcdef"); }

std::string random_bytes(std::size_t n) {
    std::string out(n, '\0');
    if (n && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
        throw std::runtime_error("RAND_bytes failed");
    return out;
}

std::string uuid_v4() {
    std::string b = random_bytes(16);
    b[6] = static_cast<char>((b[6] & 0x0F) | 0x40);
    b[8] = static_cast<char>((b[8] & 0x3F) | 0x80);
    std::string h = hex_lower(b);
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" +
           h.substr(20);
}

bool constant_time_equal(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace gb::auth
