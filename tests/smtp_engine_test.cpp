// Tests for the socket-free SMTP engine (protocol/smtp): every conversation is fed whole, byte by byte,
// in random splits and with an asynchronous backend, and must give identical replies each time.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "protocol/smtp/smtp_engine.h"
#include "protocol/smtp/smtp_parser.h"

using namespace gb::protocol::smtp;

namespace {

std::string b64(std::string_view s) {
    return encode_base64(s);
}

// A backend that records every call, answers by policy, and can defer any decision point: a deferred
// answer is queued and returned "pending"; the test (or the harness) resumes the engine with it later.
class FakeBackend : public SmtpBackend {
  public:
    std::set<std::string> defer;  // "auth", "mail", "rcpt", "data_begin", "data_end"
    std::deque<Answer> queued;
    std::vector<std::string> log;
    std::vector<std::string> messages;  // bodies of accepted messages
    std::string body;
    int resets = 0;
    std::function<Answer(const MailRequest&)> on_mail = [](const MailRequest&) { return Answer::accept(); };
    std::function<Answer(const Address&)> on_rcpt = [](const Address& a) {
        return a.local.rfind("bad", 0) == 0 ? Answer::refuse() : Answer::accept();
    };
    std::function<Answer()> on_data_begin = [] { return Answer::accept(); };
    std::function<Answer()> on_data_end = [] { return Answer(Reply{250, "2.0.0", "Ok: queued as Q1"}); };

    Answer authenticate(const Session&, const AuthRequest& r) override {
        log.push_back("auth " + r.mechanism + " [" + r.authzid + "] " + r.user + " " +
                      std::string(r.password.reveal()));
        bool ok = r.user == "alice" && r.password.reveal() == "s3cret";
        return answer("auth", ok ? Answer::accept() : Answer::refuse());
    }
    Answer mail_from(const Session&, const MailRequest& r) override {
        log.push_back("mail <" + r.reverse_path.to_string() + ">");
        return answer("mail", on_mail(r));
    }
    Answer rcpt_to(const Session&, const Address& a) override {
        log.push_back("rcpt <" + a.to_string() + ">");
        return answer("rcpt", on_rcpt(a));
    }
    Answer data_begin(const Session&) override {
        log.push_back("data_begin");
        body.clear();
        return answer("data_begin", on_data_begin());
    }
    void data_chunk(std::string_view bytes) override { body.append(bytes); }
    Answer data_end(const Session&) override {
        log.push_back("data_end");
        Answer a = on_data_end();
        if (a.kind() == Answer::Kind::Accept ||
            (a.kind() == Answer::Kind::Custom && a.reply().code / 100 == 2))
            messages.push_back(body);
        return answer("data_end", std::move(a));
    }
    void transaction_reset(const Session&) override {
        ++resets;
        log.push_back("reset");
    }

  private:
    Answer answer(const std::string& what, Answer a) {
        if (!defer.count(what)) return a;
        queued.push_back(std::move(a));
        return Answer::pending();
    }
};

SmtpConfig test_config() {
    SmtpConfig c;
    c.hostname = "mx.test";
    c.tls_available = true;
    return c;
}

struct Result {
    std::string output;
    std::vector<std::string> messages;
    std::vector<std::string> log;
    bool operator==(const Result&) const = default;
};

enum class SplitMode { Whole, Bytes, Random };

// Feeds segments; between segments a requested STARTTLS handshake is completed ("[TLS]").
// The driver loop is the real contract: keep the unconsumed tail, resume when the backend answers.
Result converse(const std::vector<std::string>& segments, SplitMode mode, unsigned seed = 1,
                SmtpConfig config = test_config(), ConnectionInfo conn = {},
                const std::set<std::string>& defer = {},
                const std::function<void(FakeBackend&)>& setup = {}) {
    FakeBackend be;
    be.defer = defer;
    if (setup) setup(be);
    SmtpEngine e(config, conn, be);
    std::string out = e.take_output();
    std::mt19937 rng(seed);
    auto settle = [&] {
        out += e.take_output();
        while (e.awaiting_backend()) {
            EXPECT_FALSE(be.queued.empty());
            if (be.queued.empty()) return;
            Answer a = std::move(be.queued.front());
            be.queued.pop_front();
            e.resume(std::move(a));
            out += e.take_output();
        }
    };
    for (const auto& seg : segments) {
        if (e.wants_starttls()) {
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
                bool was_waiting = e.awaiting_backend();
                settle();
                if (used == 0 && !was_waiting) {
                    ADD_FAILURE() << "engine refused input without waiting on the backend";
                    return {};
                }
            }
        }
    }
    if (e.wants_close()) out += "[CLOSE]";
    return Result{out, be.messages, be.log};
}

// Runs a conversation in every split mode, synchronous and fully asynchronous; all must agree.
Result run(const std::vector<std::string>& segments, SmtpConfig config = test_config(),
           ConnectionInfo conn = {}, const std::function<void(FakeBackend&)>& setup = {}) {
    Result whole = converse(segments, SplitMode::Whole, 1, config, conn, {}, setup);
    EXPECT_EQ(converse(segments, SplitMode::Bytes, 1, config, conn, {}, setup), whole) << "byte by byte";
    for (unsigned seed = 1; seed <= 5; ++seed)
        EXPECT_EQ(converse(segments, SplitMode::Random, seed, config, conn, {}, setup), whole)
            << "seed " << seed;
    std::set<std::string> all{"auth", "mail", "rcpt", "data_begin", "data_end"};
    EXPECT_EQ(converse(segments, SplitMode::Whole, 1, config, conn, all, setup), whole) << "async whole";
    EXPECT_EQ(converse(segments, SplitMode::Bytes, 1, config, conn, all, setup), whole) << "async bytes";
    EXPECT_EQ(converse(segments, SplitMode::Random, 7, config, conn, all, setup), whole) << "async random";
    return whole;
}

Result run(const std::string& script, SmtpConfig config = test_config(), ConnectionInfo conn = {},
           const std::function<void(FakeBackend&)>& setup = {}) {
    return run(std::vector<std::string>{script}, std::move(config), conn, setup);
}

const std::string kGreeting = "220 mx.test ESMTP graphbridge\r\n";
const std::string kEhloPlain =
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const std::string kTxn = "EHLO client.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n";
const std::string kTxnReplies = kGreeting + kEhloPlain + "250 2.1.0 Sender <a@example.com> OK\r\n" +
                                "250 2.1.5 Recipient <b@example.com> OK\r\n";

