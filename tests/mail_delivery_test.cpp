// Delivery through Graph against the sandbox tenant over HTTPS: sendMail with envelope-only Bcc, the
// split-transaction (exact recipients) path, a 25 MB attachment through an upload session, a
// quoted-printable body, throttling, ErrorSendAsDenied and a bounce stored in the sender's Inbox.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <random>

#include "auth/crypto.h"
#include "graph/http/graph_client.h"
#include "graph/mail/bounce.h"
#include "graph/mail/deliverer.h"
#include "graph/mail/gmime_support.h"
#include "graph/mail/prepare.h"
#include "tests/support/graph_access.h"
#include "tests/support/test_sandbox.h"

using namespace gb;
using namespace gb::mail;

namespace {

class MailDeliveryTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        sb_ = new test::TestSandbox("mail");
        access_ = new test::GraphAccess(*sb_);
    }
    static void TearDownTestSuite() {
        delete access_;
        delete sb_;
    }
    void TearDown() override { sb_->server().clear_faults(); }

    static Envelope env(std::vector<std::string> rcpts) {
        return Envelope{"scanner@sandbox.test", "scanner@sandbox.test", std::move(rcpts)};
    }

    static DeliveryResult send(const std::string& mime, const Envelope& e, PreparePolicy pol = {}) {
        auto p = prepare(mime, e, pol);
        EXPECT_TRUE(p.ok()) << p.error->message;
        Deliverer d(access_->graph, access_->client);
        return d.deliver(p);
    }

    // Ids of the messages in a mailbox's Inbox whose subject is `subject`.
    static std::vector<std::string> inbox_ids(const std::string& mailbox, const std::string& subject) {
        http::Request r;
        r.url = "/v1.0/users/" + mailbox + "/mailFolders/inbox/messages?$select=id,subject&$top=500";
        auto res = access_->graph.call(r);
        EXPECT_EQ(res.response.status, 200) << res.response.body;
        rapidjson::Document d;
        d.Parse(res.response.body.c_str());
        std::vector<std::string> ids;
        if (!d.IsObject() || !d.HasMember("value")) return ids;
        for (const auto& m : d["value"].GetArray())
            if (m.HasMember("subject") && m["subject"].IsString() && subject == m["subject"].GetString())
                ids.emplace_back(m["id"].GetString());
        return ids;
    }

    static std::string mime_of(const std::string& mailbox, const std::string& id) {
        http::Request r;
        r.url = "/v1.0/users/" + mailbox + "/messages/" + url_encode_id(id) + "/$value";
        r.timeout_ms = 120000;
        auto res = access_->graph.call(r);
        EXPECT_EQ(res.response.status, 200) << res.response.body.substr(0, 300);
        return res.response.body;
    }
    static std::string url_encode_id(const std::string& id) {
        std::string out;
        for (unsigned char c : id) {
            if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
                out.push_back(static_cast<char>(c));
            } else {
                char buf[4];
                std::snprintf(buf, sizeof buf, "%%%02X", c);
                out += buf;
            }
        }
        return out;
    }
    static std::string header_block(const std::string& m) { return m.substr(0, m.find("\r\n\r\n")); }

    static test::TestSandbox* sb_;
    static test::GraphAccess* access_;
};
test::TestSandbox* MailDeliveryTest::sb_;
test::GraphAccess* MailDeliveryTest::access_;

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng() & 0xff);
    return s;
}

}  // namespace

TEST_F(MailDeliveryTest, SmallMessageReachesToCcAndEnvelopeBccWithoutVisibleBcc) {
    std::string m =
        "From: Scanner <scanner@sandbox.test>\r\nTo: Bob <bob@sandbox.test>\r\n"
        "Cc: alice@sandbox.test\r\nSubject: t-small\r\n\r\nhello\r\n";
    auto r = send(m, env({"bob@sandbox.test", "alice@sandbox.test", "scanner@sandbox.test"}));
    ASSERT_TRUE(r.delivered()) << r.detail;
    EXPECT_EQ(r.step, "sendMail");
    EXPECT_EQ(r.request_ids.size(), 1u);
    for (const char* mb : {"bob@sandbox.test", "alice@sandbox.test", "scanner@sandbox.test"}) {
        auto ids = inbox_ids(mb, "t-small");
        ASSERT_EQ(ids.size(), 1u) << mb;
        auto copy = mime_of(mb, ids[0]);
        EXPECT_EQ(header_block(copy).find("Bcc:"), std::string::npos) << mb << "\n" << copy;
        EXPECT_NE(copy.find("\r\n\r\nhello\r\n"), std::string::npos);
    }
}

