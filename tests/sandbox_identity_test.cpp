// Tests for the sandbox identity platform (graph/sandbox/identity.cpp): every refusal asserts its AADSTS
// code through error_codes; good assertions (RS256/x5t, PS256/x5t#S256) and secrets get tokens that
// validate_bearer accepts. Socket-free: requests are built in memory, the clock is fixed.
#include "auth/crypto.h"
#include "auth/jwt.h"
#include "auth/pki.h"
#include "graph/sandbox/identity.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace gb::sandbox;
using namespace gb::auth;

constexpr const char* kTenantId = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr const char* kDomain = "sandbox.test";
constexpr const char* kClientId = "0b1e5c2a-3f4d-4e6f-8a9b-0c1d2e3f4a5b";
constexpr const char* kNoRolesClientId = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
constexpr const char* kPublicClientId = "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a";
constexpr const char* kSecretId = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d";
constexpr const char* kSecret = "Xy7~secret.Value_with+special/chars=";
constexpr const char* kExpiredSecret = "old~secret~value";
constexpr const char* kLogin = "https://127.0.0.1:8443";
constexpr const char* kGraph = "https://127.0.0.1:8443";
constexpr std::int64_t kNow = 1767225600;  // 2026-01-01 00:00:00Z

struct Keys {
    PKey app = generate_rsa_key(2048);
    PKey other = generate_rsa_key(2048);
    PKey signing = generate_rsa_key(2048);
    Cert app_cert;
    Cert other_cert;
    Keys() {
        CertSpec spec;
        spec.common_name = "graphbridge-app";
        spec.not_before = kNow - 86400;
        spec.days = 365;
        app_cert = issue_certificate(spec, app.get(), nullptr, app.get());
        other_cert = issue_certificate(spec, other.get(), nullptr, other.get());
    }
};
Keys& keys() {
    static Keys k;
    return k;
}

AppCertificate registered(const X509* cert) {
    AppCertificate c;
    c.der = cert_to_der(cert);
    c.sha1 = sha1(c.der);
    c.sha256 = sha256(c.der);
    c.not_before = cert_not_before(cert);
    c.not_after = cert_not_after(cert);
    return c;
}

struct Field {
    std::string name, value;
};

class IdentityTest : public ::testing::Test {
protected:
    void SetUp() override {
        Tenant t;
        t.tenant_id = kTenantId;
        t.domains = {kDomain, "contoso.example"};
        App app;
        app.client_id = kClientId;
        app.display_name = "graphbridge";
        app.certificates.push_back(registered(keys().app_cert.get()));
        app.secrets.push_back({kSecretId, kSecret, 0});
        app.secrets.push_back({"11111111-1111-4111-8111-111111111111", kExpiredSecret, kNow - 10});
        app.roles = {"Mail.Send", "Mail.ReadWrite"};
        t.apps.push_back(app);
        App noroles;
        noroles.client_id = kNoRolesClientId;
        noroles.display_name = "no consent";
        noroles.secrets.push_back({"22222222-2222-4222-8222-222222222222", "noroles-secret", 0});
        t.apps.push_back(noroles);
        App pub;
        pub.client_id = kPublicClientId;
        pub.display_name = "public";
        pub.public_client = true;
        pub.secrets.push_back({"33333333-3333-4333-8333-333333333333", "public-secret", 0});
        t.apps.push_back(pub);
        options.login_base = kLogin;
        options.graph_base = kGraph;
        identity = std::make_unique<Identity>(t, options, private_key_to_pem(keys().signing.get()),
                                              [this] { return now; });
    }

    std::string endpoint(const std::string& segment = kTenantId) const {
        return std::string(kLogin) + "/" + segment + "/oauth2/v2.0/token";
    }

    ClientAssertionParams params(JwsAlg alg = JwsAlg::RS256,
                                 ThumbprintHeader th = ThumbprintHeader::X5t) const {
        ClientAssertionParams p;
        p.client_id = kClientId;
        p.audience = endpoint();
        p.cert_der = cert_to_der(keys().app_cert.get());
        p.alg = alg;
        p.thumbprint = th;
        p.now = now;
        p.lifetime = 600;
        return p;
    }
    std::string assertion(const ClientAssertionParams& p, EVP_PKEY* key = nullptr) const {
        return make_client_assertion(p, key ? key : keys().app.get());
    }

