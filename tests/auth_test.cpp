// Tests for auth/: base64 vectors, JWS RS256/PS256 (cross-checked with the openssl CLI), client
// assertions, and PKI generation (SANs, thumbprints vs `openssl x509 -fingerprint`).
#include "auth/crypto.h"
#include "auth/jwt.h"
#include "auth/pki.h"

#include <gtest/gtest.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

namespace {

using namespace gb::auth;
namespace fs = std::filesystem;

// Keys are slow to generate: share them across the suite.
EVP_PKEY* shared_key() {
    static PKey key = generate_rsa_key(2048);
    return key.get();
}
EVP_PKEY* other_key() {
    static PKey key = generate_rsa_key(2048);
    return key.get();
}

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("gb_auth_test_" + hex_lower(random_bytes(8)));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void write_raw(const fs::path& p, const std::string& data) {
    std::ofstream out(p, std::ios::binary);
    out << data;
}

// Runs a shell command, returns exit status and stdout.
std::pair<int, std::string> run(const std::string& cmd) {
    std::string out;
    FILE* pipe = ::popen((cmd + " 2>&1").c_str(), "r");
    if (pipe == nullptr) return {-1, {}};
    char buf[512];
    while (std::fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
    int status = ::pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

bool have_openssl_cli() {
    return std::system("openssl version >/dev/null 2>&1") == 0;
}

// A PSS signature with an arbitrary salt length, made directly with EVP (not via jwt.cpp).
std::string pss_sign_with_salt(EVP_PKEY* key, std::string_view input, int salt) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_PKEY_CTX* pctx = nullptr;
    EXPECT_EQ(EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key), 1);
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()), 1);
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt), 1);
    std::size_t len = 0;
    auto in = reinterpret_cast<const unsigned char*>(input.data());
    EXPECT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, in, input.size()), 1);
    std::string sig(len, '\0');
    EXPECT_EQ(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in, input.size()),
              1);
    sig.resize(len);
    return sig;
}

std::string unhex(std::string_view hex) {
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
    return out;
}

// --- base64 -----------------------------------------------------------------------------------------

TEST(Base64, Rfc4648Vectors) {
    EXPECT_EQ(base64_encode(""), "");
    EXPECT_EQ(base64_encode("f"), "Zg==");
    EXPECT_EQ(base64_encode("fo"), "Zm8=");
    EXPECT_EQ(base64_encode("foo"), "Zm9v");
    EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
    EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
    EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
    EXPECT_EQ(base64_decode("Zm9vYmE=").value(), "fooba");
    EXPECT_EQ(base64url_encode("fooba"), "Zm9vYmE");
    EXPECT_EQ(base64url_decode("Zm9vYmE").value(), "fooba");
    EXPECT_EQ(base64url_encode(std::string("\xfb\xff\xfe", 3)), "-__-");
    EXPECT_EQ(base64_encode(std::string("\xfb\xff\xfe", 3)), "+//+");
    EXPECT_FALSE(base64url_decode("Zm9v*").has_value());
    EXPECT_FALSE(base64url_decode("Z").has_value());
}

TEST(Base64, X5tVectorFromMicrosoftDocs) {
    std::string raw = unhex("84E05C1D98BCE3A5421D225B140B36E86A3D5534");
    ASSERT_EQ(raw.size(), 20u);
    EXPECT_EQ(base64url_encode(raw), "hOBcHZi846VCHSJbFAs26Go9VTQ");
    EXPECT_EQ(hex_upper(base64url_decode("hOBcHZi846VCHSJbFAs26Go9VTQ").value()),
              "84E05C1D98BCE3A5421D225B140B36E86A3D5534");
}

// --- JWS --------------------------------------------------------------------------------------------

TEST(Jws, Rs256RoundTrip) {
    std::string jws = sign_jws(JwsAlg::RS256, shared_key(), R"({"alg":"RS256","typ":"JWT"})", R"({"a":1})");
    auto parsed = parse_jws(jws);
    ASSERT_TRUE(parsed);
    EXPECT_EQ(parsed->header_json, R"({"alg":"RS256","typ":"JWT"})");
    EXPECT_EQ(parsed->payload_json, R"({"a":1})");
    EXPECT_EQ(parsed->signature.size(), 256u);
    EXPECT_TRUE(verify_jws(*parsed, JwsAlg::RS256, shared_key()));
    EXPECT_FALSE(verify_jws(*parsed, JwsAlg::PS256, shared_key()));
    EXPECT_FALSE(verify_jws(*parsed, JwsAlg::RS256, other_key()));
}

