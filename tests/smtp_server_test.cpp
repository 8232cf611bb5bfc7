// The SMTP front end over real sockets, driven by Python's smtplib and raw sockets: plain, STARTTLS and
// implicit TLS, AUTH PLAIN/LOGIN, send_as, relay networks, pipelining, BDAT, the smuggling and STARTTLS
// injection classes. The sink records what would have been spooled.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "auth/password.h"
#include "auth/pki.h"
#include "proxy/smtp/server.h"

using namespace gb;
using namespace gb::smtp;
namespace fs = std::filesystem;

namespace {

struct Spooled {
    Envelope envelope;
    std::string body;
};

class MemorySink : public MessageSink {
public:
    class Writer : public MessageWriter {
    public:
        explicit Writer(MemorySink& sink) : sink_(sink) {}
        void append(std::string_view bytes) override { body_.append(bytes); }
        void commit(const Envelope& env, Done done) override {
            std::string id;
            bool fail;
            {
                std::lock_guard lock(sink_.mutex);
                fail = sink_.fail_commits;
                if (!fail) {
                    sink_.messages.push_back({env, body_});
                    id = "Q" + std::to_string(sink_.messages.size());
                }
            }
            // Answer from another thread, as the group-committing spool does.
            std::thread([done, id, fail] {
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
                if (fail) done(std::variant<std::string, std::string>(std::in_place_index<1>, "ENOSPC"));
                else done(std::variant<std::string, std::string>(std::in_place_index<0>, id));
            }).detach();
        }
        void abort() override { ++sink_.aborted; }

    private:
        MemorySink& sink_;
        std::string body_;
    };
    std::unique_ptr<MessageWriter> begin() override { return std::make_unique<Writer>(*this); }

    std::mutex mutex;
    std::vector<Spooled> messages;
    std::atomic<int> aborted{0};
    bool fail_commits = false;
};

struct Result {
    int status = -1;
    rapidjson::Document json;
    std::string raw;
};

class SmtpServerTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new std::string(::testing::TempDir() + "/gb_smtp_" + std::to_string(::getpid()));
        fs::create_directories(*dir_);
        password_ = new std::string("s3cret-Pass");
        std::ofstream(*dir_ + "/app.pem") << "x";
        std::ofstream(*dir_ + "/c.toml")
            << "state_dir = \"/tmp/x\"\n[app.a]\ntenant_id = \"sandbox.test\"\n"
               "client_id = \"11111111-2222-3333-4444-555555555555\"\n[app.a.certificate]\nkeystore = \"app.pem\"\n"
               "[[account]]\nlogin = \"alice\"\npassword_hash = \""
            << auth::hash_password(*password_)
            << "\"\napp = \"a\"\nmailbox = \"alice@sandbox.test\"\n"
               "[[relay]]\nnetworks = [\"127.0.0.2/32\"]\napp = \"a\"\nmailbox = \"scanner@sandbox.test\"\n";
        cfg_ = new config::Config(config::load(*dir_ + "/c.toml"));
        policy_ = new Policy(*cfg_);
        sink_ = new MemorySink();

        auto ca_key = auth::generate_rsa_key(2048);
        auto ca = auth::make_ca_cert(ca_key.get(), "test CA", 10);
        auto key = auth::generate_rsa_key(2048);
        auto cert = auth::make_server_cert(key.get(), "localhost", 10, ca.get(), ca_key.get());
        auth::write_cert_pem(*dir_ + "/ca.pem", ca.get());

        ServerOptions o;
        o.hostname = "bridge.test";
        o.listen = {config::ListenAddress{"127.0.0.1", 0}};  // port 0: ephemeral
        o.tls_listen = {config::ListenAddress{"127.0.0.1", 0}};
        o.tls_cert_pem = auth::cert_to_pem(cert.get()) + auth::cert_to_pem(ca.get());
        o.tls_key_pem = auth::private_key_to_pem(key.get());
        o.max_message_size = 1024 * 1024;
        server_ = new SmtpServer(o, *policy_, *sink_);
        server_->start();
    }
    static void TearDownTestSuite() {
        server_->stop();
        delete server_;
        delete sink_;
        delete policy_;
        delete cfg_;
        fs::remove_all(*dir_);
        delete dir_;
        delete password_;
    }
    void SetUp() override {
        std::lock_guard lock(sink_->mutex);
        sink_->messages.clear();
        sink_->fail_commits = false;
    }

    static Result client(const std::string& scenario) {
        auto ports = server_->ports();
        std::string cmd = "python3 " + std::string(GB_SOURCE_DIR_PATH) + "/tests/integration/smtp_client.py " + scenario +
                          " " + std::to_string(ports[0]) + " " + std::to_string(ports[1]) + " " + *dir_ + "/ca.pem " +
                          *password_ + " 2>&1";
        Result r;
        FILE* p = ::popen(cmd.c_str(), "r");
        std::array<char, 4096> buf;
        while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.raw.append(buf.data(), n);
        int rc = ::pclose(p);
        r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
        r.json.Parse(r.raw.c_str());
        return r;
    }
    static std::vector<Spooled> spooled() {
        std::lock_guard lock(sink_->mutex);
        return sink_->messages;
    }

    static std::string* dir_;
    static std::string* password_;
    static config::Config* cfg_;
    static Policy* policy_;
    static MemorySink* sink_;
    static SmtpServer* server_;
};
std::string* SmtpServerTest::dir_;
std::string* SmtpServerTest::password_;
config::Config* SmtpServerTest::cfg_;
Policy* SmtpServerTest::policy_;
MemorySink* SmtpServerTest::sink_;
SmtpServer* SmtpServerTest::server_;

}  // namespace