    static std::string form(const std::vector<Field>& fields) {
        std::string body;
        for (const auto& f : fields) {
            if (!body.empty()) body += '&';
            body += percent_encode(f.name) + "=" + percent_encode(f.value);
        }
        return body;
    }

    HttpResponse post(const std::vector<Field>& fields, const std::string& segment = kTenantId,
                      std::vector<std::pair<std::string, std::string>> headers = {}) {
        HttpRequest req;
        req.method = "POST";
        req.target = "/" + segment + "/oauth2/v2.0/token";
        req.headers = std::move(headers);
        req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
        req.body = form(fields);
        return identity->handle_token(req, segment);
    }

    std::vector<Field> assertion_form(const std::string& jwt,
                                      std::string scope = std::string(kGraph) + "/.default") {
        return {{"client_id", kClientId},
                {"scope", std::move(scope)},
                {"client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
                {"client_assertion", jwt},
                {"grant_type", "client_credentials"}};
    }
    std::vector<Field> secret_form(const std::string& secret, const std::string& client_id = kClientId,
                                   std::string scope = std::string(kGraph) + "/.default") {
        return {{"client_id", client_id},
                {"scope", std::move(scope)},
                {"client_secret", secret},
                {"grant_type", "client_credentials"}};
    }

    HttpResponse post_assertion(const std::string& jwt, const std::string& segment = kTenantId) {
        return post(assertion_form(jwt), segment);
    }

    // Assertion with hand-made header/payload (for claims the helper always sets).
    std::string raw_assertion(const std::string& header, const std::string& payload,
                              JwsAlg alg = JwsAlg::RS256, EVP_PKEY* key = nullptr) const {
        return sign_jws(alg, key ? key : keys().app.get(), header, payload);
    }
    std::string x5t() const { return base64url_encode(cert_sha1_thumbprint(keys().app_cert.get())); }
    std::string claims_without(const std::string& skip) const {
        std::vector<std::pair<std::string, std::string>> c = {{"aud", "\"" + endpoint() + "\""},
                                                              {"iss", std::string("\"") + kClientId + "\""},
                                                              {"sub", std::string("\"") + kClientId + "\""},
                                                              {"jti", "\"" + uuid_v4() + "\""},
                                                              {"nbf", std::to_string(now)},
                                                              {"iat", std::to_string(now)},
                                                              {"exp", std::to_string(now + 300)}};
        std::string out = "{";
        for (const auto& [k, v] : c) {
            if (k == skip) continue;
            if (out.size() > 1) out += ",";
            out += "\"" + k + "\":" + v;
        }
        return out + "}";
    }

    static rapidjson::Document json(const HttpResponse& r) {
        rapidjson::Document d;
        d.Parse(r.body.c_str());
        return d;
    }
    // The AADSTS code of an error response (0 if the body is not an error).
    static int code(const HttpResponse& r) {
        auto d = json(r);
        if (!d.IsObject() || !d.HasMember("error_codes") || !d["error_codes"].IsArray() ||
            d["error_codes"].Empty())
            return 0;
        return d["error_codes"][0].GetInt();
    }
    static std::string error(const HttpResponse& r) {
        auto d = json(r);
        return d.IsObject() && d.HasMember("error") ? d["error"].GetString() : "";
    }
    static std::string description(const HttpResponse& r) {
        auto d = json(r);
        return d.IsObject() && d.HasMember("error_description") ? d["error_description"].GetString() : "";
    }
    static std::string access_token(const HttpResponse& r) {
        auto d = json(r);
        return d.IsObject() && d.HasMember("access_token") ? d["access_token"].GetString() : "";
    }
    static rapidjson::Document token_claims(const std::string& jwt) {
        auto parsed = parse_jws(jwt);
        rapidjson::Document d;
        if (parsed) d.Parse(parsed->payload_json.c_str());
        return d;
    }

    std::int64_t now = kNow;
    SandboxOptions options;
    std::unique_ptr<Identity> identity;
};

// --- success ----------------------------------------------------------------------------------------

TEST_F(IdentityTest, Rs256X5tAssertionGetsTokenThatValidates) {
    auto r = post(assertion_form(assertion(params())), kTenantId,
                  {{"client-request-id", "0a0b0c0d-1111-4222-8333-444455556666"}});
    ASSERT_EQ(r.status, 200) << r.body;
    auto d = json(r);
    EXPECT_STREQ(d["token_type"].GetString(), "Bearer");
    EXPECT_EQ(d["expires_in"].GetInt64(), 3599);
    EXPECT_EQ(d["ext_expires_in"].GetInt64(), 3599);
    EXPECT_EQ(r.header("Cache-Control").value_or("").find("no-store"), 0u);
    EXPECT_EQ(r.header("Pragma").value_or(""), "no-cache");
    EXPECT_TRUE(r.header("x-ms-request-id").has_value());
    EXPECT_EQ(r.header("client-request-id").value_or(""), "0a0b0c0d-1111-4222-8333-444455556666");

    std::string token = access_token(r);
    auto v = identity->validate_bearer("Bearer " + token);
    ASSERT_TRUE(std::holds_alternative<AccessToken>(v)) << std::get<TokenRejection>(v).message;
    const auto& at = std::get<AccessToken>(v);
    EXPECT_EQ(at.app_id, kClientId);
    EXPECT_EQ(at.tenant_id, kTenantId);
    EXPECT_EQ(at.roles, (std::vector<std::string>{"Mail.Send", "Mail.ReadWrite"}));
    EXPECT_EQ(at.expires_at, kNow + 3599);

    auto c = token_claims(token);
    EXPECT_STREQ(c["aud"].GetString(), kGraph);
    EXPECT_EQ(std::string(c["iss"].GetString()), std::string(kLogin) + "/" + kTenantId + "/v2.0");
    EXPECT_STREQ(c["tid"].GetString(), kTenantId);
    EXPECT_STREQ(c["appid"].GetString(), kClientId);
    EXPECT_TRUE(c.HasMember("oid") && c.HasMember("uti"));
    EXPECT_EQ(c["iat"].GetInt64(), kNow);
    EXPECT_EQ(c["nbf"].GetInt64(), kNow);
    EXPECT_EQ(c["exp"].GetInt64(), kNow + 3599);
    auto header = parse_jws(token)->header_json;
    EXPECT_NE(header.find("\"alg\":\"RS256\""), std::string::npos);
    EXPECT_TRUE(verify_jws(*parse_jws(token), JwsAlg::RS256, keys().signing.get()));
}

TEST_F(IdentityTest, Ps256X5tS256AssertionGetsToken) {
    auto r = post_assertion(assertion(params(JwsAlg::PS256, ThumbprintHeader::X5tS256)));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_TRUE(std::holds_alternative<AccessToken>(identity->validate_bearer("Bearer " + access_token(r))));
}

TEST_F(IdentityTest, DomainTenantSegmentWithMatchingAudience) {
    auto p = params();
    p.audience = endpoint(kDomain);
    auto r = post_assertion(assertion(p), kDomain);
    EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(IdentityTest, SecretInBodyAndHttpBasic) {
    auto r = post(secret_form(kSecret));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_TRUE(std::holds_alternative<AccessToken>(identity->validate_bearer("Bearer " + access_token(r))));

    std::string basic = base64_encode(percent_encode(kClientId) + ":" + percent_encode(kSecret));
    auto r2 = post({{"scope", std::string(kGraph) + "/.default"}, {"grant_type", "client_credentials"}},
                   kTenantId, {{"Authorization", "Basic " + basic}});
    EXPECT_EQ(r2.status, 200) << r2.body;
}

TEST_F(IdentityTest, AppWithoutRolesGetsTokenWithoutRolesClaim) {
    auto r = post(secret_form("noroles-secret", kNoRolesClientId));
    ASSERT_EQ(r.status, 200) << r.body;
    auto c = token_claims(access_token(r));
    ASSERT_TRUE(c.IsObject());
    EXPECT_FALSE(c.HasMember("roles"));
    auto v = identity->validate_bearer("Bearer " + access_token(r));
    ASSERT_TRUE(std::holds_alternative<AccessToken>(v));
    EXPECT_TRUE(std::get<AccessToken>(v).roles.empty());
}

TEST_F(IdentityTest, CountersCount) {
    EXPECT_EQ(identity->token_requests(), 0u);
    EXPECT_EQ(identity->tokens_issued(), 0u);
    post(secret_form(kSecret));
    post(secret_form("wrong"));
    post_assertion(assertion(params()));
    EXPECT_EQ(identity->token_requests(), 3u);
    EXPECT_EQ(identity->tokens_issued(), 2u);
}

// --- error shape ------------------------------------------------------------------------------------

TEST_F(IdentityTest, ErrorBodyHasEntraShape) {
    auto r = post(secret_form("wrong-secret-value"), kTenantId,
                  {{"client-request-id", "0a0b0c0d-1111-4222-8333-444455556666"}});
    EXPECT_EQ(r.status, 401);
    auto d = json(r);
    ASSERT_TRUE(d.IsObject());
    EXPECT_STREQ(d["error"].GetString(), "invalid_client");
    ASSERT_TRUE(d["error_codes"].IsArray());
    EXPECT_EQ(d["error_codes"][0].GetInt(), 7000215);
    EXPECT_STREQ(d["timestamp"].GetString(), "2026-01-01 00:00:00Z");
    std::string trace = d["trace_id"].GetString();
    EXPECT_STREQ(d["correlation_id"].GetString(), "0a0b0c0d-1111-4222-8333-444455556666");
    EXPECT_EQ(std::string(d["error_uri"].GetString()), std::string(kLogin) + "/error?code=7000215");
    std::regex re(R"(^AADSTS7000215: .+\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\n)"
                  R"(Timestamp: 2026-01-01 00:00:00Z$)");
    std::string desc = d["error_description"].GetString();
    EXPECT_TRUE(std::regex_match(desc, re)) << desc;
    EXPECT_NE(desc.find(trace), std::string::npos);
    EXPECT_EQ(r.header("x-ms-request-id").value_or(""), trace);
    EXPECT_EQ(r.body.find("wrong-secret-value"), std::string::npos);  // never echo secrets
}

// --- assertion refusals -----------------------------------------------------------------------------

TEST_F(IdentityTest, WrongSignatureWithRegisteredThumbprint) {
    auto r = post_assertion(assertion(params(), keys().other.get()));
    EXPECT_EQ(code(r), 700027);
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(error(r), "invalid_client");
    EXPECT_NE(description(r).find("Key was found, but use of the key to verify the signature failed"),
              std::string::npos);
}

TEST_F(IdentityTest, Ps256WithWrongKeyRefused) {
    auto r = post_assertion(assertion(params(JwsAlg::PS256, ThumbprintHeader::X5tS256), keys().other.get()));
    EXPECT_EQ(code(r), 700027);
}

TEST_F(IdentityTest, UnregisteredThumbprint) {
    auto p = params();
    p.cert_der = cert_to_der(keys().other_cert.get());
    auto r = post_assertion(assertion(p, keys().other.get()));
    EXPECT_EQ(code(r), 700027);
    EXPECT_NE(description(r).find("was not found"), std::string::npos);
    EXPECT_NE(description(r).find(hex_upper(cert_sha1_thumbprint(keys().other_cert.get()))),
              std::string::npos);
}

TEST_F(IdentityTest, ExpiredRegisteredCertificate) {
    identity->update_tenant([](Tenant& t) { t.apps[0].certificates[0].not_after = kNow - 1; });
    auto r = post_assertion(assertion(params()));
    EXPECT_EQ(code(r), 700027);
    EXPECT_NE(description(r).find("expired"), std::string::npos);
}

TEST_F(IdentityTest, WrongAudienceGlobalCloud) {
    auto p = params();
    p.audience = std::string("https://login.microsoftonline.com/") + kTenantId + "/oauth2/v2.0/token";
    auto r = post_assertion(assertion(p));
    EXPECT_EQ(code(r), 50012);
    EXPECT_EQ(error(r), "invalid_client");
}

TEST_F(IdentityTest, WrongAudienceOtherTenantSegment) {
    auto p = params();
    p.audience = endpoint(kDomain);  // request goes to the GUID segment
    EXPECT_EQ(code(post_assertion(assertion(p))), 50012);
    auto p2 = params();
    p2.audience = endpoint() + "/";  // not exact
    EXPECT_EQ(code(post_assertion(assertion(p2))), 50012);
}

TEST_F(IdentityTest, AudienceArrayIsMalformed) {
    auto p = params();
    p.extra_claims_json =
        R"({"aud":["https://127.0.0.1:8443/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"]})";
    EXPECT_EQ(code(post_assertion(assertion(p))), 50027);
}

TEST_F(IdentityTest, ExpiredAssertion) {
    auto p = params();
    p.now = kNow - 1000;  // exp = now - 400, beyond the 300 s skew
    auto r = post_assertion(assertion(p));
    EXPECT_EQ(code(r), 700024);
    EXPECT_NE(description(r).find("Client assertion is not within its valid time range. Current time: "
                                  "2026-01-01T00:00:00.0000000Z"),
              std::string::npos)
        << description(r);
}

TEST_F(IdentityTest, NotYetValidBeyondSkew) {
    auto p = params();
    p.now = kNow + 301;
    EXPECT_EQ(code(post_assertion(assertion(p))), 700024);
}

TEST_F(IdentityTest, InsideSkewAccepted) {
    auto p = params();
    p.now = kNow + 299;  // nbf slightly in the future
    EXPECT_EQ(post_assertion(assertion(p)).status, 200);
    auto p2 = params();
    p2.now = kNow - 850;  // exp = now - 250, inside the skew
    EXPECT_EQ(post_assertion(assertion(p2)).status, 200);
}

TEST_F(IdentityTest, LifetimeTooLong) {
    auto p = params();
    p.lifetime = 3600;
    auto r = post_assertion(assertion(p));
    EXPECT_EQ(code(r), 700024);
    EXPECT_NE(description(r).find("lifetime"), std::string::npos);
    // Without nbf and iat, the lifetime counts from now.
    std::string payload = claims_without("nbf");
    payload = std::regex_replace(payload, std::regex(R"("iat":\d+,)"), "");
    payload =
        std::regex_replace(payload, std::regex(R"("exp":\d+)"), "\"exp\":" + std::to_string(kNow + 7200));
    auto r2 = post_assertion(raw_assertion(R"({"alg":"RS256","typ":"JWT","x5t":")" + x5t() + "\"}", payload));
    EXPECT_EQ(code(r2), 700024);
}

TEST_F(IdentityTest, ReplayedJtiRefused) {
    std::string jwt = assertion(params());
    EXPECT_EQ(post_assertion(jwt).status, 200);
    auto r = post_assertion(jwt);
    EXPECT_EQ(code(r), 50027);
    EXPECT_NE(description(r).find("replay"), std::string::npos);
    // A fresh assertion (new jti) works again.
    EXPECT_EQ(post_assertion(assertion(params())).status, 200);
}

TEST_F(IdentityTest, ReplayMemoryIsPurgedAfterExpiry) {
    auto p = params();
    p.jti = "fixed-jti";
    p.lifetime = 60;
    EXPECT_EQ(post_assertion(assertion(p)).status, 200);
    now = kNow + 60 + 300 + 1;  // the old one is past exp + skew and forgotten
    p.now = now;
    EXPECT_EQ(post_assertion(assertion(p)).status, 200);
}

TEST_F(IdentityTest, MissingJti) {
    std::string header = R"({"alg":"RS256","typ":"JWT","x5t":")" + x5t() + "\"}";
    EXPECT_EQ(code(post_assertion(raw_assertion(header, claims_without("jti")))), 50027);
}