TEST(Jws, Ps256RoundTripAndRandomized) {
    std::string a = sign_jws(JwsAlg::PS256, shared_key(), R"({"alg":"PS256"})", R"({"b":2})");
    std::string b = sign_jws(JwsAlg::PS256, shared_key(), R"({"alg":"PS256"})", R"({"b":2})");
    EXPECT_NE(a, b);  // PSS is randomized
    auto parsed = parse_jws(a);
    ASSERT_TRUE(parsed);
    EXPECT_TRUE(verify_jws(*parsed, JwsAlg::PS256, shared_key()));
    EXPECT_FALSE(verify_jws(*parsed, JwsAlg::RS256, shared_key()));
}

TEST(Jws, Ps256WrongSaltLengthRejected) {
    std::string input = "aGVhZGVy.cGF5bG9hZA";
    std::string good = pss_sign_with_salt(shared_key(), input, 32);
    EXPECT_TRUE(verify_bytes(JwsAlg::PS256, shared_key(), input, good));
    std::string max_salt = pss_sign_with_salt(shared_key(), input, RSA_PSS_SALTLEN_MAX);
    EXPECT_FALSE(verify_bytes(JwsAlg::PS256, shared_key(), input, max_salt));
    std::string salt20 = pss_sign_with_salt(shared_key(), input, 20);
    EXPECT_FALSE(verify_bytes(JwsAlg::PS256, shared_key(), input, salt20));
}

TEST(Jws, TamperedPayloadRejected) {
    for (JwsAlg alg : {JwsAlg::RS256, JwsAlg::PS256}) {
        std::string jws = sign_jws(alg, shared_key(), R"({"alg":"x"})", R"({"admin":false})");
        auto dot1 = jws.find('.');
        auto dot2 = jws.find('.', dot1 + 1);
        std::string tampered =
            jws.substr(0, dot1 + 1) + base64url_encode(R"({"admin":true})") + jws.substr(dot2);
        auto parsed = parse_jws(tampered);
        ASSERT_TRUE(parsed);
        EXPECT_FALSE(verify_jws(*parsed, alg, shared_key()));
        // A flipped signature bit too.
        auto good = parse_jws(jws);
        ASSERT_TRUE(good);
        good->signature[10] = static_cast<char>(good->signature[10] ^ 1);
        EXPECT_FALSE(verify_jws(*good, alg, shared_key()));
    }
}

TEST(Jws, ParseRejectsMalformed) {
    EXPECT_FALSE(parse_jws(""));
    EXPECT_FALSE(parse_jws("abc"));
    EXPECT_FALSE(parse_jws("a.b"));
    EXPECT_FALSE(parse_jws("e30.e30.c2ln.extra"));  // four parts
    EXPECT_FALSE(parse_jws("e30.e30.c2ln.a.b"));    // JWE-like five parts
    EXPECT_FALSE(parse_jws(".e30.c2ln"));
    EXPECT_FALSE(parse_jws("e30..c2ln"));
    EXPECT_FALSE(parse_jws("e30=.e30.c2ln"));  // padding
    EXPECT_FALSE(parse_jws("e3 0.e30.c2ln"));  // whitespace
    EXPECT_FALSE(parse_jws("e30.e3+.c2ln"));   // standard alphabet
    EXPECT_FALSE(parse_jws("e30.e30.c"));      // impossible length
    auto unsigned_jws = parse_jws("e30.e30.");
    ASSERT_TRUE(unsigned_jws);  // alg none shape parses; verification must then refuse it
    EXPECT_TRUE(unsigned_jws->signature.empty());
    EXPECT_FALSE(verify_jws(*unsigned_jws, JwsAlg::RS256, shared_key()));
}

TEST(Jws, AlgNames) {
    EXPECT_EQ(parse_jws_alg("RS256"), JwsAlg::RS256);
    EXPECT_EQ(parse_jws_alg("PS256"), JwsAlg::PS256);
    EXPECT_FALSE(parse_jws_alg("rs256"));
    EXPECT_FALSE(parse_jws_alg("HS256"));
    EXPECT_FALSE(parse_jws_alg("none"));
    EXPECT_EQ(jws_alg_name(JwsAlg::PS256), "PS256");
}

