// Emulated Microsoft identity platform token endpoint (client credentials) and Graph bearer validation.
//
// Hostile input: everything in the token request (path tenant segment, headers, form body, the client
// assertion JWT) and the Authorization header given to validate_bearer. Values echoed into error text
// are truncated and reduced to printable ASCII; secrets are never echoed or logged.
//
// AADSTS codes used (see GRAPH-FACTS A.3; codes not in that table are marked "chosen"):
//   900561  invalid_request        method is not POST (Entra: "The endpoint only accepts POST requests")
//   900144  invalid_request        wrong Content-Type, or a required parameter missing
//   9002313 invalid_request        malformed form body, duplicated parameter, bad HTTP Basic header,
//                                  both client_secret and client_assertion (chosen: Entra's generic
//                                  "Request is malformed or invalid")
//   900023  invalid_request        tenant segment neither a GUID nor a DNS name
//   90002   invalid_request        tenant not found
//   50194   invalid_request        /common or /organizations with client credentials (single-tenant app)
//   9001023 invalid_request        /consumers with client credentials
//   70003   unsupported_grant_type grant_type other than client_credentials
//   700016  unauthorized_client    unknown client_id
//   7000112 unauthorized_client    application disabled
//   700025  invalid_client         public client
//   1002012 invalid_scope          scope without /.default (e.g. "Mail.Send")
//   700022  invalid_scope          several /.default resources; 70011 for any other multi-value scope
//   500011  invalid_resource       resource is not this sandbox's Graph
//   7000218 invalid_client         neither client_secret nor client_assertion
//   7000215 invalid_client         wrong secret (incl. the secret ID sent as the secret)
//   7000222 invalid_client         secret expired
//   90011   invalid_request        client_assertion_type missing/wrong (Entra: "Unexpected client
//                                  assertion type", reported by ADAL users)
//   50027   invalid_request        assertion not a JWS, bad JSON, alg not RS256/PS256 (incl. none/HS256),
//                                  no x5t/x5t#S256, undecodable thumbprint, exp/jti missing, aud not a
//                                  string, replayed jti (chosen: no documented replay code)
//   700027  invalid_client         thumbprint not registered ("The key was not found"), signature check
//                                  failed ("Key was found, but ..."), registered certificate outside its
//                                  validity ("The key used is expired")
//   700021  invalid_client         iss or sub missing / not equal to client_id
//   50012   invalid_client         aud not exactly <login_base>/<tenant segment>/oauth2/v2.0/token
//   700024  invalid_client         now outside [nbf - skew, exp + skew], iat in the future beyond the skew,
//                                  or exp - (nbf|iat|now) > max_assertion_lifetime (chosen: same code,
//                                  since Entra documents no separate lifetime code)
#include "graph/sandbox/identity.h"

#include "auth/crypto.h"
#include "auth/jwt.h"
#include "auth/pki.h"
#include "common/ascii.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <ctime>
#include <stdexcept>

namespace gb::sandbox {
namespace {

using Form = std::vector<std::pair<std::string, std::string>>;
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr std::string_view kAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
constexpr std::string_view kCertDoc =
    "Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials "
    ".";

bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool is_guid(std::string_view s) {
    if (s.size() != 36) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i])) return false;
    }
    return true;
}

bool is_dns_name(std::string_view s) {
    if (s.empty() || s.size() > 253) return false;
    int labels = 0;
    while (!s.empty()) {
        auto dot = s.find('.');
        std::string_view label = s.substr(0, dot);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
        for (char c : label)
            if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
        ++labels;
        if (dot == std::string_view::npos) break;
        s.remove_prefix(dot + 1);
        if (s.empty()) return false;  // trailing dot
    }
    return labels >= 2;
}

// Hostile values quoted in error text: printable ASCII only, bounded length.
std::string quote(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 200)) {
        auto u = static_cast<unsigned char>(c);
        out.push_back(u >= 0x20 && u < 0x7F ? c : '?');
    }
    if (s.size() > 200) out += "...";
    return out;
}

std::string format_time(std::int64_t t, bool iso) {
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::size_t n = iso ? std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S.0000000Z", &tm)
                        : std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
    return std::string(buf, n);
}
std::string entra_timestamp(std::int64_t t) {
    return format_time(t, false);
}
std::string iso_time(std::int64_t t) {
    return format_time(t, true);
}

void put(JsonWriter& w, std::string_view key, std::string_view value) {
    w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}
void put(JsonWriter& w, std::string_view key, std::int64_t value) {
    w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
    w.Int64(value);
}

