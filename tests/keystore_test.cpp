// Tests for auth/keystore: keystores made by the real tools (keytool, openssl CLI) in a temp directory,
// loaded by content; every failure is checked for its kind, a one-line message naming file and fix, and
// no password in the text. Hostile-input coverage: truncations and byte flips of real files.
#include "auth/keystore.h"
#include "auth/crypto.h"
#include "auth/pki.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace fs = std::filesystem;
using gb::Secret;
using gb::auth::Credential;
using gb::auth::KeystoreError;
using gb::auth::KeystoreFormat;
using gb::auth::KeystoreRequest;
using Kind = gb::auth::KeystoreError::Kind;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void spit(const fs::path& p, std::string_view data) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string strip_colons(std::string s) {
    s.erase(std::remove(s.begin(), s.end(), ':'), s.end());
    return s;
}

// Value after `key` up to the end of its line ("SHA1: AB:CD..." -> "AB:CD...").
std::string field_after(const std::string& text, const std::string& key) {
    auto pos = text.find(key);
    if (pos == std::string::npos) return "";
    pos += key.size();
    auto end = text.find('\n', pos);
    std::string v = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
    while (!v.empty() && v.front() == ' ') v.erase(v.begin());
    return v;
}

class KeystoreTest : public ::testing::Test {
  protected:
    static inline fs::path dir_;
    static inline bool tools_ok_ = false;

    static int sh(const std::string& cmd) {
        std::string full =
            "cd '" + dir_.string() + "' && (" + cmd + ") >>'" + (dir_ / "tools.log").string() + "' 2>&1";
        int rc = std::system(full.c_str());
        return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    }
    static std::string sh_out(const std::string& cmd) {
        std::string out = (dir_ / "out.txt").string();
        std::string full = "cd '" + dir_.string() + "' && (" + cmd + ") >'" + out + "' 2>&1";
        if (std::system(full.c_str()) != 0) return "";
        return slurp(out);
    }

