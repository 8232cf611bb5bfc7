// The IMAP session engine against the sandbox: real Graph over HTTPS, the real sync engine and SQLite
// store, bytes in and out without sockets (fed whole, byte by byte, in random splits).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <regex>
#include <thread>

#include "auth/password.h"
#include "graph/http/graph_client.h"
#include "proxy/imap/session.h"
#include "proxy/sync/graph_source.h"
#include "proxy/sync/mail_service.h"
#include "support/graph_access.h"
#include "support/mail_stack.h"
#include "support/test_sandbox.h"

using namespace gb;

namespace {

class ImapSessionTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        sb_ = new test::TestSandbox("imap");
        access_ = new test::GraphAccess(*sb_);
        source_ = new sync::GraphSource(access_->graph, sb_->base());
        config::Config cfg;
        config::AccountConfig bob;
        bob.login = "bob";
        bob.password_hash = auth::hash_password("bob-password");
        bob.app = "sandbox";
        bob.mailbox = "bob@sandbox.test";
        bob.send_as = {"bob@sandbox.test"};
        cfg.accounts.push_back(bob);
        policy_ = new smtp::Policy(cfg);
        // Three messages in bob's Inbox before anything syncs.
        for (int i = 1; i <= 3; ++i) inject(i, i == 1);
    }
    static void TearDownTestSuite() {
        delete policy_;
        delete source_;
        delete access_;
        delete sb_;
    }

    void SetUp() override {
        stack_ = std::make_unique<test::MailStack>("gb_imap", "bob@sandbox.test", *source_);
        mail_ = stack_->mail.get();
        store_ = stack_->store.get();
    }
    void TearDown() override {
        stack_.reset();
    }

    static std::string inject(int i, bool read = false) {
        std::string mime = "From: Alice <alice@sandbox.test>\r\nTo: bob@sandbox.test\r\nSubject: message " +
                           std::to_string(i) + "\r\nDate: Tue, 14 Nov 2023 22:13:2" + std::to_string(i % 10) +
                           " +0000\r\nMessage-ID: <m" + std::to_string(i) +
                           "@sandbox.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody of message " +
                           std::to_string(i) + "\r\n";
        auto r = sb_->server().graph().inject_message("bob@sandbox.test", "inbox", mime, read, 1'700'000'000 + i);
        return r.index() == 0 ? std::get<0>(r) : std::string();
    }

    std::unique_ptr<imap::Session> session(bool loopback = true, bool tls_available = false) {
        imap::SessionServices s;
        s.policy = policy_;
        s.throttle = &throttle_;
        s.mail = mail_;
        imap::SessionConfig c;
        c.loopback = loopback;
        c.tls_available = tls_available;
        c.client_ip = loopback ? "127.0.0.1" : "192.0.2.7";
        return std::make_unique<imap::Session>(s, c);
    }

    // Feeds `in` in pieces of `split` bytes (0 = whole) and collects all output, stepping jobs.
    static std::string talk(imap::Session& s, const std::string& in, std::size_t split = 0) {
        std::string out = s.take_output();
        std::size_t pos = 0;
        while (pos < in.size()) {
            std::size_t n = split ? std::min(split, in.size() - pos) : in.size() - pos;
            s.feed(std::string_view(in).substr(pos, n));
            pos += n;
            out += s.take_output();
            while (s.busy()) {
                s.step();
                out += s.take_output();
            }
        }
        return out;
    }

    static test::TestSandbox* sb_;
    static test::GraphAccess* access_;
    static sync::GraphSource* source_;
    static smtp::Policy* policy_;
    std::unique_ptr<test::MailStack> stack_;
    sync::MailService* mail_ = nullptr;
    sync::StateStore* store_ = nullptr;
    smtp::AuthThrottle throttle_;
};
test::TestSandbox* ImapSessionTest::sb_;
test::GraphAccess* ImapSessionTest::access_;
sync::GraphSource* ImapSessionTest::source_;
smtp::Policy* ImapSessionTest::policy_;