enum class Num { Absent, Bad, Ok };
Num get_num(const rapidjson::Value& obj, const char* name, std::int64_t& out) {
    auto it = obj.FindMember(name);
    if (it == obj.MemberEnd()) return Num::Absent;
    const auto& v = it->value;
    if (v.IsInt64()) {
        out = v.GetInt64();
        return Num::Ok;
    }
    if (v.IsDouble()) {
        double d = v.GetDouble();
        if (!std::isfinite(d) || d < -9.0e15 || d > 9.0e15) return Num::Bad;
        out = static_cast<std::int64_t>(std::floor(d));
        return Num::Ok;
    }
    return Num::Bad;
}

const rapidjson::Value* get_string(const rapidjson::Value& obj, const char* name) {
    auto it = obj.FindMember(name);
    if (it == obj.MemberEnd() || !it->value.IsString()) return nullptr;
    return &it->value;
}
std::string_view sv(const rapidjson::Value& v) {
    return {v.GetString(), v.GetStringLength()};
}

// Deterministic service-principal object id for an app (the sandbox has no separate SP object).
std::string service_principal_oid(std::string_view tenant_id, std::string_view client_id) {
    std::string h =
        auth::hex_lower(auth::sha256(fmt::format("sp\n{}\n{}", tenant_id, client_id)).substr(0, 16));
    h[12] = '4';
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" +
           h.substr(20);
}

using ascii::lower;

// One token request's context: ids and time shared by the error body and headers.
struct RequestCtx {
    std::int64_t now = 0;
    std::string trace_id;
    std::string correlation_id;
    std::optional<std::string> client_request_id;  // echoed when it was a GUID
};

}  // namespace

struct Identity::Impl {
    mutable std::mutex mu;
    Tenant tenant;
    SandboxOptions options;
    auth::PKey signing_key;
    std::string signing_kid;  // base64url(SHA-1(SPKI DER))
    Clock clock;
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> issued{0};
    std::map<std::string, std::int64_t> seen_jti;  // "<client_id lower>\n<jti>" -> forget after (exp + skew)
    mutable std::map<std::string, std::int64_t> issued_uti;  // uti -> exp of tokens still valid (for revocation)
    std::map<std::string, std::int64_t> revoked_uti;  // uti -> exp of revoked tokens

    std::string graph_resource() const {
        std::string r = options.graph_base;
        while (!r.empty() && r.back() == '/') r.pop_back();
        return r;
    }
    std::string issuer() const { return fmt::format("{}/{}/v2.0", options.login_base, tenant.tenant_id); }

    void add_common_headers(HttpResponse& r, const RequestCtx& ctx) const {
        r.set_header("Cache-Control", "no-store, no-cache");
        r.set_header("Pragma", "no-cache");
        r.set_header("x-ms-request-id", ctx.trace_id);
        if (ctx.client_request_id) r.set_header("client-request-id", *ctx.client_request_id);
    }

    HttpResponse error(const RequestCtx& ctx, std::string_view error, int code, std::string_view text) const {
        std::string ts = entra_timestamp(ctx.now);
        std::string description =
            fmt::format("AADSTS{}: {}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}", code, text,
                        ctx.trace_id, ctx.correlation_id, ts);
        rapidjson::StringBuffer buf;
        JsonWriter w(buf);
        w.StartObject();
        put(w, "error", error);
        put(w, "error_description", description);
        w.Key("error_codes");
        w.StartArray();
        w.Int(code);
        w.EndArray();
        put(w, "timestamp", ts);
        put(w, "trace_id", ctx.trace_id);
        put(w, "correlation_id", ctx.correlation_id);
        put(w, "error_uri", fmt::format("{}/error?code={}", options.login_base, code));
        w.EndObject();
        HttpResponse r = HttpResponse::json(error == "invalid_client" ? 401 : 400,
                                            std::string(buf.GetString(), buf.GetSize()));
        add_common_headers(r, ctx);
        return r;
    }