TEST_F(IdentityTest, MissingExp) {
    std::string header = R"({"alg":"RS256","typ":"JWT","x5t":")" + x5t() + "\"}";
    EXPECT_EQ(code(post_assertion(raw_assertion(header, claims_without("exp")))), 50027);
}

TEST_F(IdentityTest, IssOrSubNotClientId) {
    auto p = params();
    p.extra_claims_json = R"({"iss":"someone-else"})";
    auto r = post_assertion(assertion(p));
    EXPECT_EQ(code(r), 700021);
    auto p2 = params();
    p2.extra_claims_json = R"({"sub":"3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b"})";
    EXPECT_EQ(code(post_assertion(assertion(p2))), 700021);
    std::string header = R"({"alg":"RS256","typ":"JWT","x5t":")" + x5t() + "\"}";
    EXPECT_EQ(code(post_assertion(raw_assertion(header, claims_without("iss")))), 700021);
}

TEST_F(IdentityTest, AlgNoneRefused) {
    std::string jwt = base64url_encode(R"({"alg":"none","typ":"JWT","x5t":")" + x5t() + "\"}") + "." +
                      base64url_encode(claims_without("")) + ".";
    EXPECT_EQ(code(post_assertion(jwt)), 50027);
}

TEST_F(IdentityTest, AlgHs256Refused) {
    std::string header = R"({"alg":"HS256","typ":"JWT","x5t":")" + x5t() + "\"}";
    EXPECT_EQ(code(post_assertion(raw_assertion(header, claims_without("")))), 50027);
}