// The replies after the greeting/EHLO/MAIL/RCPT prefix.
std::string after_txn(const std::string& out) {
    const std::string rcpt =
        "250 2.1.0 Sender <a@example.com> OK\r\n250 2.1.5 Recipient <b@example.com> OK\r\n";
    std::size_t at = out.find(rcpt);
    EXPECT_NE(at, std::string::npos) << out;
    return at == std::string::npos ? out : out.substr(at + rcpt.size());
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Core commands and pipelining.

TEST(SmtpEngine, FullTransactionPipelinedInOnePacket) {
    Result r = run(kTxn + "RCPT TO:<c@example.com>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    EXPECT_EQ(after_txn(r.output),
              "250 2.1.5 Recipient <c@example.com> OK\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "250 2.0.0 Ok: queued as Q1\r\n"
              "221 2.0.0 Bye\r\n[CLOSE]");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0], "Subject: hi\r\n\r\nbody\r\n");
    EXPECT_EQ(r.log, (std::vector<std::string>{
                         "mail <a@example.com>",
                         "rcpt <b@example.com>",
                         "rcpt <c@example.com>",
                         "data_begin",
                         "data_end",
                     }));
}

TEST(SmtpEngine, TwoMessagesOnOneConnection) {
    Result r =
        run(kTxn + "DATA\r\none\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@example.com>\r\nDATA\r\ntwo\r\n.\r\n");
    ASSERT_EQ(r.messages.size(), 2u);
    EXPECT_EQ(r.messages[0], "one\r\n");
    EXPECT_EQ(r.messages[1], "two\r\n");
    EXPECT_NE(r.output.find("250 2.1.0 Sender <> OK\r\n"), std::string::npos);
}

TEST(SmtpEngine, HeloWorksWithoutExtensions) {
    Result r =
        run("HELO printer\r\nMAIL FROM:<scan@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nx\r\n.\r\n");
    EXPECT_EQ(r.output,
              kGreeting +
                  "250 mx.test\r\n250 2.1.0 Sender <scan@example.com> OK\r\n"
                  "250 2.1.5 Recipient <b@example.com> OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                  "250 2.0.0 Ok: queued as Q1\r\n");
}

TEST(SmtpEngine, SimpleCommands) {
    Result r =
        run("NOOP\r\nNOOP hello\r\nVRFY bob\r\nVRFY\r\nHELP\r\nRSET\r\nRSET x\r\nEXPN list\r\nXYZZY\r\n"
            "\r\nquit\r\nNOOP\r\n");
    EXPECT_EQ(
        r.output,
        kGreeting +
            "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"
            "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
            "501 5.5.4 Syntax: VRFY address\r\n"
            "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH\r\n"
            "250 2.0.0 Ok\r\n501 5.5.4 Syntax: RSET takes no arguments\r\n"
            "502 5.5.1 EXPN not implemented\r\n500 5.5.2 Command unrecognized\r\n"
            "500 5.5.2 Command unrecognized\r\n221 2.0.0 Bye\r\n[CLOSE]");
}

TEST(SmtpEngine, BadSequence) {
    Result r =
        run("MAIL FROM:<a@b.c>\r\nRCPT TO:<a@b.c>\r\nDATA\r\nEHLO x\r\nDATA\r\nRCPT TO:<a@b.c>\r\n"
            "MAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\nDATA\r\nRCPT TO:<bad1@b.c>\r\nDATA\r\nEHLO\r\n");
    std::string expected = kGreeting +
                           "503 5.5.1 Error: send EHLO/HELO first\r\n"
                           "503 5.5.1 Error: need MAIL command\r\n"
                           "503 5.5.1 Error: need MAIL command\r\n" +
                           kEhloPlain.substr(0, kEhloPlain.size()) +  // EHLO x
                           "503 5.5.1 Error: need MAIL command\r\n"
                           "503 5.5.1 Error: need MAIL command\r\n"
                           "250 2.1.0 Sender <a@b.c> OK\r\n"
                           "503 5.5.1 Error: nested MAIL command\r\n"
                           "503 5.5.1 Error: need RCPT command\r\n"
                           "550 5.7.1 Recipient <bad1@b.c> rejected\r\n"
                           "554 5.5.0 Error: no valid recipients\r\n"
                           "501 5.5.4 Syntax: EHLO hostname\r\n";
    EXPECT_EQ(r.output, expected);
}

TEST(SmtpEngine, SyntaxErrorsAndParameters) {
    Result r =
        run("EHLO x\r\nMAIL FROM <a@b.c>\r\nMAIL FROM:<a@@b.c>\r\nMAIL FROM:<a@b.c> FOO=bar\r\n"
            "MAIL FROM:<a@b.c> SIZE=abc\r\nMAIL FROM:<a@b.c> BODY=BINARYMIME\r\nMAIL FROM:<a@b.c>junk\r\n"
            "MAIL FROM:<a@b.c> SIZE=1 SIZE=2\r\nMAIL FROM:<a@b.c> BODY=8BITMIME SIZE=100\r\n"
            "RCPT TO:<>\r\nRCPT TO:<x@y.z> NOTIFY=NEVER\r\nRCPT TO <x@y.z>\r\nRSET\r\n"
            "MAIL FROM:<a@b.c> BODY=7bit SMTPUTF8 AUTH=<>\r\n");
    std::string expected = kGreeting + kEhloPlain +
                           "501 5.5.2 Syntax: MAIL FROM:<address>\r\n"
                           "501 5.1.7 Bad sender address syntax\r\n"
                           "555 5.5.4 Unsupported parameter FOO\r\n"
                           "501 5.5.4 Invalid SIZE parameter\r\n"
                           "501 5.5.4 Unsupported BODY type\r\n"
                           "501 5.1.7 Bad sender address syntax\r\n"
                           "501 5.5.4 Invalid SIZE parameter\r\n"
                           "250 2.1.0 Sender <a@b.c> OK\r\n"
                           "501 5.1.3 Bad recipient address syntax\r\n"
                           "555 5.5.4 Unsupported parameter NOTIFY\r\n";
    // The tenth error closes the session (default max_errors = 10).
    expected += "501 5.5.2 Syntax: RCPT TO:<address>\r\n421 4.7.0 mx.test Error: too many errors\r\n[CLOSE]";
    EXPECT_EQ(r.output, expected);
}

TEST(SmtpEngine, LenientAddresses) {
    Result r =
        run("EHLO x\r\nMAIL FROM: <a@b.c>\r\nRCPT TO:d@e.f\r\nRCPT TO:<@r1.x,@r2.y:u@g.h>\r\n"
            "RCPT TO:<\"john doe\"@i.j>\r\nRCPT TO:<Postmaster>\r\nRCPT TO:<x@[192.0.2.1]>\r\n"
            "RCPT TO:   <k@l.m>  \r\nRSET\r\nMAIL FROM:s@t.u SIZE=10\r\n");
    EXPECT_EQ(r.log,
              (std::vector<std::string>{"mail <a@b.c>", "rcpt <d@e.f>", "rcpt <u@g.h>",
                                        "rcpt <\"john doe\"@i.j>", "rcpt <Postmaster>",
                                        "rcpt <x@[192.0.2.1]>", "rcpt <k@l.m>", "reset", "mail <s@t.u>"}));
    EXPECT_EQ(r.output.find("\r\n5"), std::string::npos) << r.output;
}

TEST(SmtpEngine, HeaderInjectionThroughParametersImpossible) {
    // A CR inside a command line is a bare CR: the whole line is refused, nothing reaches the backend.
    Result r = run("EHLO x\r\nMAIL FROM:<a@b.c> AUTH=x\rBcc:evil@x\r\nMAIL FROM:<a\r\n@b.c>\r\n");
    EXPECT_EQ(r.output, kGreeting + kEhloPlain +
                            "500 5.5.2 Bare CR or LF in command line\r\n"
                            "501 5.1.7 Bad sender address syntax\r\n"
                            "500 5.5.2 Command unrecognized\r\n");
    EXPECT_TRUE(r.log.empty());
    // A NUL or other control character in a command line is refused.
    Result r2 = run(std::string("EHLO x\r\nMAIL FROM:<a@b.c> AUTH=a\0b\r\n", 36));
    EXPECT_EQ(r2.output, kGreeting + kEhloPlain + "500 5.5.2 Invalid characters in command\r\n");
}

TEST(SmtpEngine, BareLfInCommandLineNeverSplitsCommands) {
    Result r = run("EHLO x\r\nNOOP\nMAIL FROM:<evil@x.y>\r\nNOOP\r\n");
    EXPECT_EQ(r.output,
              kGreeting + kEhloPlain + "500 5.5.2 Bare CR or LF in command line\r\n250 2.0.0 Ok\r\n");
    EXPECT_TRUE(r.log.empty());
}

TEST(SmtpEngine, HttpRequestClosesConnection) {
    Result r = run("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(r.output, kGreeting + "554 5.7.0 Non-SMTP command, closing connection\r\n[CLOSE]");
}

// ------------------------------------------------------------------------------------------------
// SIZE, 8BITMIME, SMTPUTF8.

TEST(SmtpEngine, SizeParameter) {
    SmtpConfig c = test_config();
    c.limits.max_message_size = 1000;
    Result r =
        run("EHLO x\r\nMAIL FROM:<a@b.c> SIZE=1001\r\nMAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME\r\n", c);
    EXPECT_NE(r.output.find("250-SIZE 1000\r\n"), std::string::npos);
    EXPECT_NE(r.output.find("552 5.3.4 Message size exceeds fixed maximum message size\r\n"
                            "250 2.1.0 Sender <a@b.c> OK\r\n"),
              std::string::npos);
    Result huge = run("EHLO x\r\nMAIL FROM:<a@b.c> SIZE=99999999999999999999999\r\n", c);
    EXPECT_NE(huge.output.find("501 5.5.4 Invalid SIZE parameter\r\n"), std::string::npos);
}

TEST(SmtpEngine, Utf8AddressesNeedSmtpUtf8) {
    Result r =
        run("EHLO x\r\nMAIL FROM:<j\xc3\xb6rg@b.c>\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<\xc3\xbc@b.c>\r\n"
            "RCPT TO:<u@b\xc3\xa4.c>\r\nRSET\r\nMAIL FROM:<j\xc3\xb6rg@b.c> SMTPUTF8\r\n"
            "RCPT TO:<\xc3\xbc@b.c>\r\nRCPT TO:<\xc3\x28@b.c>\r\nDATA\r\nx\r\n.\r\n");
    EXPECT_EQ(r.output, kGreeting + kEhloPlain +
                            "553 5.6.7 SMTPUTF8 required for UTF-8 sender address\r\n"
                            "250 2.1.0 Sender <a@b.c> OK\r\n"
                            "553 5.6.7 SMTPUTF8 required for UTF-8 recipient address\r\n"
                            "553 5.6.7 SMTPUTF8 required for UTF-8 recipient address\r\n"
                            "250 2.0.0 Ok\r\n"
                            "250 2.1.0 Sender <j\xc3\xb6rg@b.c> OK\r\n"
                            "250 2.1.5 Recipient <\xc3\xbc@b.c> OK\r\n"
                            "501 5.1.3 Bad recipient address syntax\r\n"
                            "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n");
}

// ------------------------------------------------------------------------------------------------
// DATA: dot-unstuffing, the smuggling endings, bare CR/LF, long lines, size.

TEST(SmtpEngine, DotUnstuffing) {
    Result r = run(kTxn + "DATA\r\n..x\r\n..\r\n...\r\nmid.dle\r\n.y\r\n\r\n.\r\n");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0], ".x\r\n.\r\n..\r\nmid.dle\r\ny\r\n\r\n");
}