    std::string mint_token(const App& app, std::int64_t now, bool with_certificate) const {
        rapidjson::StringBuffer hbuf;
        {
            JsonWriter w(hbuf);
            w.StartObject();
            put(w, "typ", "JWT");
            put(w, "alg", "RS256");
            put(w, "x5t", signing_kid);
            put(w, "kid", signing_kid);
            w.EndObject();
        }
        std::string oid = service_principal_oid(tenant.tenant_id, app.client_id);
        rapidjson::StringBuffer pbuf;
        {
            JsonWriter w(pbuf);
            w.StartObject();
            put(w, "aud", options.graph_base);
            put(w, "iss", issuer());
            put(w, "iat", now);
            put(w, "nbf", now);
            put(w, "exp", now + options.token_lifetime);
            put(w, "app_displayname", app.display_name);
            put(w, "appid", app.client_id);
            put(w, "appidacr", with_certificate ? "2" : "1");
            put(w, "idp", issuer());
            put(w, "idtyp", "app");
            put(w, "oid", oid);
            if (!app.roles.empty()) {  // no admin consent: Entra omits the claim entirely
                w.Key("roles");
                w.StartArray();
                for (const auto& role : app.roles)
                    w.String(role.data(), static_cast<rapidjson::SizeType>(role.size()));
                w.EndArray();
            }
            put(w, "sub", oid);
            put(w, "tid", tenant.tenant_id);
            std::string uti = auth::base64url_encode(auth::random_bytes(16));
            for (auto it = issued_uti.begin(); it != issued_uti.end();)
                it = it->second <= now ? issued_uti.erase(it) : std::next(it);
            issued_uti[uti] = now + options.token_lifetime;
            put(w, "uti", uti);
            w.EndObject();
        }
        return auth::sign_jws(auth::JwsAlg::RS256, signing_key.get(),
                              std::string_view(hbuf.GetString(), hbuf.GetSize()),
                              std::string_view(pbuf.GetString(), pbuf.GetSize()));
    }

    HttpResponse token(const HttpRequest& request, std::string_view tenant_segment, RequestCtx& ctx);
    std::optional<HttpResponse> check_assertion(const RequestCtx& ctx, const App& app,
                                                std::string_view client_id,
                                                const std::optional<std::string>& assertion_type,
                                                const std::string& assertion,
                                                std::string_view tenant_segment);
};

