// The POP3 front end over real sockets, driven by Python's poplib, raw sockets and curl: USER/PASS and
// AUTH PLAIN, the whole RFC 1939 command set, deletions seen by the next session, STLS and implicit TLS
// with the generated certificate, throttled wrong passwords, pipelining, the STLS injection class, the
// idle timeout and the plaintext-login refusal off loopback. A fake provider stands in for Graph.
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <openssl/sha.h>

#include "auth/password.h"
#include "auth/pki.h"
#include "common/log.h"
#include "proxy/pop3/server.h"

using namespace gb;
using namespace gb::pop3;
namespace fs = std::filesystem;

namespace {

// An in-memory Inbox per mailbox; records what the server asked for.
class FakeProvider : public MaildropProvider {
public:
    struct Message {
        std::string uid, ref, body;
    };

    ProviderResult<std::vector<MaildropEntry>> list(const smtp::Account& account) override {
        std::lock_guard lock(mutex);
        ++list_calls;
        if (fail_list) return ProviderError{ProviderError::Kind::Temporary, "graph: 503 \"unavailable\"\r\n"};
        std::vector<MaildropEntry> out;
        for (const auto& m : boxes[account.mailbox]) out.push_back(MaildropEntry{m.uid, m.body.size(), m.ref});
        return out;
    }
    ProviderResult<std::string> fetch(const smtp::Account& account, const MaildropEntry& entry) override {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // a slow Graph
        std::lock_guard lock(mutex);
        fetched.push_back(entry.ref);
        for (const auto& m : boxes[account.mailbox])
            if (m.ref == entry.ref) return m.body;
        return ProviderError{ProviderError::Kind::Gone, "not found"};
    }
    std::optional<ProviderError> remove(const smtp::Account& account,
                                        const std::vector<MaildropEntry>& entries) override {
        std::lock_guard lock(mutex);
        auto& box = boxes[account.mailbox];
        for (const auto& e : entries) {
            removed.push_back(e.ref);
            std::erase_if(box, [&](const Message& m) { return m.ref == e.ref; });
        }
        return std::nullopt;
    }

    std::mutex mutex;
    std::map<std::string, std::vector<Message>> boxes;
    std::vector<std::string> fetched, removed;
    int list_calls = 0;
    bool fail_list = false;
};

const std::string kFirst =
    "From: bob@sandbox.test\r\nTo: alice@sandbox.test\r\nSubject: first\r\n\r\nHello\r\n.dot line\r\nbye\r\n";
const std::string kSecond = "Subject: second\r\n\r\nline1\r\nline2\r\nline3\r\n";

std::string big_message() {
    std::string s = "Subject: big\r\n\r\n";
    for (int i = 0; s.size() < 3 * 1024 * 1024; ++i)
        s += (i % 5 == 0 ? "." : "") + std::string("line ") + std::to_string(i) + " of a large scan\r\n";
    return s;
}

std::string sha256_hex(const std::string& data) {
    std::array<unsigned char, SHA256_DIGEST_LENGTH> md{};
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md.data());
    std::string hex;
    for (unsigned char c : md) {
        static const char* digits = "0123456789abcdef";
        hex += digits[c >> 4];
        hex += digits[c & 15];
    }
    return hex;
}

// A non-loopback IPv4 address of this machine ("" if there is none).
std::string external_ipv4() {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return "";
    std::string found;
    for (ifaddrs* i = list; i && found.empty(); i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
        auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
        char buf[INET_ADDRSTRLEN];
        ::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
        if (std::string(buf).rfind("127.", 0) != 0) found = buf;
    }
    ::freeifaddrs(list);
    return found;
}

