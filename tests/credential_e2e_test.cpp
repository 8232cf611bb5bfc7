// End to end for the credentials admins bring: keystores made by the real keytool and openssl are
// loaded, their certificate registered on the sandbox app, and tokens obtained over HTTPS with
// RS256/x5t and PS256/x5t#S256. The assertion graphbridge sends is verified with the openssl CLI,
// independently of graphbridge's own code.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "auth/crypto.h"
#include "auth/jwt.h"
#include "auth/keystore.h"
#include "auth/token_broker.h"
#include "graph/http/token_transport.h"
#include "tests/support/test_sandbox.h"

using namespace gb;
using namespace gb::auth;
namespace fs = std::filesystem;

namespace {

std::pair<int, std::string> sh(const std::string& cmd) {
    std::string full = "LC_ALL=C.UTF-8 " + cmd + " 2>&1";
    FILE* p = ::popen(full.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf;
    while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
    int rc = ::pclose(p);
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

void must(const std::string& cmd) {
    auto [rc, out] = sh(cmd);
    ASSERT_EQ(rc, 0) << cmd << "\n" << out;
}

std::string url_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
            i += 2;
        } else {
            out.push_back(s[i] == '+' ? ' ' : s[i]);
        }
    }
    return out;
}

class CredentialE2E : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        sb_ = new test::TestSandbox("credential");
        server_ = &sb_->server();
        dir_ = new std::string(sb_->dir());
        http::ClientOptions o;
        o.ca_file = sb_->ca();
        client_ = new http::Client(o);
    }
    static void TearDownTestSuite() {
        delete client_;
        delete dir_;
        delete sb_;
    }

    static void register_cert(const Credential& c) {
        sandbox::AppCertificate reg;
        reg.der = cert_to_der(c.cert.get());
        reg.sha1 = cert_sha1_thumbprint(c.cert.get());
        reg.sha256 = cert_sha256_thumbprint(c.cert.get());
        reg.not_before = cert_not_before(c.cert.get());
        reg.not_after = cert_not_after(c.cert.get());
        server_->identity().update_tenant([&](sandbox::Tenant& t) { t.apps.front().certificates.push_back(reg); });
    }

    static TokenBrokerConfig broker_config(const Credential& c, JwsAlg alg, ThumbprintHeader tp) {
        TokenBrokerConfig cfg;
        cfg.client_id = sb_->app().client_id;
        cfg.tenant = sb_->setup().tenant.tenant_id;
        cfg.token_endpoint = sb_->token_url();
        cfg.scope = sb_->base() + "/.default";
        CertificateCredential cc;
        cc.key = PKey(EVP_PKEY_dup(c.key.get()));
        cc.cert_der = cert_to_der(c.cert.get());
        cc.alg = alg;
        cc.thumbprint = tp;
        cfg.certificate = std::move(cc);
        return cfg;
    }

    // Loads the keystore, registers its certificate, and gets a token with both assertion forms.
    static void tokens_with(const KeystoreRequest& req, KeystoreFormat expected) {
        Credential c = load_keystore(req);
        EXPECT_EQ(c.format, expected);
        register_cert(c);
        for (auto [alg, tp] : {std::pair{JwsAlg::RS256, ThumbprintHeader::X5t},
                               std::pair{JwsAlg::PS256, ThumbprintHeader::X5tS256}}) {
            TokenBroker broker(broker_config(c, alg, tp), http::make_token_transport(*client_));
            auto r = broker.get();
            ASSERT_TRUE(std::holds_alternative<Token>(r))
                << req.path << ": " << std::get<TokenFailure>(r).explanation;
        }
    }

    static test::TestSandbox* sb_;
    static std::string* dir_;  // scratch space for the keystores
    static sandbox::SandboxServer* server_;
    static http::Client* client_;
};
test::TestSandbox* CredentialE2E::sb_;
std::string* CredentialE2E::dir_;
sandbox::SandboxServer* CredentialE2E::server_;
http::Client* CredentialE2E::client_;

}  // namespace