HttpResponse Identity::Impl::token(const HttpRequest& request, std::string_view tenant_segment,
                                   RequestCtx& ctx) {
    // --- transport ---
    if (request.method != "POST")
        return error(ctx, "invalid_request", 900561,
                     fmt::format("The endpoint only accepts POST requests. Received a {} request.",
                                 quote(request.method)));
    auto content_type = request.header("Content-Type");
    std::string_view media = content_type.value_or("");
    media = media.substr(0, media.find(';'));
    while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.remove_suffix(1);
    if (!iequals(media, "application/x-www-form-urlencoded"))
        return error(
            ctx, "invalid_request", 900144,
            "The request body must contain the following parameter: 'grant_type'. The request must be "
            "sent with Content-Type: application/x-www-form-urlencoded.");
    auto parsed = parse_form(request.body);
    if (!parsed)
        return error(ctx, "invalid_request", 9002313, "Invalid request. Request is malformed or invalid.");
    const Form& form = *parsed;
    for (std::size_t i = 0; i < form.size(); ++i)
        for (std::size_t j = i + 1; j < form.size(); ++j)
            if (form[i].first == form[j].first)
                return error(
                    ctx, "invalid_request", 9002313,
                    fmt::format("Invalid request. Request is malformed or invalid: the parameter '{}' "
                                "appears more than once.",
                                quote(form[i].first)));
    auto field = [&](std::string_view name) -> std::optional<std::string> {
        for (const auto& [k, v] : form)
            if (k == name) return v;
        return std::nullopt;
    };
    auto missing = [&](std::string_view name) {
        return error(ctx, "invalid_request", 900144,
                     fmt::format("The request body must contain the following parameter: '{}'.", name));
    };

    // --- tenant ---
    if (iequals(tenant_segment, "common") || iequals(tenant_segment, "organizations"))
        return error(
            ctx, "invalid_request", 50194,
            fmt::format("Application '{}' is not configured as a multi-tenant application. Usage of the "
                        "/common endpoint is not supported for such applications created after "
                        "'10/15/2018'. Use a tenant-specific endpoint or configure the application to be "
                        "multi-tenant.",
                        quote(field("client_id").value_or(""))));
    if (iequals(tenant_segment, "consumers"))
        return error(ctx, "invalid_request", 9001023,
                     "The grant type 'client_credentials' is not supported over the /common or /consumers "
                     "endpoints. Please use the /organizations or tenant-specific endpoint.");
    bool guid = is_guid(tenant_segment);
    if (!guid && !is_dns_name(tenant_segment))
        return error(
            ctx, "invalid_request", 900023,
            fmt::format("Specified tenant identifier '{}' is neither a valid DNS name, nor a valid external "
                        "domain.",
                        quote(tenant_segment)));
    bool ours = guid ? iequals(tenant_segment, tenant.tenant_id) : false;
    for (const auto& d : tenant.domains)
        if (!guid && iequals(tenant_segment, d)) ours = true;
    if (!ours)
        return error(
            ctx, "invalid_request", 90002,
            fmt::format("Tenant '{}' not found. Check to make sure you have the correct tenant ID and are "
                        "signing into the correct cloud. Check with your subscription administrator, this "
                        "may happen if there are no active subscriptions for the tenant.",
                        quote(tenant_segment)));

    // --- grant type ---
    auto grant_type = field("grant_type");
    if (!grant_type || grant_type->empty()) return missing("grant_type");
    if (*grant_type != "client_credentials")
        return error(ctx, "unsupported_grant_type", 70003,
                     fmt::format("The app requested an unsupported grant type '{}'.", quote(*grant_type)));

    // --- client: body client_id and/or HTTP Basic (RFC 6749 §2.3.1) ---
    auto client_id = field("client_id");
    std::optional<std::string> basic_secret;
    if (auto authz = request.header("Authorization");
        authz && authz->size() > 6 && iequals(authz->substr(0, 6), "Basic ")) {
        auto decoded = auth::base64_decode(authz->substr(6));
        std::optional<std::string> id, secret;
        if (decoded) {
            auto colon = decoded->find(':');
            if (colon != std::string::npos) {
                id = percent_decode(std::string_view(*decoded).substr(0, colon), true);
                secret = percent_decode(std::string_view(*decoded).substr(colon + 1), true);
            }
        }
        if (!id || !secret || id->empty())
            return error(
                ctx, "invalid_request", 9002313,
                "Invalid request. Request is malformed or invalid: the Basic authorization header is "
                "malformed.");
        if (client_id && !iequals(*client_id, *id))
            return error(
                ctx, "invalid_request", 9002313,
                "Invalid request. Request is malformed or invalid: client_id in the body does not match "
                "the Authorization header.");
        client_id = *id;
        basic_secret = std::move(*secret);
    }
    if (!client_id || client_id->empty()) return missing("client_id");
    const App* app = nullptr;
    for (const auto& a : tenant.apps)
        if (iequals(a.client_id, *client_id)) app = &a;
    std::string tenant_name = tenant.domains.empty() ? tenant.tenant_id : tenant.domains.front();
    if (app == nullptr)
        return error(
            ctx, "unauthorized_client", 700016,
            fmt::format("Application with identifier '{}' was not found in the directory '{}'. This can "
                        "happen if the application has not been installed by the administrator of the "
                        "tenant or consented to by any user in the tenant. You may have sent your "
                        "authentication request to the wrong tenant.",
                        quote(*client_id), tenant_name));
    if (!app->enabled)
        return error(
            ctx, "unauthorized_client", 7000112,
            fmt::format("Application '{}'({}) is disabled.", app->client_id, quote(app->display_name)));
    if (app->public_client)
        return error(
            ctx, "invalid_client", 700025,
            "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.");

    // --- scope: exactly one resource, "<graph_base>/.default" ---
    auto scope = field("scope");
    std::vector<std::string> scopes;
    if (scope) {
        std::string_view rest = *scope;
        while (!rest.empty()) {
            auto sp = rest.find_first_of(" \t");
            if (sp != 0) scopes.emplace_back(rest.substr(0, sp));
            if (sp == std::string_view::npos) break;
            rest.remove_prefix(sp + 1);
        }
    }
    if (scopes.empty()) return missing("scope");
    constexpr std::string_view kDefault = "/.default";
    auto is_default = [&](std::string_view s) {
        return s.size() > kDefault.size() && iequals(s.substr(s.size() - kDefault.size()), kDefault);
    };
    if (scopes.size() > 1) {
        bool all_default = true;
        std::vector<std::string> resources;
        for (const auto& s : scopes) {
            if (!is_default(s)) {
                all_default = false;
                continue;
            }
            std::string res = lower(std::string_view(s).substr(0, s.size() - kDefault.size()));
            if (std::find(resources.begin(), resources.end(), res) == resources.end())
                resources.push_back(res);
        }
        if (!all_default)
            return error(
                ctx, "invalid_scope", 70011,
                fmt::format("The provided request must include a 'scope' input parameter. The provided value "
                            "for the input parameter 'scope' is not valid. The scope {} is not valid.",
                            quote(*scope)));
        if (resources.size() > 1)
            return error(
                ctx, "invalid_scope", 700022,
                fmt::format("The provided value for the input parameter scope is not valid because it "
                            "contains more than one resource. Scope {} is not valid.",
                            quote(*scope)));
    }
    const std::string& the_scope = scopes.front();
    if (!is_default(the_scope))
        return error(
            ctx, "invalid_scope", 1002012,
            fmt::format("The provided value for scope {} is not valid. Client credential flows must have a "
                        "scope value with /.default suffixed to the resource identifier (application ID "
                        "URI).",
                        quote(the_scope)));
    std::string_view resource = std::string_view(the_scope).substr(0, the_scope.size() - kDefault.size());
    if (!iequals(resource, graph_resource()))
        return error(
            ctx, "invalid_resource", 500011,
            fmt::format("The resource principal named {} was not found in the tenant named {}. This can "
                        "happen if the application has not been installed by the administrator of the "
                        "tenant or consented to by any user in the tenant. You might have sent your "
                        "authentication request to the wrong tenant.",
                        quote(resource), tenant_name));

    // --- credential ---
    auto body_secret = field("client_secret");
    auto assertion = field("client_assertion");
    auto assertion_type = field("client_assertion_type");
    if (body_secret && basic_secret)
        return error(
            ctx, "invalid_request", 9002313,
            "Invalid request. Request is malformed or invalid: the client secret was sent both in the "
            "body and in the Authorization header.");
    std::optional<std::string> secret = body_secret ? body_secret : basic_secret;
    bool has_secret = secret.has_value();
    bool has_assertion = assertion.has_value() || assertion_type.has_value();
    if (has_secret && has_assertion)
        return error(ctx, "invalid_request", 9002313,
                     "Invalid request. Request is malformed or invalid: only one of 'client_assertion' or "
                     "'client_secret' may be presented.");
    if (!has_secret && (!assertion || assertion->empty()))
        return error(ctx, "invalid_client", 7000218,
                     "The request body must contain the following parameter: 'client_assertion' or "
                     "'client_secret'.");

    if (has_secret) {
        // Compare against every secret without stopping early.
        const AppSecret* matched = nullptr;
        for (const auto& s : app->secrets) {
            bool eq = !s.value.empty() && auth::constant_time_equal(s.value, *secret);
            if (eq && matched == nullptr) matched = &s;
        }
        if (matched == nullptr)
            return error(
                ctx, "invalid_client", 7000215,
                fmt::format("Invalid client secret provided. Ensure the secret being sent in the request is "
                            "the client secret value, not the client secret ID, for a secret added to app "
                            "'{}'.",
                            app->client_id));
        if (matched->expires_at != 0 && ctx.now >= matched->expires_at)
            return error(
                ctx, "invalid_client", 7000222,
                fmt::format("The provided client secret keys for app '{}' are expired. Visit the Azure "
                            "portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
                            "consider using certificate credentials for added security: "
                            "https://aka.ms/certCreds.",
                            app->client_id));
    } else if (auto refused =
                   check_assertion(ctx, *app, *client_id, assertion_type, *assertion, tenant_segment)) {
        return std::move(*refused);
    }

    // --- success ---
    std::string access_token = mint_token(*app, ctx.now, !has_secret);
    rapidjson::StringBuffer buf;
    {
        JsonWriter w(buf);
        w.StartObject();
        put(w, "token_type", "Bearer");
        put(w, "expires_in", options.token_lifetime);
        put(w, "ext_expires_in", options.token_lifetime);
        put(w, "access_token", access_token);
        w.EndObject();
    }
    HttpResponse r = HttpResponse::json(200, std::string(buf.GetString(), buf.GetSize()));
    add_common_headers(r, ctx);
    issued.fetch_add(1);
    return r;
}