    static void SetUpTestSuite() {
        char tmpl[] = "/tmp/gb-keystore-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        ASSERT_EQ(std::system("command -v keytool >/dev/null && command -v openssl >/dev/null"), 0)
            << "keytool (default-jre-headless) and openssl are needed";
        const std::string kt = "keytool -noprompt ";
        const std::string rsa = " -keyalg RSA -keysize 2048 ";
        // JKS: store password differs from the key password; 30 days validity -> expiry warning.
        ASSERT_EQ(
            sh(kt + "-genkeypair -alias graphbridge" + rsa + "-validity 30 -storetype JKS -keystore t.jks " +
               "-storepass storepw1 -keypass keypw22 -dname CN=gbtest"),
            0);
        ASSERT_EQ(
            sh(kt + "-exportcert -rfc -alias graphbridge -keystore t.jks -storepass storepw1 -file t.cer"),
            0);
        ASSERT_EQ(sh(kt + "-exportcert -alias graphbridge -keystore t.jks -storepass storepw1 -file t.der"),
                  0);
        ASSERT_EQ(sh(kt + "-list -v -keystore t.jks -storepass storepw1 > t.list"), 0);
        // Two key entries.
        ASSERT_EQ(
            sh("cp t.jks two.jks && " + kt + "-genkeypair -alias Second" + rsa + "-validity 365 " +
               "-storetype JKS -keystore two.jks -storepass storepw1 -keypass storepw1 -dname CN=second"),
            0);
        // Trusted certificate only.
        ASSERT_EQ(
            sh(kt +
               "-importcert -alias ca -file t.cer -storetype JKS -keystore trust.jks -storepass storepw1"),
            0);
        // EC key.
        ASSERT_EQ(
            sh(kt + "-genkeypair -alias ec -keyalg EC -groupname secp256r1 -storetype JKS -keystore ec.jks " +
               "-storepass storepw1 -keypass storepw1 -dname CN=ec"),
            0);
        // Non-ASCII store and key password (keytool decodes argv as UTF-8 under C.UTF-8).
        ASSERT_EQ(
            sh("LC_ALL=C.UTF-8 " + kt + "-genkeypair -alias u" + rsa + "-storetype JKS -keystore utf.jks " +
               "-storepass 'pässwörd€𝄞' -keypass 'kéy€pw' -dname CN=utf"),
            0);
        // JCEKS.
        ASSERT_EQ(
            sh(kt + "-genkeypair -alias j" + rsa + "-storetype JCEKS -keystore j.jceks -storepass storepw1 " +
               "-keypass storepw1 -dname CN=j"),
            0);
        // PKCS12 from keytool (JDK 17: PBES2/AES-256 + HmacSHA256 MAC), then with a second key.
        ASSERT_EQ(
            sh(kt + "-genkeypair -alias App" + rsa + "-validity 365 -storetype PKCS12 -keystore kt.p12 " +
               "-storepass p12pass1 -dname CN=ktp12"),
            0);
        ASSERT_EQ(sh("cp kt.p12 kt2.p12 && " + kt + "-genkeypair -alias other" + rsa + "-validity 365 " +
                     "-storetype PKCS12 -keystore kt2.p12 -storepass p12pass1 -dname CN=other"),
                  0);
        // OpenSSL: key + certificate, PKCS12 modern and legacy, encrypted PEMs, a second key, small/EC keys.
        ASSERT_EQ(sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 365 "
                     "-subj /CN=pemtest"),
                  0);
        ASSERT_EQ(sh("cat key.pem cert.pem > both.pem"), 0);
        ASSERT_EQ(sh("openssl pkcs12 -export -legacy -inkey key.pem -in cert.pem -name legacy "
                     "-out legacy.p12 -passout pass:legacypw"),
                  0);
        ASSERT_EQ(sh("openssl pkcs12 -export -inkey key.pem -in cert.pem -name modern "
                     "-out ossl.p12 -passout pass:osslpw12"),
                  0);
        ASSERT_EQ(sh("openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out enc8.pem -passout pass:pem8pass"),
                  0);
        ASSERT_EQ(sh("openssl rsa -in key.pem -aes256 -traditional -out enc1.pem -passout pass:pem1pass"), 0);
        ASSERT_EQ(sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.pem"), 0);
        ASSERT_EQ(sh("openssl req -x509 -newkey rsa:1024 -nodes -keyout small.pem -out small.crt -days 365 "
                     "-subj /CN=small && cat small.crt >> small.pem"),
                  0);
        ASSERT_EQ(sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ecp.pem "
                     "-out ecp.crt -days 365 -subj /CN=ecpem && cat ecp.crt >> ecp.pem"),
                  0);
        tools_ok_ = true;
    }

    static void TearDownTestSuite() {
        std::error_code ec;
        if (!dir_.empty() && !std::getenv("GB_KEEP_KEYSTORE_TMP")) fs::remove_all(dir_, ec);
    }

    void SetUp() override {
        ASSERT_TRUE(tools_ok_) << "fixture generation failed, see " << dir_ / "tools.log";
    }

    static KeystoreRequest req(const std::string& file, std::optional<std::string> password = std::nullopt,
                               std::string alias = "") {
        KeystoreRequest r;
        r.path = (dir_ / file).string();
        if (password) r.password = Secret(*password);
        r.alias = std::move(alias);
        return r;
    }

    // Loads expecting failure; checks kind, one line, file name, fix text and no password in the text.
    static std::string expect_error(const KeystoreRequest& r, Kind kind,
                                    std::vector<std::string> must_contain) {
        try {
            gb::auth::load_keystore(r);
        } catch (const KeystoreError& e) {
            std::string what = e.what();
            if (std::getenv("GB_KEYSTORE_SHOW")) std::cout << "    " << what << "\n";
            EXPECT_EQ(e.kind(), kind) << what;
            EXPECT_EQ(what.find('\n'), std::string::npos) << what;
            EXPECT_NE(what.find(fs::path(r.path).filename().string()), std::string::npos) << what;
            EXPECT_NE(what.find(": "), std::string::npos) << what;
            for (const auto& s : must_contain)
                EXPECT_NE(what.find(s), std::string::npos) << "'" << s << "' in: " << what;
            if (r.password && !r.password->empty()) {
                EXPECT_EQ(what.find(r.password->reveal()), std::string::npos) << what;
            }
            if (r.key_password && !r.key_password->empty()) {
                EXPECT_EQ(what.find(r.key_password->reveal()), std::string::npos) << what;
            }
            return what;
        }
        ADD_FAILURE() << r.path << ": expected KeystoreError " << gb::auth::to_string(kind);
        return "";
    }

    static Credential load_ok(const KeystoreRequest& r) {
        try {
            return gb::auth::load_keystore(r);
        } catch (const std::exception& e) {
            ADD_FAILURE() << r.path << ": " << e.what();
            throw;
        }
    }

    static std::string openssl_sha1(const std::string& cert_file) {
        return strip_colons(field_after(
            sh_out("openssl x509 -in " + cert_file + " -noout -fingerprint -sha1"), "Fingerprint="));
    }
};