TEST_F(MailDeliveryTest, SplitTransactionOnlyReachesTheEnvelope) {
    std::string m =
        "From: scanner@sandbox.test\r\nTo: Bob <bob@sandbox.test>, Alice <alice@sandbox.test>\r\n"
        "Subject: t-split\r\n\r\nfor bob only\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p.mode, Mode::ExactRecipients);
    Deliverer d(access_->graph, access_->client);
    auto r = d.deliver(p);
    ASSERT_TRUE(r.delivered()) << r.detail;
    EXPECT_EQ(r.request_ids.size(), 3u);  // create draft, patch, send
    EXPECT_EQ(inbox_ids("bob@sandbox.test", "t-split").size(), 1u);
    EXPECT_EQ(inbox_ids("alice@sandbox.test", "t-split").size(), 0u);
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), 0u);
}

TEST_F(MailDeliveryTest, QuotedPrintableBodyArrivesIntact) {
    std::string body =
        "Das ist eine sehr lange Zeile mit Umlauten: f=C3=BCr, gr=C3=B6=C3=9Fer und so w=\r\n"
        "eiter, damit ein weicher Zeilenumbruch n=C3=B6tig ist; Gleichheitszeichen =3D ok.=\r\n"
        "\r\n"
        "Trailing space=20\r\n";
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: t-qp\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
        body;
    auto r = send(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(r.delivered()) << r.detail;
    auto ids = inbox_ids("bob@sandbox.test", "t-qp");
    ASSERT_EQ(ids.size(), 1u);
    auto copy = mime_of("bob@sandbox.test", ids[0]);
    ASSERT_GE(copy.size(), body.size());
    EXPECT_EQ(copy.substr(copy.size() - body.size()), body);
    auto parts = decode_parts(copy);
    ASSERT_TRUE(parts);
    ASSERT_EQ(parts->size(), 1u);
    EXPECT_EQ((*parts)[0].bytes,
              "Das ist eine sehr lange Zeile mit Umlauten: f\xC3\xBCr, gr\xC3\xB6\xC3\x9F"
              "er und so weiter, damit ein "
              "weicher Zeilenumbruch n\xC3\xB6tig ist; Gleichheitszeichen = ok.\r\nTrailing space \r\n");
}

TEST_F(MailDeliveryTest, TwentyFiveMegabyteAttachmentGoesThroughAnUploadSession) {
    std::string pdf = "%PDF-1.7\n" + random_bytes(25 * 1024 * 1024, 99);
    std::string b64 = auth::base64_encode(pdf), lines;
    for (std::size_t i = 0; i < b64.size(); i += 76) lines += b64.substr(i, 76) + "\r\n";
    std::string small = random_bytes(100'000, 5);
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: t-large\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n"
        "--zz\r\nContent-Type: text/plain\r\n\r\nThe scan.\r\n"
        "--zz\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"scan.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" +
        lines +
        "--zz\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename=\"small.bin\"\r\nContent-Transfer-Encoding: "
        "base64\r\n\r\n" +
        auth::base64_encode(small) + "\r\n--zz--\r\n";
    PreparePolicy pol;
    pol.max_request_body = 100'000;  // small enough that small.bin is detached too (plain POST path)
    auto p = prepare(m, env({"bob@sandbox.test", "alice@sandbox.test"}), pol);
    ASSERT_TRUE(p.ok()) << p.error->message;
    ASSERT_EQ(p.mode, Mode::Large);
    ASSERT_EQ(p.attachments.size(), 2u);
    Deliverer d(access_->graph, access_->client);
    auto r = d.deliver(p);
    ASSERT_TRUE(r.delivered()) << r.detail;
    // create + small POST + session + ceil(25 MiB / 3200 KiB) = 9 PUTs + send
    EXPECT_GE(r.request_ids.size(), 4u);
    for (const char* mb : {"bob@sandbox.test", "alice@sandbox.test"}) {
        auto ids = inbox_ids(mb, "t-large");
        ASSERT_EQ(ids.size(), 1u) << mb;
        auto copy = mime_of(mb, ids[0]);
        EXPECT_EQ(header_block(copy).find("Bcc:"), std::string::npos);
        auto parts = decode_parts(copy);
        ASSERT_TRUE(parts);
        const DecodedPart* got = nullptr;
        const DecodedPart* got_small = nullptr;
        for (const auto& part : *parts) {
            if (part.filename == "scan.pdf") got = &part;
            if (part.filename == "small.bin") got_small = &part;
        }
        ASSERT_NE(got, nullptr);
        ASSERT_NE(got_small, nullptr);
        EXPECT_EQ(got->content_type, "application/pdf");
        EXPECT_EQ(auth::hex_lower(auth::sha256(got->bytes)), auth::hex_lower(auth::sha256(pdf)));
        EXPECT_TRUE(got_small->bytes == small);
    }
}

TEST_F(MailDeliveryTest, ThrottlingIsTransientWithRetryAfter) {
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.status = 429;
    f.retry_after = 7;
    sb_->server().inject(f, 1);
    auto r = send("From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: t-429\r\n\r\nx\r\n",
                  env({"bob@sandbox.test"}));
    EXPECT_EQ(r.outcome, Outcome::Transient);
    EXPECT_EQ(r.http_status, 429);
    ASSERT_TRUE(r.retry_after);
    EXPECT_EQ(*r.retry_after, 7);
    EXPECT_EQ(r.enhanced_status().front(), '4');
}

TEST_F(MailDeliveryTest, FailureBeforeTheDraftExistsIsTransient) {
    auto drafts_before = sb_->server().graph().count_messages("scanner@sandbox.test", "drafts");
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test, alice@sandbox.test\r\nSubject: "
        "t-503\r\n\r\nx\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_EQ(p.mode, Mode::ExactRecipients);
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.status = 503;
    sb_->server().inject(f, 1);
    Deliverer d(access_->graph, access_->client);
    auto r = d.deliver(p);
    EXPECT_EQ(r.outcome, Outcome::Transient);
    EXPECT_EQ(r.step, "create draft");
    EXPECT_FALSE(r.retry_after);
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), drafts_before);
}

