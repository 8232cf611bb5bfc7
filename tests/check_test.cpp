// `graphbridge check` against the sandbox over HTTPS: every step ok on a good config, and each AADSTS
// case produced by the sandbox turned into its own message naming the cause.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "auth/crypto.h"
#include "auth/pki.h"
#include "tests/support/test_sandbox.h"

using namespace gb;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct Outcome {
    int status = -1;
    std::string out;
};

class CheckTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        sb_ = new test::TestSandbox("check");
        server_ = &sb_->server();
        dir_ = new std::string(sb_->tenant_dir());
        // A certificate that is not registered on the app.
        auto key = auth::generate_rsa_key(2048);
        auto cert = auth::make_self_signed_cert(key.get(), "stranger", 60);
        auth::write_file(*dir_ + "/stranger.pem", auth::private_key_to_pem(key.get()) + auth::cert_to_pem(cert.get()),
                         0600);
        stranger_thumb_ = new std::string(auth::hex_upper(auth::cert_sha1_thumbprint(cert.get())));
    }
    static void TearDownTestSuite() {
        delete dir_;
        delete stranger_thumb_;
        delete sb_;
    }
    void SetUp() override {
        server_->clear_faults();
        admin("/sandbox/settings", R"({"clock_offset_s":0})");
        admin("/sandbox/apps/" + client_id(), R"({"enabled":true,"roles":["Mail.Send","Mail.ReadWrite"]})");
    }

    static std::string base() { return sb_->base(); }
    static std::string client_id() { return sb_->app().client_id; }

    static void admin(const std::string& path, const std::string& json) {
        std::string cmd = "curl -s -o /dev/null --cacert " + *dir_ + "/ca.pem -H 'Content-Type: application/json' -d '" +
                          json + "' " + base() + path;
        ASSERT_EQ(std::system(cmd.c_str()), 0);
    }

    // Writes a config with the given app lines and runs `graphbridge check`.
    static Outcome check(const std::string& app_lines, const std::string& mailbox = "alice@sandbox.test",
                         const std::string& tail = "") {
        std::string cfg = *dir_ + "/check.toml";
        std::ofstream(cfg) << "state_dir = \"" << *dir_ << "/state\"\n[app.sandbox]\n"
                           << app_lines << "\n[[account]]\nlogin = \"alice\"\npassword_hash = \"$scrypt$ln=15,r=8,p=1$"
                           << "AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\napp = \"sandbox\"\n"
                           << "mailbox = \"" << mailbox << "\"\n" << tail;
        std::string out = *dir_ + "/check.out";
        std::string cmd = std::string(GB_BINARY_PATH) + " check --config " + cfg + " >" + out + " 2>&1";
        int rc = std::system(cmd.c_str());
        return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(out)};
    }

    static std::string lines(const std::string& tenant, const std::string& client, const std::string& credential,
                             const std::string& extra = "") {
        return "tenant_id = \"" + tenant + "\"\nclient_id = \"" + client + "\"\nauthority = \"" + base() +
               "\"\ngraph_url = \"" + base() + "\"\nca_file = \"" + *dir_ + "/ca.pem\"\n" + extra + credential;
    }
    static std::string cert(const std::string& keystore = "app.pem", const std::string& more = "") {
        return "[app.sandbox.certificate]\nkeystore = \"" + *dir_ + "/" + keystore + "\"\n" + more;
    }
    static std::string good(const std::string& extra = "", const std::string& credential = "") {
        return lines(sb_->setup().tenant.tenant_id, client_id(), credential.empty() ? cert() : credential, extra);
    }

    static test::TestSandbox* sb_;
    static std::string* dir_;  // the tenant's directory: keystores, CA, secrets
    static sandbox::SandboxServer* server_;
    static std::string* stranger_thumb_;
};

test::TestSandbox* CheckTest::sb_;
std::string* CheckTest::dir_;
sandbox::SandboxServer* CheckTest::server_;
std::string* CheckTest::stranger_thumb_;

}  // namespace

