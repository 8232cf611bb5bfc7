// Compact JWS RS256/PS256 signing, parsing and verification, and client-assertion construction (jwt.h).
//
// Hostile input: compact JWS strings given to parse_jws/verify_*; they are split, strictly base64url
// decoded and checked with OpenSSL, never trusted.
#include "auth/jwt.h"

#include "auth/crypto.h"

#include <openssl/err.h>
#include <openssl/rsa.h>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <stdexcept>

namespace gb::auth {
namespace {

struct MdCtxDeleter {
    void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

constexpr int kPssSaltLength = 32;  // = SHA-256 digest length (RFC 7518 §3.5)

bool key_usable(JwsAlg alg, const EVP_PKEY* key) {
    if (key == nullptr) return false;
    if (EVP_PKEY_is_a(key, "RSA")) return true;
    return alg == JwsAlg::PS256 && EVP_PKEY_is_a(key, "RSA-PSS");
}

// Padding parameters shared by signing and verification.
bool set_padding(JwsAlg alg, EVP_PKEY_CTX* pctx) {
    if (alg == JwsAlg::RS256) return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, kPssSaltLength) == 1;
}

bool is_base64url_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

std::optional<std::string> strict_b64url(std::string_view part) {
    for (char c : part)
        if (!is_base64url_char(c)) return std::nullopt;
    return base64url_decode(part);
}

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void put_string(JsonWriter& w, std::string_view key, std::string_view value) {
    w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

}  // namespace

std::string_view jws_alg_name(JwsAlg alg) {
    return alg == JwsAlg::RS256 ? "RS256" : "PS256";
}

std::optional<JwsAlg> parse_jws_alg(std::string_view name) {
    if (name == "RS256") return JwsAlg::RS256;
    if (name == "PS256") return JwsAlg::PS256;
    return std::nullopt;
}

std::string sign_bytes(JwsAlg alg, EVP_PKEY* key, std::string_view input) {
    if (!key_usable(alg, key)) throw PkiError("sign_bytes: an RSA private key is required");
    MdCtx ctx(EVP_MD_CTX_new());
    EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
    std::size_t len = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key) != 1 ||
        !set_padding(alg, pctx) ||
        EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                       input.size()) != 1) {
        ERR_clear_error();
        throw PkiError("sign_bytes: signing setup failed");
    }
    std::string sig(len, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
        ERR_clear_error();
        throw PkiError("sign_bytes: signing failed");
    }
    sig.resize(len);
    return sig;
}

bool verify_bytes(JwsAlg alg, EVP_PKEY* public_key, std::string_view input, std::string_view signature) {
    if (!key_usable(alg, public_key) || signature.empty()) return false;
    MdCtx ctx(EVP_MD_CTX_new());
    EVP_PKEY_CTX* pctx = nullptr;
    bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, public_key) == 1 &&
              set_padding(alg, pctx) &&
              EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                               signature.size(), reinterpret_cast<const unsigned char*>(input.data()),
                               input.size()) == 1;
    ERR_clear_error();
    return ok;
}

std::string sign_jws(JwsAlg alg, EVP_PKEY* key, std::string_view header_json, std::string_view payload_json) {
    std::string input = base64url_encode(header_json) + "." + base64url_encode(payload_json);
    std::string sig = sign_bytes(alg, key, input);
    return input + "." + base64url_encode(sig);
}

std::optional<ParsedJws> parse_jws(std::string_view compact) {
    auto dot1 = compact.find('.');
    if (dot1 == std::string_view::npos) return std::nullopt;
    auto dot2 = compact.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos) return std::nullopt;
    if (compact.find('.', dot2 + 1) != std::string_view::npos) return std::nullopt;  // JWE or junk
    std::string_view h = compact.substr(0, dot1);
    std::string_view p = compact.substr(dot1 + 1, dot2 - dot1 - 1);
    std::string_view s = compact.substr(dot2 + 1);
    if (h.empty() || p.empty()) return std::nullopt;
    auto header = strict_b64url(h);
    auto payload = strict_b64url(p);
    auto sig = strict_b64url(s);
    if (!header || !payload || !sig) return std::nullopt;
    ParsedJws out;
    out.header_json = std::move(*header);
    out.payload_json = std::move(*payload);
    out.signing_input = std::string(compact.substr(0, dot2));
    out.signature = std::move(*sig);
    return out;
}

bool verify_jws(const ParsedJws& jws, JwsAlg alg, EVP_PKEY* public_key) {
    return verify_bytes(alg, public_key, jws.signing_input, jws.signature);
}

std::string make_client_assertion(const ClientAssertionParams& params, EVP_PKEY* private_key) {
    rapidjson::StringBuffer hbuf;
    {
        JsonWriter w(hbuf);
        w.StartObject();
        put_string(w, "alg", jws_alg_name(params.alg));
        put_string(w, "typ", "JWT");
        if (params.thumbprint == ThumbprintHeader::X5t)
            put_string(w, "x5t", base64url_encode(sha1(params.cert_der)));
        else
            put_string(w, "x5t#S256", base64url_encode(sha256(params.cert_der)));
        if (params.include_x5c) {
            w.Key("x5c");
            w.StartArray();
            std::string b64 = base64_encode(params.cert_der);
            w.String(b64.data(), static_cast<rapidjson::SizeType>(b64.size()));
            w.EndArray();
        }
        w.EndObject();
    }

    rapidjson::Document claims(rapidjson::kObjectType);
    auto& alloc = claims.GetAllocator();
    auto set = [&](const char* name, rapidjson::Value value) {
        if (claims.HasMember(name))
            claims[name] = std::move(value);
        else
            claims.AddMember(rapidjson::Value(name, alloc), std::move(value), alloc);
    };
    auto str = [&](std::string_view s) {
        return rapidjson::Value(s.data(), static_cast<rapidjson::SizeType>(s.size()), alloc);
    };
    std::string jti = params.jti.empty() ? uuid_v4() : params.jti;
    set("aud", str(params.audience));
    set("iss", str(params.client_id));
    set("sub", str(params.client_id));
    set("jti", str(jti));
    set("nbf", rapidjson::Value(static_cast<int64_t>(params.now)));
    set("iat", rapidjson::Value(static_cast<int64_t>(params.now)));
    set("exp", rapidjson::Value(static_cast<int64_t>(params.now + params.lifetime)));
    if (!params.extra_claims_json.empty()) {
        rapidjson::Document extra;
        extra.Parse(params.extra_claims_json.data(), params.extra_claims_json.size());
        if (extra.HasParseError() || !extra.IsObject())
            throw std::invalid_argument("make_client_assertion: extra_claims_json is not a JSON object");
        for (auto& m : extra.GetObject()) {
            rapidjson::Value copy(m.value, alloc);
            std::string name(m.name.GetString(), m.name.GetStringLength());
            if (claims.HasMember(name.c_str()))
                claims[name.c_str()] = std::move(copy);
            else
                claims.AddMember(str(name), std::move(copy), alloc);
        }
    }
    rapidjson::StringBuffer pbuf;
    {
        JsonWriter w(pbuf);
        claims.Accept(w);
    }
    return sign_jws(params.alg, private_key, std::string_view(hbuf.GetString(), hbuf.GetSize()),
                    std::string_view(pbuf.GetString(), pbuf.GetSize()));
}

}  // namespace gb::auth
