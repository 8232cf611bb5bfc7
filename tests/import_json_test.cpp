// build_import_json(): the JSON create of an IMAP APPEND. Each test parses the produced JSON with
// RapidJSON and checks the Graph fields. Pure unit tests: no sockets.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <random>
#include <string>

#include "auth/crypto.h"
#include "graph/mail/import_json.h"

using namespace gb::mail;

namespace {

ImportJson ok(std::string_view mime, const ImportOptions& o = {}) {
    auto r = build_import_json(mime, o);
    if (auto* e = std::get_if<ImportError>(&r)) {
        ADD_FAILURE() << "unexpected error: " << e->message;
        return {};
    }
    return std::get<ImportJson>(std::move(r));
}

rapidjson::Document parse(const std::string& json) {
    rapidjson::Document d;
    d.Parse(json.data(), json.size());
    EXPECT_FALSE(d.HasParseError()) << json.substr(0, 2000);
    EXPECT_TRUE(d.IsObject());
    return d;
}

std::string str(const rapidjson::Value& v, const char* key) {
    if (!v.IsObject()) return "<not an object>";
    auto it = v.FindMember(key);
    if (it == v.MemberEnd() || !it->value.IsString()) return "<missing>";
    return std::string(it->value.GetString(), it->value.GetStringLength());
}

bool has(const rapidjson::Value& v, const char* key) {
    return v.IsObject() && v.HasMember(key);
}

// The value of a singleValueExtendedProperties entry, "<missing>" if absent.
std::string prop(const rapidjson::Document& d, const std::string& id) {
    if (!d.HasMember("singleValueExtendedProperties")) return "<missing>";
    for (const auto& p : d["singleValueExtendedProperties"].GetArray())
        if (str(p, "id") == id) return str(p, "value");
    return "<missing>";
}

bool has_note(const ImportJson& r, std::string_view part) {
    for (const auto& n : r.notes)
        if (n.find(part) != std::string::npos) return true;
    return false;
}

const std::string kHead =
    "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.test>\r\n"
    "To: Bob <bob@example.test>, \"Carol, C.\" <carol@example.test>, not-an-address\r\n"
    "Cc: dave@example.test\r\n"
    "Date: Sun, 29 Nov 2026 11:00:00 +0100\r\n"
    "Message-ID: <m1@example.test>\r\n"
    "MIME-Version: 1.0\r\n";

}  // namespace

TEST(ImportJson, PlainTextQuotedPrintableAndEncodedSubject) {
    std::string m = kHead +
                    "Subject: =?UTF-8?B?R3LDvMOfZQ==?= =?ISO-8859-1?Q?_aus_K=F6ln?=\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: quoted-printable\r\n"
                    "\r\n"
                    "Gr=C3=BC=C3=9Fe, sch=C3=B6n=\r\n"
                    " hier.\r\n";
    auto r = ok(m);
    auto d = parse(r.json);
    EXPECT_EQ(str(d, "subject"), "Grüße aus Köln");
    EXPECT_EQ(str(d["body"], "contentType"), "text");
    EXPECT_EQ(str(d["body"], "content"), "Grüße, schön hier.\r\n");
    EXPECT_EQ(str(d["from"]["emailAddress"], "name"), "Jürgen Müller");
    EXPECT_EQ(str(d["from"]["emailAddress"], "address"), "juergen@example.test");
    ASSERT_TRUE(d["toRecipients"].IsArray());
    ASSERT_EQ(d["toRecipients"].Size(), 2u);  // "not-an-address" skipped
    EXPECT_EQ(str(d["toRecipients"][0]["emailAddress"], "name"), "Bob");
    EXPECT_EQ(str(d["toRecipients"][1]["emailAddress"], "name"), "Carol, C.");
    EXPECT_EQ(str(d["toRecipients"][1]["emailAddress"], "address"), "carol@example.test");
    ASSERT_EQ(d["ccRecipients"].Size(), 1u);
    EXPECT_EQ(str(d["ccRecipients"][0]["emailAddress"], "address"), "dave@example.test");
    EXPECT_FALSE(has(d, "bccRecipients"));
    EXPECT_EQ(str(d, "internetMessageId"), "<m1@example.test>");
    EXPECT_FALSE(has(d, "attachments"));
    EXPECT_FALSE(has(d, "flag"));
    EXPECT_FALSE(has(d, "categories"));
    EXPECT_EQ(prop(d, "Integer 0x0E07"), "0");
    EXPECT_TRUE(r.notes.empty()) << r.notes.front();
}