void openssl_verify(JwsAlg alg) {
    if (!have_openssl_cli()) GTEST_SKIP() << "openssl CLI not installed";
    TempDir dir;
    std::string jws = sign_jws(alg, shared_key(), R"({"alg":"x"})", R"({"sub":"cli"})");
    auto parsed = parse_jws(jws);
    ASSERT_TRUE(parsed);
    write_raw(dir.path / "pub.pem", public_key_to_pem(shared_key()));
    write_raw(dir.path / "input.txt", parsed->signing_input);
    write_raw(dir.path / "sig.bin", parsed->signature);
    std::string pss = alg == JwsAlg::PS256 ? " -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32" : "";
    std::string cmd = "cd '" + dir.path.string() + "' && openssl dgst -sha256" + pss +
                      " -verify pub.pem -signature sig.bin input.txt";
    auto [rc, out] = run(cmd);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("Verified OK"), std::string::npos) << out;
    // And the CLI refuses a tampered input.
    write_raw(dir.path / "input.txt", parsed->signing_input + "x");
    auto [rc2, out2] = run(cmd);
    EXPECT_NE(rc2, 0) << out2;
}

TEST(Jws, Rs256VerifiedByOpensslCli) {
    openssl_verify(JwsAlg::RS256);
}
TEST(Jws, Ps256VerifiedByOpensslCliWithSalt32) {
    openssl_verify(JwsAlg::PS256);
}

TEST(Jws, OpensslCliPs256SignatureVerifiesHere) {
    if (!have_openssl_cli()) GTEST_SKIP() << "openssl CLI not installed";
    TempDir dir;
    write_raw(dir.path / "key.pem", private_key_to_pem(shared_key()));
    write_raw(dir.path / "input.txt", "hello.world");
    auto [rc, out] = run("cd '" + dir.path.string() +
                         "' && openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32"
                         " -sign key.pem -out sig.bin input.txt");
    ASSERT_EQ(rc, 0) << out;
    std::string sig = read_file(dir.path / "sig.bin");
    EXPECT_TRUE(verify_bytes(JwsAlg::PS256, shared_key(), "hello.world", sig));
}

// --- client assertion -------------------------------------------------------------------------------

TEST(ClientAssertion, HeaderAndClaims) {
    Cert cert = make_self_signed_cert(shared_key(), "app", 30);
    ClientAssertionParams p;
    p.client_id = "11111111-2222-3333-4444-555555555555";
    p.audience = "https://login.example/tenant/oauth2/v2.0/token";
    p.cert_der = cert_to_der(cert.get());
    p.now = 1700000000;
    p.lifetime = 600;
    p.jti = "jti-1";
    p.extra_claims_json = R"({"nbf":1699999990,"custom":"x\"y"})";
    std::string jws = make_client_assertion(p, shared_key());
    auto parsed = parse_jws(jws);
    ASSERT_TRUE(parsed);
    std::string x5t = base64url_encode(cert_sha1_thumbprint(cert.get()));
    EXPECT_EQ(parsed->header_json, R"({"alg":"RS256","typ":"JWT","x5t":")" + x5t + "\"}");
    EXPECT_EQ(
        parsed->payload_json,
        R"({"aud":"https://login.example/tenant/oauth2/v2.0/token",)"
        R"("iss":"11111111-2222-3333-4444-555555555555",)"
        R"("sub":"11111111-2222-3333-4444-555555555555","jti":"jti-1","nbf":1699999990,"iat":1700000000,)"
        R"("exp":1700000600,"custom":"x\"y"})");
    EXPECT_TRUE(verify_jws(*parsed, JwsAlg::RS256, shared_key()));

    p.alg = JwsAlg::PS256;
    p.thumbprint = ThumbprintHeader::X5tS256;
    p.extra_claims_json.clear();
    p.jti.clear();
    p.include_x5c = true;
    auto ps = parse_jws(make_client_assertion(p, shared_key()));
    ASSERT_TRUE(ps);
    EXPECT_NE(ps->header_json.find(R"("alg":"PS256")"), std::string::npos);
    EXPECT_NE(ps->header_json.find("\"x5t#S256\":\"" + base64url_encode(cert_sha256_thumbprint(cert.get()))),
              std::string::npos);
    EXPECT_NE(ps->header_json.find("\"x5c\":[\"" + base64_encode(p.cert_der) + "\"]"), std::string::npos);
    EXPECT_NE(ps->payload_json.find(R"("jti":")"), std::string::npos);
    EXPECT_TRUE(verify_jws(*ps, JwsAlg::PS256, shared_key()));

    p.extra_claims_json = "[1]";
    EXPECT_THROW(make_client_assertion(p, shared_key()), std::invalid_argument);
}