std::optional<HttpResponse> Identity::Impl::check_assertion(const RequestCtx& ctx, const App& app,
                                                            std::string_view client_id,
                                                            const std::optional<std::string>& assertion_type,
                                                            const std::string& assertion,
                                                            std::string_view tenant_segment) {
    if (!assertion_type || *assertion_type != kAssertionType)
        return error(ctx, "invalid_request", 90011,
                     fmt::format("Unexpected client assertion type. The client_assertion_type must be '{}'.",
                                 kAssertionType));
    auto malformed = [&](std::string_view why) {
        return error(ctx, "invalid_request", 50027,
                     fmt::format("JWT token is invalid or malformed. {}", why));
    };
    auto jws = auth::parse_jws(assertion);
    if (!jws) return malformed("The client assertion is not a compact JWS of three base64url parts.");
    rapidjson::Document header, claims;
    header.Parse(jws->header_json.data(), jws->header_json.size());
    claims.Parse(jws->payload_json.data(), jws->payload_json.size());
    if (header.HasParseError() || !header.IsObject())
        return malformed("The JWT header is not a JSON object.");
    if (claims.HasParseError() || !claims.IsObject())
        return malformed("The JWT payload is not a JSON object.");

    // Header: algorithm and thumbprint.
    const rapidjson::Value* alg_v = get_string(header, "alg");
    std::optional<auth::JwsAlg> alg = alg_v ? auth::parse_jws_alg(sv(*alg_v)) : std::nullopt;
    if (!alg)
        return malformed(fmt::format("The signing algorithm '{}' is not supported; use RS256 or PS256.",
                                     alg_v ? quote(sv(*alg_v)) : std::string("(missing)")));
    bool has_s256 = header.HasMember("x5t#S256"), has_x5t = header.HasMember("x5t");
    if (!has_s256 && !has_x5t)
        return malformed("The client assertion header is missing the thumbprint header 'x5t' or 'x5t#S256'.");
    const rapidjson::Value* thumb_v = get_string(header, has_s256 ? "x5t#S256" : "x5t");
    std::optional<std::string> thumb;
    if (thumb_v) {
        std::string_view t = sv(*thumb_v);
        bool clean = t.find_first_of("=+/ ") == std::string_view::npos;
        if (clean) thumb = auth::base64url_decode(t);
    }
    if (!thumb || thumb->empty()) return malformed("The thumbprint header is not base64url-encoded.");

    const AppCertificate* cert = nullptr;
    for (const auto& c : app.certificates) {
        const std::string& registered = has_s256 ? c.sha256 : c.sha1;
        if (!registered.empty() && registered == *thumb) cert = &c;
    }
    if (cert == nullptr)
        return error(
            ctx, "invalid_client", 700027,
            fmt::format("Client assertion failed signature validation. (Reason - The key was not found., "
                        "Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph "
                        "Explorer or directly use MS Graph to see configured keys for app Id '{}'. {})",
                        auth::hex_upper(thumb->substr(0, 64)), app.client_id, kCertDoc));
    if (ctx.now < cert->not_before || ctx.now > cert->not_after)
        return error(
            ctx, "invalid_client", 700027,
            fmt::format("Client assertion failed signature validation. (Reason - The key used is expired., "
                        "Thumbprint of key used by client: '{}', valid from {} to {}.)",
                        auth::hex_upper(cert->sha1), iso_time(cert->not_before), iso_time(cert->not_after)));
    auth::Cert x509 = auth::cert_from_der(cert->der);
    auth::PKey pub = x509 ? auth::cert_public_key(x509.get()) : nullptr;
    if (!pub || !auth::verify_jws(*jws, *alg, pub.get()))
        return error(
            ctx, "invalid_client", 700027,
            fmt::format("Client assertion failed signature validation. (Reason - Key was found, but use of "
                        "the key to verify the signature failed., Thumbprint of key used by client: '{}', "
                        "Found key 'Start={}, End={}'. {})",
                        auth::hex_upper(cert->sha1), iso_time(cert->not_before), iso_time(cert->not_after),
                        kCertDoc));

    // Claims (only now that the signature is trusted).
    const rapidjson::Value* iss = get_string(claims, "iss");
    const rapidjson::Value* sub = get_string(claims, "sub");
    if (!iss || !sub || !iequals(sv(*iss), client_id) || !iequals(sv(*sub), client_id))
        return error(
            ctx, "invalid_client", 700021,
            fmt::format("Client assertion application identifier doesn't match 'client_id' parameter. The "
                        "'iss' and 'sub' claims must both be '{}'. {}",
                        quote(client_id), kCertDoc));
    std::string expected_aud = fmt::format("{}/{}/oauth2/v2.0/token", options.login_base, tenant_segment);
    auto aud_it = claims.FindMember("aud");
    if (aud_it != claims.MemberEnd() && !aud_it->value.IsString())
        return malformed("The 'aud' claim must be a single string (the token endpoint URL).");
    if (aud_it == claims.MemberEnd() || sv(aud_it->value) != expected_aud)
        return error(
            ctx, "invalid_client", 50012,
            fmt::format("Client assertion audience claim does not match Realm issuer. Audience in the "
                        "assertion: '{}'; expected exactly '{}'.",
                        aud_it == claims.MemberEnd() ? std::string("(missing)") : quote(sv(aud_it->value)),
                        quote(expected_aud)));

    std::int64_t exp = 0, nbf = 0, iat = 0;
    Num exp_s = get_num(claims, "exp", exp), nbf_s = get_num(claims, "nbf", nbf),
        iat_s = get_num(claims, "iat", iat);
    if (exp_s == Num::Absent) return malformed("The 'exp' claim is required.");
    if (exp_s == Num::Bad || nbf_s == Num::Bad || iat_s == Num::Bad)
        return malformed("The 'exp', 'nbf' and 'iat' claims must be NumericDate values.");
    std::int64_t skew = options.clock_skew;
    std::optional<std::int64_t> valid_from;
    if (nbf_s == Num::Ok)
        valid_from = nbf;
    else if (iat_s == Num::Ok)
        valid_from = iat;  // without nbf, an iat from the future is refused the same way
    auto out_of_range = [&](std::string_view extra) {
        return error(
            ctx, "invalid_client", 700024,
            fmt::format("Client assertion is not within its valid time range. Current time: {}, assertion "
                        "valid from {}, expiry time of assertion {}.{} {}",
                        iso_time(ctx.now), valid_from ? iso_time(*valid_from) : std::string("(not set)"),
                        iso_time(exp), extra, kCertDoc));
    };
    if (ctx.now > exp + skew || (valid_from && ctx.now < *valid_from - skew)) return out_of_range("");
    // Lifetime policy: Entra advises 5-10 minutes; the sandbox refuses anything longer than
    // max_assertion_lifetime with the same code (no separate documented code exists).
    std::int64_t start = valid_from.value_or(ctx.now);
    if (exp - start > options.max_assertion_lifetime || exp < start)
        return out_of_range(
            fmt::format(" The assertion lifetime ({} seconds) is outside the allowed range "
                        "(at most {} seconds).",
                        exp - start, options.max_assertion_lifetime));

    const rapidjson::Value* jti = get_string(claims, "jti");
    if (!jti || jti->GetStringLength() == 0) return malformed("The 'jti' claim is required.");
    for (auto it = seen_jti.begin(); it != seen_jti.end();) {
        if (it->second < ctx.now)
            it = seen_jti.erase(it);
        else
            ++it;
    }
    std::string key = lower(client_id) + "\n" + std::string(sv(*jti));
    if (seen_jti.count(key) != 0)
        return malformed(
            fmt::format("The client assertion jti '{}' was already used (replay). Create a new "
                        "assertion with a new jti for every token request.",
                        quote(sv(*jti))));
    seen_jti.emplace(std::move(key), exp + skew);
    return std::nullopt;
}

