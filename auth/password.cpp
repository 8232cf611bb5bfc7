#include "auth/password.h"

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <charconv>
#include <stdexcept>
#include <vector>

#include "auth/crypto.h"

namespace gb::auth {
namespace {

constexpr std::size_t kHashLen = 32;

std::optional<std::string> scrypt(std::string_view password, std::string_view salt, const ScryptParams& p) {
    std::string out(kHashLen, '\0');
    std::uint64_t n = 1ull << p.log_n;
    // maxmem must cover 128 * N * r * p plus slack.
    std::uint64_t maxmem = 128ull * n * static_cast<std::uint64_t>(p.r) * static_cast<std::uint64_t>(p.p) + (1u << 20);
    if (EVP_PBE_scrypt(password.data(), password.size(), reinterpret_cast<const unsigned char*>(salt.data()),
                       salt.size(), n, static_cast<std::uint64_t>(p.r), static_cast<std::uint64_t>(p.p), maxmem,
                       reinterpret_cast<unsigned char*>(out.data()), out.size()) != 1)
        return std::nullopt;
    return out;
}

struct Parsed {
    ScryptParams params;
    std::string salt;
    std::string hash;
};

std::optional<int> number(std::string_view s) {
    int v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
    return v;
}

std::optional<Parsed> parse(std::string_view e) {
    constexpr std::string_view prefix = "$scrypt$";
    if (e.substr(0, prefix.size()) != prefix) return std::nullopt;
    e.remove_prefix(prefix.size());
    std::vector<std::string_view> parts;
    while (true) {
        auto d = e.find('$');
        parts.push_back(e.substr(0, d));
        if (d == std::string_view::npos) break;
        e.remove_prefix(d + 1);
    }
    if (parts.size() != 3) return std::nullopt;
    Parsed out;
    std::string_view params = parts[0];
    int seen = 0;
    while (!params.empty()) {
        auto comma = params.find(',');
        std::string_view kv = params.substr(0, comma);
        params = comma == std::string_view::npos ? std::string_view{} : params.substr(comma + 1);
        auto eq = kv.find('=');
        if (eq == std::string_view::npos) return std::nullopt;
        auto v = number(kv.substr(eq + 1));
        if (!v) return std::nullopt;
        auto k = kv.substr(0, eq);
        if (k == "ln") out.params.log_n = *v, seen |= 1;
        else if (k == "r") out.params.r = *v, seen |= 2;
        else if (k == "p") out.params.p = *v, seen |= 4;
        else return std::nullopt;
    }
    if (seen != 7) return std::nullopt;
    // Bounds keep a hostile or corrupt config from asking for gigabytes.
    if (out.params.log_n < 10 || out.params.log_n > 20 || out.params.r < 1 || out.params.r > 32 ||
        out.params.p < 1 || out.params.p > 16)
        return std::nullopt;
    auto salt = base64_decode(parts[1]);
    auto hash = base64_decode(parts[2]);
    if (!salt || !hash || salt->size() < 8 || hash->size() != kHashLen) return std::nullopt;
    out.salt = std::move(*salt);
    out.hash = std::move(*hash);
    return out;
}

}  // namespace

std::string hash_password(std::string_view password, ScryptParams params) {
    std::string salt = random_bytes(16);
    auto hash = scrypt(password, salt, params);
    if (!hash) throw std::runtime_error("scrypt failed");
    return "$scrypt$ln=" + std::to_string(params.log_n) + ",r=" + std::to_string(params.r) +
           ",p=" + std::to_string(params.p) + "$" + base64_encode(salt) + "$" + base64_encode(*hash);
}

bool verify_password(std::string_view password, std::string_view encoded) {
    auto parsed = parse(encoded);
    if (!parsed) return false;
    auto hash = scrypt(password, parsed->salt, parsed->params);
    return hash && constant_time_equal(*hash, parsed->hash);
}

bool is_password_hash(std::string_view encoded) { return parse(encoded).has_value(); }

}  // namespace gb::auth