TEST_F(MailDeliveryTest, FailureAfterTheDraftExistsDeletesTheDraft) {
    auto drafts_before = sb_->server().graph().count_messages("scanner@sandbox.test", "drafts");
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test, alice@sandbox.test\r\nSubject: "
        "t-patch\r\n\r\nx\r\n";
    // "broken@" passes the envelope check but Graph refuses it in the PATCH (ErrorInvalidRecipients).
    auto p = prepare(m, env({"bob@sandbox.test", "broken@"}));
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p.mode, Mode::ExactRecipients);
    Deliverer d(access_->graph, access_->client);
    auto r = d.deliver(p);
    EXPECT_EQ(r.outcome, Outcome::Permanent) << r.detail;
    EXPECT_EQ(r.step, "patch recipients");
    EXPECT_EQ(r.graph_code, "ErrorInvalidRecipients");
    EXPECT_EQ(r.enhanced_status(), "5.1.1");
    EXPECT_TRUE(r.draft_deleted);
    EXPECT_EQ(r.request_ids.size(), 3u);  // create, patch, delete
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), drafts_before);
    EXPECT_TRUE(inbox_ids("bob@sandbox.test", "t-patch").empty());
}

TEST_F(MailDeliveryTest, SendAsDeniedIsPermanentAndBounces) {
    PreparePolicy keep;
    keep.from_policy = FromPolicy::Keep;
    std::string m =
        "From: ERP <erp@vendor.test>\r\nTo: bob@sandbox.test\r\nSubject: t-sendas\r\n\r\ninvoice\r\n";
    auto r = send(m, env({"bob@sandbox.test"}), keep);
    ASSERT_EQ(r.outcome, Outcome::Permanent) << r.detail;
    EXPECT_EQ(r.http_status, 403);
    EXPECT_EQ(r.graph_code, "ErrorSendAsDenied");
    EXPECT_FALSE(r.graph_message.empty());
    EXPECT_FALSE(r.request_id.empty());
    EXPECT_EQ(r.enhanced_status(), "5.7.1");
    EXPECT_TRUE(inbox_ids("bob@sandbox.test", "t-sendas").empty());

    BounceInfo b;
    b.reporting_mta = "bridge.sandbox.test";
    b.notify = "scanner@sandbox.test";
    b.recipients = {"bob@sandbox.test"};
    b.status = r.enhanced_status();
    b.reason = "Microsoft Graph refused to send as the From address.";
    b.http_status = r.http_status;
    b.graph_code = r.graph_code;
    b.graph_message = r.graph_message;
    b.request_id = r.request_id;
    b.original = m;
    Deliverer d(access_->graph, access_->client);
    auto stored = d.store_in_inbox("scanner@sandbox.test", make_bounce(b));
    ASSERT_TRUE(stored.delivered()) << stored.detail;
    auto ids = inbox_ids("scanner@sandbox.test", "Undeliverable: t-sendas");
    ASSERT_EQ(ids.size(), 1u);
    auto copy = mime_of("scanner@sandbox.test", ids[0]);
    EXPECT_NE(copy.find("report-type=delivery-status"), std::string::npos);
    EXPECT_NE(copy.find("ErrorSendAsDenied"), std::string::npos);
    EXPECT_NE(copy.find(r.request_id), std::string::npos);
}