std::pair<int, std::string> shell(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    std::array<char, 4096> buf;
    while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
    int rc = ::pclose(p);
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

struct Result {
    int status = -1;
    rapidjson::Document json;
    std::string raw;
};

std::vector<std::string> strings(const rapidjson::Value& v) {
    std::vector<std::string> out;
    for (const auto& s : v.GetArray()) out.emplace_back(s.GetString());
    return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

// Collects log lines (the logger writes from server threads).
class LockedBuf : public std::stringbuf {
public:
    std::string text() {
        std::lock_guard lock(mutex_);
        return str();
    }

protected:
    int sync() override { return 0; }
    std::streamsize xsputn(const char* s, std::streamsize n) override {
        std::lock_guard lock(mutex_);
        return std::stringbuf::xsputn(s, n);
    }
    int_type overflow(int_type c) override {
        std::lock_guard lock(mutex_);
        return std::stringbuf::overflow(c);
    }

private:
    std::recursive_mutex mutex_;  // xsputn may call overflow
};

class Pop3ServerTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new std::string(::testing::TempDir() + "/gb_pop3_" + std::to_string(::getpid()));
        fs::create_directories(*dir_);
        password_ = new std::string("s3cret-Pop");
        std::ofstream(*dir_ + "/app.pem") << "x";
        std::ofstream(*dir_ + "/c.toml")
            << "state_dir = \"/tmp/x\"\n[app.a]\ntenant_id = \"sandbox.test\"\n"
               "client_id = \"11111111-2222-3333-4444-555555555555\"\n[app.a.certificate]\nkeystore = \"app.pem\"\n"
               "[[account]]\nlogin = \"alice\"\npassword_hash = \""
            << auth::hash_password(*password_) << "\"\napp = \"a\"\nmailbox = \"alice@sandbox.test\"\n";
        cfg_ = new config::Config(config::load(*dir_ + "/c.toml"));
        policy_ = new smtp::Policy(*cfg_);
        provider_ = new FakeProvider();
        logbuf_ = new LockedBuf();
        logstream_ = new std::ostream(logbuf_);
        log::Logger::instance().configure(log::Level::Debug, log::Format::Text);
        log::Logger::instance().set_stream(logstream_);

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
        o.auth_throttle.base_delay = std::chrono::milliseconds(1500);
        server_ = new Pop3Server(o, *policy_, *provider_);
        server_->start();

        // A second server: a short idle timeout, and a listener on a non-loopback address if there is one.
        ServerOptions s = o;
        s.idle_timeout = std::chrono::seconds(1);
        s.tls_listen.clear();
        external_ = new std::string(external_ipv4());
        if (!external_->empty()) s.listen.push_back(config::ListenAddress{*external_, 0});
        short_ = new Pop3Server(s, *policy_, *provider_);
        short_->start();
    }
    static void TearDownTestSuite() {
        short_->stop();
        server_->stop();
        delete short_;
        delete server_;
        log::Logger::instance().set_stream(nullptr);
        std::string logs = logbuf_->text();
        if (std::getenv("GB_TEST_DUMP_LOG")) std::fputs(logs.c_str(), stderr);
        EXPECT_EQ(logs.find(*password_), std::string::npos) << "a password reached the log";
        EXPECT_NE(logs.find("authentication failed"), std::string::npos) << logs;
        EXPECT_NE(logs.find("maildrop opened"), std::string::npos) << logs;
        EXPECT_EQ(logs.find("\"unavailable\"\r"), std::string::npos) << "provider text is escaped";
        delete logstream_;
        delete logbuf_;
        delete provider_;
        delete policy_;
        delete cfg_;
        fs::remove_all(*dir_);
        delete dir_;
        delete password_;
        delete external_;
    }
    void SetUp() override {
        std::lock_guard lock(provider_->mutex);
        provider_->boxes.clear();
        provider_->boxes["alice@sandbox.test"] = {{"uid-a1", "graph-1", kFirst},
                                                  {"uid-a2", "graph-2", kSecond},
                                                  {"uid-a3", "graph-3", big_message()}};
        provider_->fetched.clear();
        provider_->removed.clear();
        provider_->fail_list = false;
    }

    static Result client(const std::string& scenario, const std::string& host = "127.0.0.1", int port = -1) {
        auto ports = server_->ports();
        std::string cmd = "python3 " + std::string(GB_SOURCE_DIR_PATH) + "/tests/integration/pop3_client.py " +
                          scenario + " " + host + " " + std::to_string(port < 0 ? ports[0] : port) + " " +
                          std::to_string(ports[1]) + " " + *dir_ + "/ca.pem " + *password_;
        Result r;
        std::tie(r.status, r.raw) = shell(cmd);
        r.json.Parse(r.raw.c_str());
        return r;
    }

    static std::string* dir_;
    static std::string* password_;
    static std::string* external_;
    static config::Config* cfg_;
    static smtp::Policy* policy_;
    static FakeProvider* provider_;
    static Pop3Server* server_;
    static Pop3Server* short_;
    static LockedBuf* logbuf_;
    static std::ostream* logstream_;
};
std::string* Pop3ServerTest::dir_;
std::string* Pop3ServerTest::password_;
std::string* Pop3ServerTest::external_;
config::Config* Pop3ServerTest::cfg_;
smtp::Policy* Pop3ServerTest::policy_;
FakeProvider* Pop3ServerTest::provider_;
Pop3Server* Pop3ServerTest::server_;
Pop3Server* Pop3ServerTest::short_;
LockedBuf* Pop3ServerTest::logbuf_;
std::ostream* Pop3ServerTest::logstream_;

}  // namespace