// --- JKS -------------------------------------------------------------------------------------------------

TEST_F(KeystoreTest, JksWithSeparateKeyPasswordLoadsAndMatchesKeytoolThumbprint) {
    auto r = req("t.jks", "storepw1");
    r.key_password = Secret("keypw22");
    Credential c = load_ok(r);
    EXPECT_EQ(c.format, KeystoreFormat::Jks);
    EXPECT_EQ(c.alias, "graphbridge");
    EXPECT_TRUE(gb::auth::is_rsa_key(c.key.get()));
    EXPECT_EQ(gb::auth::key_bits(c.key.get()), 2048);
    EXPECT_TRUE(gb::auth::key_matches_cert(c.key.get(), c.cert.get()));
    EXPECT_EQ(gb::auth::cert_common_name(c.cert.get()), "gbtest");
    EXPECT_TRUE(c.chain.empty());

    std::string keytool_sha1 = strip_colons(field_after(slurp(dir_ / "t.list"), "SHA1:"));
    ASSERT_EQ(keytool_sha1.size(), 40u);
    EXPECT_EQ(c.sha1_hex(), keytool_sha1);
    EXPECT_EQ(c.sha1_hex(), openssl_sha1("t.cer"));
    // The exported certificate is byte-identical to the loaded one.
    EXPECT_EQ(gb::auth::cert_to_der(c.cert.get()), slurp(dir_ / "t.der"));
    EXPECT_EQ(gb::auth::base64url_decode(c.x5t()).value_or(""), gb::auth::cert_sha1_thumbprint(c.cert.get()));
    EXPECT_EQ(c.x5t().size(), 27u);
    EXPECT_EQ(c.x5t_s256().size(), 43u);

    // -validity 30 -> within the 30-day window.
    ASSERT_EQ(c.warnings.size(), 1u);
    EXPECT_NE(c.warnings[0].find("expires in 29 days"), std::string::npos) << c.warnings[0];
    EXPECT_NE(c.warnings[0].find("graphbridge cert new"), std::string::npos) << c.warnings[0];
    EXPECT_EQ(c.warnings[0].find('\n'), std::string::npos);
}

TEST_F(KeystoreTest, JksWrongStorePasswordFailsIntegrityCheck) {
    auto r = req("t.jks", "storepw2");
    r.key_password = Secret("keypw22");
    expect_error(r, Kind::WrongPassword, {"integrity", "password_env/password_file"});
}

TEST_F(KeystoreTest, JksWrongKeyPassword) {
    // Key password defaults to the store password, which differs here.
    expect_error(req("t.jks", "storepw1"), Kind::WrongPassword,
                 {"key password", "differs from the store password", "key_password_env", "'graphbridge'"});
    auto r = req("t.jks", "storepw1");
    r.key_password = Secret("keypw23");
    expect_error(r, Kind::WrongPassword, {"key password", "key_password_env/key_password_file"});
}

TEST_F(KeystoreTest, JksWithoutPasswordNeedsOne) {
    expect_error(req("t.jks"), Kind::NeedPassword, {"password_env"});
}