bool has(const std::string& out, const std::string& needle) { return out.find(needle) != std::string::npos; }

}  // namespace

TEST_F(ImapSessionTest, GreetingCapabilitiesAndLoginRules) {
    auto remote = session(false, true);
    std::string out = talk(*remote, "a CAPABILITY\r\nb LOGIN bob bob-password\r\n");
    EXPECT_TRUE(has(out, "* OK [CAPABILITY IMAP4rev1")) << out;
    EXPECT_TRUE(has(out, "STARTTLS")) << out;
    EXPECT_TRUE(has(out, "LOGINDISABLED")) << out;
    EXPECT_FALSE(has(out, "AUTH=PLAIN")) << out;
    EXPECT_TRUE(has(out, "b NO [PRIVACYREQUIRED]")) << out;

    auto local = session(true);
    out = talk(*local, "a LOGIN bob wrong\r\nb LOGIN bob \"bob-password\"\r\nc CAPABILITY\r\n");
    EXPECT_TRUE(has(out, "a NO [AUTHENTICATIONFAILED]")) << out;
    EXPECT_TRUE(has(out, "b OK [CAPABILITY")) << out;
    EXPECT_TRUE(local->authenticated());
    EXPECT_TRUE(has(out, "c OK CAPABILITY completed")) << out;

    // AUTHENTICATE PLAIN with SASL-IR and with a continuation.
    auto ir = session(true);
    out = talk(*ir, "x AUTHENTICATE PLAIN AGJvYgBib2ItcGFzc3dvcmQ=\r\n");
    EXPECT_TRUE(has(out, "x OK")) << out;
    auto cont = session(true);
    out = talk(*cont, "y AUTHENTICATE PLAIN\r\nAGJvYgBib2ItcGFzc3dvcmQ=\r\n");
    EXPECT_TRUE(has(out, "+ \r\n")) << out;
    EXPECT_TRUE(has(out, "y OK")) << out;
}

TEST_F(ImapSessionTest, NarrowLimitsUntilLoggedIn) {
    // A stranger cannot make the session hold a big literal: 4 KiB before login (LOGIN's own literals
    // fit), the full limits after it.
    auto s = session(true);
    std::string out = talk(*s, "a LOGIN {60000000}\r\nb LOGIN bob {12+}\r\nbob-password\r\n");
    EXPECT_TRUE(has(out, "a BAD [TOOBIG]")) << out;
    EXPECT_FALSE(has(out, "+ Ready")) << out;
    EXPECT_TRUE(has(out, "b OK [CAPABILITY")) << out;
    out = talk(*s, "c APPEND INBOX {60000}\r\n");
    EXPECT_TRUE(has(out, "+ Ready for literal")) << out;
    // A {n+} over the pre-login limit: its octets are skipped (never run as commands), then BAD.
    auto t = session(true);
    out = talk(*t, "d NOOP {5000+}\r\n" + std::string(5000, 'x') + "\r\ne NOOP\r\n");
    EXPECT_TRUE(has(out, "d BAD [TOOBIG]")) << out;
    EXPECT_TRUE(has(out, "e OK")) << out;
}

TEST_F(ImapSessionTest, ThrottledAddressWaitsForEveryAnswer) {
    // After the free failures, the right password is answered as late as a wrong one would be: an early
    // OK would tell a guesser that it hit (and let it hang up on the delayed NOs).
    for (int i = 0; i < 4; ++i) {
        auto s = session(true);
        talk(*s, "a LOGIN bob wrong-" + std::to_string(i) + "\r\n");
        (void)s->take_delay();
    }
    auto wrong = session(true);
    std::string out = talk(*wrong, "b LOGIN bob wrong-again\r\n");
    EXPECT_TRUE(has(out, "b NO")) << out;
    auto wrong_delay = wrong->take_delay();
    EXPECT_GE(wrong_delay.count(), 1000);
    auto right = session(true);
    out = talk(*right, "c LOGIN bob bob-password\r\n");
    EXPECT_TRUE(has(out, "c OK")) << out;
    EXPECT_GE(right->take_delay().count(), wrong_delay.count());
}