TEST_F(Pop3ServerTest, PoplibSessionAndDeletionSeenByTheNextSession) {
    auto before = server_->stats();
    auto r = client("session");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    auto& j = r.json;
    EXPECT_EQ(std::string(j["welcome"].GetString()), "+OK bridge.test POP3 graphbridge ready");
    auto capa = strings(j["capa"]);
    for (const char* c : {"TOP", "UIDL", "USER", "SASL", "STLS", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE",
                          "IMPLEMENTATION"})
        EXPECT_TRUE(contains(capa, c)) << c;
    std::string big = big_message();
    std::uint64_t total = kFirst.size() + kSecond.size() + big.size();
    EXPECT_EQ(std::string(j["pass"].GetString()), "+OK maildrop has 3 messages (" + std::to_string(total) + " octets)");
    EXPECT_EQ(j["stat"][0].GetInt(), 3);
    EXPECT_EQ(j["stat"][1].GetUint64(), total);
    EXPECT_EQ(strings(j["list"]), (std::vector<std::string>{"1 " + std::to_string(kFirst.size()),
                                                            "2 " + std::to_string(kSecond.size()),
                                                            "3 " + std::to_string(big.size())}));
    EXPECT_EQ(std::string(j["list2"].GetString()), "+OK 2 " + std::to_string(kSecond.size()));
    EXPECT_EQ(strings(j["uidl"]), (std::vector<std::string>{"1 uid-a1", "2 uid-a2", "3 uid-a3"}));
    EXPECT_EQ(std::string(j["uidl1"].GetString()), "+OK 1 uid-a1");
    EXPECT_EQ(strings(j["retr1"]), (std::vector<std::string>{"From: bob@sandbox.test", "To: alice@sandbox.test",
                                                             "Subject: first", "", "Hello", ".dot line", "bye"}));
    EXPECT_EQ(std::string(j["retr1_resp"].GetString()), "+OK " + std::to_string(kFirst.size()) + " octets");
    EXPECT_EQ(strings(j["top2"]), (std::vector<std::string>{"Subject: second", "", "line1"}));
    EXPECT_EQ(std::string(j["noop"].GetString()), "+OK");
    EXPECT_EQ(std::string(j["dele"].GetString()), "+OK message 1 deleted");
    EXPECT_EQ(std::string(j["retr_deleted"].GetString()), "-ERR message 1 already deleted");
    EXPECT_EQ(j["stat_after_dele"][0].GetInt(), 2);
    EXPECT_EQ(std::string(j["quit"].GetString()), "+OK graphbridge POP3 server signing off (2 messages left)");
    // The second session: a new snapshot without the deleted message; numbering starts again at 1.
    EXPECT_EQ(j["second_stat"][0].GetInt(), 2);
    EXPECT_EQ(strings(j["second_uidl"]), (std::vector<std::string>{"1 uid-a2", "2 uid-a3"}));
    EXPECT_EQ(strings(j["second_retr1"])[0], "Subject: second");
    {
        std::lock_guard lock(provider_->mutex);
        EXPECT_EQ(provider_->removed, (std::vector<std::string>{"graph-1"}));
        EXPECT_EQ(provider_->fetched, (std::vector<std::string>{"graph-1", "graph-2", "graph-2"}));
    }
    auto after = server_->stats();
    EXPECT_EQ(after.logins - before.logins, 2u);
    EXPECT_EQ(after.messages_deleted - before.messages_deleted, 1u);
    EXPECT_EQ(after.messages_retrieved - before.messages_retrieved, 3u);
}