TEST(SmtpEngine, EmptyMessageEndsAtFirstDotLine) {
    // The CRLF ending "DATA" is the first CRLF of CRLF.CRLF.
    Result r = run(kTxn + "DATA\r\n.\r\nNOOP\r\n");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0], "");
    EXPECT_EQ(after_txn(r.output),
              "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n");
}

TEST(SmtpEngine, DotCrLfMidLineIsBody) {
    Result r = run(kTxn + "DATA\r\nabc.\r\n .\r\n.\r\n");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0], "abc.\r\n .\r\n");
}

TEST(SmtpEngine, SmugglingEndingsNeverEndData) {
    const std::vector<std::string> fakes = {"\n.\n",   "\r.\r\n",      "\n.\r\n",  "\r\n.\n",
                                            "\r\n.\r", "\r\n.\rX\r\n", "\n\r\n.\n"};
    for (const auto& fake : fakes) {
        SCOPED_TRACE(testing::PrintToString(fake));
        std::string smuggled = "MAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\nDATA\r\nevil\r\n";
        Result r = run(kTxn + "DATA\r\nhello" + fake + smuggled + ".\r\nNOOP\r\n");
        // One reply for the whole DATA (after the real end), the smuggled commands never ran.
        EXPECT_EQ(after_txn(r.output),
                  "354 End data with <CR><LF>.<CR><LF>\r\n"
                  "554 5.6.0 Message rejected: bare CR or LF in message\r\n"
                  "250 2.0.0 Ok\r\n");
        EXPECT_TRUE(r.messages.empty());
        for (const auto& call : r.log) EXPECT_EQ(call.find("evil"), std::string::npos);
        EXPECT_EQ(r.log.back(), "reset");
    }
}