TEST_F(KeystoreTest, JksTwoKeyEntriesNeedAliasAndAliasSelects) {
    std::string msg = expect_error(req("two.jks", "storepw1"), Kind::AmbiguousAlias, {"set alias"});
    EXPECT_NE(msg.find("'graphbridge'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'second'"), std::string::npos) << msg;  // keytool lower-cases JKS aliases

    Credential second = load_ok(req("two.jks", "storepw1", "SECOND"));  // case-insensitive
    EXPECT_EQ(second.alias, "second");
    EXPECT_EQ(gb::auth::cert_common_name(second.cert.get()), "second");
    EXPECT_TRUE(second.warnings.empty());

    auto r = req("two.jks", "storepw1", "graphbridge");
    r.key_password = Secret("keypw22");
    Credential first = load_ok(r);
    EXPECT_EQ(gb::auth::cert_common_name(first.cert.get()), "gbtest");

    auto aliases = gb::auth::list_aliases(req("two.jks", "storepw1"));  // file order is keytool's hash order
    std::sort(aliases.begin(), aliases.end());
    EXPECT_EQ(aliases, (std::vector<std::string>{"graphbridge", "second"}));
}

TEST_F(KeystoreTest, JksMissingAlias) {
    std::string msg =
        expect_error(req("t.jks", "storepw1", "nosuch"), Kind::NoSuchAlias, {"'nosuch'", "fix alias"});
    EXPECT_NE(msg.find("'graphbridge'"), std::string::npos) << msg;
}

TEST_F(KeystoreTest, JksTrustedCertificateOnlyHasNoPrivateKey) {
    expect_error(req("trust.jks", "storepw1"), Kind::NoPrivateKey, {"no private key"});
    expect_error(req("trust.jks", "storepw1", "ca"), Kind::NoPrivateKey, {"trusted certificate"});
}

TEST_F(KeystoreTest, JksEcKeyIsRejected) {
    expect_error(req("ec.jks", "storepw1"), Kind::NotRsa, {"must be RSA", "RSA 2048"});
}

TEST_F(KeystoreTest, JksNonAsciiPasswordsAreUtf16) {
    auto r = req("utf.jks", "pässwörd€𝄞");
    r.key_password = Secret("kéy€pw");
    Credential c = load_ok(r);
    EXPECT_EQ(gb::auth::cert_common_name(c.cert.get()), "utf");
    auto bad = req("utf.jks", "passwoerd");
    expect_error(bad, Kind::WrongPassword, {"integrity"});
}

TEST_F(KeystoreTest, JksFlippedByteInTheMiddleFailsIntegrity) {
    std::string data = slurp(dir_ / "t.jks");
    data[data.size() / 2] = static_cast<char>(data[data.size() / 2] ^ 0x01);
    spit(dir_ / "flip.jks", data);
    auto r = req("flip.jks", "storepw1");
    r.key_password = Secret("keypw22");
    expect_error(r, Kind::WrongPassword, {"integrity", "modified"});
}

TEST_F(KeystoreTest, JksEveryByteFlipIsRejected) {
    const std::string data = slurp(dir_ / "t.jks");
    for (std::size_t i = 0; i < data.size(); ++i) {
        std::string d = data;
        d[i] = static_cast<char>(d[i] ^ 0x80);
        spit(dir_ / "flipn.jks", d);
        auto r = req("flipn.jks", "storepw1");
        r.key_password = Secret("keypw22");
        try {
            gb::auth::load_keystore(r);
            ADD_FAILURE() << "byte " << i << " flipped and still loaded";
        } catch (const KeystoreError& e) {
            EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
        }
    }
}

TEST_F(KeystoreTest, JksTruncatedNeverCrashes) {
    const std::string data = slurp(dir_ / "t.jks");
    ASSERT_GT(data.size(), 1000u);
    for (std::size_t len = 0; len < data.size(); len += (len < 64 ? 1 : 7)) {
        spit(dir_ / "trunc.jks", data.substr(0, len));
        auto r = req("trunc.jks", "storepw1");
        r.key_password = Secret("keypw22");
        try {
            gb::auth::load_keystore(r);
            ADD_FAILURE() << "truncated to " << len << " and still loaded";
        } catch (const KeystoreError& e) {
            if (len < 4) {
                EXPECT_EQ(e.kind(), Kind::UnknownFormat) << len << ": " << e.what();
            } else {
                EXPECT_TRUE(e.kind() == Kind::Corrupt || e.kind() == Kind::WrongPassword)
                    << len << ": " << e.what();
            }
        }
    }
    // A structurally complete prefix with the wrong trailer: drop the last byte.
    spit(dir_ / "trunc.jks", data.substr(0, data.size() - 1));
    expect_error(req("trunc.jks", "storepw1"), Kind::Corrupt, {"damaged JKS", "backup"});
}