TEST_F(CheckTest, EveryStepOkOnAGoodConfig) {
    auto r = check(good());
    EXPECT_EQ(r.status, 0) << r.out;
    auto registered = auth::load_cert(*dir_ + "/app.pem");
    EXPECT_NE(r.out.find(auth::hex_upper(auth::cert_sha1_thumbprint(registered.get()))), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("[ok]     token"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("[ok]     mailbox alice@sandbox.test"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("[ok]     send permission"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" 0 failed"), std::string::npos) << r.out;
    auto ps = check(good("", cert("app.pem", "algorithm = \"PS256\"\nthumbprint = \"x5t#S256\"\n")));
    EXPECT_EQ(ps.status, 0) << ps.out;
    auto secret = check(good("client_secret_file = \"" + *dir_ + "/client-secret\"\n", "\n"));
    EXPECT_EQ(secret.status, 0) << secret.out;
}

TEST_F(CheckTest, UnregisteredCertificate700027) {
    auto r = check(good("", cert("stranger.pem")));
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("[FAILED] token: the certificate with thumbprint " + *stranger_thumb_ + " is not registered"),
              std::string::npos) << r.out;
}

TEST_F(CheckTest, ClockSkew700024) {
    admin("/sandbox/settings", R"({"clock_offset_s":3600})");
    auto r = check(good());
    EXPECT_NE(r.out.find("clock is probably wrong"), std::string::npos) << r.out;
}

TEST_F(CheckTest, WrongAudience50012) {
    // Same server through another name: the assertion's aud is then not the endpoint the sandbox expects.
    std::string ep = "token_endpoint = \"https://localhost:" + std::to_string(server_->port()) + "/" +
                     sb_->setup().tenant.tenant_id + "/oauth2/v2.0/token\"\n";
    auto r = check(good(ep));
    EXPECT_NE(r.out.find("refused the assertion's audience"), std::string::npos) << r.out;
}

TEST_F(CheckTest, UnknownApp700016AndTenant90002) {
    auto app = check(lines(sb_->setup().tenant.tenant_id, "99999999-9999-4999-8999-999999999999", cert()));
    EXPECT_NE(app.out.find("application 99999999-9999-4999-8999-999999999999 was not found"), std::string::npos) << app.out;
    auto tenant = check(lines("88888888-8888-4888-8888-888888888888", client_id(), cert()));
    EXPECT_NE(tenant.out.find("tenant '88888888-8888-4888-8888-888888888888' was not found"), std::string::npos)
        << tenant.out;
}

TEST_F(CheckTest, WrongAndExpiredSecrets) {
    std::ofstream(*dir_ + "/wrong-secret") << "definitely-not-it";
    auto wrong = check(good("client_secret_file = \"" + *dir_ + "/wrong-secret\"\n", "\n"));
    EXPECT_NE(wrong.out.find("use the secret's Value, not its Secret ID"), std::string::npos) << wrong.out;
    EXPECT_EQ(wrong.out.find("definitely-not-it"), std::string::npos);
    auto expired = check(good("client_secret_file = \"" + *dir_ + "/client-secret-expired\"\n", "\n"));
    EXPECT_NE(expired.out.find("has expired"), std::string::npos) << expired.out;
}

TEST_F(CheckTest, ScopeErrors) {
    auto bare = check(good("scope = \"Mail.Send\"\n"));
    EXPECT_NE(bare.out.find("(AADSTS1002012)"), std::string::npos) << bare.out;
    auto two = check(good("scope = \"" + base() + "/.default https://outlook.office365.com/.default\"\n"));
    EXPECT_NE(two.out.find("(AADSTS700022)"), std::string::npos) << two.out;
    auto other = check(good("scope = \"https://graph.microsoft.com/.default\"\n"));
    EXPECT_NE(other.out.find("does not exist in this tenant"), std::string::npos) << other.out;
}

TEST_F(CheckTest, DisabledApp7000112) {
    admin("/sandbox/apps/" + client_id(), R"({"enabled":false})");
    auto r = check(good());
    EXPECT_NE(r.out.find("is disabled"), std::string::npos) << r.out;
}

TEST_F(CheckTest, InjectedCodesWithoutANaturalTrigger) {
    admin("/sandbox/faults", R"({"target":"token","kind":"aadsts","code":50027})");
    auto m = check(good());
    EXPECT_NE(m.out.find("malformed"), std::string::npos) << m.out;
    admin("/sandbox/faults", R"({"target":"token","kind":"aadsts","code":900023})");
    EXPECT_NE(check(good()).out.find("not a valid GUID or domain"), std::string::npos);
    admin("/sandbox/faults", R"({"target":"token","kind":"aadsts","code":70011})");
    EXPECT_NE(check(good()).out.find("(AADSTS70011)"), std::string::npos);
}

TEST_F(CheckTest, MissingConsentAndUnknownMailbox) {
    admin("/sandbox/apps/" + client_id(), R"({"roles":[]})");
    auto r = check(good());
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("admin consent is missing"), std::string::npos) << r.out;
    admin("/sandbox/apps/" + client_id(), R"({"roles":["Mail.Send","Mail.ReadWrite"]})");
    auto mb = check(good(), "nobody@sandbox.test");
    EXPECT_NE(mb.out.find("[FAILED] mailbox nobody@sandbox.test: no such mailbox"), std::string::npos) << mb.out;
}

TEST_F(CheckTest, SendOnlyAppWithoutReadListenersPassesAndSaysWhatItCannotTest) {
    // Mail.Send only and no IMAP/POP3: reading the Inbox is refused (403), which is not a fault here.
    admin("/sandbox/apps/" + client_id(), R"({"roles":["Mail.Send"]})");
    std::string no_read = "[imap]\nlisten = []\ntls_listen = []\n[pop3]\nlisten = []\ntls_listen = []\n";
    auto r = check(good(), "alice@sandbox.test", no_read);
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("mailbox alice@sandbox.test: not checked: reading it needs Mail.ReadWrite"), std::string::npos)
        << r.out;
    EXPECT_EQ(r.out.find("RBAC"), std::string::npos) << r.out;  // no false blame on the scope
    // With IMAP/POP3 configured the missing permission is a failure, named as such.
    auto with_read = check(good());
    EXPECT_EQ(with_read.status, 1);
    EXPECT_NE(with_read.out.find("Mail.ReadWrite is not granted but IMAP/POP3 listeners are configured"),
              std::string::npos) << with_read.out;
    admin("/sandbox/apps/" + client_id(), R"({"roles":["Mail.Send","Mail.ReadWrite"]})");
}

TEST_F(CheckTest, BrokenKeystoreIsACredentialFailure) {
    std::ofstream(*dir_ + "/broken.pem") << "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n";
    auto r = check(good("", cert("broken.pem")));
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("[FAILED] credential"), std::string::npos) << r.out;
}
