// Tests for the socket-free POP3 engine (protocol/pop3): every conversation is fed whole, byte by byte,
// in random splits, with synchronous and with fully asynchronous backend answers, and must give
// identical responses each time.
#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "protocol/pop3/pop3_engine.h"
#include "protocol/smtp/smtp_parser.h"

using namespace gb::protocol::pop3;

namespace {

std::string b64(std::string_view s) {
    return gb::protocol::smtp::encode_base64(s);
}

const std::vector<std::string> kBodies = {
    "From: a@example.com\r\nSubject: one\r\n\r\nline 1\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n",
    "Subject: two\r\n\r\nb1\r\nb2\r\nb3\r\n",
    "Subject: three\r\nX-Long: yes\r\n\r\nonly line\r\n",
};

// A backend that records every call, answers by policy, and can defer any decision point: a deferred
// answer is queued and returned "pending"; the harness resumes the engine with it later.
class FakeBackend : public Pop3Backend {
  public:
    std::set<std::string> defer;  // "auth", "maildrop", "retrieve", "commit"
    std::deque<Answer> queued;
    std::vector<std::string> log;
    std::vector<MessageInfo> infos;
    std::vector<std::string> bodies = kBodies;
    std::function<Answer(const AuthRequest&)> on_auth = [](const AuthRequest& r) {
        return r.user == "alice" && r.password.reveal() == "s3cret" ? Answer::accept() : Answer::refuse();
    };
    std::function<Answer()> on_maildrop = [] { return Answer::accept(); };
    std::function<Answer(std::size_t)> on_retrieve = [](std::size_t) { return Answer::accept(); };
    std::function<Answer()> on_commit = [] { return Answer::accept(); };
    bool throw_in_maildrop = false;

    FakeBackend() {
        for (std::size_t i = 0; i < bodies.size(); ++i)
            infos.push_back(MessageInfo{"uid-" + std::to_string(100 + i), bodies[i].size()});
    }

    Answer authenticate(const Session& s, const AuthRequest& r) override {
        EXPECT_FALSE(s.authenticated);
        log.push_back("auth " + r.mechanism + " " + r.user + " " + std::string(r.password.reveal()));
        return answer("auth", on_auth(r));
    }
    Answer open_maildrop(const Session& s) override {
        EXPECT_TRUE(s.authenticated);
        log.push_back("open " + s.user);
        return answer("maildrop", on_maildrop());
    }
    std::vector<MessageInfo> maildrop() override {
        log.push_back("maildrop");
        if (throw_in_maildrop) throw std::runtime_error("boom");
        return infos;
    }
    Answer retrieve(const Session&, std::size_t index) override {
        log.push_back("retrieve " + std::to_string(index));
        prepared_ = bodies.at(index);
        return answer("retrieve", on_retrieve(index));
    }
    std::string take_message() override { return std::move(prepared_); }
    Answer commit_deletes(const Session&, const std::vector<std::size_t>& indexes) override {
        std::string s = "commit";
        for (auto i : indexes) s += " " + std::to_string(i);
        log.push_back(s);
        return answer("commit", on_commit());
    }