TEST_F(KeystoreTest, JceksIsUnsupportedWithConversionCommand) {
    expect_error(req("j.jceks", "storepw1"), Kind::Unsupported,
                 {"JCEKS", "keytool -importkeystore", "-deststoretype PKCS12"});
    EXPECT_THROW(gb::auth::detect_format(slurp(dir_ / "j.jceks")), KeystoreError);
}

// --- PKCS#12 ----------------------------------------------------------------------------------------------

TEST_F(KeystoreTest, KeytoolPkcs12Modern) {
    std::string info = sh_out("openssl pkcs12 -info -noout -in kt.p12 -passin pass:p12pass1");
    EXPECT_NE(info.find("AES-256-CBC"), std::string::npos) << info;  // really the modern algorithms
    Credential c = load_ok(req("kt.p12", "p12pass1"));
    EXPECT_EQ(c.format, KeystoreFormat::Pkcs12);
    EXPECT_EQ(c.alias, "app");  // keytool stores the lower-cased alias as friendlyName
    EXPECT_EQ(gb::auth::cert_common_name(c.cert.get()), "ktp12");
    EXPECT_TRUE(c.warnings.empty());
    EXPECT_EQ(load_ok(req("kt.p12", "p12pass1", "APP")).sha1_hex(), c.sha1_hex());
    expect_error(req("kt.p12", "p12pass1", "nosuch"), Kind::NoSuchAlias, {"'nosuch'", "fix alias"});
}

TEST_F(KeystoreTest, KeytoolPkcs12TwoKeys) {
    expect_error(req("kt2.p12", "p12pass1"), Kind::AmbiguousAlias, {"set alias", "'app'", "'other'"});
    Credential c = load_ok(req("kt2.p12", "p12pass1", "other"));
    EXPECT_EQ(gb::auth::cert_common_name(c.cert.get()), "other");
    EXPECT_EQ(c.alias, "other");
}

TEST_F(KeystoreTest, OpensslLegacyPkcs12) {
    std::string info = sh_out("openssl pkcs12 -info -noout -legacy -in legacy.p12 -passin pass:legacypw");
    EXPECT_NE(info.find("RC2"), std::string::npos) << info;
    EXPECT_NE(info.find("TripleDES"), std::string::npos) << info;
    Credential c = load_ok(req("legacy.p12", "legacypw"));
    EXPECT_EQ(c.alias, "legacy");
    EXPECT_EQ(c.sha1_hex(), openssl_sha1("cert.pem"));
    expect_error(req("legacy.p12", "wrongpw"), Kind::WrongPassword, {"MAC", "password_env/password_file"});
}

TEST_F(KeystoreTest, OpensslModernPkcs12) {
    Credential c = load_ok(req("ossl.p12", "osslpw12"));
    EXPECT_EQ(c.alias, "modern");
    EXPECT_EQ(c.sha1_hex(), openssl_sha1("cert.pem"));
}

TEST_F(KeystoreTest, Pkcs12WrongOrMissingPassword) {
    expect_error(req("kt.p12", "p12pass2"), Kind::WrongPassword, {"wrong keystore password", "password_env"});
    expect_error(req("ossl.p12", "xyzzy-pw"), Kind::WrongPassword, {"wrong keystore password"});
    expect_error(req("kt.p12"), Kind::NeedPassword, {"password_env or password_file"});
}

TEST_F(KeystoreTest, Pkcs12TruncatedAndFlippedNeverCrash) {
    const std::string data = slurp(dir_ / "legacy.p12");
    for (std::size_t len = 0; len < data.size(); len += 13) {
        spit(dir_ / "trunc.p12", data.substr(0, len));
        EXPECT_THROW(gb::auth::load_keystore(req("trunc.p12", "legacypw")), KeystoreError) << len;
    }
    for (std::size_t i = 0; i < data.size(); i += 5) {
        std::string d = data;
        d[i] = static_cast<char>(d[i] ^ 0x20);
        spit(dir_ / "flip.p12", d);
        try {
            gb::auth::load_keystore(req("flip.p12", "legacypw"));
        } catch (const KeystoreError&) {
        }  // loading is allowed only where the flip is outside MAC'd data (e.g. ASN.1 length forms)
    }
}