TEST_F(IdentityTest, MissingThumbprintHeader) {
    auto r = post_assertion(raw_assertion(R"({"alg":"RS256","typ":"JWT"})", claims_without("")));
    EXPECT_EQ(code(r), 50027);
    EXPECT_NE(description(r).find("thumbprint"), std::string::npos);
}

TEST_F(IdentityTest, HexThumbprintInsteadOfBase64urlIsKeyNotFound) {
    std::string hex = hex_upper(cert_sha1_thumbprint(keys().app_cert.get()));
    std::string header = R"({"alg":"RS256","typ":"JWT","x5t":")" + base64url_encode(hex) + "\"}";
    EXPECT_EQ(code(post_assertion(raw_assertion(header, claims_without("")))), 700027);
}

TEST_F(IdentityTest, MalformedAssertions) {
    EXPECT_EQ(code(post_assertion("not-a-jwt")), 50027);
    EXPECT_EQ(code(post_assertion("a.b.c.d")), 50027);
    std::string bad_json = base64url_encode("{not json") + "." + base64url_encode("{}") + ".c2ln";
    EXPECT_EQ(code(post_assertion(bad_json)), 50027);
}

TEST_F(IdentityTest, BadClientAssertionType) {
    auto f = assertion_form(assertion(params()));
    f[2].value = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer";
    auto r = post(f);
    EXPECT_EQ(code(r), 90011);
    EXPECT_EQ(error(r), "invalid_request");
    EXPECT_EQ(r.status, 400);
    f.erase(f.begin() + 2);
    EXPECT_EQ(code(post(f)), 90011);
}