TEST_F(Pop3ServerTest, LargeMessageArrivesIntact) {
    auto r = client("big");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    std::string big = big_message();
    EXPECT_EQ(std::string(r.json["resp"].GetString()), "+OK " + std::to_string(big.size()) + " octets");
    EXPECT_EQ(r.json["size"].GetUint64(), big.size());
    EXPECT_EQ(std::string(r.json["sha256"].GetString()), sha256_hex(big));  // poplib undid the dot-stuffing
}

TEST_F(Pop3ServerTest, CurlListsAndRetrievesWithSaslPlain) {
    std::string url = "pop3://127.0.0.1:" + std::to_string(server_->ports()[0]);
    auto [rc, listing] = shell("curl -sS --max-time 20 --user 'alice:" + *password_ + "' " + url + "/");
    EXPECT_EQ(rc, 0) << listing;
    EXPECT_EQ(listing, "1 " + std::to_string(kFirst.size()) + "\r\n2 " + std::to_string(kSecond.size()) + "\r\n3 " +
                           std::to_string(big_message().size()) + "\r\n");
    auto [rc2, message] = shell("curl -sS --max-time 20 --sasl-ir --user 'alice:" + *password_ + "' " + url + "/1");
    EXPECT_EQ(rc2, 0) << message;
    EXPECT_EQ(message, kFirst);  // curl undoes the dot-stuffing
    // A custom multi-line command, and a wrong password fails.
    auto [rc3, top] = shell("curl -sS --max-time 20 --user 'alice:" + *password_ + "' " + url + "/ -X 'TOP 2 0'");
    EXPECT_EQ(rc3, 0) << top;
    EXPECT_EQ(top, "Subject: second\r\n\r\n");
    auto [rc4, denied] = shell("curl -sS --max-time 20 --user 'alice:wrong' " + url + "/");
    EXPECT_NE(rc4, 0) << denied;
}

TEST_F(Pop3ServerTest, StlsWithPoplib) {
    auto r = client("stls");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_TRUE(contains(strings(r.json["capa_before"]), "STLS"));
    EXPECT_FALSE(contains(strings(r.json["capa_after"]), "STLS"));
    EXPECT_TRUE(contains(strings(r.json["capa_after"]), "USER"));
    EXPECT_EQ(std::string(r.json["stls"].GetString()), "+OK Begin TLS negotiation");
    EXPECT_EQ(std::string(r.json["pass"].GetString()).substr(0, 20), "+OK maildrop has 3 m");
    EXPECT_EQ(r.json["stat"][0].GetInt(), 3);
}

TEST_F(Pop3ServerTest, ImplicitTlsWithPoplib) {
    auto r = client("pop3s");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_EQ(std::string(r.json["welcome"].GetString()), "+OK bridge.test POP3 graphbridge ready");
    EXPECT_FALSE(contains(strings(r.json["capa"]), "STLS"));
    EXPECT_TRUE(contains(strings(r.json["capa"]), "SASL"));
    EXPECT_EQ(strings(r.json["uidl"]), (std::vector<std::string>{"1 uid-a1", "2 uid-a2", "3 uid-a3"}));
    EXPECT_EQ(strings(r.json["top1"]),
              (std::vector<std::string>{"From: bob@sandbox.test", "To: alice@sandbox.test", "Subject: first", ""}));
}