// --- PEM --------------------------------------------------------------------------------------------------

TEST_F(KeystoreTest, PemPlainKeyAndCertInOneFile) {
    Credential c = load_ok(req("both.pem"));
    EXPECT_EQ(c.format, KeystoreFormat::Pem);
    EXPECT_EQ(c.sha1_hex(), openssl_sha1("cert.pem"));
    EXPECT_EQ(gb::auth::cert_common_name(c.cert.get()), "pemtest");
}

TEST_F(KeystoreTest, PemEncryptedPkcs8WithSeparateCert) {
    auto r = req("enc8.pem", "pem8pass");
    r.cert_path = (dir_ / "cert.pem").string();
    Credential c = load_ok(r);
    EXPECT_EQ(c.sha1_hex(), openssl_sha1("cert.pem"));
    // DER certificate as cert_path.
    ASSERT_EQ(sh("openssl x509 -in cert.pem -outform DER -out cert.der"), 0);
    r.cert_path = (dir_ / "cert.der").string();
    EXPECT_EQ(load_ok(r).sha1_hex(), c.sha1_hex());
}

TEST_F(KeystoreTest, PemEncryptedPkcs1) {
    ASSERT_NE(slurp(dir_ / "enc1.pem").find("Proc-Type: 4,ENCRYPTED"), std::string::npos);
    auto r = req("enc1.pem", "pem1pass");
    r.cert_path = (dir_ / "cert.pem").string();
    EXPECT_EQ(load_ok(r).sha1_hex(), openssl_sha1("cert.pem"));
}

TEST_F(KeystoreTest, PemEncryptedKeyWithoutOrWithWrongPassword) {
    for (const char* file : {"enc8.pem", "enc1.pem"}) {
        auto r = req(file);
        r.cert_path = (dir_ / "cert.pem").string();
        expect_error(r, Kind::NeedPassword, {"encrypted", "password_env or password_file"});
        r.password = Secret("not-the-password");
        expect_error(r, Kind::WrongPassword, {"wrong password", "password_env/password_file"});
    }
}

TEST_F(KeystoreTest, PemKeyCertMismatch) {
    auto r = req("other.pem");
    r.cert_path = (dir_ / "cert.pem").string();
    expect_error(r, Kind::KeyMismatch, {"does not match", "pemtest", "cert.pem"});
}

TEST_F(KeystoreTest, PemKeyWithoutCertificate) {
    expect_error(req("key.pem"), Kind::NoCertificate, {"cert_file"});
    expect_error(req("cert.pem"), Kind::NoPrivateKey, {"no private key"});
    expect_error(req("t.der"), Kind::NoPrivateKey, {"DER certificate"});
}

TEST_F(KeystoreTest, PemSmallAndEcKeys) {
    expect_error(req("small.pem"), Kind::KeyTooSmall, {"1024 bits", "2048"});
    expect_error(req("ecp.pem"), Kind::NotRsa, {"must be RSA"});
}

TEST_F(KeystoreTest, ExpiredAndNotYetValid) {
    auto key = gb::auth::generate_rsa_key(2048);
    gb::auth::CertSpec spec;
    spec.common_name = "old";
    spec.not_before = static_cast<std::int64_t>(std::time(nullptr)) - 20 * 86400;
    spec.days = 10;
    auto old = gb::auth::issue_certificate(spec, key.get(), nullptr, key.get());
    spit(dir_ / "expired.pem", gb::auth::private_key_to_pem(key.get()) + gb::auth::cert_to_pem(old.get()));
    expect_error(req("expired.pem"), Kind::Expired, {"'CN=old' expired on", "graphbridge cert new", ".cer"});

    // The openssl-made PEM, judged at other times through `now`.
    auto r = req("both.pem");
    r.now = static_cast<std::int64_t>(std::time(nullptr)) + 400 * 86400;
    expect_error(r, Kind::Expired, {"expired on"});
    r.now = static_cast<std::int64_t>(std::time(nullptr)) - 86400;
    expect_error(r, Kind::NotYetValid, {"not valid before"});
    r.now = static_cast<std::int64_t>(std::time(nullptr)) + 355 * 86400;
    Credential c = load_ok(r);
    ASSERT_EQ(c.warnings.size(), 1u);
    EXPECT_NE(c.warnings[0].find("expires in"), std::string::npos);
}