Identity::Identity(const Tenant& tenant, const SandboxOptions& options, std::string signing_key_pem,
                   Clock clock)
    : impl_(std::make_unique<Impl>()) {
    impl_->tenant = tenant;
    impl_->options = options;
    impl_->clock =
        clock ? std::move(clock) : Clock([] { return static_cast<std::int64_t>(std::time(nullptr)); });
    impl_->signing_key = auth::private_key_from_pem(signing_key_pem);
    OPENSSL_cleanse(signing_key_pem.data(), signing_key_pem.size());
    if (!impl_->signing_key || !auth::is_rsa_key(impl_->signing_key.get()))
        throw std::invalid_argument("Identity: the token-signing key is not an RSA private key in PEM");
    impl_->signing_kid =
        auth::base64url_encode(auth::sha1(auth::public_key_to_der(impl_->signing_key.get())));
}

Identity::~Identity() = default;

HttpResponse Identity::handle_token(const HttpRequest& request, std::string_view tenant_segment) {
    impl_->requests.fetch_add(1);
    RequestCtx ctx;
    ctx.now = impl_->clock();
    ctx.trace_id = auth::uuid_v4();
    auto crid = request.header("client-request-id");
    if (crid && is_guid(*crid)) ctx.client_request_id = std::string(*crid);
    ctx.correlation_id = ctx.client_request_id ? lower(*ctx.client_request_id) : auth::uuid_v4();
    std::lock_guard lock(impl_->mu);
    return impl_->token(request, tenant_segment, ctx);
}