TEST_F(ImapSessionTest, ListStatusSelectFetchSearch) {
    auto s = session();
    std::string out = talk(*s, "1 LOGIN bob bob-password\r\n2 LIST \"\" \"*\"\r\n3 LIST (SPECIAL-USE) \"\" \"*\"\r\n"
                               "4 STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY)\r\n");
    EXPECT_TRUE(has(out, "* LIST (\\HasNoChildren) \"/\" INBOX\r\n")) << out;
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\* LIST \(\\HasNoChildren \\Sent\) "/" "?Sent Items"?)"))) << out;
    EXPECT_TRUE(has(out, "\\Trash")) << out;
    EXPECT_TRUE(has(out, "4 OK STATUS completed")) << out;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(\* STATUS INBOX \(MESSAGES (\d+) UNSEEN (\d+) UIDNEXT (\d+) UIDVALIDITY (\d+)\))"))) << out;
    int total = std::stoi(m[1]);
    std::string validity = m[4];  // copied: m points into `out`, which is about to change
    EXPECT_GE(total, 3);

    out = talk(*s, "5 SELECT INBOX\r\n");
    EXPECT_TRUE(has(out, "* " + std::to_string(total) + " EXISTS\r\n")) << out;
    EXPECT_TRUE(has(out, "[UIDVALIDITY " + validity + "]")) << out;
    EXPECT_TRUE(has(out, "5 OK [READ-WRITE] SELECT completed")) << out;
    EXPECT_TRUE(has(out, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen $Forwarded \\*)]")) << out;
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\* OK \[HIGHESTMODSEQ \d+\])"))) << out;

    out = talk(*s, "6 FETCH 1:3 (UID FLAGS)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen))")) << out;
    EXPECT_TRUE(has(out, "* 2 FETCH (UID 2 FLAGS ())")) << out;
    EXPECT_TRUE(has(out, "6 OK FETCH completed")) << out;

    out = talk(*s, "7 UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE ENVELOPE)\r\n");
    EXPECT_TRUE(has(out, "* 2 FETCH (UID 2 ")) << out;
    EXPECT_TRUE(has(out, "BODY[HEADER.FIELDS (SUBJECT)] {22}\r\nSubject: message 2\r\n\r\n")) << out;
    EXPECT_TRUE(has(out, "\"message 2\"")) << out;  // in the ENVELOPE
    EXPECT_TRUE(has(out, "((\"Alice\" NIL \"alice\" \"sandbox.test\"))")) << out;

    // BODY[] is the message exactly as Graph serves it, CRLF lines.
    out = talk(*s, "8 FETCH 3 BODY.PEEK[]\r\n");
    ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(BODY\[\] \{(\d+)\}\r\n)"))) << out;
    std::size_t n = std::stoul(m[1]);
    std::string body = out.substr(static_cast<std::size_t>(m.position(0) + m.length(0)), n);
    EXPECT_TRUE(has(body, "Subject: message 3\r\n")) << body;
    EXPECT_TRUE(has(body, "\r\n\r\nbody of message 3\r\n")) << body;
    // RFC822.SIZE now agrees with the bytes served.
    out = talk(*s, "9 FETCH 3 RFC822.SIZE\r\n");
    EXPECT_TRUE(has(out, "RFC822.SIZE " + std::to_string(n) + ")")) << out;

    out = talk(*s, "10 UID SEARCH SUBJECT \"message 2\"\r\n11 SEARCH UNSEEN\r\n12 SEARCH SEEN NOT SUBJECT nothing\r\n"
                   "13 SEARCH CHARSET KOI8-R ALL\r\n14 SEARCH OR 1 3 BODY \"of message\"\r\n");
    EXPECT_TRUE(has(out, "* SEARCH 2\r\n10 OK")) << out;
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\* SEARCH 2 3( \d+)*\r\n11 OK)"))) << out;
    EXPECT_TRUE(has(out, "* SEARCH 1\r\n12 OK")) << out;
    EXPECT_TRUE(has(out, "13 NO [BADCHARSET")) << out;
    EXPECT_TRUE(has(out, "* SEARCH 1 3\r\n14 OK")) << out;

    // EXAMINE opens read-only: writes are refused, BODY[] does not set \\Seen.
    out = talk(*s, "15 EXAMINE INBOX\r\n15a STORE 2 +FLAGS (\\Seen)\r\n15b FETCH 2 BODY[TEXT]\r\n15c FETCH 2 FLAGS\r\n"
                   "16 LOGOUT\r\n");
    EXPECT_TRUE(has(out, "15 OK [READ-ONLY] EXAMINE completed")) << out;
    EXPECT_TRUE(has(out, "* OK [PERMANENTFLAGS ()]")) << out;
    EXPECT_TRUE(has(out, "15a NO [READ-ONLY]")) << out;
    EXPECT_TRUE(has(out, "* 2 FETCH (FLAGS ())\r\n15c OK")) << out;
    EXPECT_TRUE(has(out, "* BYE")) << out;
    EXPECT_TRUE(s->wants_close());
}