TEST(ImportJson, AlternativeKeepsHtml) {
    std::string m = kHead +
                    "Subject: alt\r\n"
                    "Content-Type: multipart/alternative; boundary=\"b1\"\r\n"
                    "\r\n"
                    "--b1\r\n"
                    "Content-Type: text/plain; charset=us-ascii\r\n"
                    "\r\n"
                    "plain version\r\n"
                    "--b1\r\n"
                    "Content-Type: text/html; charset=us-ascii\r\n"
                    "\r\n"
                    "<p>html version</p>\r\n"
                    "--b1--\r\n";
    auto r = ok(m);
    auto d = parse(r.json);
    EXPECT_EQ(str(d["body"], "contentType"), "html");
    EXPECT_EQ(str(d["body"], "content"), "<p>html version</p>");
    EXPECT_FALSE(has(d, "attachments"));
    EXPECT_TRUE(has_note(r, "text and HTML alternatives: only HTML kept"));
}

TEST(ImportJson, MixedWithPdfAttachmentKeepsExactBytes) {
    std::string pdf = "%PDF-1.4\n";
    for (int i = 0; i < 3000; ++i) pdf.push_back(static_cast<char>((i * 37 + 11) % 256));
    pdf += "\n%%EOF\n";
    std::string b64 = gb::auth::base64_encode(pdf);
    std::string folded;
    for (std::size_t i = 0; i < b64.size(); i += 76) folded += b64.substr(i, 76) + "\r\n";
    std::string m = kHead +
                    "Subject: invoice\r\n"
                    "Content-Type: multipart/mixed; boundary=outer\r\n"
                    "\r\n"
                    "preamble\r\n"
                    "--outer\r\n"
                    "Content-Type: text/plain; charset=us-ascii\r\n"
                    "\r\n"
                    "see attached\r\n"
                    "--outer\r\n"
                    "Content-Type: application/pdf; name=\"old.pdf\"\r\n"
                    "Content-Disposition: attachment; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf\r\n"
                    "Content-Transfer-Encoding: base64\r\n"
                    "\r\n" +
                    folded + "--outer--\r\nepilogue\r\n";
    auto r = ok(m);
    auto d = parse(r.json);
    EXPECT_EQ(str(d["body"], "content"), "see attached");
    ASSERT_TRUE(d["attachments"].IsArray());
    ASSERT_EQ(d["attachments"].Size(), 1u);
    const auto& a = d["attachments"][0];
    EXPECT_EQ(str(a, "@odata.type"), "#microsoft.graph.fileAttachment");
    EXPECT_EQ(str(a, "name"), "Rechnung März.pdf");
    EXPECT_EQ(str(a, "contentType"), "application/pdf");
    EXPECT_FALSE(a["isInline"].GetBool());
    EXPECT_FALSE(has(a, "contentId"));
    auto bytes = gb::auth::base64_decode(str(a, "contentBytes"));
    ASSERT_TRUE(bytes);
    EXPECT_EQ(*bytes, pdf);
}