TEST_F(MailDeliveryTest, UnknownMailboxIsPermanent) {
    auto p = prepare("From: nobody@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: t-404\r\n\r\nx\r\n",
                     Envelope{"nobody@sandbox.test", "", {"bob@sandbox.test"}});
    ASSERT_TRUE(p.ok());
    Deliverer d(access_->graph, access_->client);
    auto r = d.deliver(p);
    EXPECT_EQ(r.outcome, Outcome::Permanent) << r.detail;
    EXPECT_EQ(r.http_status, 404);
}

TEST_F(MailDeliveryTest, LostAnswerToSendIsCheckedNotResent) {
    // Exchange sent the draft, but the 202 never arrived (a 503 instead): the deliverer looks at the draft
    // and reports delivered, so the queue does not send it a second time.
    auto drafts_before = sb_->server().graph().count_messages("scanner@sandbox.test", "drafts");
    auto faults_before = sb_->server().stats().faults_injected;
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.status = 503;
    f.path_suffix = "/send";
    f.after = true;
    sb_->server().inject(f, 1);
    std::string m = "From: scanner@sandbox.test\r\nTo: bob@sandbox.test, alice@sandbox.test\r\nSubject: "
                    "t-lost-202\r\n\r\nx\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));  // header-only alice: draft + PATCH + send
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p.mode, Mode::ExactRecipients);
    Deliverer d(access_->graph, access_->client);
    auto r = d.deliver(p);
    EXPECT_EQ(r.outcome, Outcome::Delivered) << r.detail;
    EXPECT_NE(r.detail.find("sent despite"), std::string::npos) << r.detail;
    EXPECT_EQ(inbox_ids("bob@sandbox.test", "t-lost-202").size(), 1u);
    EXPECT_TRUE(inbox_ids("alice@sandbox.test", "t-lost-202").empty());
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), drafts_before);
    EXPECT_EQ(sb_->server().stats().faults_injected, faults_before + 1);  // only the /send answer was lost

    // The send itself failed (the fault hits before it is carried out): still a draft, so it is deleted
    // and the attempt is transient; the retry sends exactly once.
    f.after = false;
    sb_->server().inject(f, 1);
    std::string m2 = "From: scanner@sandbox.test\r\nTo: bob@sandbox.test, alice@sandbox.test\r\nSubject: "
                     "t-send-503\r\n\r\nx\r\n";
    auto p2 = prepare(m2, env({"bob@sandbox.test"}));
    auto r2 = d.deliver(p2);
    EXPECT_EQ(r2.outcome, Outcome::Transient) << r2.detail;
    EXPECT_TRUE(r2.draft_deleted);
    EXPECT_TRUE(inbox_ids("bob@sandbox.test", "t-send-503").empty());
    auto r3 = d.deliver(p2);
    EXPECT_EQ(r3.outcome, Outcome::Delivered) << r3.detail;
    EXPECT_EQ(inbox_ids("bob@sandbox.test", "t-send-503").size(), 1u);
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), drafts_before);
}