// --- secrets ----------------------------------------------------------------------------------------

TEST_F(IdentityTest, WrongSecret) {
    EXPECT_EQ(code(post(secret_form("nope"))), 7000215);
}
TEST_F(IdentityTest, SecretIdSentAsSecret) {
    EXPECT_EQ(code(post(secret_form(kSecretId))), 7000215);
}
TEST_F(IdentityTest, ExpiredSecret) {
    auto r = post(secret_form(kExpiredSecret));
    EXPECT_EQ(code(r), 7000222);
    EXPECT_EQ(r.status, 401);
}
TEST_F(IdentityTest, SecretAndAssertionTogether) {
    auto f = assertion_form(assertion(params()));
    f.push_back({"client_secret", kSecret});
    EXPECT_EQ(code(post(f)), 9002313);
}
TEST_F(IdentityTest, NoCredential) {
    auto r = post({{"client_id", kClientId},
                   {"scope", std::string(kGraph) + "/.default"},
                   {"grant_type", "client_credentials"}});
    EXPECT_EQ(code(r), 7000218);
    EXPECT_EQ(r.status, 401);
}

// --- client, tenant, request ------------------------------------------------------------------------

TEST_F(IdentityTest, UnknownClientId) {
    auto r = post(secret_form(kSecret, "4f5a6b7c-8d9e-4f0a-8b1c-2d3e4f5a6b7c"));
    EXPECT_EQ(code(r), 700016);
    EXPECT_EQ(error(r), "unauthorized_client");
    EXPECT_EQ(r.status, 400);
}
TEST_F(IdentityTest, MissingClientId) {
    auto f = secret_form(kSecret);
    f.erase(f.begin());
    EXPECT_EQ(code(post(f)), 900144);
}
TEST_F(IdentityTest, DisabledApp) {
    identity->update_tenant([](Tenant& t) { t.apps[0].enabled = false; });
    EXPECT_EQ(code(post(secret_form(kSecret))), 7000112);
}
TEST_F(IdentityTest, PublicClient) {
    EXPECT_EQ(code(post(secret_form("public-secret", kPublicClientId))), 700025);
}