TEST(ImportJson, InlineImageInRelated) {
    const std::string png("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
    std::string m = kHead +
                    "Subject: picture\r\n"
                    "Content-Type: multipart/related; boundary=\"rel\"; type=\"multipart/alternative\"\r\n"
                    "\r\n"
                    "--rel\r\n"
                    "Content-Type: multipart/alternative; boundary=\"alt\"\r\n"
                    "\r\n"
                    "--alt\r\n"
                    "Content-Type: text/plain\r\n"
                    "\r\n"
                    "[image]\r\n"
                    "--alt\r\n"
                    "Content-Type: text/html; charset=utf-8\r\n"
                    "\r\n"
                    "<img src=\"cid:logo.123@example.test\">\r\n"
                    "--alt--\r\n"
                    "--rel\r\n"
                    "Content-Type: image/png\r\n"
                    "Content-ID: <logo.123@example.test>\r\n"
                    "Content-Transfer-Encoding: base64\r\n"
                    "\r\n" +
                    gb::auth::base64_encode(png) +
                    "\r\n"
                    "--rel--\r\n";
    auto r = ok(m);
    auto d = parse(r.json);
    EXPECT_EQ(str(d["body"], "contentType"), "html");
    EXPECT_EQ(str(d["body"], "content"), "<img src=\"cid:logo.123@example.test\">");
    ASSERT_EQ(d["attachments"].Size(), 1u);
    const auto& a = d["attachments"][0];
    EXPECT_TRUE(a["isInline"].GetBool());
    EXPECT_EQ(str(a, "contentId"), "logo.123@example.test");
    EXPECT_EQ(str(a, "contentType"), "image/png");
    EXPECT_EQ(str(a, "name"), "attachment-1.png");
    EXPECT_EQ(gb::auth::base64_decode(str(a, "contentBytes")).value_or(""), png);
}

TEST(ImportJson, DateToSentTime) {
    auto d = parse(ok(kHead + "Subject: x\r\n\r\nbody\r\n").json);
    EXPECT_EQ(prop(d, "SystemTime 0x0039"), "2026-11-29T10:00:00Z");

    auto r = ok("From: a@example.test\r\nDate: not a date at all\r\n\r\nbody\r\n");
    auto d2 = parse(r.json);
    EXPECT_EQ(prop(d2, "SystemTime 0x0039"), "<missing>");
    EXPECT_TRUE(has_note(r, "Date"));

    auto d3 = parse(ok("From: a@example.test\r\n\r\nbody\r\n").json);
    EXPECT_EQ(prop(d3, "SystemTime 0x0039"), "<missing>");
    EXPECT_FALSE(has(d3, "internetMessageId"));
}

TEST(ImportJson, InReplyToAndReferencesCarried) {
    std::string m = kHead +
                    "Subject: Re: x\r\n"
                    "In-Reply-To: <parent@example.test>\r\n"
                    "References: <root@example.test>\r\n"
                    "\t<parent@example.test>\r\n"
                    "\r\n"
                    "reply\r\n";
    auto d = parse(ok(m).json);
    EXPECT_EQ(prop(d, "String 0x1042"), "<parent@example.test>");
    EXPECT_EQ(prop(d, "String 0x1039"), "<root@example.test>\t<parent@example.test>");
}

TEST(ImportJson, ReadStateFlagsCategoriesAndLastVerb) {
    const std::string m = kHead + "Subject: x\r\n\r\nbody\r\n";
    {
        auto d = parse(ok(m).json);
        EXPECT_EQ(prop(d, "Integer 0x0E07"), "0");
        EXPECT_EQ(prop(d, "Integer 0x1081"), "<missing>");
        EXPECT_EQ(prop(d, "SystemTime 0x0E06"), "<missing>");
    }
    ImportOptions o;
    o.read = true;
    o.flagged = true;
    o.last_verb = 102;
    o.categories = {"Work", "$Label1", "Work", "Bl\xc3\xa4u"};
    o.received = 1796032800;  // 2026-11-30T10:00:00Z
    auto d = parse(ok(m, o).json);
    EXPECT_EQ(prop(d, "Integer 0x0E07"), "1");
    EXPECT_EQ(prop(d, "Integer 0x1081"), "102");
    EXPECT_EQ(prop(d, "SystemTime 0x0E06"), "2026-11-30T10:00:00Z");
    EXPECT_EQ(str(d["flag"], "flagStatus"), "flagged");
    ASSERT_TRUE(d["categories"].IsArray());
    ASSERT_EQ(d["categories"].Size(), 3u);
    EXPECT_STREQ(d["categories"][0].GetString(), "Work");
    EXPECT_STREQ(d["categories"][1].GetString(), "$Label1");
    EXPECT_STREQ(d["categories"][2].GetString(), "Bläu");

    o.last_verb = 104;
    EXPECT_EQ(prop(parse(ok(m, o).json), "Integer 0x1081"), "104");
}

TEST(ImportJson, Importance) {
    auto imp = [](const std::string& h) {
        return str(parse(ok("From: a@example.test\r\n" + h + "\r\nx\r\n").json), "importance");
    };
    EXPECT_EQ(imp("Importance: High\r\n"), "high");
    EXPECT_EQ(imp("Importance: low\r\n"), "low");
    EXPECT_EQ(imp("X-Priority: 1 (Highest)\r\n"), "high");
    EXPECT_EQ(imp("X-Priority: 2\r\n"), "high");
    EXPECT_EQ(imp("X-Priority: 3\r\n"), "normal");
    EXPECT_EQ(imp("X-Priority: 5 (Lowest)\r\n"), "low");
    EXPECT_EQ(imp("Importance: low\r\nX-Priority: 1\r\n"), "low");
    EXPECT_EQ(imp(""), "<missing>");
}

TEST(ImportJson, TooLarge) {
    std::string big(300'000, 'a');
    std::string m = kHead +
                    "Subject: big\r\n"
                    "Content-Type: multipart/mixed; boundary=b\r\n"
                    "\r\n"
                    "--b\r\n"
                    "Content-Type: text/plain\r\n"
                    "\r\n"
                    "hi\r\n"
                    "--b\r\n"
                    "Content-Type: application/octet-stream; name=big.bin\r\n"
                    "Content-Transfer-Encoding: base64\r\n"
                    "\r\n" +
                    gb::auth::base64_encode(big) + "\r\n--b--\r\n";
    ImportOptions o;
    o.max_json = 200'000;
    auto r = build_import_json(m, o);
    ASSERT_TRUE(std::holds_alternative<ImportError>(r));
    EXPECT_EQ(std::get<ImportError>(r).kind, ImportError::Kind::TooLarge);

    o.max_json = 600'000;
    auto fits = build_import_json(m, o);
    ASSERT_TRUE(std::holds_alternative<ImportJson>(fits));
    EXPECT_LE(std::get<ImportJson>(fits).json.size(), o.max_json);

    // Far over the limit: refused before any decoding.
    o.max_json = 1000;
    auto far = build_import_json(m, o);
    ASSERT_TRUE(std::holds_alternative<ImportError>(far));
    EXPECT_EQ(std::get<ImportError>(far).kind, ImportError::Kind::TooLarge);
}

TEST(ImportJson, GarbageIsMalformed) {
    for (const std::string& g :
         {std::string(), std::string("\r\n\r\nbody only"), std::string("no colon here\r\n\r\n"),
          std::string("\x00\xff\xfe garbage\x01\x02", 13), std::string(" leading space: x\r\n")}) {
        auto r = build_import_json(g, {});
        ASSERT_TRUE(std::holds_alternative<ImportError>(r)) << g;
        EXPECT_EQ(std::get<ImportError>(r).kind, ImportError::Kind::Malformed);
    }
}

TEST(ImportJson, RandomBytesNeverCrashAndJsonIsValid) {
    std::mt19937 rng(4711);
    const std::string alphabet = "ab:-= \r\n\t<>@\"=?;\x80\xc3\xff\x00boundary=Content-Type:multipart/";
    for (int i = 0; i < 300; ++i) {
        std::string m = i % 2 ? "From: a@b.test\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
                              : std::string();
        std::size_t n = rng() % 3000;
        for (std::size_t k = 0; k < n; ++k) m.push_back(alphabet[rng() % alphabet.size()]);
        auto r = build_import_json(m, {});
        if (auto* j = std::get_if<ImportJson>(&r)) {
            rapidjson::Document d;
            d.Parse(j->json.data(), j->json.size());
            EXPECT_FALSE(d.HasParseError());
        }
    }
}

TEST(ImportJson, DeepNestingIsAnErrorNotACrash) {
    std::string m = "From: a@example.test\r\nSubject: deep\r\n";
    std::string tail;
    for (int i = 0; i < 10000; ++i) {
        m += "Content-Type: multipart/mixed; boundary=\"b" + std::to_string(i) + "\"\r\n\r\n--b" +
             std::to_string(i) + "\r\n";
        tail = "\r\n--b" + std::to_string(i) + "--\r\n" + tail;
    }
    m += "Content-Type: text/plain\r\n\r\nleaf" + tail;
    auto r = build_import_json(m, {});
    ASSERT_TRUE(std::holds_alternative<ImportError>(r));
    EXPECT_EQ(std::get<ImportError>(r).kind, ImportError::Kind::Malformed);

    // The same shape 10 levels deep is fine.
    std::string ok_m = "From: a@example.test\r\nSubject: deep\r\n";
    std::string ok_tail;
    for (int i = 0; i < 10; ++i) {
        ok_m += "Content-Type: multipart/mixed; boundary=\"b" + std::to_string(i) + "\"\r\n\r\n--b" +
                std::to_string(i) + "\r\n";
        ok_tail = "\r\n--b" + std::to_string(i) + "--\r\n" + ok_tail;
    }
    ok_m += "Content-Type: text/plain\r\n\r\nleaf" + ok_tail;
    EXPECT_EQ(str(parse(ok(ok_m).json)["body"], "content"), "leaf");
}

TEST(ImportJson, TooManyPartsIsAnError) {
    std::string m = "From: a@example.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n";
    for (int i = 0; i < 600; ++i) m += "--b\r\nContent-Type: text/plain; name=p.txt\r\n\r\nx\r\n";
    m += "--b--\r\n";
    auto r = build_import_json(m, {});
    ASSERT_TRUE(std::holds_alternative<ImportError>(r));
    EXPECT_EQ(std::get<ImportError>(r).kind, ImportError::Kind::Malformed);
}

TEST(ImportJson, Latin1BodyConvertedToUtf8) {
    std::string m = kHead +
                    "Subject: latin\r\n"
                    "Content-Type: text/plain; charset=ISO-8859-1\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n"
                    "\r\n"
                    "Gr\xfc\xdf"
                    "e aus K\xf6ln, 5 \xa3\r\n";
    auto d = parse(ok(m).json);
    EXPECT_EQ(str(d["body"], "content"), "Grüße aus Köln, 5 £\r\n");
}

TEST(ImportJson, InvalidBytesNeverMakeInvalidJson) {
    std::string m =
        "From: \"Bad \xff\xfe Name\" <bad@example.test>\r\n"
        "Subject: broken \xc3\x28 subject\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "bad \xff bytes \xc0\xaf and a NUL \0 here\r\n";
    m.push_back('\0');
    auto r = ok(m);
    auto d = parse(r.json);
    EXPECT_NE(str(d, "subject").find("broken"), std::string::npos);
    EXPECT_NE(str(d["body"], "content").find("bad "), std::string::npos);
    // Undeclared 8-bit text (no charset) is read as Latin-1 when it is not UTF-8.
    auto d2 = parse(ok("From: a@example.test\r\n\r\ncaf\xe9\r\n").json);
    EXPECT_EQ(str(d2["body"], "content"), "café\r\n");
}

TEST(ImportJson, AttachedMessageNamedAfterItsSubject) {
    std::string m = kHead +
                    "Subject: Fwd: report\r\n"
                    "X-Mailer: test\r\n"
                    "Received: from x by y\r\n"
                    "Content-Type: multipart/mixed; boundary=b\r\n"
                    "\r\n"
                    "--b\r\n"
                    "Content-Type: text/plain\r\n"
                    "\r\n"
                    "forwarded below\r\n"
                    "--b\r\n"
                    "Content-Type: message/rfc822\r\n"
                    "\r\n"
                    "From: x@example.test\r\n"
                    "Subject: =?UTF-8?Q?Quartal/Bericht_=C3=BC?=\r\n"
                    "\r\n"
                    "inner body\r\n"
                    "--b--\r\n";
    auto r = ok(m);
    auto d = parse(r.json);
    EXPECT_EQ(str(d["body"], "content"), "forwarded below");
    ASSERT_EQ(d["attachments"].Size(), 1u);
    const auto& a = d["attachments"][0];
    EXPECT_EQ(str(a, "name"), "Quartal_Bericht ü.eml");
    EXPECT_EQ(str(a, "contentType"), "message/rfc822");
    EXPECT_EQ(gb::auth::base64_decode(str(a, "contentBytes")).value_or(""),
              "From: x@example.test\r\nSubject: =?UTF-8?Q?Quartal/Bericht_=C3=BC?=\r\n\r\ninner body");
    EXPECT_TRUE(has_note(r, "headers other than the standard ones are not kept"));
    EXPECT_TRUE(has_note(r, "X-Mailer"));
}

TEST(ImportJson, SignedMessageNotesInvalidSignature) {
    std::string m = kHead +
                    "Subject: signed\r\n"
                    "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; "
                    "micalg=sha-256; boundary=s\r\n"
                    "\r\n"
                    "--s\r\n"
                    "Content-Type: text/plain\r\n"
                    "\r\n"
                    "signed text\r\n"
                    "--s\r\n"
                    "Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
                    "Content-Disposition: attachment; filename=smime.p7s\r\n"
                    "Content-Transfer-Encoding: base64\r\n"
                    "\r\n"
                    "AAAA\r\n"
                    "--s--\r\n";
    auto r = ok(m);
    auto d = parse(r.json);
    EXPECT_EQ(str(d["body"], "content"), "signed text");
    EXPECT_FALSE(has(d, "attachments"));
    EXPECT_TRUE(has_note(r, "S/MIME signature invalidated"));
}

TEST(ImportJson, MalformedMessageIdOmitted) {
    auto r = ok("From: a@example.test\r\nMessage-ID: no brackets@example.test\r\n\r\nx\r\n");
    EXPECT_FALSE(has(parse(r.json), "internetMessageId"));
    EXPECT_TRUE(has_note(r, "Message-ID"));
}

TEST(ImportJson, BareLineFeeds) {
    std::string m =
        "From: a@example.test\nSubject: lf\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
        "Content-Type: text/plain\n\nhello\n--b\nContent-Type: text/plain; name=n.txt\n\nfile\n--b--\n";
    auto d = parse(ok(m).json);
    EXPECT_EQ(str(d, "subject"), "lf");
    EXPECT_EQ(str(d["body"], "content"), "hello");
    ASSERT_EQ(d["attachments"].Size(), 1u);
    EXPECT_EQ(str(d["attachments"][0], "name"), "n.txt");
    EXPECT_EQ(gb::auth::base64_decode(str(d["attachments"][0], "contentBytes")).value_or(""), "file");
}

TEST(ImportJson, SecondContentTypeCannotSmuggleNestingIntoGMime) {
    // The index reads the first Content-Type (text/plain); GMime must not see the second one and
    // parse 10,000 levels of multipart in the body.
    std::string body;
    std::string tail;
    for (int i = 0; i < 10000; ++i) {
        body += "--b" + std::to_string(i) + "\r\nContent-Type: multipart/mixed; boundary=b" +
                std::to_string(i + 1) + "\r\n\r\n";
        tail = "\r\n--b" + std::to_string(i) + "--" + tail;
    }
    std::string m =
        "From: a@example.test\r\nContent-Type: text/plain\r\n"
        "Content-Type: multipart/mixed; boundary=b0\r\n\r\n" +
        body + "x" + tail + "\r\n";
    auto r = build_import_json(m, {});
    ASSERT_TRUE(std::holds_alternative<ImportJson>(r));
    auto d = parse(std::get<ImportJson>(r).json);
    EXPECT_EQ(str(d["body"], "contentType"), "text");
}

TEST(ImportJson, MultipartWithoutBoundaryKeptAsAttachment) {
    auto r = ok("From: a@example.test\r\nContent-Type: multipart/mixed\r\n\r\nsome bytes\r\n");
    auto d = parse(r.json);
    EXPECT_FALSE(has(d, "body"));
    ASSERT_EQ(d["attachments"].Size(), 1u);
    EXPECT_EQ(str(d["attachments"][0], "contentType"), "application/octet-stream");
    EXPECT_EQ(gb::auth::base64_decode(str(d["attachments"][0], "contentBytes")).value_or(""),
              "some bytes\r\n");
}