TEST_F(CredentialE2E, KeytoolJksWithSeparateKeyPassword) {
    std::string ks = *dir_ + "/app.jks";
    must("keytool -genkeypair -alias graphbridge -keyalg RSA -keysize 2048 -validity 365 -dname CN=jks-e2e "
         "-storetype JKS -keystore " + ks + " -storepass store-pw-1 -keypass key-pw-22 -noprompt");
    KeystoreRequest req;
    req.path = ks;
    req.password = Secret("store-pw-1");
    req.key_password = Secret("key-pw-22");
    tokens_with(req, KeystoreFormat::Jks);
}

TEST_F(CredentialE2E, KeytoolPkcs12) {
    std::string ks = *dir_ + "/app-keytool.p12";
    must("keytool -genkeypair -alias graphbridge -keyalg RSA -keysize 2048 -validity 365 -dname CN=p12-e2e "
         "-storetype PKCS12 -keystore " + ks + " -storepass p12-pass -noprompt");
    KeystoreRequest req;
    req.path = ks;
    req.password = Secret("p12-pass");
    tokens_with(req, KeystoreFormat::Pkcs12);
}

TEST_F(CredentialE2E, OpensslLegacyPfxAndPemForms) {
    std::string d = *dir_;
    must("openssl req -x509 -newkey rsa:2048 -nodes -keyout " + d + "/plain.key -out " + d +
         "/plain.crt -days 30 -subj /CN=openssl-e2e");
    must("openssl pkcs12 -export -legacy -inkey " + d + "/plain.key -in " + d + "/plain.crt -out " + d +
         "/legacy.pfx -passout pass:pfx-pass");
    auto [rc, info] = sh("openssl pkcs12 -legacy -info -noout -in " + d + "/legacy.pfx -passin pass:pfx-pass");
    EXPECT_NE(info.find("RC2"), std::string::npos) << info;  // really the legacy algorithms
    KeystoreRequest pfx;
    pfx.path = d + "/legacy.pfx";
    pfx.password = Secret("pfx-pass");
    tokens_with(pfx, KeystoreFormat::Pkcs12);

    // Plain PKCS#8 key with the certificate in a separate file.
    KeystoreRequest plain;
    plain.path = d + "/plain.key";
    plain.cert_path = d + "/plain.crt";
    tokens_with(plain, KeystoreFormat::Pem);

    // Encrypted PKCS#8 and PKCS#1, certificate in the same file.
    must("openssl pkcs8 -topk8 -v2 aes-256-cbc -in " + d + "/plain.key -out " + d + "/enc8.pem -passout pass:pem-pass");
    must("cat " + d + "/plain.crt >> " + d + "/enc8.pem");
    KeystoreRequest enc8;
    enc8.path = d + "/enc8.pem";
    enc8.password = Secret("pem-pass");
    tokens_with(enc8, KeystoreFormat::Pem);
    must("openssl rsa -aes256 -traditional -in " + d + "/plain.key -out " + d + "/enc1.pem -passout pass:pem-pass");
    must("cat " + d + "/plain.crt >> " + d + "/enc1.pem");
    KeystoreRequest enc1;
    enc1.path = d + "/enc1.pem";
    enc1.password = Secret("pem-pass");
    tokens_with(enc1, KeystoreFormat::Pem);
}