std::variant<AccessToken, TokenRejection> Identity::validate_bearer(
    std::optional<std::string_view> authorization) {
    auto reject = [](std::string message) { return TokenRejection{std::move(message)}; };
    std::string_view value = authorization.value_or("");
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (value.empty() || iequals(value, "Bearer")) return reject("Access token is empty.");
    if (value.size() < 7 || !iequals(value.substr(0, 7), "Bearer "))
        return reject(
            "Access token validation failure. The Authorization header must use the Bearer scheme.");
    std::string_view token = value.substr(7);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    if (token.empty()) return reject("Access token is empty.");
    auto jws = auth::parse_jws(token);
    if (!jws) return reject("CompactToken parsing failed with error code: 80049217");
    rapidjson::Document header, claims;
    header.Parse(jws->header_json.data(), jws->header_json.size());
    claims.Parse(jws->payload_json.data(), jws->payload_json.size());
    if (header.HasParseError() || !header.IsObject() || claims.HasParseError() || !claims.IsObject())
        return reject("CompactToken parsing failed with error code: 80049217");
    const rapidjson::Value* alg = get_string(header, "alg");
    if (!alg || sv(*alg) != "RS256" || !auth::verify_jws(*jws, auth::JwsAlg::RS256, impl_->signing_key.get()))
        return reject("Access token validation failure. Signature is invalid.");

    std::string tenant_id, issuer;
    std::int64_t now = impl_->clock();
    {
        std::lock_guard lock(impl_->mu);
        tenant_id = impl_->tenant.tenant_id;
        issuer = impl_->issuer();
    }
    const rapidjson::Value* aud = get_string(claims, "aud");
    std::string resource = impl_->graph_resource();
    if (!aud || !(iequals(sv(*aud), resource) || iequals(sv(*aud), resource + "/")))
        return reject("Access token validation failure. Invalid audience.");
    const rapidjson::Value* iss = get_string(claims, "iss");
    if (!iss || sv(*iss) != issuer) return reject("Access token validation failure. Invalid issuer.");
    const rapidjson::Value* tid = get_string(claims, "tid");
    if (!tid || !iequals(sv(*tid), tenant_id))
        return reject("Access token validation failure. Invalid tenant.");
    std::int64_t exp = 0, nbf = 0;
    if (get_num(claims, "exp", exp) != Num::Ok)
        return reject("Access token validation failure. Missing expiry.");
    if (now >= exp) return reject("Lifetime validation failed, the token is expired.");
    if (get_num(claims, "nbf", nbf) == Num::Ok && now < nbf)
        return reject("Lifetime validation failed, the token is not yet valid.");
    const rapidjson::Value* appid = get_string(claims, "appid");
    if (!appid) return reject("Access token validation failure. Missing appid claim.");
    if (const rapidjson::Value* uti = get_string(claims, "uti")) {
        std::lock_guard lock(impl_->mu);
        if (impl_->revoked_uti.count(std::string(sv(*uti))))
            return reject("Access token validation failure. The token has been revoked.");
    }

    AccessToken out;
    out.app_id = std::string(sv(*appid));
    out.tenant_id = std::string(sv(*tid));
    out.expires_at = exp;
    auto roles = claims.FindMember("roles");
    if (roles != claims.MemberEnd() && roles->value.IsArray())
        for (const auto& r : roles->value.GetArray())
            if (r.IsString()) out.roles.emplace_back(sv(r));
    return out;
}