// --- PKI --------------------------------------------------------------------------------------------

TEST(Pki, KeyPemRoundTripAndBits) {
    EXPECT_EQ(key_bits(shared_key()), 2048);
    EXPECT_TRUE(is_rsa_key(shared_key()));
    std::string pem = private_key_to_pem(shared_key());
    EXPECT_EQ(pem.rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
    PKey back = private_key_from_pem(pem);
    ASSERT_TRUE(back);
    EXPECT_EQ(EVP_PKEY_eq(back.get(), shared_key()), 1);
    EXPECT_FALSE(private_key_from_pem("garbage"));
    EXPECT_FALSE(private_key_from_pem(""));
    PKey pub = public_key_from_pem(public_key_to_pem(shared_key()));
    ASSERT_TRUE(pub);
    EXPECT_EQ(EVP_PKEY_eq(pub.get(), shared_key()), 1);
    PKey small = generate_rsa_key(1024);
    EXPECT_EQ(key_bits(small.get()), 1024);
    EXPECT_THROW(generate_rsa_key(512), PkiError);
}

TEST(Pki, SelfSignedCertificate) {
    Cert cert = make_self_signed_cert(shared_key(), "graphbridge-app", 10);
    ASSERT_TRUE(cert);
    EXPECT_EQ(cert_common_name(cert.get()), "graphbridge-app");
    EXPECT_TRUE(key_matches_cert(shared_key(), cert.get()));
    EXPECT_FALSE(key_matches_cert(other_key(), cert.get()));
    EXPECT_EQ(cert_not_after(cert.get()) - cert_not_before(cert.get()), 10 * 86400);
    std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));
    EXPECT_LE(cert_not_before(cert.get()), now);
    EXPECT_GT(cert_not_before(cert.get()), now - 3600);
    EXPECT_FALSE(cert_is_ca(cert.get()));
    EXPECT_TRUE(cert_signed_by(cert.get(), cert.get()));
    std::string der = cert_to_der(cert.get());
    EXPECT_EQ(cert_sha1_thumbprint(cert.get()), sha1(der));
    EXPECT_EQ(cert_sha256_thumbprint(cert.get()).size(), 32u);
    Cert from_der = cert_from_der(der);
    ASSERT_TRUE(from_der);
    EXPECT_EQ(cert_to_der(from_der.get()), der);
    Cert from_pem = cert_from_pem_or_der(cert_to_pem(cert.get()));
    ASSERT_TRUE(from_pem);
    EXPECT_EQ(cert_to_der(from_pem.get()), der);
    EXPECT_FALSE(cert_from_der(der + "x"));  // trailing garbage
    EXPECT_FALSE(cert_from_der(der.substr(0, der.size() - 1)));
    EXPECT_FALSE(cert_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
    // Two certificates with random serials differ.
    Cert again = make_self_signed_cert(shared_key(), "graphbridge-app", 10);
    EXPECT_NE(cert_serial_hex(cert.get()), cert_serial_hex(again.get()));
    PKey pub = cert_public_key(cert.get());
    ASSERT_TRUE(pub);
    EXPECT_EQ(EVP_PKEY_eq(pub.get(), shared_key()), 1);
}