TEST_F(SmtpServerTest, AuthPlainSendsWithEveryEnvelopeRecipient) {
    auto r = client("auth_plain");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    std::string features;
    for (auto& f : r.json["esmtp"].GetArray()) features += std::string(f.GetString()) + " ";
    for (const char* ext : {"auth", "size", "pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "chunking",
                            "starttls"})
        EXPECT_NE(features.find(ext), std::string::npos) << ext << " in " << features;
    auto msgs = spooled();
    ASSERT_EQ(msgs.size(), 1u);
    EXPECT_EQ(msgs[0].envelope.identity.mailbox, "alice@sandbox.test");
    EXPECT_EQ(msgs[0].envelope.recipients, (std::vector<std::string>{"bob@sandbox.test", "carol@example.com"}));
    EXPECT_EQ(msgs[0].envelope.reverse_path, "alice@sandbox.test");
    EXPECT_NE(msgs[0].body.find("\r\n.leading dot\r\n"), std::string::npos);  // dot-unstuffed
    EXPECT_EQ(msgs[0].body.find("Bcc:"), std::string::npos);               // smtplib strips Bcc itself
}

TEST_F(SmtpServerTest, WrongPasswordIs535) {
    auto r = client("wrong_password");
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_EQ(r.json["code"].GetInt(), 535);
    EXPECT_TRUE(spooled().empty());
}

TEST_F(SmtpServerTest, StartTlsThenAuthLogin) {
    auto r = client("starttls_login");
    ASSERT_EQ(r.status, 0) << r.raw;
    EXPECT_TRUE(r.json["starttls_offered"].GetBool());
    EXPECT_FALSE(r.json["starttls_after"].GetBool());
    EXPECT_EQ(r.json["auth"].GetInt(), 235);
    auto msgs = spooled();
    ASSERT_EQ(msgs.size(), 1u);
    EXPECT_TRUE(msgs[0].envelope.tls);
}

TEST_F(SmtpServerTest, ImplicitTls) {
    auto r = client("implicit_tls");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_EQ(spooled().size(), 1u);
    EXPECT_TRUE(spooled()[0].envelope.tls);
}

TEST_F(SmtpServerTest, MailFromOutsideSendAsIsRefused) {
    auto r = client("spoof");
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_EQ(r.json["code"].GetInt(), 553);
    EXPECT_NE(std::string(r.json["text"].GetString()).find("5.7.1"), std::string::npos);
}

TEST_F(SmtpServerTest, RelayNetworksOnlyAndAsTheirMailbox) {
    auto ok = client("relay_allowed");
    ASSERT_EQ(ok.status, 0) << ok.raw;
    auto msgs = spooled();
    ASSERT_EQ(msgs.size(), 1u);
    EXPECT_EQ(msgs[0].envelope.identity.mailbox, "scanner@sandbox.test");
    EXPECT_EQ(msgs[0].envelope.client_ip, "127.0.0.2");
    auto denied = client("relay_denied");
    ASSERT_TRUE(denied.json.IsObject()) << denied.raw;
    EXPECT_EQ(denied.json["code"].GetInt(), 530);
    EXPECT_EQ(spooled().size(), 1u);
}

TEST_F(SmtpServerTest, PipelinedTransactionInOnePacket) {
    auto r = client("pipelined");
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    std::string replies = r.json["replies"].GetString();
    EXPECT_NE(replies.find("250 2.1.0"), std::string::npos) << replies;
    EXPECT_NE(replies.find("250 2.1.5"), std::string::npos) << replies;
    EXPECT_NE(replies.find("354"), std::string::npos) << replies;
    EXPECT_NE(replies.find("250 2.0.0 Ok: queued as Q1"), std::string::npos) << replies;
    EXPECT_NE(replies.find("221 2.0.0"), std::string::npos) << replies;
    ASSERT_EQ(spooled().size(), 1u);
}