TEST_F(IdentityTest, UnknownTenant) {
    EXPECT_EQ(code(post(secret_form(kSecret), "d3adb33f-0000-4000-8000-000000000000")), 90002);
    EXPECT_EQ(code(post(secret_form(kSecret), "fabrikam.example")), 90002);
}
TEST_F(IdentityTest, MalformedTenant) {
    EXPECT_EQ(code(post(secret_form(kSecret), "not a tenant!")), 900023);
    EXPECT_EQ(code(post(secret_form(kSecret), "localhost")), 900023);
    EXPECT_EQ(code(post(secret_form(kSecret), "72f988bf-86f1-41af-91ab")), 900023);
}
TEST_F(IdentityTest, CommonEndpoint) {
    EXPECT_EQ(code(post(secret_form(kSecret), "common")), 50194);
}
TEST_F(IdentityTest, TenantGuidCaseInsensitiveAndSecondaryDomain) {
    EXPECT_EQ(post(secret_form(kSecret), "72F988BF-86F1-41AF-91AB-2D7CD011DB47").status, 200);
    EXPECT_EQ(post(secret_form(kSecret), "contoso.example").status, 200);
}

TEST_F(IdentityTest, ScopeWithoutDefault) {
    auto r = post(secret_form(kSecret, kClientId, "Mail.Send"));
    EXPECT_EQ(code(r), 1002012);
    EXPECT_EQ(error(r), "invalid_scope");
}
TEST_F(IdentityTest, TwoResources) {
    EXPECT_EQ(code(post(secret_form(kSecret, kClientId,
                                    std::string(kGraph) + "/.default https://graph.microsoft.com/.default"))),
              700022);
    EXPECT_EQ(code(post(secret_form(kSecret, kClientId, std::string(kGraph) + "/.default Mail.Send"))),
              70011);
}
TEST_F(IdentityTest, WrongResource) {
    auto r = post(secret_form(kSecret, kClientId, "https://graph.microsoft.com/.default"));
    EXPECT_EQ(code(r), 500011);
    EXPECT_NE(description(r).find("https://graph.microsoft.com"), std::string::npos);
    EXPECT_EQ(code(post(secret_form(kSecret, kClientId, std::string(kGraph) + "//.default"))), 500011);
    // Case-insensitive host match is fine.
    EXPECT_EQ(post(secret_form(kSecret, kClientId, "HTTPS://127.0.0.1:8443/.default")).status, 200);
}
TEST_F(IdentityTest, MissingScope) {
    auto f = secret_form(kSecret);
    f.erase(f.begin() + 1);
    EXPECT_EQ(code(post(f)), 900144);
}