TEST_F(Pop3ServerTest, WrongPasswordIsRefusedAndThrottled) {
    auto r = client("wrong_password");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_EQ(std::string(r.json["poplib"].GetString()), "-ERR [AUTH] Invalid login or password");
    auto answers = strings(r.json["answers"]);
    ASSERT_EQ(answers.size(), 4u);
    EXPECT_EQ(answers[0], "-ERR [AUTH] Invalid login or password");
    EXPECT_EQ(answers[2], "-ERR [AUTH] Invalid login or password, closing connection");
    EXPECT_TRUE(r.json["closed_after_three"].GetBool());
    EXPECT_EQ(answers[3], "-ERR [AUTH] Invalid login or password");
    auto& t = r.json["timings"];
    EXPECT_LT(t[0].GetDouble(), 1.4);  // three free failures
    EXPECT_GE(t[3].GetDouble(), 1.45);  // then base_delay (1.5 s) before the answer
}

TEST_F(Pop3ServerTest, PipelinedCommandsInOnePacket) {
    auto r = client("pipelined");
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    std::string replies = r.json["replies"].GetString();
    std::vector<std::string> expected_order = {"+OK Capability list follows", "+OK Send PASS", "+OK maildrop has 3",
                                               "+OK 3 ", "+OK 3 messages", "+OK 2 uid-a2", "+OK top of message",
                                               "Subject: first", "+OK graphbridge POP3 server signing off"};
    std::size_t at = 0;
    for (const auto& e : expected_order) {
        std::size_t found = replies.find(e, at);
        ASSERT_NE(found, std::string::npos) << e << " in " << replies;
        at = found + e.size();
    }
}

TEST_F(Pop3ServerTest, CommandsPipelinedBehindStlsAreDiscarded) {
    auto r = client("stls_injection");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_EQ(std::string(r.json["stls"].GetString()), "+OK Begin TLS negotiation\r\n");
    EXPECT_EQ(std::string(r.json["after_tls"].GetString()), "");  // no answer to the injected USER
    EXPECT_EQ(std::string(r.json["pass"].GetString()), "-ERR Send USER first\r\n");
}

TEST_F(Pop3ServerTest, IdleConnectionIsClosedSilently) {
    auto r = client("idle", "127.0.0.1", short_->ports()[0]);
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_TRUE(r.json["closed"].GetBool());
    EXPECT_EQ(std::string(r.json["after_idle"].GetString()), "");  // RFC 1939 autologout: no response
    EXPECT_GE(r.json["elapsed"].GetDouble(), 0.8);
    EXPECT_LT(r.json["elapsed"].GetDouble(), 10.0);
}

TEST_F(Pop3ServerTest, PlaintextLoginRefusedOffLoopbackUntilStls) {
    if (external_->empty()) GTEST_SKIP() << "no non-loopback IPv4 address";
    auto r = client("off_loopback", *external_, short_->ports()[1]);
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    std::string capa = r.json["capa"].GetString();
    EXPECT_NE(capa.find("STLS\r\n"), std::string::npos) << capa;
    EXPECT_EQ(capa.find("USER\r\n"), std::string::npos) << capa;
    EXPECT_EQ(capa.find("SASL"), std::string::npos) << capa;
    for (const auto& line : strings(r.json["refused"]))
        EXPECT_EQ(line, "-ERR [SYS/PERM] Authentication requires TLS, use STLS");
    EXPECT_TRUE(contains(strings(r.json["capa_tls"]), "USER"));
    EXPECT_EQ(std::string(r.json["pass"].GetString()).substr(0, 16), "+OK maildrop has");
}

TEST_F(Pop3ServerTest, ProviderFailureIsATemporaryError) {
    {
        std::lock_guard lock(provider_->mutex);
        provider_->fail_list = true;
    }
    auto r = client("maildrop_error");
    ASSERT_EQ(r.status, 0) << r.raw;
    ASSERT_TRUE(r.json.IsObject()) << r.raw;
    EXPECT_EQ(std::string(r.json["pass"].GetString()), "-ERR [SYS/TEMP] Unable to open the maildrop, try again later");
    EXPECT_EQ(std::string(r.json["quit"].GetString()), "+OK graphbridge POP3 server signing off");
}