TEST_F(MailDeliveryTest, AfterACrashTheInterruptedAttemptsDraftIsDeletedOrRecognisedAsSent) {
    // A crash right after the draft was made (its id recorded, the attachments never uploaded): the next
    // attempt deletes that orphan and delivers once. Simulated by a `created` hook that throws, as the
    // process would have died there: nothing after it runs, nothing is cleaned up.
    auto drafts_before = sb_->server().graph().count_messages("scanner@sandbox.test", "drafts");
    std::string m = "From: scanner@sandbox.test\r\nTo: bob@sandbox.test, alice@sandbox.test\r\nSubject: "
                    "t-crash-draft\r\n\r\nx\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));  // draft + PATCH + send
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p.mode, Mode::ExactRecipients);
    Deliverer d(access_->graph, access_->client);
    std::string recorded;
    Deliverer::Drafts crash;
    crash.created = [&](const std::string& id) {
        recorded = id;
        throw std::runtime_error("killed");
    };
    EXPECT_THROW(d.deliver(p, &crash), std::runtime_error);
    ASSERT_FALSE(recorded.empty());
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), drafts_before + 1);
    Deliverer::Drafts again;
    again.previous = recorded;
    std::string second;
    again.created = [&](const std::string& id) { second = id; };
    auto r = d.deliver(p, &again);
    EXPECT_EQ(r.outcome, Outcome::Delivered) << r.detail;
    EXPECT_FALSE(second.empty());
    EXPECT_NE(second, recorded);
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), drafts_before)
        << "the orphaned draft is gone";
    EXPECT_EQ(inbox_ids("bob@sandbox.test", "t-crash-draft").size(), 1u);

    // A crash after the send went out but before the queue recorded it: the retry finds the draft sent
    // (immutable ids: the same id now names the Sent Items copy) and sends nothing.
    auto again2 = Deliverer::Drafts{second, {}};
    auto requests_before = sb_->server().stats().graph_requests;
    auto r2 = d.deliver(p, &again2);
    EXPECT_EQ(r2.outcome, Outcome::Delivered) << r2.detail;
    EXPECT_NE(r2.detail.find("earlier, interrupted attempt"), std::string::npos) << r2.detail;
    EXPECT_EQ(sb_->server().stats().graph_requests, requests_before + 1);  // one GET, no new draft, no send
    EXPECT_EQ(inbox_ids("bob@sandbox.test", "t-crash-draft").size(), 1u) << "not delivered twice";

    // The recorded draft is gone altogether (deleted by someone): start over, deliver once more.
    auto gone = Deliverer::Drafts{"AAMkAGdvbmUtZm9yLWdvb2Q=", {}};
    auto p3 = prepare("From: scanner@sandbox.test\r\nTo: bob@sandbox.test, alice@sandbox.test\r\nSubject: "
                      "t-crash-gone\r\n\r\nx\r\n", env({"bob@sandbox.test"}));
    auto r3 = d.deliver(p3, &gone);
    EXPECT_EQ(r3.outcome, Outcome::Delivered) << r3.detail;
    EXPECT_EQ(inbox_ids("bob@sandbox.test", "t-crash-gone").size(), 1u);
}

TEST_F(MailDeliveryTest, ADraftWhoseCreateAnswerWasLostIsFoundByMessageIdAndDeleted) {
    // The create request was carried out but its answer was lost (a gateway timeout after the fact; the
    // same as a crash while it was in flight): the draft's id is unknown. The message's Message-ID is the same
    // on the next attempt (made from a seed), so that attempt finds the orphan in Drafts and deletes it.
    auto drafts_before = sb_->server().graph().count_messages("scanner@sandbox.test", "drafts");
    std::string m = "From: scanner@sandbox.test\r\nTo: bob@sandbox.test, alice@sandbox.test\r\nSubject: "
                    "t-lost-create\r\n\r\nx\r\n";
    PreparePolicy pol;
    pol.message_id_seed = "host/Q-lost-create/1700000000";
    auto p = prepare(m, env({"bob@sandbox.test"}), pol);
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p.mode, Mode::ExactRecipients);
    ASSERT_FALSE(p.message_id.empty());
    EXPECT_EQ(prepare(m, env({"bob@sandbox.test"}), pol).message_id, p.message_id) << "stable across attempts";
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.kind = sandbox::Fault::Kind::Status;
    f.status = 504;
    f.after = true;
    f.path_suffix = "/messages";
    sb_->server().inject(f, 1);
    Deliverer d(access_->graph, access_->client);
    Deliverer::Drafts first;
    bool told = false;
    first.created = [&](const std::string&) { told = true; };
    auto r1 = d.deliver(p, &first);
    EXPECT_EQ(r1.outcome, Outcome::Transient) << r1.detail;
    EXPECT_FALSE(told) << "the id never reached the bridge";
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), drafts_before + 1);

    // Without the check the orphan would stay; with it (a retry, or a message recovered after a crash)
    // it is deleted and the message sent once.
    Deliverer::Drafts retry;
    retry.check_orphans = true;
    auto r2 = d.deliver(prepare(m, env({"bob@sandbox.test"}), pol), &retry);
    EXPECT_EQ(r2.outcome, Outcome::Delivered) << r2.detail;
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "drafts"), drafts_before)
        << "the orphan is gone";
    EXPECT_EQ(inbox_ids("bob@sandbox.test", "t-lost-create").size(), 1u);

    // A sent copy with the same Message-ID is never touched (only drafts are deleted): a later retry of
    // the same message looks, finds no draft, and the Sent Items copy stays.
    auto sent_before = sb_->server().graph().count_messages("scanner@sandbox.test", "sentitems");
    Deliverer::Drafts again;
    again.check_orphans = true;
    auto r3 = d.deliver(prepare(m, env({"bob@sandbox.test"}), pol), &again);
    EXPECT_EQ(r3.outcome, Outcome::Delivered) << r3.detail;
    EXPECT_EQ(sb_->server().graph().count_messages("scanner@sandbox.test", "sentitems"), sent_before + 1);
}