TEST_F(CredentialE2E, AssertionVerifiesWithOpensslAndX5tMatchesItsFingerprint) {
    std::string d = *dir_;
    must("openssl req -x509 -newkey rsa:2048 -nodes -keyout " + d + "/v.key -out " + d +
         "/v.crt -days 30 -subj /CN=verify-me");
    KeystoreRequest req;
    req.path = d + "/v.key";
    req.cert_path = d + "/v.crt";
    Credential c = load_keystore(req);
    for (auto [alg, tp] : {std::pair{JwsAlg::RS256, ThumbprintHeader::X5t},
                           std::pair{JwsAlg::PS256, ThumbprintHeader::X5tS256}}) {
        TokenBroker broker(broker_config(c, alg, tp), [](const TokenHttpRequest&) { return TokenHttpResponse{}; });
        // Exactly the form body graphbridge would POST.
        std::string body = broker.build_request_body(std::time(nullptr));
        auto pos = body.find("client_assertion=");
        ASSERT_NE(pos, std::string::npos);
        std::string jwt = url_decode(body.substr(pos + 17, body.find('&', pos) - pos - 17));
        auto parsed = parse_jws(jwt);
        ASSERT_TRUE(parsed);
        std::ofstream(d + "/input.txt", std::ios::binary) << parsed->signing_input;
        std::ofstream(d + "/sig.bin", std::ios::binary) << parsed->signature;
        must("openssl x509 -in " + d + "/v.crt -noout -pubkey -out " + d + "/pub.pem");
        std::string pss = alg == JwsAlg::PS256 ? " -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32" : "";
        auto [rc, out] = sh("openssl dgst -sha256" + pss + " -verify " + d + "/pub.pem -signature " + d +
                            "/sig.bin " + d + "/input.txt");
        EXPECT_EQ(rc, 0) << out;
        EXPECT_NE(out.find("Verified OK"), std::string::npos) << out;

        rapidjson::Document h;
        h.Parse(parsed->header_json.c_str());
        ASSERT_TRUE(h.IsObject());
        EXPECT_STREQ(h["typ"].GetString(), "JWT");
        EXPECT_STREQ(h["alg"].GetString(), alg == JwsAlg::RS256 ? "RS256" : "PS256");
        // The thumbprint as openssl computes it: fingerprint digest bytes, base64url without padding.
        std::string digest = alg == JwsAlg::RS256 ? "sha1" : "sha256";
        auto [rc2, fp] = sh("openssl x509 -in " + d + "/v.crt -noout -fingerprint -" + digest +
                            " | cut -d= -f2 | tr -d ':\\n' | xxd -r -p 2>/dev/null | openssl base64 -A | "
                            "tr '+/' '-_' | tr -d '='");
        if (fp.empty() || rc2 != 0) {  // no xxd: derive the raw digest from the DER instead
            std::tie(rc2, fp) = sh("openssl x509 -in " + d + "/v.crt -outform DER | openssl dgst -" + digest +
                                   " -binary | openssl base64 -A | tr '+/' '-_' | tr -d '='");
        }
        ASSERT_EQ(rc2, 0) << fp;
        const char* field = alg == JwsAlg::RS256 ? "x5t" : "x5t#S256";
        ASSERT_TRUE(h.HasMember(field));
        EXPECT_EQ(std::string(h[field].GetString()), fp);

        rapidjson::Document p;
        p.Parse(parsed->payload_json.c_str());
        ASSERT_TRUE(p.IsObject());
        const auto& cfg = broker.config();
        EXPECT_EQ(std::string(p["aud"].GetString()), cfg.token_endpoint);
        EXPECT_EQ(std::string(p["iss"].GetString()), cfg.client_id);
        EXPECT_EQ(std::string(p["sub"].GetString()), cfg.client_id);
        EXPECT_EQ(p["nbf"].GetInt64(), p["iat"].GetInt64());
        EXPECT_EQ(p["exp"].GetInt64() - p["nbf"].GetInt64(), 300);
        EXPECT_EQ(std::string(p["jti"].GetString()).size(), 36u);
    }
}

TEST_F(CredentialE2E, HttpClientVerifiesTlsAndReusesConnections) {
    // Without the sandbox CA the server is not trusted: the request fails in TLS, nothing is sent.
    http::Client system_only;
    http::Request r;
    r.url = sb_->base() + "/v1.0/users/alice@sandbox.test/mailFolders";
    auto before = sb_->server().stats().graph_requests;
    auto refused = system_only.perform(r);
    EXPECT_EQ(refused.status, 0);
    EXPECT_FALSE(refused.error.empty());
    EXPECT_EQ(sb_->server().stats().graph_requests, before);
    // A CA file that holds no certificate is a configuration error, said at once.
    std::string empty = ::testing::TempDir() + "/gb_empty_ca.pem";
    std::ofstream(empty) << "not a certificate\n";
    http::ClientOptions bad;
    bad.ca_file = empty;
    EXPECT_THROW(http::Client{bad}, std::runtime_error);
    // With it: trusted, on every request (each new easy handle gets the shared, parsed store).
    http::ClientOptions o;
    o.ca_file = sb_->ca();
    http::Client client(o);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(client.perform(r).status, 401);  // TLS fine; no token
}