TEST(Pki, CaAndServerCertificate) {
    PKey ca_key = generate_rsa_key(2048);
    Cert ca = make_ca_cert(ca_key.get(), "graphbridge sandbox CA");
    Cert server = make_server_cert(shared_key(), "127.0.0.1", 30, ca.get(), ca_key.get());
    ASSERT_TRUE(ca && server);
    EXPECT_TRUE(cert_is_ca(ca.get()));
    EXPECT_FALSE(cert_is_ca(server.get()));
    EXPECT_TRUE(cert_signed_by(server.get(), ca.get()));
    EXPECT_FALSE(cert_signed_by(server.get(), server.get()));
    auto sans = cert_subject_alt_names(server.get());
    EXPECT_EQ(sans, (std::vector<std::string>{"DNS:localhost", "IP:127.0.0.1", "IP:::1"}));
    EXPECT_TRUE(X509_get_extended_key_usage(server.get()) & XKU_SSL_SERVER);
    EXPECT_TRUE(key_matches_cert(shared_key(), server.get()));

    if (!have_openssl_cli()) GTEST_SKIP() << "openssl CLI not installed";
    TempDir dir;
    write_cert_pem(dir.path / "ca.pem", ca.get());
    write_cert_pem(dir.path / "server.pem", server.get());
    auto [rc, out] = run("cd '" + dir.path.string() + "' && openssl verify -CAfile ca.pem server.pem");
    EXPECT_EQ(rc, 0) << out;
    auto [rc2, text] = run("openssl x509 -noout -text -in '" + (dir.path / "server.pem").string() + "'");
    EXPECT_EQ(rc2, 0);
    EXPECT_NE(text.find("TLS Web Server Authentication"), std::string::npos) << text;
    EXPECT_NE(text.find("CA:FALSE"), std::string::npos);
    EXPECT_NE(text.find("IP Address:0:0:0:0:0:0:0:1"), std::string::npos) << text;
}

TEST(Pki, ThumbprintMatchesOpensslFingerprint) {
    if (!have_openssl_cli()) GTEST_SKIP() << "openssl CLI not installed";
    Cert cert = make_self_signed_cert(shared_key(), "thumb", 5);
    TempDir dir;
    write_cert_pem(dir.path / "c.pem", cert.get());
    auto [rc, out] =
        run("openssl x509 -noout -fingerprint -sha1 -in '" + (dir.path / "c.pem").string() + "'");
    ASSERT_EQ(rc, 0) << out;
    std::string fp = out.substr(out.find('=') + 1);
    std::string hex;
    for (char c : fp)
        if (std::isxdigit(static_cast<unsigned char>(c))) hex.push_back(c);
    EXPECT_EQ(hex, hex_upper(cert_sha1_thumbprint(cert.get())));
    auto [rc2, out2] =
        run("openssl x509 -noout -fingerprint -sha256 -in '" + (dir.path / "c.pem").string() + "'");
    ASSERT_EQ(rc2, 0);
    std::string hex2;
    for (char c : out2.substr(out2.find('=') + 1))
        if (std::isxdigit(static_cast<unsigned char>(c))) hex2.push_back(c);
    EXPECT_EQ(hex2, hex_upper(cert_sha256_thumbprint(cert.get())));
}

TEST(Pki, FilesAndModes) {
    TempDir dir;
    write_private_key_pem(dir.path / "key.pem", shared_key());
    struct stat st {};
    ASSERT_EQ(::stat((dir.path / "key.pem").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    PKey key = load_private_key_pem(dir.path / "key.pem");
    ASSERT_TRUE(key);
    EXPECT_EQ(EVP_PKEY_eq(key.get(), shared_key()), 1);
    Cert cert = make_self_signed_cert(shared_key(), "f", 1);
    write_cert_pem(dir.path / "c.pem", cert.get());
    write_file(dir.path / "c.der", cert_to_der(cert.get()));
    Cert a = load_cert(dir.path / "c.pem");
    Cert b = load_cert(dir.path / "c.der");
    ASSERT_TRUE(a && b);
    EXPECT_EQ(cert_to_der(a.get()), cert_to_der(b.get()));
    // Overwrite keeps 0600.
    write_private_key_pem(dir.path / "key.pem", other_key());
    ASSERT_EQ(::stat((dir.path / "key.pem").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_THROW(read_file(dir.path / "missing"), PkiError);
    EXPECT_THROW(load_private_key_pem(dir.path / "missing"), PkiError);
}

TEST(Pki, CustomValidityForExpiredCerts) {
    CertSpec spec;
    spec.common_name = "old";
    spec.not_before = 1000000000;
    spec.days = 1;
    Cert cert = issue_certificate(spec, shared_key(), nullptr, shared_key());
    EXPECT_EQ(cert_not_before(cert.get()), 1000000000);
    EXPECT_EQ(cert_not_after(cert.get()), 1000000000 + 86400);
}

}  // namespace