  private:
    Answer answer(const std::string& what, Answer a) {
        if (!defer.count(what)) return a;
        queued.push_back(std::move(a));
        return Answer::pending();
    }
    std::string prepared_;
};

Pop3Config test_config() {
    Pop3Config c;
    c.hostname = "pop.test";
    c.tls_available = true;
    return c;
}

const ConnectionInfo kLoopback{true, false};
const ConnectionInfo kRemote{false, false};
const ConnectionInfo kTls{false, true};

struct Result {
    std::string output;
    std::vector<std::string> log;
    bool operator==(const Result&) const = default;
};

enum class SplitMode { Whole, Bytes, Random };

struct Options {
    Pop3Config config = test_config();
    ConnectionInfo conn = kLoopback;
    std::function<void(FakeBackend&)> setup;
};

// Feeds segments; between segments a requested STLS handshake is completed ("[TLS]"). The driver
// loop is the real contract: keep the unconsumed tail, drain the output, resume when the backend answers.
Result converse(const std::vector<std::string>& segments, SplitMode mode, unsigned seed, const Options& o,
                const std::set<std::string>& defer = {}) {
    FakeBackend be;
    be.defer = defer;
    if (o.setup) o.setup(be);
    Pop3Engine e(o.config, o.conn, be);
    std::string out;
    std::mt19937 rng(seed);
    auto settle = [&] {
        for (;;) {
            if (e.has_output()) {
                std::string chunk = e.take_output();
                EXPECT_LE(chunk.size(), o.config.limits.output_chunk + 1024);
                out += chunk;
                continue;
            }
            if (!e.awaiting_backend()) return;
            EXPECT_FALSE(be.queued.empty());
            if (be.queued.empty()) return;
            Answer a = std::move(be.queued.front());
            be.queued.pop_front();
            e.resume(std::move(a));
        }
    };
    settle();
    for (const auto& seg : segments) {
        if (e.wants_stls()) {
            e.tls_started();
            out += "[TLS]";
        }
        std::size_t pos = 0;
        while (pos < seg.size()) {
            std::size_t n = seg.size() - pos;
            if (mode == SplitMode::Bytes) n = 1;
            if (mode == SplitMode::Random) n = std::min<std::size_t>(n, 1 + rng() % 40);
            std::string_view piece(seg.data() + pos, n);
            pos += n;
            while (!piece.empty()) {
                std::size_t used = e.feed(piece);
                piece.remove_prefix(used);
                bool busy = e.awaiting_backend() || e.has_output();
                settle();
                if (used == 0 && !busy) {
                    ADD_FAILURE() << "engine refused input while not busy";
                    return {};
                }
            }
            EXPECT_LE(e.buffered_input(), std::max(o.config.limits.max_command_line, o.config.limits.max_auth_line));
        }
    }
    if (e.wants_close()) out += "[CLOSE]";
    return Result{out, be.log};
}

// Runs a conversation in every split mode, synchronous and fully asynchronous; all must agree.
Result run(const std::vector<std::string>& segments, const Options& o = {}) {
    Result whole = converse(segments, SplitMode::Whole, 1, o);
    EXPECT_EQ(converse(segments, SplitMode::Bytes, 1, o), whole) << "byte by byte";
    for (unsigned seed = 1; seed <= 5; ++seed)
        EXPECT_EQ(converse(segments, SplitMode::Random, seed, o), whole) << "seed " << seed;
    std::set<std::string> all{"auth", "maildrop", "retrieve", "commit"};
    EXPECT_EQ(converse(segments, SplitMode::Whole, 1, o, all), whole) << "async whole";
    EXPECT_EQ(converse(segments, SplitMode::Bytes, 1, o, all), whole) << "async bytes";
    EXPECT_EQ(converse(segments, SplitMode::Random, 7, o, all), whole) << "async random";
    return whole;
}

Result run(const std::string& script, const Options& o = {}) {
    return run(std::vector<std::string>{script}, o);
}

const std::string kGreeting = "+OK pop.test POP3 graphbridge ready\r\n";
const std::string kLogin = "USER alice\r\nPASS s3cret\r\n";
const std::string kLoggedIn = "+OK Send PASS\r\n+OK maildrop has 3 messages (" +
                              std::to_string(kBodies[0].size() + kBodies[1].size() + kBodies[2].size()) +
                              " octets)\r\n";

// What follows the greeting and the login.
std::string after_login(const Result& r) {
    std::string prefix = kGreeting + kLoggedIn;
    EXPECT_EQ(r.output.substr(0, prefix.size()), prefix) << r.output;
    return r.output.substr(std::min(prefix.size(), r.output.size()));
}

std::string sz(std::size_t i) {
    return std::to_string(kBodies[i].size());
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// AUTHORIZATION, CAPA and the TLS rules.

TEST(Pop3Engine, GreetingAndCapaOnLoopback) {
    Result r = run("CAPA\r\nQUIT\r\n");
    EXPECT_EQ(r.output, kGreeting +
                            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                            "PIPELINING\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\nIMPLEMENTATION graphbridge\r\n.\r\n"
                            "+OK graphbridge POP3 server signing off\r\n[CLOSE]");
    EXPECT_TRUE(r.log.empty());
}

TEST(Pop3Engine, CapaOffLoopbackWithoutTlsHidesUserAndSasl) {
    Options o;
    o.conn = kRemote;
    Result r = run("CAPA\r\n", o);
    EXPECT_EQ(r.output, kGreeting +
                            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                            "PIPELINING\r\nSTLS\r\nIMPLEMENTATION graphbridge\r\n.\r\n");
}

TEST(Pop3Engine, CapaOverImplicitTlsHasNoStls) {
    Options o;
    o.conn = kTls;
    Result r = run("CAPA\r\n", o);
    EXPECT_NE(r.output.find("USER\r\nSASL PLAIN\r\n"), std::string::npos);
    EXPECT_EQ(r.output.find("STLS"), std::string::npos);
}

TEST(Pop3Engine, CapaWithoutTlsConfiguredHasNoStls) {
    Options o;
    o.config.tls_available = false;
    Result r = run("CAPA\r\nSTLS\r\n", o);
    EXPECT_EQ(r.output.find("STLS\r\n"), std::string::npos);
    EXPECT_NE(r.output.find("-ERR STLS not available\r\n"), std::string::npos);
}

TEST(Pop3Engine, CapaInTransactionListsNoLoginCapabilities) {
    Result r = run(kLogin + "CAPA\r\n");
    EXPECT_EQ(after_login(r),
              "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
              "IMPLEMENTATION graphbridge\r\n.\r\n");
}

TEST(Pop3Engine, LoginIsRefusedBeforeTlsOffLoopback) {
    Options o;
    o.conn = kRemote;
    Result r = run("USER alice\r\nPASS s3cret\r\nAUTH PLAIN " + b64(std::string("\0alice\0s3cret", 13)) +
                       "\r\nAUTH\r\nSTAT\r\n",
                   o);
    EXPECT_EQ(r.output, kGreeting +
                            "-ERR [SYS/PERM] Authentication requires TLS, use STLS\r\n"
                            "-ERR [SYS/PERM] Authentication requires TLS, use STLS\r\n"
                            "-ERR [SYS/PERM] Authentication requires TLS, use STLS\r\n"
                            "-ERR [SYS/PERM] Authentication requires TLS, use STLS\r\n"
                            "-ERR Command not valid in this state\r\n");
    EXPECT_TRUE(r.log.empty());  // the backend never saw a credential
}

TEST(Pop3Engine, LoginRefusedWhenNoTlsIsConfigured) {
    Options o;
    o.conn = kRemote;
    o.config.tls_available = false;
    Result r = run("USER alice\r\n", o);
    EXPECT_EQ(r.output, kGreeting + "-ERR [SYS/PERM] Authentication is not available on this connection\r\n");
}

TEST(Pop3Engine, StlsDiscardsPipelinedCommandsThenAllowsLogin) {
    Options o;
    o.conn = kRemote;
    Result r = run(std::vector<std::string>{"CAPA\r\nSTLS\r\nUSER alice\r\nPASS s3cret\r\nQUIT\r\n", "CAPA\r\nUSER alice\r\nPASS s3cret\r\nSTAT\r\n"},
                   o);
    std::string capa_before =
        "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n"
        "IMPLEMENTATION graphbridge\r\n.\r\n";
    std::string capa_after =
        "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\n"
        "SASL PLAIN\r\nIMPLEMENTATION graphbridge\r\n.\r\n";
    std::size_t total = kBodies[0].size() + kBodies[1].size() + kBodies[2].size();
    EXPECT_EQ(r.output, kGreeting + capa_before + "+OK Begin TLS negotiation\r\n[TLS]" + capa_after + kLoggedIn +
                            "+OK 3 " + std::to_string(total) + "\r\n");
    // The pipelined USER/PASS/QUIT never ran: one login, after the handshake.
    EXPECT_EQ(r.log, (std::vector<std::string>{"auth USER alice s3cret", "open alice", "maildrop"}));
}

TEST(Pop3Engine, StlsRulesAndUserDroppedByHandshake) {
    Result r = run(std::vector<std::string>{"STLS extra\r\nUSER alice\r\nSTLS\r\n", "PASS s3cret\r\nSTLS\r\n"});
    EXPECT_EQ(r.output, kGreeting + "-ERR Syntax: STLS\r\n+OK Send PASS\r\n+OK Begin TLS negotiation\r\n[TLS]"
                                    "-ERR Send USER first\r\n-ERR Command not permitted when TLS active\r\n");
    EXPECT_TRUE(r.log.empty());
}

TEST(Pop3Engine, UserPassLoginAfterMistakes) {
    Result r = run("PASS x\r\nUSER alice\r\nPASS wrong\r\nUSER alice\r\nPASS\r\nPASS wrong\r\nUSER bob\r\nPASS "
                   "s3cret\r\nUSER alice\r\nPASS s3cret\r\n");
    EXPECT_EQ(r.output, kGreeting +
                            "-ERR Send USER first\r\n"
                            "+OK Send PASS\r\n-ERR [AUTH] Invalid login or password\r\n"
                            "+OK Send PASS\r\n-ERR Syntax: PASS password\r\n-ERR Send USER first\r\n"
                            "+OK Send PASS\r\n-ERR [AUTH] Invalid login or password\r\n" +
                            kLoggedIn);
    EXPECT_EQ(r.log, (std::vector<std::string>{"auth USER alice wrong", "auth USER bob s3cret",
                                               "auth USER alice s3cret", "open alice", "maildrop"}));
}

TEST(Pop3Engine, ThirdFailedLoginCloses) {
    Result r = run("USER a\r\nPASS 1\r\nUSER a\r\nPASS 2\r\nUSER a\r\nPASS 3\r\nUSER alice\r\nPASS s3cret\r\n");
    EXPECT_EQ(r.output, kGreeting +
                            "+OK Send PASS\r\n-ERR [AUTH] Invalid login or password\r\n"
                            "+OK Send PASS\r\n-ERR [AUTH] Invalid login or password\r\n"
                            "+OK Send PASS\r\n-ERR [AUTH] Invalid login or password, closing connection\r\n[CLOSE]");
    EXPECT_EQ(r.log.size(), 3u);
}

TEST(Pop3Engine, PasswordKeepsItsSpaces) {
    Options o;
    o.setup = [](FakeBackend& be) {
        be.on_auth = [](const AuthRequest& r) {
            return r.password.reveal() == " pass with  spaces " ? Answer::accept() : Answer::refuse();
        };
    };
    Result r = run("USER alice\r\nPASS  pass with  spaces \r\n", o);
    EXPECT_EQ(after_login(r), "");
}

TEST(Pop3Engine, TemporaryAuthErrorIsNotAFailedLogin) {
    Options o;
    o.setup = [](FakeBackend& be) {
        be.on_auth = [](const AuthRequest&) { return Answer::error("[SYS/TEMP] Try again\r\nlater"); };
    };
    std::string script;
    for (int i = 0; i < 4; ++i) script += "USER alice\r\nPASS s3cret\r\n";
    Result r = run(script, o);
    std::string one = "+OK Send PASS\r\n-ERR [SYS/TEMP] Try again??later\r\n";  // no line injection
    EXPECT_EQ(r.output, kGreeting + one + one + one + one);
}

TEST(Pop3Engine, MaildropFailuresReturnToAuthorization) {
    Options o;
    o.setup = [](FakeBackend& be) { be.on_maildrop = [] { return Answer::error("[IN-USE] Maildrop locked"); }; };
    Result r = run(kLogin + "STAT\r\n" + kLogin, o);
    EXPECT_EQ(r.output, kGreeting + "+OK Send PASS\r\n-ERR [IN-USE] Maildrop locked\r\n"
                                    "-ERR Command not valid in this state\r\n"
                                    "+OK Send PASS\r\n-ERR [IN-USE] Maildrop locked\r\n");
    o.setup = [](FakeBackend& be) { be.on_maildrop = [] { return Answer::refuse(); }; };
    r = run(kLogin, o);
    EXPECT_EQ(r.output, kGreeting + "+OK Send PASS\r\n-ERR [SYS/TEMP] Unable to open the maildrop, try again later\r\n");
}

TEST(Pop3Engine, InvalidSnapshotIsRefused) {
    for (std::string bad : std::vector<std::string>{"", "has space", std::string(71, 'x'), "uid-101" /* duplicate */, "tab\tuid"}) {
        Options o;
        o.setup = [bad](FakeBackend& be) { be.infos[2].uid = bad; };
        Result r = run(kLogin + "STAT\r\n", o);
        EXPECT_EQ(r.output, kGreeting + "+OK Send PASS\r\n-ERR [SYS/TEMP] Maildrop unavailable\r\n"
                                        "-ERR Command not valid in this state\r\n")
            << bad;
    }
    Options o;
    o.setup = [](FakeBackend& be) {
        be.infos[0].uid = std::string(70, '~');
        be.infos[1].uid = "!";
    };
    EXPECT_EQ(after_login(run(kLogin, o)), "");
    o.setup = [](FakeBackend& be) { be.throw_in_maildrop = true; };
    EXPECT_EQ(run(kLogin, o).output, kGreeting + "+OK Send PASS\r\n-ERR [SYS/TEMP] Maildrop unavailable\r\n");
}

// ------------------------------------------------------------------------------------------------
// AUTH PLAIN (RFC 5034).

TEST(Pop3Engine, AuthPlainWithInitialResponse) {
    Result r = run("AUTH PLAIN " + b64(std::string("\0alice\0s3cret", 13)) + "\r\nSTAT\r\n");
    std::size_t total = kBodies[0].size() + kBodies[1].size() + kBodies[2].size();
    EXPECT_EQ(r.output, kGreeting + "+OK maildrop has 3 messages (" + std::to_string(total) + " octets)\r\n+OK 3 " +
                            std::to_string(total) + "\r\n");
    EXPECT_EQ(r.log[0], "auth PLAIN alice s3cret");
}

TEST(Pop3Engine, AuthPlainWithContinuationAndAuthzid) {
    Result r = run("auth plain\r\n" + b64(std::string("alice\0alice\0s3cret", 18)) + "\r\nSTAT\r\n");
    EXPECT_EQ(r.output.substr(0, kGreeting.size() + 4), kGreeting + "+ \r\n");
    EXPECT_NE(r.output.find("+OK maildrop has 3 messages"), std::string::npos) << r.output;
    EXPECT_EQ(r.log[0], "auth PLAIN alice s3cret");
}

TEST(Pop3Engine, AuthPlainCancelMalformedAndForeignAuthzid) {
    Result r = run("AUTH PLAIN\r\n*\r\nAUTH PLAIN\r\nnot base64!\r\nAUTH PLAIN " + b64("no-nuls") +
                   "\r\nAUTH PLAIN =\r\nAUTH LOGIN\r\nAUTH\r\nAUTH PLAIN " +
                   b64(std::string("bob\0alice\0s3cret", 16)) + "\r\nAUTH PLAIN " +
                   b64(std::string("\0alice\0wrong", 12)) + "\r\n");
    EXPECT_EQ(r.output, kGreeting +
                            "+ \r\n-ERR Authentication cancelled\r\n"
                            "+ \r\n-ERR Invalid base64 data\r\n"
                            "-ERR Invalid PLAIN authentication data\r\n"
                            "-ERR Invalid PLAIN authentication data\r\n"
                            "-ERR Unsupported authentication mechanism\r\n"
                            "+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n"
                            "-ERR [AUTH] Invalid login or password\r\n"            // authzid bob: refused
                            "-ERR [AUTH] Invalid login or password\r\n");
    EXPECT_EQ(r.log, (std::vector<std::string>{"auth PLAIN alice wrong"}));
}

TEST(Pop3Engine, AuthContinuationLineLimit) {
    Options o;
    Result r = run("AUTH PLAIN\r\n" + std::string(3000, 'A') + "\r\nNOOP\r\nQUIT\r\n", o);
    EXPECT_EQ(r.output, kGreeting + "+ \r\n-ERR Authentication line too long\r\n-ERR Command not valid in this state\r\n"
                                    "+OK graphbridge POP3 server signing off\r\n[CLOSE]");
    // A long but acceptable continuation (longer than a command line may be).
    std::string user(200, 'u'), pass(1000, 'p');
    o.setup = [](FakeBackend& be) { be.on_auth = [](const AuthRequest&) { return Answer::accept(); }; };
    r = run("AUTH PLAIN\r\n" + b64(std::string("\0", 1) + user + std::string("\0", 1) + pass) + "\r\n", o);
    EXPECT_NE(r.output.find("+OK maildrop has 3 messages"), std::string::npos) << r.output;
}

// ------------------------------------------------------------------------------------------------
// TRANSACTION.

TEST(Pop3Engine, StatListUidlNoop) {
    Result r = run(kLogin + "STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\nNOOP\r\nQUIT\r\n");
    std::size_t total = kBodies[0].size() + kBodies[1].size() + kBodies[2].size();
    EXPECT_EQ(after_login(r), "+OK 3 " + std::to_string(total) +
                                  "\r\n"
                                  "+OK 3 messages (" +
                                  std::to_string(total) + " octets)\r\n1 " + sz(0) + "\r\n2 " + sz(1) + "\r\n3 " +
                                  sz(2) +
                                  "\r\n.\r\n"
                                  "+OK 2 " +
                                  sz(1) +
                                  "\r\n"
                                  "+OK unique-id listing follows\r\n1 uid-100\r\n2 uid-101\r\n3 uid-102\r\n.\r\n"
                                  "+OK 3 uid-102\r\n"
                                  "+OK\r\n"
                                  "+OK graphbridge POP3 server signing off (3 messages left)\r\n[CLOSE]");
    EXPECT_EQ(r.log, (std::vector<std::string>{"auth USER alice s3cret", "open alice", "maildrop"}));
}

TEST(Pop3Engine, RetrIsDotStuffed) {
    Result r = run(kLogin + "RETR 1\r\nretr 2\r\n");
    EXPECT_EQ(after_login(r), "+OK " + sz(0) +
                                  " octets\r\n"
                                  "From: a@example.com\r\nSubject: one\r\n\r\nline 1\r\n..starts with a dot\r\n"
                                  "...two dots\r\n..\r\nlast\r\n.\r\n"
                                  "+OK " +
                                  sz(1) + " octets\r\nSubject: two\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n");
}

TEST(Pop3Engine, RetrNormalisesLineEndsSoAMessageCannotEndEarly) {
    Options o;
    o.setup = [](FakeBackend& be) {
        be.bodies[0] = "Subject: x\n\nfake end\n.\nINJECTED\r.\rmore\r\n.";
        be.bodies[1] = "";
    };
    Result r = run(kLogin + "RETR 1\r\nRETR 2\r\n", o);
    EXPECT_EQ(after_login(r), "+OK 41 octets\r\nSubject: x\r\n\r\nfake end\r\n..\r\nINJECTED\r\n..\r\nmore\r\n..\r\n.\r\n"
                              "+OK 0 octets\r\n.\r\n");
}

TEST(Pop3Engine, TopWithZeroSomeAndTooManyLines) {
    Result r = run(kLogin + "TOP 1 0\r\nTOP 1 2\r\nTOP 2 100\r\nTOP 3 1\r\n");
    EXPECT_EQ(after_login(r),
              "+OK top of message follows\r\nFrom: a@example.com\r\nSubject: one\r\n\r\n.\r\n"
              "+OK top of message follows\r\nFrom: a@example.com\r\nSubject: one\r\n\r\nline 1\r\n..starts with a dot\r\n.\r\n"
              "+OK top of message follows\r\nSubject: two\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n"
              "+OK top of message follows\r\nSubject: three\r\nX-Long: yes\r\n\r\nonly line\r\n.\r\n");
}

TEST(Pop3Engine, TopOfAMessageWithoutBodyAndSyntax) {
    Options o;
    o.setup = [](FakeBackend& be) { be.bodies[0] = "Subject: header only\r\nX: y"; };
    Result r = run(kLogin + "TOP 1 5\r\nTOP 1\r\nTOP x 1\r\nTOP 1 -1\r\nTOP 9 1\r\nTOP 1 99999999999999999999999\r\n", o);
    EXPECT_EQ(after_login(r),
              "+OK top of message follows\r\nSubject: header only\r\nX: y\r\n.\r\n"
              "-ERR Syntax: TOP msg n\r\n"
              "-ERR Invalid message number\r\n"
              "-ERR Syntax: TOP msg n\r\n"
              "-ERR no such message, only 3 messages in maildrop\r\n"
              "+OK top of message follows\r\nSubject: header only\r\nX: y\r\n.\r\n");
}

TEST(Pop3Engine, MessageNumbers) {
    Result r = run(kLogin + "RETR 0\r\nRETR 4\r\nRETR abc\r\nLIST 1 2\r\nUIDL -1\r\nRETR\r\nDELE\r\nLIST 999999999999999999999999\r\nLIST 01\r\n");
    EXPECT_EQ(after_login(r),
              "-ERR no such message, only 3 messages in maildrop\r\n"
              "-ERR no such message, only 3 messages in maildrop\r\n"
              "-ERR Invalid message number\r\n"
              "-ERR Invalid message number\r\n"
              "-ERR Invalid message number\r\n"
              "-ERR Syntax: RETR msg\r\n"
              "-ERR Syntax: DELE msg\r\n"
              "-ERR no such message, only 3 messages in maildrop\r\n"
              "+OK 1 " + sz(0) + "\r\n");
}

TEST(Pop3Engine, DeletedMessagesAreInvisibleUntilRset) {
    Result r = run(kLogin + "DELE 2\r\nDELE 2\r\nSTAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 2\r\nRETR 2\r\nTOP 2 0\r\n"
                            "RSET\r\nSTAT\r\nLIST 2\r\nQUIT\r\n");
    std::size_t total = kBodies[0].size() + kBodies[1].size() + kBodies[2].size();
    std::size_t without2 = total - kBodies[1].size();
    EXPECT_EQ(after_login(r), "+OK message 2 deleted\r\n"
                              "-ERR message 2 already deleted\r\n"
                              "+OK 2 " + std::to_string(without2) + "\r\n"
                              "+OK 2 messages (" + std::to_string(without2) + " octets)\r\n1 " + sz(0) + "\r\n3 " +
                                  sz(2) + "\r\n.\r\n"
                              "-ERR message 2 already deleted\r\n"
                              "+OK unique-id listing follows\r\n1 uid-100\r\n3 uid-102\r\n.\r\n"
                              "-ERR message 2 already deleted\r\n"
                              "-ERR message 2 already deleted\r\n"
                              "-ERR message 2 already deleted\r\n"
                              "+OK maildrop has 3 messages (" + std::to_string(total) + " octets)\r\n"
                              "+OK 3 " + std::to_string(total) + "\r\n"
                              "+OK 2 " + sz(1) + "\r\n"
                              "+OK graphbridge POP3 server signing off (3 messages left)\r\n[CLOSE]");
    // RSET undid the deletion: QUIT had nothing to commit.
    EXPECT_EQ(r.log, (std::vector<std::string>{"auth USER alice s3cret", "open alice", "maildrop"}));
}

TEST(Pop3Engine, QuitCommitsDeletionsWithZeroBasedIndexes) {
    Result r = run(kLogin + "DELE 3\r\nDELE 1\r\nQUIT\r\nNOOP\r\n");
    EXPECT_EQ(after_login(r), "+OK message 3 deleted\r\n+OK message 1 deleted\r\n"
                              "+OK graphbridge POP3 server signing off (1 messages left)\r\n[CLOSE]");
    EXPECT_EQ(r.log.back(), "commit 0 2");
}

TEST(Pop3Engine, FailedCommitIsReported) {
    Options o;
    o.setup = [](FakeBackend& be) { be.on_commit = [] { return Answer::refuse(); }; };
    EXPECT_EQ(after_login(run(kLogin + "DELE 1\r\nQUIT\r\n", o)),
              "+OK message 1 deleted\r\n-ERR some deleted messages not removed\r\n[CLOSE]");
    o.setup = [](FakeBackend& be) { be.on_commit = [] { return Answer::error("[SYS/TEMP] Graph unavailable"); }; };
    EXPECT_EQ(after_login(run(kLogin + "DELE 1\r\nQUIT\r\n", o)),
              "+OK message 1 deleted\r\n-ERR [SYS/TEMP] Graph unavailable\r\n[CLOSE]");
}

TEST(Pop3Engine, QuitInAuthorizationDeletesNothing) {
    Result r = run("USER alice\r\nQUIT\r\n");
    EXPECT_EQ(r.output, kGreeting + "+OK Send PASS\r\n+OK graphbridge POP3 server signing off\r\n[CLOSE]");
    EXPECT_TRUE(r.log.empty());
}

TEST(Pop3Engine, RetrieveErrors) {
    Options o;
    o.setup = [](FakeBackend& be) {
        be.on_retrieve = [](std::size_t i) {
            return i == 0 ? Answer::refuse() : Answer::error("message 2 no longer exists");
        };
    };
    Result r = run(kLogin + "RETR 1\r\nTOP 2 1\r\nNOOP\r\n", o);
    EXPECT_EQ(after_login(r), "-ERR [SYS/TEMP] Unable to retrieve message 1\r\n"
                              "-ERR message 2 no longer exists\r\n+OK\r\n");
}

TEST(Pop3Engine, CommandsInTheWrongState) {
    Result r = run("STAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\nNOOP\r\nRSET\r\n" + kLogin + "USER alice\r\nPASS x\r\nAUTH "
                   "PLAIN\r\nSTLS\r\n");
    std::string wrong = "-ERR Command not valid in this state\r\n";
    std::string before, after;
    for (int i = 0; i < 6; ++i) before += wrong;
    for (int i = 0; i < 4; ++i) after += wrong;
    EXPECT_EQ(r.output, kGreeting + before + kLoggedIn + after);
}

TEST(Pop3Engine, PipelinedCommandsAnsweredInOrder) {
    Result r = run(kLogin + "LIST\r\nRETR 2\r\nDELE 2\r\nUIDL\r\nTOP 3 0\r\nQUIT\r\n");
    std::size_t total = kBodies[0].size() + kBodies[1].size() + kBodies[2].size();
    EXPECT_EQ(after_login(r), "+OK 3 messages (" + std::to_string(total) + " octets)\r\n1 " + sz(0) + "\r\n2 " +
                                  sz(1) + "\r\n3 " + sz(2) + "\r\n.\r\n"
                                  "+OK " + sz(1) + " octets\r\nSubject: two\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n"
                                  "+OK message 2 deleted\r\n"
                                  "+OK unique-id listing follows\r\n1 uid-100\r\n3 uid-102\r\n.\r\n"
                                  "+OK top of message follows\r\nSubject: three\r\nX-Long: yes\r\n\r\n.\r\n"
                                  "+OK graphbridge POP3 server signing off (2 messages left)\r\n[CLOSE]");
    EXPECT_EQ(r.log.back(), "commit 1");
}

// ------------------------------------------------------------------------------------------------
// Hostile input and limits.

TEST(Pop3Engine, LongCommandLines) {
    std::string max_ok = "NOOP" + std::string(251, ' ');  // 255 octets: accepted (trailing spaces trimmed)
    std::string too_long = "NOOP" + std::string(252, ' ');
    std::string huge = "USER " + std::string(100000, 'x');
    Result r = run(kLogin + max_ok + "\r\n" + too_long + "\r\n" + huge + "\r\nNOOP\r\n");
    EXPECT_EQ(after_login(r), "+OK\r\n-ERR Line too long\r\n-ERR Line too long\r\n+OK\r\n");
}

TEST(Pop3Engine, GarbageBytes) {
    std::string garbage = std::string("\x00\x01\xff\xfe", 4) + "\r\n";
    Result r = run("NOOP\nNOOP\r\nNO\rOP\r\n" + garbage + "CAPA\t\r\nXYZZY\r\n\r\n" + std::string("\xc3\xa9\r\n"));
    EXPECT_EQ(r.output, kGreeting +
                            "-ERR Bare CR or LF in command line\r\n"
                            "-ERR Bare CR or LF in command line\r\n"
                            "-ERR Invalid characters in command\r\n"
                            "-ERR Invalid characters in command\r\n"
                            "-ERR Unknown command\r\n"
                            "-ERR Unknown command\r\n"
                            "-ERR Unknown command\r\n");
}

TEST(Pop3Engine, TooManyErrorsClose) {
    Options o;
    o.config.limits.max_errors = 3;
    Result r = run("A\r\nB\r\nC\r\nD\r\n", o);
    EXPECT_EQ(r.output, kGreeting + "-ERR Unknown command\r\n-ERR Unknown command\r\n-ERR Unknown command\r\n[CLOSE]");
}

TEST(Pop3Engine, HttpRequestClosesAtOnce) {
    Result r = run("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(r.output, kGreeting + "-ERR Not a POP3 command, closing connection\r\n[CLOSE]");
}

TEST(Pop3Engine, LargeMessageIsProducedInBoundedChunks) {
    std::string big;
    for (int i = 0; big.size() < 3 * 1024 * 1024; ++i) big += (i % 7 == 0 ? ".dotted line " : "line ") + std::to_string(i) + "\r\n";
    std::string body = "Subject: big\r\n\r\n" + big;
    FakeBackend be;
    be.bodies[0] = body;
    be.infos[0].size = body.size();
    Pop3Config cfg = test_config();
    cfg.limits.output_chunk = 4096;
    Pop3Engine e(cfg, kLoopback, be);
    std::string out = e.take_output();
    EXPECT_EQ(e.feed(kLogin + "RETR 1\r\nNOOP\r\n"), kLogin.size() + 8);  // NOOP waits for the message
    std::string msg;
    std::size_t chunks = 0;
    while (e.has_output()) {
        std::string c = e.take_output();
        EXPECT_LE(c.size(), 4096u + 200u);
        msg += c;
        ++chunks;
    }
    EXPECT_GT(chunks, 700u);
    EXPECT_EQ(e.feed("NOOP\r\n"), 6u);
    msg += e.take_output();
    std::string stuffed;
    for (std::size_t pos = 0; pos < body.size();) {
        std::size_t end = body.find("\r\n", pos) + 2;
        if (body[pos] == '.') stuffed += '.';
        stuffed.append(body, pos, end - pos);
        pos = end;
    }
    std::string expected = "+OK Send PASS\r\n+OK maildrop has 3 messages (" +
                           std::to_string(body.size() + kBodies[1].size() + kBodies[2].size()) + " octets)\r\n+OK " +
                           std::to_string(body.size()) + " octets\r\n" + stuffed + ".\r\n+OK\r\n";
    EXPECT_TRUE(msg == expected) << "output differs (" << msg.size() << " vs " << expected.size() << " octets)";
}

TEST(Pop3Engine, LargeListingIsProducedInChunks) {
    Options o;
    o.config.limits.output_chunk = 1024;
    o.setup = [](FakeBackend& be) {
        be.infos.clear();
        be.bodies.clear();
        for (int i = 0; i < 3000; ++i) {
            be.infos.push_back(MessageInfo{"u" + std::to_string(i), 10});
            be.bodies.push_back("x\r\n");
        }
    };
    Result r = converse({"USER alice\r\nPASS s3cret\r\nUIDL\r\nLIST\r\n"}, SplitMode::Whole, 1, o);
    EXPECT_NE(r.output.find("\r\n3000 u2999\r\n.\r\n+OK 3000 messages (30000 octets)\r\n1 10\r\n"), std::string::npos);
    EXPECT_EQ(r.output.substr(r.output.size() - 14), "\r\n3000 10\r\n.\r\n");
}

// ------------------------------------------------------------------------------------------------
// Driver contract.

TEST(Pop3Engine, TimeoutClosesSilentlyAndShutdownSaysSo) {
    FakeBackend be;
    Pop3Engine e(test_config(), kLoopback, be);
    e.take_output();
    e.feed(kLogin + "DELE 1\r\n");
    e.take_output();
    e.timeout();
    EXPECT_TRUE(e.wants_close());
    EXPECT_FALSE(e.has_output());  // RFC 1939 autologout: no response, no UPDATE
    EXPECT_EQ(be.log.back(), "maildrop");
    EXPECT_EQ(e.feed("QUIT\r\n"), 6u);
    EXPECT_FALSE(e.has_output());

    Pop3Engine e2(test_config(), kLoopback, be);
    e2.take_output();
    e2.shutdown();
    EXPECT_EQ(e2.take_output(), "-ERR [SYS/TEMP] Server shutting down\r\n");
    EXPECT_TRUE(e2.wants_close());
}

TEST(Pop3Engine, ConnectionLostWhilePendingIgnoresTheAnswer) {
    FakeBackend be;
    be.defer = {"commit"};
    Pop3Engine e(test_config(), kLoopback, be);
    e.feed(kLogin + "DELE 1\r\nQUIT\r\n");
    EXPECT_TRUE(e.awaiting_backend());
    EXPECT_EQ(e.pending(), Pop3Engine::Pending::Commit);
    EXPECT_EQ(e.session().state, State::Update);
    e.connection_lost();
    EXPECT_TRUE(e.wants_close());
    EXPECT_FALSE(e.awaiting_backend());
    e.resume(Answer::accept());  // a no-op after close
    EXPECT_FALSE(e.has_output());
}

TEST(Pop3Engine, MisuseThrows) {
    FakeBackend be;
    Pop3Engine e(test_config(), kLoopback, be);
    EXPECT_THROW(e.resume(Answer::accept()), std::logic_error);
    EXPECT_THROW(e.tls_started(), std::logic_error);
    be.defer = {"auth"};
    e.feed(kLogin);
    EXPECT_THROW(e.resume(Answer::pending()), std::logic_error);

    // A backend that calls back into the engine is refused (and the call becomes a local error).
    struct Reentrant : FakeBackend {
        Pop3Engine* engine = nullptr;
        Answer authenticate(const Session&, const AuthRequest&) override {
            engine->feed("NOOP\r\n");
            return Answer::accept();
        }
    } re;
    Pop3Engine e2(test_config(), kLoopback, re);
    re.engine = &e2;
    e2.take_output();
    e2.feed(kLogin);
    EXPECT_EQ(e2.take_output(), "+OK Send PASS\r\n-ERR [SYS/TEMP] Local error in processing\r\n");
}

TEST(Pop3Engine, BackendExceptionsBecomeErrors) {
    struct Throwing : FakeBackend {
        Answer retrieve(const Session&, std::size_t) override { throw std::runtime_error("graph down"); }
    } be;
    Pop3Engine e(test_config(), kLoopback, be);
    e.take_output();
    e.feed(kLogin + "RETR 1\r\nNOOP\r\n");
    std::string out = e.take_output();
    EXPECT_NE(out.find("-ERR [SYS/TEMP] Local error in processing\r\n+OK\r\n"), std::string::npos) << out;
}

// Graceful shutdown asks between_commands() before saying goodbye: not with half a command line read,
// an answer pending, or a multi-line answer still being sent.
TEST(Pop3Engine, BetweenCommandsOnlyWhenNothingIsInProgress) {
    FakeBackend be;
    be.defer = {"retrieve"};
    Pop3Engine e(test_config(), kLoopback, be);
    EXPECT_FALSE(e.between_commands());  // the greeting is not sent yet
    e.take_output();
    EXPECT_TRUE(e.between_commands());
    e.feed(kLogin);
    while (e.has_output()) e.take_output();
    EXPECT_TRUE(e.between_commands());
    e.feed("RE");
    EXPECT_FALSE(e.between_commands());  // half a command
    e.feed("TR 1\r\n");
    ASSERT_TRUE(e.awaiting_backend());
    EXPECT_FALSE(e.between_commands());  // the message is being fetched
    e.resume(Answer::accept());
    EXPECT_FALSE(e.between_commands());  // and being sent
    while (e.has_output()) e.take_output();
    EXPECT_TRUE(e.between_commands());
}