TEST_F(IdentityTest, WrongGrantType) {
    auto f = secret_form(kSecret);
    f[3].value = "password";
    auto r = post(f);
    EXPECT_EQ(code(r), 70003);
    EXPECT_EQ(error(r), "unsupported_grant_type");
    f.pop_back();
    EXPECT_EQ(code(post(f)), 900144);
}

TEST_F(IdentityTest, MethodContentTypeAndMalformedBody) {
    HttpRequest get;
    get.method = "GET";
    get.target = std::string("/") + kTenantId + "/oauth2/v2.0/token";
    EXPECT_EQ(code(identity->handle_token(get, kTenantId)), 900561);

    HttpRequest json_req;
    json_req.method = "POST";
    json_req.headers = {{"Content-Type", "application/json"}};
    json_req.body = form(secret_form(kSecret));
    EXPECT_EQ(code(identity->handle_token(json_req, kTenantId)), 900144);

    HttpRequest bad;
    bad.method = "POST";
    bad.headers = {{"content-type", "application/x-www-form-urlencoded; charset=utf-8"}};
    bad.body = "grant_type=%zz";
    EXPECT_EQ(code(identity->handle_token(bad, kTenantId)), 9002313);

    auto dup = secret_form(kSecret);
    dup.push_back({"client_id", kClientId});
    EXPECT_EQ(code(post(dup)), 9002313);
}

