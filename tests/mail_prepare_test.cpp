// prepare() and make_bounce(): envelope reconciliation, printer quirks, From policy, the Large split and
// hostile input. Pure unit tests: no sockets.
#include <gtest/gtest.h>

#include <random>

#include "auth/crypto.h"
#include "graph/mail/bounce.h"
#include "graph/mail/gmime_support.h"
#include "graph/mail/prepare.h"

using namespace gb::mail;

namespace {

Envelope env(std::vector<std::string> rcpts, std::string mailbox = "scanner@sandbox.test") {
    Envelope e;
    e.mailbox = std::move(mailbox);
    e.reverse_path = e.mailbox;
    e.recipients = std::move(rcpts);
    return e;
}

// The root header block of a message (up to the empty line).
std::string headers_of(const std::string& m) {
    auto p = m.find("\r\n\r\n");
    if (p == std::string::npos) p = m.find("\n\n");
    return m.substr(0, p);
}
std::string body_of(const std::string& m) {
    auto p = m.find("\r\n\r\n");
    if (p != std::string::npos) return m.substr(p + 4);
    p = m.find("\n\n");
    return p == std::string::npos ? std::string() : m.substr(p + 2);
}
std::size_t count(const std::string& hay, const std::string& needle) {
    std::size_t n = 0;
    for (auto p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
    return n;
}

const std::string kSimple =
    "From: Scanner <scanner@sandbox.test>\r\n"
    "To: Bob <bob@sandbox.test>\r\n"
    "Subject: scan\r\n"
    "Date: Tue, 01 Jul 2025 10:00:00 +0000\r\n"
    "Message-ID: <abc@sandbox.test>\r\n"
    "\r\n"
    "hello\r\n";

const std::string kMultipart =
    "From: scanner@sandbox.test\r\n"
    "To: bob@sandbox.test\r\n"
    "Subject: nested\r\n"
    "Date: Tue, 01 Jul 2025 10:00:00 +0000\r\n"
    "Message-ID: <n@sandbox.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    "\r\n"
    "preamble\r\n"
    "--outer\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "A long line that is soft broken here =\r\n"
    "and continues, caf=C3=A9 =3D done.\r\n"
    "--outer\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "From: someone@else.test\r\n"
    "To: nested@else.test\r\n"
    "Subject: inner\r\n"
    "\r\n"
    "inner body\r\n"
    "--outer--\r\n";

}  // namespace

TEST(MailPrepare, EnvelopeOnlyRecipientBecomesBccOnTheRootOnly) {
    auto p = prepare(kMultipart, env({"bob@sandbox.test", "alice@sandbox.test"}));
    ASSERT_TRUE(p.ok()) << p.error->message;
    EXPECT_EQ(p.mode, Mode::Mime);
    EXPECT_FALSE(p.patch_recipients);
    EXPECT_NE(headers_of(p.mime).find("\r\nBcc: alice@sandbox.test"), std::string::npos) << p.mime;
    EXPECT_EQ(count(p.mime, "Bcc:"), 1u);
    // Everything after the root header block is byte-identical (QP soft breaks, nested message).
    EXPECT_EQ(body_of(p.mime), body_of(kMultipart));
    // Only the root block changed: the original field lines are all still there, in order.
    EXPECT_EQ(p.mime.find(headers_of(kMultipart)), 0u);
}

TEST(MailPrepare, MatchingEnvelopeLeavesTheMessageAlone) {
    auto p = prepare(kSimple, env({"BOB@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.mode, Mode::Mime);
    EXPECT_EQ(p.mime, kSimple);
    EXPECT_TRUE(p.notes.empty());
}

TEST(MailPrepare, ExistingBccIsExtendedNotDuplicated) {
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nBcc: alice@sandbox.test\r\n"
        "Date: x\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n";
    auto p = prepare(m, env({"bob@sandbox.test", "alice@sandbox.test", "carol@other.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(count(p.mime, "Bcc:"), 1u);
    EXPECT_NE(p.mime.find("Bcc: alice@sandbox.test, carol@other.test\r\n"), std::string::npos) << p.mime;
}

TEST(MailPrepare, ManyEnvelopeRecipientsAreFolded) {
    std::vector<std::string> r{"bob@sandbox.test"};
    for (int i = 0; i < 40; ++i) r.push_back("user" + std::to_string(i) + "@example.test");
    auto p = prepare(kSimple, env(r));
    ASSERT_TRUE(p.ok());
    for (auto line_start = std::size_t{0}; line_start < p.mime.size();) {
        auto e = p.mime.find("\r\n", line_start);
        ASSERT_NE(e, std::string::npos);
        EXPECT_LE(e - line_start, 78u);
        line_start = e + 2;
    }
    auto bcc = parse_address_list(headers_of(p.mime).substr(headers_of(p.mime).find("Bcc:") + 4));
    ASSERT_TRUE(bcc);
    EXPECT_EQ(bcc->size(), 40u);
}

TEST(MailPrepare, HeaderRecipientOutsideTheEnvelopeNeedsExactRecipients) {
    std::string m =
        "From: scanner@sandbox.test\r\nTo: Bob <bob@sandbox.test>, Alice <alice@sandbox.test>\r\n"
        "Cc: Carol <carol@sandbox.test>\r\nDate: x\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n";
    auto p = prepare(m, env({"bob@sandbox.test", "carol@sandbox.test", "dave@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.mode, Mode::ExactRecipients);
    EXPECT_TRUE(p.patch_recipients);
    EXPECT_EQ(p.to, (std::vector<Address>{{"Bob", "bob@sandbox.test"}}));
    EXPECT_EQ(p.cc, (std::vector<Address>{{"Carol", "carol@sandbox.test"}}));
    EXPECT_EQ(p.bcc, (std::vector<Address>{{"", "dave@sandbox.test"}}));
}

TEST(MailPrepare, ExactListsAlsoFilledForPlainMime) {
    auto p = prepare(kSimple, env({"bob@sandbox.test", "x@y.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.to, (std::vector<Address>{{"Bob", "bob@sandbox.test"}}));
    EXPECT_EQ(p.bcc, (std::vector<Address>{{"", "x@y.test"}}));
}

TEST(MailPrepare, AtSignInFromDisplayNameIsDropped) {
    std::string m =
        "From: scanner@sandbox.test <scanner@sandbox.test>\r\nTo: bob@sandbox.test\r\n"
        "Date: x\r\nMessage-ID: <1@x>\r\n\r\nscan\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_NE(p.mime.find("From: <scanner@sandbox.test>\r\n"), std::string::npos) << p.mime;
    EXPECT_EQ(count(p.mime, "From:"), 1u);
}

TEST(MailPrepare, AtSignInAHumanDisplayNameIsQuoted) {
    std::string m =
        "From: Scanner @ floor 3 <scanner@sandbox.test>\r\nTo: bob@sandbox.test\r\n"
        "Date: x\r\nMessage-ID: <1@x>\r\n\r\nscan\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    auto from = headers_of(p.mime).substr(headers_of(p.mime).find("From:"));
    from = from.substr(0, from.find("\r\n"));
    EXPECT_NE(from.find("\"Scanner @ floor 3\" <scanner@sandbox.test>"), std::string::npos) << from;
}

TEST(MailPrepare, MissingFromDateAndMessageIdAreAdded) {
    std::string m = "To: bob@sandbox.test\r\nSubject: scan\r\n\r\nscan\r\n";
    PreparePolicy pol;
    pol.now = 1751364000;  // 2025-07-01 10:00:00Z
    auto p = prepare(m, env({"bob@sandbox.test"}), pol);
    ASSERT_TRUE(p.ok());
    auto h = headers_of(p.mime);
    EXPECT_NE(h.find("From: <scanner@sandbox.test>"), std::string::npos);
    EXPECT_NE(h.find("Date: Tue, 01 Jul 2025 10:00:00 +0000"), std::string::npos) << h;
    EXPECT_NE(h.find("Message-ID: <"), std::string::npos);
    EXPECT_NE(h.find("@sandbox.test>"), std::string::npos);
    EXPECT_EQ(body_of(p.mime), "scan\r\n");
}

TEST(MailPrepare, MadeMessageIdFollowsTheSeedAndAClientsOneIsReported) {
    std::string m = "From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: s\r\n\r\nx\r\n";
    PreparePolicy a, b;
    a.message_id_seed = "host/Q1/1751364000";
    b.message_id_seed = "host/Q2/1751364000";
    auto p1 = prepare(m, env({"bob@sandbox.test"}), a);
    auto p2 = prepare(m, env({"bob@sandbox.test"}), a);
    auto p3 = prepare(m, env({"bob@sandbox.test"}), b);
    auto random1 = prepare(m, env({"bob@sandbox.test"}));
    auto random2 = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p1.ok() && p3.ok() && random1.ok());
    EXPECT_EQ(p1.message_id, p2.message_id);  // every attempt of one message
    EXPECT_NE(p1.message_id, p3.message_id);  // another message
    EXPECT_NE(random1.message_id, random2.message_id);
    EXPECT_EQ(p1.message_id.front(), '<');
    EXPECT_NE(p1.message_id.find("@sandbox.test>"), std::string::npos) << p1.message_id;
    EXPECT_NE(headers_of(p1.mime).find("Message-ID: " + p1.message_id), std::string::npos) << headers_of(p1.mime);
    // The client's own, unfolded and trimmed; one unusable for a lookup is not reported.
    auto own = prepare("Message-ID:\r\n  <abc.1@client.example>  \r\n" + m, env({"bob@sandbox.test"}), a);
    EXPECT_EQ(own.message_id, "<abc.1@client.example>");
    EXPECT_TRUE(p1.message_id_made);
    EXPECT_FALSE(random1.message_id_made);  // no seed: not this queue entry's for sure
    EXPECT_FALSE(own.message_id_made);      // the client's: another entry or a user's draft may share it
    auto odd = prepare("Message-ID: not an id\r\n" + m, env({"bob@sandbox.test"}), a);
    EXPECT_EQ(odd.message_id, "");
}

TEST(MailPrepare, UndisclosedRecipientsGroupIsDroppedAndEnvelopeGoesToBcc) {
    std::string m =
        "From: scanner@sandbox.test\r\nTo: Undisclosed recipients:;\r\nDate: x\r\n"
        "Message-ID: <1@x>\r\n\r\nscan\r\n";
    auto p = prepare(m, env({"bob@sandbox.test", "alice@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.mode, Mode::Mime);
    EXPECT_EQ(p.mime.find("To:"), std::string::npos) << p.mime;
    EXPECT_NE(p.mime.find("Bcc: bob@sandbox.test, alice@sandbox.test\r\n"), std::string::npos) << p.mime;
}

TEST(MailPrepare, NoToAtAllRelyOnBcc) {
    std::string m = "From: scanner@sandbox.test\r\nSubject: s\r\n\r\nscan\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_NE(p.mime.find("Bcc: bob@sandbox.test\r\n"), std::string::npos);
}

TEST(MailPrepare, NoHeadersAtAll) {
    auto p = prepare("just a body line\r\n", env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.mime.rfind("From: <scanner@sandbox.test>\r\n", 0), 0u);
    EXPECT_EQ(body_of(p.mime), "just a body line\r\n");
    auto q = prepare("", env({"bob@sandbox.test"}));
    ASSERT_TRUE(q.ok());
    EXPECT_NE(q.mime.find("\r\n\r\n"), std::string::npos);
}

TEST(MailPrepare, LfOnlyMessagesKeepLf) {
    std::string m = "From: scanner@sandbox.test\nTo: bob@sandbox.test\nSubject: lf\n\nline\n";
    auto p = prepare(m, env({"bob@sandbox.test", "alice@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.mime.find('\r'), std::string::npos);
    EXPECT_NE(p.mime.find("\nBcc: alice@sandbox.test\n"), std::string::npos);
    EXPECT_EQ(body_of(p.mime), "line\n");
}

TEST(MailPrepare, ForeignFromRewriteKeepsItAsReplyTo) {
    std::string m =
        "From: ERP System <erp@vendor.test>\r\nTo: bob@sandbox.test\r\nSender: erp@vendor.test\r\n"
        "Date: x\r\nMessage-ID: <1@x>\r\n\r\ninvoice\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    auto h = headers_of(p.mime);
    EXPECT_NE(h.find("From: ERP System <scanner@sandbox.test>"), std::string::npos) << h;
    EXPECT_NE(h.find("Reply-To: ERP System <erp@vendor.test>"), std::string::npos) << h;
    EXPECT_EQ(h.find("Sender:"), std::string::npos);
}

TEST(MailPrepare, ForeignFromRewriteKeepsAnExistingReplyTo) {
    std::string m =
        "From: erp@vendor.test\r\nReply-To: desk@vendor.test\r\nTo: bob@sandbox.test\r\n"
        "Date: x\r\nMessage-ID: <1@x>\r\n\r\ninvoice\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(count(p.mime, "Reply-To:"), 1u);
    EXPECT_NE(p.mime.find("Reply-To: desk@vendor.test"), std::string::npos);
}

TEST(MailPrepare, ForeignFromRejectAndKeep) {
    std::string m =
        "From: erp@vendor.test\r\nTo: bob@sandbox.test\r\nDate: x\r\nMessage-ID: <1@x>\r\n\r\nx\r\n";
    PreparePolicy reject;
    reject.from_policy = FromPolicy::Reject;
    auto r = prepare(m, env({"bob@sandbox.test"}), reject);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error->kind, PrepareErrorKind::FromRejected);
    EXPECT_EQ(r.error->smtp_code, 550);
    EXPECT_EQ(r.error->enhanced, "5.7.1");
    PreparePolicy keep;
    keep.from_policy = FromPolicy::Keep;
    auto k = prepare(m, env({"bob@sandbox.test"}), keep);
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(k.mime, m);
    // The mailbox itself is never foreign, whatever the case.
    auto same =
        prepare("From: SCANNER@Sandbox.Test\r\nTo: bob@sandbox.test\r\nDate: x\r\nMessage-ID: <1@x>\r\n\r\nx",
                env({"bob@sandbox.test"}), reject);
    EXPECT_TRUE(same.ok());
}

TEST(MailPrepare, EveryAuthorOfAFromListCounts) {
    // The mailbox first and a stranger after it: the recipient would see both as authors.
    std::string m =
        "From: scanner@sandbox.test, CEO <ceo@sandbox.test>\r\nTo: bob@sandbox.test\r\n"
        "Sender: scanner@sandbox.test, ceo@sandbox.test\r\nDate: x\r\nMessage-ID: <1@x>\r\n\r\nx\r\n";
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok());
    auto h = headers_of(p.mime);
    EXPECT_NE(h.find("From: <scanner@sandbox.test>\r\n"), std::string::npos) << h;
    EXPECT_EQ(count(h, "ceo@sandbox.test"), 1u) << h;  // only in the Reply-To
    EXPECT_NE(h.find("Reply-To: scanner@sandbox.test, CEO <ceo@sandbox.test>"), std::string::npos) << h;
    EXPECT_EQ(h.find("Sender:"), std::string::npos) << h;
    PreparePolicy reject;
    reject.from_policy = FromPolicy::Reject;
    auto r = prepare(m, env({"bob@sandbox.test"}), reject);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error->kind, PrepareErrorKind::FromRejected);
    EXPECT_NE(r.error->message.find("ceo@sandbox.test"), std::string::npos) << r.error->message;
    // Every author the mailbox itself: nothing to rewrite.
    auto same = prepare(
        "From: scanner@sandbox.test, Scanner <SCANNER@sandbox.test>\r\nTo: bob@sandbox.test\r\n"
        "Date: x\r\nMessage-ID: <1@x>\r\n\r\nx\r\n",
        env({"bob@sandbox.test"}), reject);
    EXPECT_TRUE(same.ok());
}

TEST(MailPrepare, EnvelopeWithoutRecipientsOrMailboxIsAnError) {
    auto p = prepare(kSimple, env({}));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error->kind, PrepareErrorKind::NoRecipients);
    auto q = prepare(kSimple, env({"bob@sandbox.test"}, "not-an-address"));
    EXPECT_FALSE(q.ok());
}

// ---- Large ------------------------------------------------------------------------------------------

namespace {

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng() & 0xff);
    return s;
}

std::string base64_lines(const std::string& bytes) {
    std::string b = gb::auth::base64_encode(bytes), out;
    for (std::size_t i = 0; i < b.size(); i += 76) out += b.substr(i, 76) + "\r\n";
    return out;
}

std::string with_attachment(const std::string& pdf, const std::string& small = {}) {
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: big scan\r\n"
        "Date: Tue, 01 Jul 2025 10:00:00 +0000\r\nMessage-ID: <big@sandbox.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
        "--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee the scan.\r\n"
        "--b1\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\n"
        "Content-Disposition: attachment; filename=\"scan.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" +
        base64_lines(pdf);
    if (!small.empty())
        m += "--b1\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Disposition: inline\r\n"
             "Content-Transfer-Encoding: base64\r\n\r\n" +
             base64_lines(small);
    m += "--b1--\r\n";
    return m;
}

}  // namespace

TEST(MailPrepareLarge, BigAttachmentIsDetachedAndDecoded) {
    std::string pdf = random_bytes(4 * 1024 * 1024, 1);
    std::string logo = random_bytes(2000, 2);
    auto p = prepare(with_attachment(pdf, logo), env({"bob@sandbox.test", "alice@sandbox.test"}));
    ASSERT_TRUE(p.ok()) << p.error->message;
    EXPECT_EQ(p.mode, Mode::Large);
    ASSERT_EQ(p.attachments.size(), 1u);
    EXPECT_EQ(p.attachments[0].name, "scan.pdf");
    EXPECT_EQ(p.attachments[0].content_type, "application/pdf");
    EXPECT_FALSE(p.attachments[0].is_inline);
    EXPECT_TRUE(p.attachments[0].bytes == pdf);
    EXPECT_LE(base64_size(p.mime.size()), 4'000'000u);
    EXPECT_NE(p.mime.find("Bcc: alice@sandbox.test"), std::string::npos);
    // What is left is well-formed MIME: the text and the small inline image, decoded intact.
    auto parts = decode_parts(p.mime);
    ASSERT_TRUE(parts);
    ASSERT_EQ(parts->size(), 2u);
    EXPECT_EQ((*parts)[0].bytes, "See the scan.");  // the CRLF before a delimiter is the delimiter's
    EXPECT_EQ((*parts)[1].content_id, "logo@x");
    EXPECT_TRUE((*parts)[1].bytes == logo);
}

TEST(MailPrepareLarge, ConfigurableLimitAndInlineFlag) {
    std::string logo = random_bytes(40000, 3);
    PreparePolicy pol;
    pol.max_request_body = 20000;
    auto p = prepare(with_attachment(random_bytes(100, 4), logo), env({"bob@sandbox.test"}), pol);
    ASSERT_TRUE(p.ok()) << p.error->message;
    EXPECT_EQ(p.mode, Mode::Large);
    ASSERT_EQ(p.attachments.size(), 1u);
    EXPECT_TRUE(p.attachments[0].is_inline);
    EXPECT_EQ(p.attachments[0].content_id, "logo@x");
    EXPECT_EQ(p.attachments[0].name, "attachment-1");
}

TEST(MailPrepareLarge, WholeMessageIsTheAttachment) {
    std::string pdf = random_bytes(3 * 1024 * 1024, 5);
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: raw pdf\r\n"
        "MIME-Version: 1.0\r\nContent-Type: application/pdf; name=\"doc.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" +
        base64_lines(pdf);
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_TRUE(p.ok()) << p.error->message;
    EXPECT_EQ(p.mode, Mode::Large);
    ASSERT_EQ(p.attachments.size(), 1u);
    EXPECT_EQ(p.attachments[0].name, "doc.pdf");
    EXPECT_TRUE(p.attachments[0].bytes == pdf);
    EXPECT_LT(p.mime.size(), 2000u);
    EXPECT_NE(p.mime.find("Content-Type: text/plain"), std::string::npos);
    EXPECT_EQ(p.mime.find("application/pdf"), std::string::npos);
}

TEST(MailPrepareLarge, OnlyAttachmentOfANestedMultipartLeavesAPlaceholder) {
    std::string pdf = random_bytes(50000, 6);
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nContent-Type: multipart/mixed; "
        "boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nhi\r\n--o\r\n"
        "Content-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\nContent-Type: application/pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" +
        base64_lines(pdf) + "--i--\r\n--o--\r\n";
    PreparePolicy pol;
    pol.max_request_body = 30000;
    auto p = prepare(m, env({"bob@sandbox.test"}), pol);
    ASSERT_TRUE(p.ok()) << p.error->message;
    ASSERT_EQ(p.attachments.size(), 1u);
    EXPECT_TRUE(p.attachments[0].bytes == pdf);
    auto parts = decode_parts(p.mime);
    ASSERT_TRUE(parts);
    ASSERT_EQ(parts->size(), 2u);
    EXPECT_EQ((*parts)[0].bytes, "hi");
    EXPECT_EQ((*parts)[1].content_type, "text/plain");
}

TEST(MailPrepareLarge, HugeTextBodyCannotBeSplit) {
    std::string m =
        "From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\n\r\n" + std::string(3'500'000, 'a');
    auto p = prepare(m, env({"bob@sandbox.test"}));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error->kind, PrepareErrorKind::TooLarge);
    EXPECT_EQ(p.error->smtp_code, 552);
}

// ---- hostile input ----------------------------------------------------------------------------------

TEST(MailPrepareHostile, AbsurdHeaderBlocksAreRefused) {
    std::string many;
    for (int i = 0; i < 5000; ++i) many += "X-A: b\r\n";
    auto p = prepare(many + "\r\nbody", env({"bob@sandbox.test"}));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error->kind, PrepareErrorKind::TooComplex);
    auto q = prepare("Subject: " + std::string(2'000'000, 'x') + "\r\n\r\nbody", env({"bob@sandbox.test"}));
    ASSERT_FALSE(q.ok());
    auto r = prepare("Subject: " + std::string(2'000'000, 'x'), env({"bob@sandbox.test"}));
    ASSERT_FALSE(r.ok());
    std::string to = "To: ";
    for (int i = 0; i < 3000; ++i) to += "u" + std::to_string(i) + "@x.test, ";
    auto s = prepare(to + "\r\n\r\nbody", env({"bob@sandbox.test"}));
    ASSERT_FALSE(s.ok());
}

TEST(MailPrepareHostile, DeepNestingAndManyPartsAreRefused) {
    std::string deep = "From: scanner@sandbox.test\r\n";
    for (int i = 0; i < 5000; ++i)
        deep += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) + "\r\n\r\n--b" +
                std::to_string(i) + "\r\n";
    auto p = prepare(deep, env({"bob@sandbox.test"}));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error->kind, PrepareErrorKind::TooComplex);
    std::string wide = "Content-Type: multipart/mixed; boundary=w\r\n\r\n";
    for (int i = 0; i < 5000; ++i) wide += "--w\r\n\r\nx\r\n";
    auto q = prepare(wide, env({"bob@sandbox.test"}));
    ASSERT_FALSE(q.ok());
}

TEST(MailPrepareHostile, RandomAndTruncatedInputNeverCrashes) {
    std::string base = with_attachment(random_bytes(3000, 7), random_bytes(500, 8)) + kMultipart;
    std::mt19937 rng(42);
    PreparePolicy pol;
    pol.max_request_body = 3000;
    pol.min_detach = 10;
    for (int i = 0; i < 300; ++i) {
        std::string m = base.substr(0, rng() % base.size());
        for (int k = 0; k < 20; ++k) {
            if (m.empty()) break;
            m[rng() % m.size()] = "\r\n:;<>\"@-=\t ab"[rng() % 15];
        }
        auto p = prepare(m, env({"bob@sandbox.test", "x@y.test"}), pol);
        if (p.ok()) {
            EXPECT_FALSE(p.mime.empty());
        }
    }
    for (int i = 0; i < 200; ++i)
        (void)prepare(random_bytes(rng() % 4000, static_cast<unsigned>(i)), env({"a@b.c"}), pol);
}

// ---- bounce -----------------------------------------------------------------------------------------

TEST(MailBounce, IsAnRfc3464Report) {
    BounceInfo b;
    b.reporting_mta = "bridge.sandbox.test";
    b.notify = "scanner@sandbox.test";
    b.recipients = {"bob@sandbox.test"};
    b.status = "5.7.1";
    b.reason = "Graph refused to send as the From address.";
    b.http_status = 403;
    b.graph_code = "ErrorSendAsDenied";
    b.graph_message = "The user account which was used\r\nto submit this request";
    b.request_id = "req-1";
    b.original = kSimple;
    b.arrival = 1751364000;
    std::string m = make_bounce(b);
    EXPECT_NE(m.find("Content-Type: multipart/report; report-type=delivery-status;"), std::string::npos);
    EXPECT_NE(m.find("Subject: Undeliverable: scan\r\n"), std::string::npos);
    EXPECT_NE(m.find("Reporting-MTA: dns; bridge.sandbox.test\r\n"), std::string::npos);
    EXPECT_NE(m.find("Final-Recipient: rfc822; bob@sandbox.test\r\n"), std::string::npos);
    EXPECT_NE(m.find("Action: failed\r\n"), std::string::npos);
    EXPECT_NE(m.find("Status: 5.7.1\r\n"), std::string::npos);
    EXPECT_NE(m.find("Diagnostic-Code: X-Graph; HTTP 403 ErrorSendAsDenied"), std::string::npos);
    EXPECT_NE(m.find("Content-Type: text/rfc822-headers"), std::string::npos);
    EXPECT_NE(m.find("Message-ID: <abc@sandbox.test>"), std::string::npos);
    EXPECT_EQ(m.find("used\r\nto"), std::string::npos);  // Graph's text is one line
    auto parts = decode_parts(m);
    ASSERT_TRUE(parts);
    ASSERT_EQ(parts->size(), 3u);
    EXPECT_EQ((*parts)[0].content_type, "text/plain");
    EXPECT_NE((*parts)[0].bytes.find("req-1"), std::string::npos);
    EXPECT_EQ((*parts)[1].content_type, "message/delivery-status");
    EXPECT_EQ((*parts)[2].content_type, "text/rfc822-headers");
    EXPECT_EQ((*parts)[2].bytes.find("hello"), std::string::npos);  // headers only
}