void Identity::revoke_issued_tokens() {
    std::lock_guard lock(impl_->mu);
    std::int64_t now = impl_->clock();
    for (auto it = impl_->revoked_uti.begin(); it != impl_->revoked_uti.end();)
        it = it->second <= now ? impl_->revoked_uti.erase(it) : std::next(it);
    impl_->revoked_uti.insert(impl_->issued_uti.begin(), impl_->issued_uti.end());
    impl_->issued_uti.clear();
}

std::uint64_t Identity::token_requests() const {
    return impl_->requests.load();
}
std::uint64_t Identity::tokens_issued() const {
    return impl_->issued.load();
}

Tenant& Identity::tenant() {
    return impl_->tenant;
}

void Identity::update_tenant(const std::function<void(Tenant&)>& mutate) {
    std::lock_guard lock(impl_->mu);
    mutate(impl_->tenant);
}

Tenant Identity::tenant_snapshot() const {
    std::lock_guard lock(impl_->mu);
    return impl_->tenant;
}

std::string Identity::signing_public_key_pem() const {
    return auth::public_key_to_pem(impl_->signing_key.get());
}

std::string Identity::token_endpoint(std::string_view tenant_segment) const {
    return fmt::format("{}/{}/oauth2/v2.0/token", impl_->options.login_base, tenant_segment);
}

}  // namespace gb::sandbox