TEST(SmtpEngine, BareLfOrCrAnywhereRejectsAfterRealEnd) {
    for (std::string body : {"a\nb\r\n", "a\rb\r\n", "\n", "x\r\n\r", ".\n"}) {
        SCOPED_TRACE(testing::PrintToString(body));
        Result r = run(kTxn + "DATA\r\n" + body + "\r\n.\r\nMAIL FROM:<next@x.y>\r\n");
        EXPECT_EQ(after_txn(r.output),
                  "354 End data with <CR><LF>.<CR><LF>\r\n"
                  "554 5.6.0 Message rejected: bare CR or LF in message\r\n"
                  "250 2.1.0 Sender <next@x.y> OK\r\n");
        EXPECT_TRUE(r.messages.empty());
    }
}

TEST(SmtpEngine, LongDataLines) {
    std::string ok_line(998, 'a');  // 1000 octets with CRLF
    Result ok = run(kTxn + "DATA\r\n" + ok_line + "\r\n.\r\n");
    ASSERT_EQ(ok.messages.size(), 1u);
    EXPECT_EQ(ok.messages[0], ok_line + "\r\n");
    Result bad = run(kTxn + "DATA\r\n" + ok_line + "a\r\nmore\r\n.\r\nNOOP\r\n");
    EXPECT_EQ(after_txn(bad.output),
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "554 5.6.0 Message rejected: line too long\r\n250 2.0.0 Ok\r\n");
    EXPECT_TRUE(bad.messages.empty());
}

TEST(SmtpEngine, MessageSizeLimitKeepsConsumingToTheEnd) {
    SmtpConfig c = test_config();
    c.limits.max_message_size = 100;
    std::string exact(98, 'x');  // 98 + CRLF = 100 unstuffed bytes
    Result ok = run(kTxn + "DATA\r\n" + exact + "\r\n.\r\n", c);
    ASSERT_EQ(ok.messages.size(), 1u);
    Result big =
        run(kTxn + "DATA\r\n" + exact + "\r\nMAIL FROM:<x@y.z>\r\n" + exact + "\r\n.\r\nNOOP\r\n", c);
    EXPECT_NE(
        big.output.find("354 End data with <CR><LF>.<CR><LF>\r\n"
                        "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n"),
        std::string::npos)
        << big.output;
    EXPECT_TRUE(big.messages.empty());
}

TEST(SmtpEngine, BodyIsStreamedNotBuffered) {
    FakeBackend be;
    SmtpConfig c = test_config();
    c.limits.body_chunk = 4096;
    SmtpEngine e(c, {}, be);
    e.feed(kTxn + "DATA\r\n");
    std::string line(998, 'z');
    line += "\r\n";
    std::size_t fed = 0;
    for (int i = 0; i < 5000; ++i) {  // ~5 MB
        ASSERT_EQ(e.feed(line), line.size());
        fed += line.size();
        EXPECT_LE(be.body.size(), fed);
        EXPECT_GE(be.body.size() + c.limits.body_chunk, fed);
        EXPECT_LE(e.buffered_input(), c.limits.max_command_line);
    }
    e.feed(".\r\n");
    EXPECT_EQ(be.messages.size(), 1u);
    EXPECT_EQ(be.messages[0].size(), fed);
}

TEST(SmtpEngine, TenMegabytesWithoutNewlineStaysBounded) {
    FakeBackend be;
    SmtpEngine e(test_config(), {}, be);
    e.take_output();
    std::string junk(64 * 1024, 'A');
    for (int i = 0; i < 160; ++i) {
        ASSERT_EQ(e.feed(junk), junk.size());
        EXPECT_LE(e.buffered_input(), 2048u);
    }
    EXPECT_EQ(e.take_output(), "500 5.5.2 Line too long\r\n");
    e.feed("\r\nNOOP\r\n");  // the connection is still sane
    EXPECT_EQ(e.take_output(), "250 2.0.0 Ok\r\n");
    // Same inside DATA: the message is rejected, nothing is buffered.
    e.feed(kTxn + "DATA\r\n");
    e.take_output();
    for (int i = 0; i < 160; ++i) {
        ASSERT_EQ(e.feed(junk), junk.size());
        EXPECT_LE(e.buffered_input(), 2048u);
        EXPECT_LE(be.body.size(), 1000u + 16384u);
    }
    e.feed("\r\n.\r\n");
    EXPECT_EQ(e.take_output(), "554 5.6.0 Message rejected: line too long\r\n");
}

// ------------------------------------------------------------------------------------------------
// Limits.

TEST(SmtpEngine, TooManyRecipients) {
    SmtpConfig c = test_config();
    c.limits.max_recipients = 2;
    Result r = run(kTxn + "RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA\r\nx\r\n.\r\n", c);
    EXPECT_EQ(after_txn(r.output),
              "250 2.1.5 Recipient <c@example.com> OK\r\n452 4.5.3 Too many recipients\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n");
}

TEST(SmtpEngine, TooManyErrorsCloses) {
    SmtpConfig c = test_config();
    c.limits.max_errors = 3;
    Result r = run("FOO\r\nBAR\r\nNOOP\r\nBAZ\r\nNOOP\r\nNOOP\r\n", c);
    EXPECT_EQ(r.output, kGreeting +
                            "500 5.5.2 Command unrecognized\r\n500 5.5.2 Command unrecognized\r\n"
                            "250 2.0.0 Ok\r\n500 5.5.2 Command unrecognized\r\n"
                            "421 4.7.0 mx.test Error: too many errors\r\n[CLOSE]");
}