TEST_F(KeystoreTest, PemChainOrderedAfterLeaf) {
    auto ca_key = gb::auth::generate_rsa_key(2048);
    auto ca = gb::auth::make_ca_cert(ca_key.get(), "Test CA");
    auto key = gb::auth::generate_rsa_key(2048);
    auto leaf = gb::auth::make_server_cert(key.get(), "leaf", 365, ca.get(), ca_key.get());
    // CA first, then key, then leaf: the leaf is found by key, the CA becomes the chain.
    spit(dir_ / "chain.pem", gb::auth::cert_to_pem(ca.get()) + gb::auth::private_key_to_pem(key.get()) +
                                 gb::auth::cert_to_pem(leaf.get()));
    Credential c = load_ok(req("chain.pem"));
    EXPECT_EQ(gb::auth::cert_common_name(c.cert.get()), "leaf");
    ASSERT_EQ(c.chain.size(), 1u);
    EXPECT_EQ(gb::auth::cert_common_name(c.chain[0].get()), "Test CA");
}

// --- detection by content -------------------------------------------------------------------------------

TEST_F(KeystoreTest, FormatDetectedByContentNotName) {
    ASSERT_EQ(sh("cp kt.p12 liar.pem && cp both.pem liar.p12 && cp t.jks liar.pfx"), 0);
    EXPECT_EQ(load_ok(req("liar.pem", "p12pass1")).format, KeystoreFormat::Pkcs12);
    EXPECT_EQ(load_ok(req("liar.p12")).format, KeystoreFormat::Pem);
    auto r = req("liar.pfx", "storepw1");
    r.key_password = Secret("keypw22");
    EXPECT_EQ(load_ok(r).format, KeystoreFormat::Jks);

    EXPECT_EQ(gb::auth::detect_format(slurp(dir_ / "t.jks")), KeystoreFormat::Jks);
    EXPECT_EQ(gb::auth::detect_format(slurp(dir_ / "ossl.p12")), KeystoreFormat::Pkcs12);
    EXPECT_EQ(gb::auth::detect_format(slurp(dir_ / "enc1.pem")), KeystoreFormat::Pem);
    spit(dir_ / "junk.jks", "this is not a keystore\n");
    expect_error(req("junk.jks", "junkpass"), Kind::UnknownFormat, {"not a JKS, PKCS#12 or PEM"});
}

// Without the legacy provider (OPENSSL_MODULES pointing nowhere) an RC2-40 file must not look like a wrong
// password. Providers load once per process, so this runs the test binary again with that environment.
TEST_F(KeystoreTest, LegacyPkcs12WithoutLegacyProviderIsUnsupported) {
    std::string self = fs::read_symlink("/proc/self/exe").string();
    std::string out =
        sh_out("OPENSSL_MODULES=/nonexistent GB_KEYSTORE_CHILD_P12='" + (dir_ / "legacy.p12").string() +
               "' '" + self + "' --gtest_filter=KeystoreChild.LegacyWithoutProvider");
    EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

TEST(KeystoreChild, LegacyWithoutProvider) {
    const char* path = std::getenv("GB_KEYSTORE_CHILD_P12");
    if (path == nullptr)
        GTEST_SKIP() << "runs only as a child of LegacyPkcs12WithoutLegacyProviderIsUnsupported";
    KeystoreRequest r;
    r.path = path;
    r.password = Secret("legacypw");
    try {
        gb::auth::load_keystore(r);
        ADD_FAILURE() << "loaded an RC2-40 file without the legacy provider";
    } catch (const KeystoreError& e) {
        std::string what = e.what();
        EXPECT_EQ(e.kind(), Kind::Unsupported) << what;
        EXPECT_NE(what.find("legacy provider"), std::string::npos) << what;
        EXPECT_NE(what.find("keytool -importkeystore"), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        std::cout << "child message: " << what << "\n";
    }
}

TEST_F(KeystoreTest, UnreadableFile) {
    expect_error(req("does-not-exist.p12", "nonepass"), Kind::Unreadable, {"cannot read", "permissions"});
}

}  // namespace