TEST_F(ImapSessionTest, SameOutputWholeByteByByteAndRandomSplits) {
    std::string script = "1 LOGIN bob bob-password\r\n2 SELECT INBOX\r\n3 FETCH 1:2 (FLAGS BODY.PEEK[TEXT])\r\n"
                         "4 SEARCH ALL\r\n5 NOOP\r\n6 LOGOUT\r\n";
    auto strip = [](std::string s) { return std::regex_replace(s, std::regex(R"(\[UIDVALIDITY \d+\])"), ""); };
    std::string whole = strip(talk(*session(), script));
    EXPECT_TRUE(has(whole, "6 OK LOGOUT")) << whole;
    EXPECT_EQ(strip(talk(*session(), script, 1)), whole);
    std::mt19937 rng(7);
    for (int round = 0; round < 5; ++round) {
        auto s = session();
        std::string out = s->take_output();
        std::size_t pos = 0;
        while (pos < script.size()) {
            std::size_t n = std::min<std::size_t>(1 + rng() % 17, script.size() - pos);
            out += talk(*s, script.substr(pos, n));
            pos += n;
        }
        EXPECT_EQ(strip(out), whole);
    }
}

TEST_F(ImapSessionTest, RemoteChangesBecomeUntaggedUpdatesAtTheRightTimes) {
    auto s = session();
    std::string out = talk(*s, "1 LOGIN bob bob-password\r\n2 SELECT INBOX\r\n");
    std::smatch m;
    ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(\* (\d+) EXISTS)")));
    int exists = std::stoi(m[1]);
    std::string fresh = inject(100 + exists);
    // A message deleted in Outlook (the first one) and a new one.
    std::string inbox_id;
    for (const auto& f : store_->folders("bob@sandbox.test"))
        if (f.path == "INBOX") inbox_id = f.folder_id;
    std::string first_id = store_->messages("bob@sandbox.test", inbox_id).at(0).graph_id;
    http::Request del;
    del.method = "DELETE";
    del.url = "/v1.0/users/bob@sandbox.test/messages/" + first_id;
    ASSERT_EQ(access_->graph.call(del).response.status, 204);
    ASSERT_FALSE(mail_->mailbox("bob@sandbox.test")->sync_all());
    // FETCH may announce the new message but never an EXPUNGE.
    out = talk(*s, "3 FETCH 1 (FLAGS)\r\n");
    EXPECT_FALSE(has(out, "EXPUNGE")) << out;
    EXPECT_TRUE(has(out, "* " + std::to_string(exists + 1) + " EXISTS")) << out;
    // NOOP delivers the expunge.
    out = talk(*s, "4 NOOP\r\n");
    EXPECT_TRUE(has(out, "* 1 EXPUNGE\r\n4 OK")) << out;

    // IDLE: a change made meanwhile is pushed without any command.
    std::atomic<int> wakes{0};
    s->set_wake([&] { ++wakes; });
    out = talk(*s, "5 IDLE\r\n");
    EXPECT_TRUE(has(out, "+ idling")) << out;
    inject(200 + exists);
    for (int i = 0; i < 100 && wakes.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_GT(wakes.load(), 0) << "no change notification within 5 s while idling";
    s->deliver_updates();
    out = s->take_output();
    EXPECT_TRUE(has(out, " EXISTS\r\n")) << out;
    out = talk(*s, "DONE\r\n");
    EXPECT_TRUE(has(out, "5 OK IDLE terminated")) << out;
}

TEST_F(ImapSessionTest, HostileInputIsRefusedAndTheSessionGoesOn) {
    auto s = session();
    std::string bomb = "1 LOGIN bob bob-password\r\n2 SEARCH " + std::string(10000, '(') + "\r\n";
    std::string out = talk(*s, bomb);
    EXPECT_TRUE(has(out, "2 BAD")) << out.substr(0, 300);
    out = talk(*s, "3 APPEND INBOX {2000000000}\r\n");
    EXPECT_TRUE(has(out, "3 BAD") || has(out, "3 NO")) << out;
    EXPECT_FALSE(has(out, "+ Ready")) << out;
    std::mt19937 rng(1);
    std::string garbage;
    for (int i = 0; i < 20000; ++i) garbage.push_back(static_cast<char>(rng() % 256));
    garbage += "\r\n";
    talk(*s, garbage);
    out = talk(*s, "4 SELECT INBOX\r\n5 FETCH 1:* (FLAGS)\r\n6 FETCH 99999 FLAGS\r\n7 SEARCH NOT NOT NOT\r\n");
    EXPECT_TRUE(has(out, "4 OK")) << out;
    EXPECT_TRUE(has(out, "5 OK")) << out;
    EXPECT_TRUE(has(out, "6 BAD")) << out;
    EXPECT_TRUE(has(out, "7 BAD")) << out;
}

TEST_F(ImapSessionTest, CommandsPipelinedBehindStartTlsAreDiscarded) {
    auto s = session(false, true);
    std::string out = talk(*s, "1 STARTTLS\r\n2 LOGIN bob bob-password\r\n");
    EXPECT_TRUE(has(out, "1 OK")) << out;
    EXPECT_FALSE(has(out, "2 ")) << out;
    ASSERT_TRUE(s->wants_starttls());
    s->tls_started();
    out = talk(*s, "3 CAPABILITY\r\n");
    EXPECT_FALSE(s->authenticated());
    EXPECT_TRUE(has(out, "AUTH=PLAIN")) << out;
    EXPECT_FALSE(has(out, "STARTTLS")) << out;
}

TEST(ImapHelpers, ListMatchDatesAndTimes) {
    EXPECT_TRUE(imap::list_match("*", "INBOX/Sub/Deep"));
    EXPECT_TRUE(imap::list_match("%", "INBOX"));
    EXPECT_FALSE(imap::list_match("%", "INBOX/Sub"));
    EXPECT_TRUE(imap::list_match("INBOX/%", "INBOX/Sub"));
    EXPECT_FALSE(imap::list_match("INBOX/%", "INBOX/Sub/Deep"));
    EXPECT_TRUE(imap::list_match("*Deep", "INBOX/Sub/Deep"));
    EXPECT_TRUE(imap::list_match("I%X", "INBOX"));
    EXPECT_FALSE(imap::list_match("Sent", "Sent Items"));
    EXPECT_EQ(imap::imap_date_time(1'700'000'000), "14-Nov-2023 22:13:20 +0000");
    EXPECT_EQ(imap::parse_imap_date("14-Nov-2023"), 1'699'920'000);
    EXPECT_EQ(imap::parse_imap_date("1-Feb-1994"), 760'060'800);
    EXPECT_FALSE(imap::parse_imap_date("14-Nov-23"));
    EXPECT_FALSE(imap::parse_imap_date("31-Foo-2023"));
}