// --- validate_bearer --------------------------------------------------------------------------------

TEST_F(IdentityTest, BearerMissingOrMalformed) {
    auto msg = [&](std::optional<std::string_view> h) {
        auto v = identity->validate_bearer(h);
        return std::holds_alternative<TokenRejection>(v) ? std::get<TokenRejection>(v).message
                                                         : std::string("ok");
    };
    EXPECT_EQ(msg(std::nullopt), "Access token is empty.");
    EXPECT_EQ(msg(""), "Access token is empty.");
    EXPECT_EQ(msg("Bearer "), "Access token is empty.");
    EXPECT_NE(msg("Basic abc"), "ok");
    EXPECT_NE(msg("Bearer garbage"), "ok");
}

TEST_F(IdentityTest, ExpiredAccessTokenRejected) {
    auto r = post(secret_form(kSecret));
    std::string token = access_token(r);
    now = kNow + 3598;
    EXPECT_TRUE(std::holds_alternative<AccessToken>(identity->validate_bearer("Bearer " + token)));
    now = kNow + 3599;
    auto v = identity->validate_bearer("Bearer " + token);
    ASSERT_TRUE(std::holds_alternative<TokenRejection>(v));
    EXPECT_EQ(std::get<TokenRejection>(v).message, "Lifetime validation failed, the token is expired.");
}

TEST_F(IdentityTest, TokenSignedByAnotherKeyRejected) {
    std::string token = access_token(post(secret_form(kSecret)));
    auto parsed = parse_jws(token);
    ASSERT_TRUE(parsed);
    std::string forged =
        sign_jws(JwsAlg::RS256, keys().other.get(), parsed->header_json, parsed->payload_json);
    auto v = identity->validate_bearer("Bearer " + forged);
    ASSERT_TRUE(std::holds_alternative<TokenRejection>(v));
    EXPECT_NE(std::get<TokenRejection>(v).message.find("Signature"), std::string::npos);
}

TEST_F(IdentityTest, TokenWithWrongAudienceRejected) {
    std::string token = access_token(post(secret_form(kSecret)));
    auto parsed = parse_jws(token);
    ASSERT_TRUE(parsed);
    std::string payload = parsed->payload_json;
    auto pos = payload.find(std::string("\"aud\":\"") + kGraph + "\"");
    ASSERT_NE(pos, std::string::npos);
    payload.replace(pos, 7 + std::string(kGraph).size() + 1, "\"aud\":\"https://graph.microsoft.com\"");
    std::string forged = sign_jws(JwsAlg::RS256, keys().signing.get(), parsed->header_json, payload);
    auto v = identity->validate_bearer("Bearer " + forged);
    ASSERT_TRUE(std::holds_alternative<TokenRejection>(v));
    EXPECT_NE(std::get<TokenRejection>(v).message.find("Invalid audience"), std::string::npos);
}

TEST_F(IdentityTest, ClientAssertionAsBearerRejected) {
    // A client assertion is signed by the app's key, not the sandbox's.
    auto v = identity->validate_bearer("Bearer " + assertion(params()));
    EXPECT_TRUE(std::holds_alternative<TokenRejection>(v));
}

}  // namespace