TEST_F(SmtpServerTest, BareLfCannotSmuggleASecondMessage) {
    auto r = client("smuggling");
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    std::string replies = r.json["replies"].GetString();
    // Only "\r\n.\r\n" ends DATA: one message, and it is refused for its bare LFs.
    EXPECT_EQ(replies.find("queued"), std::string::npos) << replies;
    for (const auto& m : spooled()) EXPECT_EQ(m.body.find("smuggled"), std::string::npos);
    EXPECT_TRUE(spooled().empty());
}

TEST_F(SmtpServerTest, CommandsPipelinedBehindStartTlsAreDiscarded) {
    auto r = client("starttls_injection");
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_EQ(std::string(r.json["starttls"].GetString()).substr(0, 3), "220");
    EXPECT_EQ(std::string(r.json["after_tls"].GetString()), "");  // no answer to the injected NOOP
    EXPECT_NE(std::string(r.json["ehlo"].GetString()).find("250"), std::string::npos);
}

TEST_F(SmtpServerTest, BdatChunksAreBinary) {
    auto r = client("bdat");
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    std::string replies = r.json["replies"].GetString();
    EXPECT_NE(replies.find("queued"), std::string::npos) << replies;
    auto msgs = spooled();
    ASSERT_EQ(msgs.size(), 1u);
    EXPECT_EQ(msgs[0].body, "Subject: chunks\r\n\r\nfirst chunk\r\n.\r\nnot the end\r\n");
}

TEST_F(SmtpServerTest, SpoolFailureIs452NeverOk) {
    {
        std::lock_guard lock(sink_->mutex);
        sink_->fail_commits = true;
    }
    auto r = client("pipelined");
    std::string replies = r.json.IsObject() ? r.json["replies"].GetString() : r.raw;
    EXPECT_NE(replies.find("452 4.3.1"), std::string::npos) << replies;
    EXPECT_EQ(replies.find("queued"), std::string::npos) << replies;
}

namespace {

std::pair<int, std::string> shell(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    std::array<char, 4096> buf;
    while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
    int rc = ::pclose(p);
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

}  // namespace

TEST_F(SmtpServerTest, SwaksWithStartTlsAndAuthLogin) {
    if (std::system("command -v swaks >/dev/null 2>&1") != 0) GTEST_SKIP() << "swaks not installed";
    auto [rc, out] = shell("swaks --server 127.0.0.1:" + std::to_string(server_->ports()[0]) +
                           " -tls --tls-ca-path " + *dir_ + "/ca.pem --auth LOGIN --auth-user alice --auth-password '" +
                           *password_ + "' --from alice@sandbox.test --to bob@sandbox.test,dave@example.com "
                           "--header 'Subject: from swaks'");
    EXPECT_EQ(rc, 0) << out;
    auto msgs = spooled();
    ASSERT_EQ(msgs.size(), 1u) << out;
    EXPECT_EQ(msgs[0].envelope.recipients, (std::vector<std::string>{"bob@sandbox.test", "dave@example.com"}));
    EXPECT_TRUE(msgs[0].envelope.tls);
    EXPECT_NE(msgs[0].body.find("Subject: from swaks"), std::string::npos);
}

TEST_F(SmtpServerTest, CurlOverImplicitTlsWithAuthPlain) {
    std::string mail = *dir_ + "/curl-mail.txt";
    std::ofstream(mail) << "From: alice@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: from curl\r\n\r\nhi\r\n";
    auto [rc, out] = shell("curl -sS --url smtps://localhost:" + std::to_string(server_->ports()[1]) + " --cacert " +
                           *dir_ + "/ca.pem --login-options AUTH=PLAIN --user 'alice:" + *password_ +
                           "' --mail-from alice@sandbox.test --mail-rcpt bob@sandbox.test --upload-file " + mail);
    EXPECT_EQ(rc, 0) << out;
    auto msgs = spooled();
    ASSERT_EQ(msgs.size(), 1u) << out;
    EXPECT_NE(msgs[0].body.find("Subject: from curl"), std::string::npos);
    // And a sender outside send_as is refused (curl exits non-zero, nothing spooled).
    auto [rc2, out2] = shell("curl -sS --url smtps://localhost:" + std::to_string(server_->ports()[1]) +
                             " --cacert " + *dir_ + "/ca.pem --user 'alice:" + *password_ +
                             "' --mail-from ceo@sandbox.test --mail-rcpt bob@sandbox.test --upload-file " + mail);
    EXPECT_NE(rc2, 0) << out2;
    EXPECT_EQ(spooled().size(), 1u);
}