TEST(SmtpEngine, CommandLineTooLongKeepsConnectionSane) {
    SmtpConfig c = test_config();
    c.limits.max_command_line = 512;
    std::string at_limit = "NOOP " + std::string(505, 'x');  // 510 + CRLF = 512
    Result r = run(at_limit + "\r\nNOOP " + std::string(506, 'x') + "\r\nNOOP\r\n", c);
    EXPECT_EQ(r.output, kGreeting + "250 2.0.0 Ok\r\n500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
}

TEST(SmtpEngine, TimeoutAndShutdown) {
    FakeBackend be;
    SmtpEngine e(test_config(), {}, be);
    e.feed(kTxn);
    e.take_output();
    e.timeout();
    EXPECT_EQ(e.take_output(), "421 4.4.2 mx.test Error: timeout exceeded\r\n");
    EXPECT_TRUE(e.wants_close());
    EXPECT_EQ(be.resets, 1);  // the open transaction was dropped
    EXPECT_EQ(e.feed("NOOP\r\n"), 6u);
    EXPECT_FALSE(e.has_output());

    SmtpEngine e2(test_config(), {}, be);
    e2.take_output();
    e2.shutdown();
    EXPECT_EQ(e2.take_output(), "421 4.3.2 mx.test Service shutting down\r\n");
    EXPECT_TRUE(e2.wants_close());
}

// ------------------------------------------------------------------------------------------------
// Asynchronous backend.

TEST(SmtpEngine, PendingMailHoldsLaterCommandsAndRepliesInOrder) {
    FakeBackend be;
    be.defer = {"mail"};
    SmtpEngine e(test_config(), {}, be);
    e.take_output();
    std::string input = "EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nNOOP\r\n";
    EXPECT_EQ(e.feed(input), input.size());
    EXPECT_TRUE(e.awaiting_backend());
    EXPECT_EQ(e.pending(), SmtpEngine::Pending::Mail);
    EXPECT_EQ(e.take_output(), kEhloPlain);  // nothing for MAIL or the commands after it
    EXPECT_EQ(be.log, std::vector<std::string>{"mail <a@b.c>"});
    EXPECT_GT(e.buffered_input(), 0u);
    // More input while pending is held, not processed.
    EXPECT_EQ(e.feed("DATA\r\n"), 6u);
    EXPECT_FALSE(e.has_output());
    e.resume(std::move(be.queued.front()));
    be.queued.pop_front();
    EXPECT_EQ(e.take_output(),
              "250 2.1.0 Sender <a@b.c> OK\r\n250 2.1.5 Recipient <d@e.f> OK\r\n"
              "250 2.0.0 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    EXPECT_LT(e.buffered_input(), 8u);  // at most the last line, kept by the line reader
}

TEST(SmtpEngine, PendingDataEndResumedLater) {
    FakeBackend be;
    be.defer = {"data_end"};
    SmtpEngine e(test_config(), {}, be);
    e.feed(kTxn + "DATA\r\nhello\r\n.\r\nQUIT\r\n");
    EXPECT_EQ(e.pending(), SmtpEngine::Pending::DataEnd);
    EXPECT_EQ(after_txn(e.take_output()), "354 End data with <CR><LF>.<CR><LF>\r\n");
    EXPECT_FALSE(e.wants_close());  // QUIT is held until the message is decided
    e.resume(Reply{451, "4.3.0", "Spool busy, try later"});
    EXPECT_EQ(e.take_output(), "451 4.3.0 Spool busy, try later\r\n221 2.0.0 Bye\r\n");
    EXPECT_TRUE(e.wants_close());
    EXPECT_FALSE(e.session().transaction.has_value());
}

TEST(SmtpEngine, HeldInputIsBoundedWhilePending) {
    FakeBackend be;
    be.defer = {"mail"};
    SmtpConfig c = test_config();
    SmtpEngine e(c, {}, be);
    e.feed("EHLO x\r\nMAIL FROM:<a@b.c>\r\n");
    ASSERT_TRUE(e.awaiting_backend());
    std::string many;
    for (int i = 0; i < 2000; ++i) many += "RCPT TO:<r" + std::to_string(i) + "@b.c>\r\n";
    std::size_t took = e.feed(many);
    EXPECT_LT(took, many.size());
    EXPECT_LE(e.buffered_input(), c.limits.max_held_input + c.limits.max_command_line);
    EXPECT_EQ(e.feed(std::string_view(many).substr(took)), 0u);
    // The driver keeps the tail and feeds it after resume; every RCPT is answered once, in order.
    e.take_output();
    e.resume(Answer::accept());
    std::string rest = many.substr(took);
    while (!rest.empty()) rest.erase(0, e.feed(rest));
    std::string out = e.take_output();
    EXPECT_EQ(out.find("250 2.1.0 Sender <a@b.c> OK\r\n250 2.1.5 Recipient <r0@b.c> OK\r\n"), 0u);
    EXPECT_NE(out.find("452 4.5.3 Too many recipients\r\n"), std::string::npos);
    EXPECT_EQ(be.log.size(), 101u);
}

TEST(SmtpEngine, ResumeMisuseThrows) {
    FakeBackend be;
    SmtpEngine e(test_config(), {}, be);
    EXPECT_THROW(e.resume(Answer::accept()), std::logic_error);
    be.defer = {"mail"};
    e.feed("EHLO x\r\nMAIL FROM:<a@b.c>\r\n");
    EXPECT_THROW(e.resume(Answer::pending()), std::logic_error);
    e.connection_lost();
    EXPECT_EQ(be.resets, 1);
    e.resume(Answer::accept());  // ignored after the connection is gone
    EXPECT_FALSE(e.session().transaction.has_value());
}

TEST(SmtpEngine, BackendRepliesAreSanitized) {
    auto setup = [](FakeBackend& be) {
        be.on_mail = [](const MailRequest&) { return Answer(Reply{550, "", "no\r\n250 fake"}); };
        be.on_rcpt = [](const Address&) { return Answer(Reply{100, "1.0.0", "bogus"}); };
    };
    Result r = run("EHLO x\r\nMAIL FROM:<a@b.c>\r\n", test_config(), {}, setup);
    EXPECT_EQ(r.output, kGreeting + kEhloPlain + "550-5.0.0 no?\r\n550 5.0.0 250 fake\r\n");
    auto setup2 = [](FakeBackend& be) {
        be.on_rcpt = [](const Address&) { return Answer(Reply{100, "1.0.0", "bogus"}); };
        be.on_data_end = []() -> Answer { throw std::runtime_error("disk on fire"); };
    };
    Result r2 = run(kTxn + "DATA\r\nx\r\n.\r\n", test_config(), {}, setup2);
    EXPECT_NE(r2.output.find("451 4.3.0 Local error in processing\r\n"), std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// STARTTLS.

TEST(SmtpEngine, StartTlsDiscardsPipelinedJunk) {
    std::string junk = "MAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\nDATA\r\nevil\r\n.\r\n";
    Result r = run(std::vector<std::string>{
        "EHLO x\r\nSTARTTLS\r\n" + junk, "MAIL FROM:<a@b.c>\r\nEHLO y\r\nMAIL FROM:<a@b.c>\r\nSTARTTLS\r\n"});
    std::string ehlo_tls =
        "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n250-AUTH PLAIN LOGIN\r\n"
        "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
    EXPECT_EQ(r.output, kGreeting + kEhloPlain + "220 2.0.0 Ready to start TLS\r\n[TLS]" +
                            "503 5.5.1 Error: send EHLO/HELO first\r\n" + ehlo_tls +
                            "250 2.1.0 Sender <a@b.c> OK\r\n503 5.5.1 TLS already active\r\n");
    EXPECT_EQ(r.log, std::vector<std::string>{"mail <a@b.c>"});
}

TEST(SmtpEngine, StartTlsDiscardsJunkFedBeforeHandshake) {
    FakeBackend be;
    SmtpEngine e(test_config(), {}, be);
    e.feed("EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil1@x.y>\r\n");
    ASSERT_TRUE(e.wants_starttls());
    EXPECT_TRUE(e.take_output().ends_with("220 2.0.0 Ready to start TLS\r\n"));
    // Later reads that arrive before the handshake completes (a plaintext injector) are dropped too.
    EXPECT_EQ(e.feed("MAIL FROM:<evil2@x.y>\r\nRCPT TO:<v@x.y>\r\n"), 40u);
    EXPECT_EQ(e.feed("NOOP\r\nEH"), 8u);
    EXPECT_FALSE(e.has_output());
    EXPECT_EQ(e.buffered_input(), 0u);
    e.tls_started();
    e.feed("LO y\r\nNOOP\r\n");  // the partial "EH" before the handshake must not join this line
    EXPECT_EQ(e.take_output(), "500 5.5.2 Command unrecognized\r\n250 2.0.0 Ok\r\n");
    EXPECT_TRUE(be.log.empty());
}

TEST(SmtpEngine, StartTlsResetsSessionAndAuth) {
    FakeBackend be;
    ConnectionInfo loop{true, false};
    SmtpEngine e(test_config(), loop, be);
    e.feed("EHLO x\r\nAUTH PLAIN " + b64(std::string("\0alice\0s3cret", 13)) + "\r\nSTARTTLS\r\n");
    EXPECT_TRUE(e.wants_starttls());
    EXPECT_EQ(e.session().auth_user, std::optional<std::string>("alice"));
    e.tls_started();
    EXPECT_FALSE(e.wants_starttls());
    EXPECT_TRUE(e.session().tls_active);
    EXPECT_FALSE(e.session().auth_user.has_value());
    EXPECT_TRUE(e.session().helo.empty());
    EXPECT_THROW(e.tls_started(), std::logic_error);
}

TEST(SmtpEngine, StartTlsRefusals) {
    SmtpConfig no_tls = test_config();
    no_tls.tls_available = false;
    Result r = run("EHLO x\r\nSTARTTLS\r\nSTARTTLS now\r\n", no_tls);
    EXPECT_EQ(r.output.find("250-STARTTLS"), std::string::npos);
    EXPECT_NE(r.output.find(
                  "502 5.5.1 STARTTLS not available\r\n501 5.5.4 Syntax: STARTTLS takes no arguments\r\n"),
              std::string::npos);
    Result r2 = run(kTxn + "STARTTLS\r\n");
    EXPECT_EQ(after_txn(r2.output), "503 5.5.1 Error: MAIL transaction in progress\r\n");
}

// ------------------------------------------------------------------------------------------------
// AUTH.

TEST(SmtpEngine, AuthRefusedBeforeTlsUnlessLoopback) {
    Result r = run("EHLO x\r\nAUTH PLAIN " + b64(std::string("\0alice\0s3cret", 13)) + "\r\n");
    EXPECT_EQ(r.output, kGreeting + kEhloPlain +
                            "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
    EXPECT_TRUE(r.log.empty());
    Result loop = run("EHLO x\r\nAUTH PLAIN " + b64(std::string("\0alice\0s3cret", 13)) + "\r\n",
                      test_config(), ConnectionInfo{true, false});
    EXPECT_NE(loop.output.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
    EXPECT_NE(loop.output.find("235 2.7.0 Authentication successful\r\n"), std::string::npos);
    EXPECT_EQ(loop.log, std::vector<std::string>{"auth PLAIN [] alice s3cret"});
}

TEST(SmtpEngine, AuthMechanisms) {
    ConnectionInfo tls{false, true};
    std::string plain = b64(std::string("boss\0alice\0s3cret", 17));
    // PLAIN with initial response.
    Result ir = run("EHLO x\r\nAUTH PLAIN " + plain + "\r\nAUTH PLAIN " + plain + "\r\n", test_config(), tls);
    EXPECT_NE(
        ir.output.find("235 2.7.0 Authentication successful\r\n503 5.5.1 Error: already authenticated\r\n"),
        std::string::npos);
    EXPECT_EQ(ir.log, std::vector<std::string>{"auth PLAIN [boss] alice s3cret"});
    // PLAIN with a 334 continuation.
    Result cont = run("EHLO x\r\nAUTH plain\r\n" + plain + "\r\n", test_config(), tls);
    EXPECT_NE(cont.output.find("334 \r\n235 2.7.0 Authentication successful\r\n"), std::string::npos);
    // LOGIN, and LOGIN with the user name as initial response.
    Result login =
        run("EHLO x\r\nAUTH LOGIN\r\n" + b64("alice") + "\r\n" + b64("s3cret") + "\r\n", test_config(), tls);
    EXPECT_NE(
        login.output.find("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"),
        std::string::npos);
    Result login_ir =
        run("EHLO x\r\nAUTH LOGIN " + b64("alice") + "\r\n" + b64("s3cret") + "\r\n", test_config(), tls);
    EXPECT_NE(login_ir.output.find("334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"),
              std::string::npos);
    EXPECT_EQ(login_ir.log, std::vector<std::string>{"auth LOGIN [] alice s3cret"});
}

TEST(SmtpEngine, AuthErrors) {
    ConnectionInfo tls{false, true};
    Result r =
        run("AUTH PLAIN\r\nEHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN !!!!\r\n"
            "AUTH PLAIN\r\nnot base64\r\nAUTH CRAM-MD5\r\nAUTH PLAIN " +
                b64("no-nuls") + "\r\n",
            test_config(), tls);
    EXPECT_EQ(r.output, kGreeting + "503 5.5.1 Error: send EHLO first\r\n" +
                            "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n250-AUTH PLAIN LOGIN\r\n"
                            "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
                            "334 \r\n501 5.0.0 Authentication cancelled\r\n"
                            "334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication cancelled\r\n"
                            "501 5.5.2 Invalid base64 data\r\n"
                            "334 \r\n501 5.5.2 Invalid base64 data\r\n"
                            "504 5.5.4 Unrecognized authentication type\r\n"
                            "501 5.5.2 Invalid PLAIN authentication data\r\n");
    EXPECT_TRUE(r.log.empty());
}

TEST(SmtpEngine, AuthFailuresCloseAfterLimit) {
    ConnectionInfo tls{false, true};
    std::string bad = "AUTH PLAIN " + b64(std::string("\0alice\0wrong", 12)) + "\r\n";
    Result r = run("EHLO x\r\n" + bad + bad + bad + "NOOP\r\n", test_config(), tls);
    std::string fail = "535 5.7.8 Authentication credentials invalid\r\n";
    EXPECT_NE(r.output.find(fail + fail + fail +
                            "421 4.7.0 mx.test Error: too many authentication failures\r\n[CLOSE]"),
              std::string::npos);
    EXPECT_EQ(r.log.size(), 3u);
}

TEST(SmtpEngine, PendingAuthResumedLater) {
    FakeBackend be;
    be.defer = {"auth"};
    SmtpEngine e(test_config(), ConnectionInfo{false, true}, be);
    e.feed("EHLO x\r\nAUTH PLAIN " + b64(std::string("\0alice\0s3cret", 13)) + "\r\nMAIL FROM:<a@b.c>\r\n");
    e.take_output();
    EXPECT_EQ(e.pending(), SmtpEngine::Pending::Auth);
    EXPECT_FALSE(e.session().auth_user.has_value());
    e.resume(Answer::accept());
    EXPECT_EQ(e.take_output(), "235 2.7.0 Authentication successful\r\n250 2.1.0 Sender <a@b.c> OK\r\n");
    EXPECT_EQ(e.session().auth_user, std::optional<std::string>("alice"));
}

// ------------------------------------------------------------------------------------------------
// BDAT (CHUNKING).

TEST(SmtpEngine, BdatSingleAndMultipleChunks) {
    Result one = run(kTxn + "BDAT 5 LAST\r\nhelloNOOP\r\n");
    EXPECT_EQ(after_txn(one.output), "250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n");
    ASSERT_EQ(one.messages.size(), 1u);
    EXPECT_EQ(one.messages[0], "hello");
    Result many = run(kTxn + "BDAT 3\r\nabcBDAT 0\r\nBDAT 4\r\nd\r\neBDAT 2 last\r\nfg");
    EXPECT_EQ(after_txn(many.output),
              "250 2.0.0 3 octets received\r\n250 2.0.0 0 octets received\r\n"
              "250 2.0.0 4 octets received\r\n250 2.0.0 Ok: queued as Q1\r\n");
    ASSERT_EQ(many.messages.size(), 1u);
    EXPECT_EQ(many.messages[0], "abcd\r\nefg");
}

TEST(SmtpEngine, BdatIsBinary) {
    std::string chunk = "x\r\n.\r\nMAIL FROM:<evil@x.y>\r\n..\n\r";
    Result r = run(kTxn + "BDAT " + std::to_string(chunk.size()) + " LAST\r\n" + chunk + "NOOP\r\n");
    EXPECT_EQ(after_txn(r.output), "250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0], chunk);
    for (const auto& call : r.log) EXPECT_EQ(call.find("evil"), std::string::npos);
}

TEST(SmtpEngine, BdatZeroLast) {
    Result r = run(kTxn + "BDAT 0 LAST\r\n");
    EXPECT_EQ(after_txn(r.output), "250 2.0.0 Ok: queued as Q1\r\n");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0], "");
}

TEST(SmtpEngine, BdatAndDataDoNotMix) {
    Result r = run(kTxn + "BDAT 2\r\nabDATA\r\nBDAT 1 LAST\r\nc");
    EXPECT_EQ(after_txn(r.output),
              "250 2.0.0 2 octets received\r\n503 5.5.1 Error: DATA not allowed after BDAT\r\n"
              "250 2.0.0 Ok: queued as Q1\r\n");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0], "abc");
}

TEST(SmtpEngine, RefusedBdatStillConsumesItsChunk) {
    std::string chunk = "RSET\r\nMAIL FROM:<evil@x.y>\r\n";
    Result r = run("EHLO x\r\nBDAT " + std::to_string(chunk.size()) + "\r\n" + chunk + "BDAT x\r\nNOOP\r\n");
    EXPECT_EQ(r.output, kGreeting + kEhloPlain +
                            "503 5.5.1 Error: need MAIL command\r\n"
                            "501 5.5.4 Syntax: BDAT size [LAST]\r\n250 2.0.0 Ok\r\n");
    EXPECT_TRUE(r.log.empty());
}

TEST(SmtpEngine, BdatOverSizeFailsTransaction) {
    SmtpConfig c = test_config();
    c.limits.max_message_size = 10;
    Result r = run(kTxn + "BDAT 6\r\n123456BDAT 6 LAST\r\n123456BDAT 1 LAST\r\nxNOOP\r\n", c);
    EXPECT_EQ(after_txn(r.output),
              "250 2.0.0 6 octets received\r\n"
              "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
              "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n");
    EXPECT_TRUE(r.messages.empty());
    EXPECT_EQ(r.log.back(), "reset");
}

// ------------------------------------------------------------------------------------------------
// A long mixed conversation, as a regression transcript across all feeding strategies.

TEST(SmtpEngine, KitchenSinkSplitInvariance) {
    std::string script =
        "EHLO printer.local\r\nNOOP\r\nMAIL FROM:<scan@printer.local> SIZE=20 BODY=8BITMIME\r\n"
        "RCPT TO:<a@example.com>\r\nRCPT TO:<bad@example.com>\r\nRCPT TO:<b@example.com>\r\n"
        "DATA\r\nFrom: scan\r\n..dots\r\n\r\n\xe2\x82\xac\r\n.\r\n"
        "MAIL FROM:<>\r\nRCPT TO:<c@example.com>\r\nBDAT 7\r\n\r\n.\r\n\r\nBDAT 1 LAST\r\n.\r\n"
        "RSET\r\nVRFY x\r\nMAIL FROM:<x@y.z>\r\nRCPT TO:<bad@y.z>\r\nDATA\r\nHELP\r\nQUIT\r\n";
    Result r = run(script, test_config(), ConnectionInfo{true, false});
    if (std::getenv("GB_SMTP_DUMP")) std::fputs(r.output.c_str(), stderr);
    ASSERT_EQ(r.messages.size(), 2u);
    EXPECT_EQ(r.messages[0], "From: scan\r\n.dots\r\n\r\n\xe2\x82\xac\r\n");
    EXPECT_EQ(r.messages[1], "\r\n.\r\n\r\n.");
    EXPECT_NE(r.output.find("554 5.5.0 Error: no valid recipients\r\n214 2.0.0"), std::string::npos);
    EXPECT_TRUE(
        r.output.ends_with("250 2.1.0 Sender <x@y.z> OK\r\n550 5.7.1 Recipient <bad@y.z> rejected\r\n"
                           "554 5.5.0 Error: no valid recipients\r\n214 2.0.0 Commands: EHLO HELO MAIL RCPT "
                           "DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH\r\n221 2.0.0 Bye\r\n[CLOSE]"))
        << r.output;
}

TEST(SmtpEngine, EveryReplyCarriesAnEnhancedCodeExceptGreetingAndEhlo) {
    std::string script =
        "EHLO x\r\nMAIL FROM:<a@b.c> SIZE=1\r\nRCPT TO:<bad@b.c>\r\nRCPT TO:<ok@b.c>\r\n"
        "RCPT TO:<>\r\nDATA\r\nx\ny\r\n.\r\nVRFY a\r\nHELP\r\nEXPN a\r\nFOO\r\n"
        "MAIL FROM:<a@b.c> X=1\r\nAUTH PLAIN\r\nBDAT 1\r\nxSTARTTLS\r\n";
    Result r = run(script);
    std::size_t pos = kGreeting.size() + kEhloPlain.size(), lines = 0;
    while (pos < r.output.size()) {
        std::size_t end = r.output.find("\r\n", pos);
        ASSERT_NE(end, std::string::npos);
        std::string line = r.output.substr(pos, end - pos);
        pos = end + 2;
        ++lines;
        if (line.starts_with("354 ")) continue;  // intermediate reply, no enhanced code (RFC 2034)
        ASSERT_GE(line.size(), 10u) << line;
        EXPECT_EQ(line[4], line[0]) << line;  // class digit matches
        EXPECT_EQ(line[5], '.') << line;
    }
    EXPECT_EQ(lines, 14u) << r.output;
}

// ------------------------------------------------------------------------------------------------
// Parser units.

TEST(SmtpParser, Base64) {
    std::string out;
    EXPECT_TRUE(decode_base64("YWxpY2U=", out));
    EXPECT_EQ(out, "alice");
    EXPECT_TRUE(decode_base64("", out));
    EXPECT_EQ(out, "");
    EXPECT_FALSE(decode_base64("YWxpY2U", out));
    EXPECT_FALSE(decode_base64("YW=pY2U=", out));
    EXPECT_FALSE(decode_base64("YWxpY2V=", out));  // non-canonical trailing bits
    EXPECT_FALSE(decode_base64("YWxp Y2U=", out));
    for (const std::string& s :
         std::vector<std::string>{"", "a", "ab", "abc", std::string("\0\xff\x10", 3)}) {
        EXPECT_TRUE(decode_base64(encode_base64(s), out));
        EXPECT_EQ(out, s);
    }
}

TEST(SmtpParser, Utf8) {
    EXPECT_TRUE(is_valid_utf8("plain"));
    EXPECT_TRUE(is_valid_utf8("j\xc3\xb6rg \xe2\x82\xac \xf0\x9f\x98\x80"));
    EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong
    EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
    EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
    EXPECT_FALSE(is_valid_utf8("\xe2\x82"));          // truncated
}

TEST(SmtpParser, Paths) {
    ParsedPath p;
    EXPECT_EQ(parse_path_argument("FROM:<>", "FROM", true, p), PathError::None);
    EXPECT_TRUE(p.address.is_null());
    EXPECT_EQ(parse_path_argument("TO:<>", "TO", false, p), PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("to:<\"a\\\"b\"@c.d> X-Y=1 Z", "TO", false, p), PathError::None);
    EXPECT_EQ(p.address.local, "a\"b");
    EXPECT_EQ(p.address.to_string(), "\"a\\\"b\"@c.d");
    ASSERT_EQ(p.params.size(), 2u);
    EXPECT_EQ(p.params[0].keyword, "X-Y");
    EXPECT_EQ(p.params[0].value, "1");
    EXPECT_FALSE(p.params[1].has_value);
    EXPECT_EQ(parse_path_argument("TO:<a..b@c.d>", "TO", false, p), PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("TO:<a@-c.d>", "TO", false, p), PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("TO:<" + std::string(65, 'a') + "@c.d>", "TO", false, p),
              PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("TO:<a@c.d> K=", "TO", false, p), PathError::BadParameter);
    EXPECT_EQ(parse_path_argument("TO:<a@c.d", "TO", false, p), PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("TO <a@c.d>", "TO", false, p), PathError::Syntax);
    EXPECT_EQ(parse_path_argument("TO:<postmaster>", "TO", false, p), PathError::None);
    EXPECT_EQ(parse_path_argument("FROM:<postmaster>", "FROM", true, p), PathError::BadAddress);
    // Unicode controls and line separators, quoted or not: some parsers end a header line at them.
    EXPECT_EQ(parse_path_argument("TO:<\"x\xc2\x85X-Injected: yes\"@c.d>", "TO", false, p),
              PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("TO:<x\xe2\x80\xa8y@c.d>", "TO", false, p), PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("TO:<\"x\xe2\x80\xa9y\"@c.d>", "TO", false, p), PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("TO:<x@c\xc2\x9f.d>", "TO", false, p), PathError::BadAddress);
    EXPECT_EQ(parse_path_argument("TO:<a@c.d> X=a\xc2\x85z", "TO", false, p), PathError::BadParameter);
    EXPECT_EQ(parse_path_argument("TO:<\"j\xc3\xb6rg \xe2\x80\x94 x\"@c.d>", "TO", false, p),
              PathError::None);
}

// Graceful shutdown asks between_transactions() before saying 421: never in the middle of a command
// line, an AUTH exchange, a transaction or its DATA, or while an answer is pending.
TEST(SmtpEngine, BetweenTransactionsOnlyWhenNothingIsInProgress) {
    FakeBackend be;
    be.defer = {"data_end"};
    SmtpEngine e(test_config(), ConnectionInfo{true, false}, be);
    e.take_output();
    EXPECT_TRUE(e.between_transactions());  // just greeted
    e.feed("EHLO client.te");
    EXPECT_FALSE(e.between_transactions());  // half a command line
    e.feed("st\r\n");
    EXPECT_TRUE(e.between_transactions());
    e.feed("AUTH LOGIN\r\n");
    EXPECT_FALSE(e.between_transactions());  // waiting for the user name
    e.feed("*\r\n");                          // cancelled
    EXPECT_TRUE(e.between_transactions());
    e.feed("MAIL FROM:<a@example.com>\r\n");
    EXPECT_FALSE(e.between_transactions());  // a transaction
    e.feed("RCPT TO:<b@example.com>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n");
    EXPECT_FALSE(e.between_transactions());  // in DATA
    e.feed(".\r\n");
    ASSERT_TRUE(e.awaiting_backend());
    EXPECT_FALSE(e.between_transactions());  // the message is being made durable
    e.resume(Answer(Reply{250, "2.0.0", "Ok: queued as Q1"}));
    EXPECT_TRUE(e.between_transactions());   // answered: now 421 cuts nothing off
    e.take_output();
    e.shutdown();
    EXPECT_EQ(e.take_output().substr(0, 9), "421 4.3.2");
    EXPECT_TRUE(e.wants_close());
    EXPECT_FALSE(e.between_transactions());
}
