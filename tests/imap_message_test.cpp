// FETCH data of one message (graph/mail/imap_message.h): ENVELOPE, BODY/BODYSTRUCTURE, sections and
// partials against RFC 3501's own example and hand-checked strings; malformed and hostile input must
// answer within the limits. Every BODYSTRUCTURE produced is also read back by a small RFC 3501 grammar
// checker below (lists, NIL, quoted strings, literals, numbers; body-type-1part/mpart/msg/text).
#include "graph/mail/imap_message.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace gb::mail::imap;

namespace {

// Messages are written with \n in the tests and stored normalised, as the bridge stores them.
std::string msg(std::string_view text) {
    return normalize_crlf(text);
}

std::string fetch(const MessageIndex& idx, const std::string& raw, std::string_view spec) {
    auto s = parse_section(spec);
    EXPECT_TRUE(s.has_value()) << spec;
    if (!s) return "<invalid>";
    return section_bytes(idx, raw, *s);
}

// ---- a reader for RFC 3501 response data, and the BODYSTRUCTURE / ENVELOPE grammar -------------------

struct Value {
    enum class Type { Nil, String, Number, List } type = Type::Nil;
    std::string text;
    std::vector<Value> items;
};

class Reader {
  public:
    explicit Reader(std::string_view s) : s_(s) {}

    bool read(Value& v) {
        if (!value(v, 0)) return false;
        return i_ == s_.size();
    }

  private:
    bool value(Value& v, int depth) {
        if (depth > 100 || i_ >= s_.size()) return false;
        char c = s_[i_];
        if (c == '(') {
            ++i_;
            v.type = Value::Type::List;
            if (i_ < s_.size() && s_[i_] == ')') {
                ++i_;
                return true;
            }
            while (true) {
                Value item;
                if (!value(item, depth + 1)) return false;
                v.items.push_back(std::move(item));
                if (i_ >= s_.size()) return false;
                if (s_[i_] == ')') {
                    ++i_;
                    return true;
                }
                // Items are separated by one SP, except that body-type-mpart runs bodies together.
                if (s_[i_] == ' ')
                    ++i_;
                else if (s_[i_] != '(')
                    return false;
            }
        }
        if (c == '"') {
            v.type = Value::Type::String;
            for (++i_; i_ < s_.size(); ++i_) {
                char ch = s_[i_];
                if (ch == '"') {
                    ++i_;
                    return true;
                }
                if (ch == '\r' || ch == '\n' || static_cast<unsigned char>(ch) >= 0x80 || ch == '\0')
                    return false;
                if (ch == '\\') {
                    if (++i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\\')) return false;
                    ch = s_[i_];
                }
                v.text.push_back(ch);
            }
            return false;
        }
        if (c == '{') {
            std::size_t close = s_.find('}', i_);
            if (close == std::string_view::npos || close + 2 >= s_.size() + 1) return false;
            std::size_t n = std::stoul(std::string(s_.substr(i_ + 1, close - i_ - 1)));
            if (s_.substr(close + 1, 2) != "\r\n" || close + 3 + n > s_.size()) return false;
            v.type = Value::Type::String;
            v.text = std::string(s_.substr(close + 3, n));
            if (v.text.find('\0') != std::string::npos) return false;
            i_ = close + 3 + n;
            return true;
        }
        if (s_.substr(i_, 3) == "NIL") {
            i_ += 3;
            v.type = Value::Type::Nil;
            return true;
        }
        std::size_t start = i_;
        while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
        if (i_ == start) return false;
        v.type = Value::Type::Number;
        v.text = std::string(s_.substr(start, i_ - start));
        return true;
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

bool is_str(const Value& v) {
    return v.type == Value::Type::String;
}
bool is_nstr(const Value& v) {
    return v.type == Value::Type::String || v.type == Value::Type::Nil;
}
bool is_num(const Value& v) {
    return v.type == Value::Type::Number;
}
bool ieq(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    return true;
}

bool valid_params(const Value& v) {
    if (v.type == Value::Type::Nil) return true;
    if (v.type != Value::Type::List || v.items.empty() || v.items.size() % 2) return false;
    for (const auto& i : v.items)
        if (!is_str(i)) return false;
    return true;
}

bool valid_address_list(const Value& v) {
    if (v.type == Value::Type::Nil) return true;
    if (v.type != Value::Type::List || v.items.empty()) return false;
    for (const auto& a : v.items) {
        if (a.type != Value::Type::List || a.items.size() != 4) return false;
        for (const auto& f : a.items)
            if (!is_nstr(f)) return false;
    }
    return true;
}

bool valid_envelope(const Value& v) {
    if (v.type != Value::Type::List || v.items.size() != 10) return false;
    if (!is_nstr(v.items[0]) || !is_nstr(v.items[1]) || !is_nstr(v.items[8]) || !is_nstr(v.items[9]))
        return false;
    for (int k = 2; k < 8; ++k)
        if (!valid_address_list(v.items[static_cast<std::size_t>(k)])) return false;
    return true;
}

// body-ext-*: dsp, lang, loc starting at items[k] (all four / three always written by us).
bool valid_ext_tail(const std::vector<Value>& it, std::size_t k) {
    if (it.size() != k + 3) return false;
    const Value& dsp = it[k];
    if (dsp.type == Value::Type::List) {
        if (dsp.items.size() != 2 || !is_str(dsp.items[0]) || !valid_params(dsp.items[1])) return false;
    } else if (dsp.type != Value::Type::Nil) {
        return false;
    }
    const Value& lang = it[k + 1];
    if (lang.type == Value::Type::List) {
        if (lang.items.empty()) return false;
        for (const auto& l : lang.items)
            if (!is_str(l)) return false;
    } else if (!is_nstr(lang)) {
        return false;
    }
    return is_nstr(it[k + 2]);
}

bool valid_body(const Value& v, bool extended) {
    if (v.type != Value::Type::List || v.items.empty()) return false;
    const auto& it = v.items;
    if (it[0].type == Value::Type::List) {  // body-type-mpart
        std::size_t k = 0;
        while (k < it.size() && it[k].type == Value::Type::List) {
            if (!valid_body(it[k], extended)) return false;
            ++k;
        }
        if (k >= it.size() || !is_str(it[k])) return false;
        ++k;
        if (!extended) return k == it.size();
        return k < it.size() && valid_params(it[k]) && valid_ext_tail(it, k + 1);
    }
    if (it.size() < 7 || !is_str(it[0]) || !is_str(it[1]) || !valid_params(it[2]) || !is_nstr(it[3]) ||
        !is_nstr(it[4]) || !is_str(it[5]) || !is_num(it[6]))
        return false;
    std::size_t k = 7;
    if (ieq(it[0].text, "message") && ieq(it[1].text, "rfc822")) {
        if (it.size() < 10 || !valid_envelope(it[7]) || !valid_body(it[8], extended) || !is_num(it[9]))
            return false;
        k = 10;
    } else if (ieq(it[0].text, "text")) {
        if (it.size() < 8 || !is_num(it[7])) return false;
        k = 8;
    }
    if (!extended) return k == it.size();
    return k < it.size() && is_nstr(it[k]) && valid_ext_tail(it, k + 1);
}

::testing::AssertionResult GrammarOk(const MessageIndex& idx, const std::string& raw) {
    for (bool ext : {false, true}) {
        std::string bs = bodystructure(idx, raw, ext);
        Value v;
        if (!Reader(bs).read(v) || !valid_body(v, ext))
            return ::testing::AssertionFailure() << (ext ? "BODYSTRUCTURE " : "BODY ") << bs.substr(0, 2000);
    }
    std::string env = envelope(idx, raw);
    Value v;
    if (!Reader(env).read(v) || !valid_envelope(v))
        return ::testing::AssertionFailure() << "ENVELOPE " << env;
    return ::testing::AssertionSuccess();
}

// Byte ranges nest and tile: header_end == body_begin, children inside their parent's body and in order,
// an encapsulated message exactly the body of its message/rfc822 part.
::testing::AssertionResult RangesOk(const MessageIndex& idx, const Limits& limits = {}) {
    const auto& parts = idx.parts();
    if (parts.empty() || parts.size() > limits.max_parts)
        return ::testing::AssertionFailure() << "part count";
    const Part& r = idx.root();
    if (r.header_begin != 0 || r.body_end != idx.size()) return ::testing::AssertionFailure() << "root range";
    for (std::size_t i = 0; i < parts.size(); ++i) {
        const Part& p = parts[i];
        if (!(p.header_begin <= p.header_end && p.header_end == p.body_begin && p.body_begin <= p.body_end &&
              p.body_end <= idx.size()))
            return ::testing::AssertionFailure() << "part " << i << " range";
        if (p.depth > limits.max_depth) return ::testing::AssertionFailure() << "part " << i << " too deep";
        std::size_t prev_end = p.body_begin;
        for (int c : p.children) {
            const Part& ch = idx.part(c);
            if (ch.parent != static_cast<int>(i) || ch.header_begin < prev_end || ch.body_end > p.body_end)
                return ::testing::AssertionFailure() << "child " << c << " of " << i;
            prev_end = ch.body_end;
        }
        if (p.message >= 0) {
            const Part& m = idx.part(p.message);
            if (m.header_begin != p.body_begin || m.body_end != p.body_end)
                return ::testing::AssertionFailure() << "message of " << i;
        }
    }
    return ::testing::AssertionSuccess();
}

}  // namespace

// ---- normalisation --------------------------------------------------------------------------------------

TEST(ImapMessage, NormalizeCrlf) {
    EXPECT_EQ(normalize_crlf("a\nb\rc\r\nd\r\r\n\n"), "a\r\nb\r\nc\r\nd\r\n\r\n\r\n");
    EXPECT_EQ(normalize_crlf(""), "");
    EXPECT_EQ(normalize_crlf("\r"), "\r\n");
    const std::string raw = msg("Subject: lf\nFrom: a@b\n\nline1\rline2\r\n");
    EXPECT_EQ(raw, "Subject: lf\r\nFrom: a@b\r\n\r\nline1\r\nline2\r\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(fetch(idx, raw, "HEADER"), "Subject: lf\r\nFrom: a@b\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "TEXT"), "line1\r\nline2\r\n");
}

// ---- RFC 3501 7.4.2's example -----------------------------------------------------------------------------

TEST(ImapMessage, Rfc3501Example) {
    std::string body;
    for (int i = 0; i < 92; ++i) body += std::string(i < 84 ? 31 : 30, 'x') + "\r\n";
    ASSERT_EQ(body.size(), 3028u);
    const std::string raw = msg("Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
                                "From: Terry Gray <gray@cac.washington.edu>\n"
                                "Subject: IMAP4rev1 WG mtg summary and minutes\n"
                                "To: imap@cac.washington.edu\n"
                                "cc: minutes@CNRI.Reston.VA.US,\n"
                                " John Klensin <KLENSIN@MIT.EDU>\n"
                                "Message-Id: <B27397-0100000@cac.washington.edu>\n"
                                "MIME-Version: 1.0\n"
                                "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
                                "Content-Transfer-Encoding: 7BIT\n\n") +
                            body;
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(envelope(idx, raw),
              "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary and minutes\" "
              "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
              "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
              "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
              "((NIL NIL \"imap\" \"cac.washington.edu\")) "
              "((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")"
              "(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL "
              "\"<B27397-0100000@cac.washington.edu>\")");
    EXPECT_EQ(bodystructure(idx, raw, false),
              R"(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))");
    EXPECT_EQ(bodystructure(idx, raw, true),
              R"(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL))");
    EXPECT_EQ(fetch(idx, raw, "TEXT"), body);
    EXPECT_EQ(fetch(idx, raw, "1"), body);
    EXPECT_TRUE(GrammarOk(idx, raw));
}

// RFC 3501 7.4.2's BODY example for a multipart/mixed: text/plain + base64 text/plain with a name.
TEST(ImapMessage, Rfc3501MultipartExample) {
    // Part sizes and line counts as in the RFC's example: 1152 octets / 23 lines, 4554 / 73. Each line
    // ends with CRLF; the CRLF before the next boundary is the boundary's.
    std::string b1, b2;
    for (int i = 0; i < 23; ++i) b1 += std::string(i < 22 ? 48 : 50, 'a') + "\r\n";
    for (int i = 0; i < 73; ++i) b2 += std::string(i < 72 ? 60 : 88, 'Q') + "\r\n";
    ASSERT_EQ(b1.size(), 1152u);
    ASSERT_EQ(b2.size(), 4554u);
    const std::string raw =
        msg("Content-Type: MULTIPART/MIXED; BOUNDARY=\"x\"\n\n--x\n"
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\nContent-Transfer-Encoding: 7BIT\n\n") +
        b1 + "\r\n--x\r\n" +
        msg("Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\n"
            "Content-ID: <960723163407.20117h@cac.washington.edu>\nContent-Description: Compiler diff\n"
            "Content-Transfer-Encoding: BASE64\n\n") +
        b2 + "\r\n--x--\r\n";
    auto idx = MessageIndex::build(raw);
    const std::string expected =
        R"((("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)("TEXT" "PLAIN" ("CHARSET" "US-ASCII" )"
        R"("NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED"))";
    EXPECT_EQ(bodystructure(idx, raw, false), expected);
    EXPECT_TRUE(GrammarOk(idx, raw));
}

// ---- shapes of messages ---------------------------------------------------------------------------------

TEST(ImapMessage, PlainText) {
    const std::string raw =
        msg("From: Ann Smith <ann@example.com>\nTo: bob@example.com\nSubject: Hello\n"
            "Date: Tue, 2 Jan 2024 08:00:00 +0000\nMessage-ID: <1@example.com>\n\nLine one\nLine two\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(envelope(idx, raw),
              R"(("Tue, 2 Jan 2024 08:00:00 +0000" "Hello" (("Ann Smith" NIL "ann" "example.com")) )"
              R"((("Ann Smith" NIL "ann" "example.com")) (("Ann Smith" NIL "ann" "example.com")) )"
              R"(((NIL NIL "bob" "example.com")) NIL NIL NIL "<1@example.com>"))");
    EXPECT_EQ(bodystructure(idx, raw, false),
              R"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2))");
    EXPECT_EQ(bodystructure(idx, raw, true),
              R"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2 NIL NIL NIL NIL))");
    const std::string header =
        "From: Ann Smith <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Hello\r\n"
        "Date: Tue, 2 Jan 2024 08:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n";
    EXPECT_EQ(fetch(idx, raw, ""), raw);
    EXPECT_EQ(fetch(idx, raw, "HEADER"), header);
    EXPECT_EQ(fetch(idx, raw, "TEXT"), "Line one\r\nLine two\r\n");
    EXPECT_EQ(fetch(idx, raw, "1"), "Line one\r\nLine two\r\n");    // part 1 of a single-part message
    EXPECT_EQ(fetch(idx, raw, "1.MIME"), header);                   // its MIME header is the header
    EXPECT_EQ(fetch(idx, raw, "1.1"), "Line one\r\nLine two\r\n");  // a leaf's only sub-part is itself
    EXPECT_EQ(fetch(idx, raw, "2"), "");                            // no such part: ""
    EXPECT_EQ(fetch(idx, raw, "1.HEADER"), "");                     // not message/rfc822
    EXPECT_EQ(idx.find({2}), nullptr);
    ASSERT_NE(idx.find({1}), nullptr);
    EXPECT_EQ(idx.find({1}), &idx.root());
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
    EXPECT_EQ(text_for_search(idx, raw), "Line one\r\nLine two\r\n");
}

TEST(ImapMessage, MixedWithBase64Pdf) {
    const std::string raw =
        msg("From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: report\n"
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XYZ\"\n\n"
            "This is a multi-part message in MIME format.\n"
            "--XYZ\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
            "Hello Bob,=0D=0Ahere is the r=C3=A9port.\nBye\n"
            "--XYZ\nContent-Type: application/pdf; name=\"report.pdf\"\nContent-Transfer-Encoding: base64\n"
            "Content-Disposition: attachment; filename=\"report.pdf\"\n\n"
            "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl\n"
            "Y29kZT4+CnN0cmVhbQp4nA==\n"
            "--XYZ--\nepilogue\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(envelope(idx, raw),
              R"((NIL "report" (("Alice" NIL "alice" "example.com")) (("Alice" NIL "alice" "example.com")) )"
              R"((("Alice" NIL "alice" "example.com")) ((NIL NIL "bob" "example.com")) NIL NIL NIL NIL))");
    EXPECT_EQ(bodystructure(idx, raw, false),
              R"((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 45 1))"
              R"(("application" "pdf" ("name" "report.pdf") NIL NIL "base64" 102) "mixed"))");
    EXPECT_EQ(bodystructure(idx, raw, true),
              R"((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 45 1 NIL NIL NIL NIL))"
              R"(("application" "pdf" ("name" "report.pdf") NIL NIL "base64" 102 NIL )"
              R"(("attachment" ("filename" "report.pdf")) NIL NIL) "mixed" ("boundary" "XYZ") NIL NIL NIL))");
    EXPECT_EQ(fetch(idx, raw, "1"), "Hello Bob,=0D=0Ahere is the r=C3=A9port.\r\nBye");
    EXPECT_EQ(fetch(idx, raw, "2"),
              "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl\r\n"
              "Y29kZT4+CnN0cmVhbQp4nA==");
    EXPECT_EQ(fetch(idx, raw, "2.MIME"),
              "Content-Type: application/pdf; name=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
              "Content-Disposition: attachment; filename=\"report.pdf\"\r\n\r\n");
    EXPECT_EQ(
        fetch(idx, raw, "1.MIME"),
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "3"), "");
    const std::string text = fetch(idx, raw, "TEXT");
    EXPECT_EQ(text.substr(0, 46), "This is a multi-part message in MIME format.\r\n");
    EXPECT_EQ(text.substr(text.size() - 19), "--XYZ--\r\nepilogue\r\n");
    EXPECT_EQ(fetch(idx, raw, "HEADER") + text, raw);
    // SEARCH text: quoted-printable undone, the PDF left out.
    std::string search = text_for_search(idx, raw);
    EXPECT_NE(search.find("here is the r\xC3\xA9port."), std::string::npos) << search;
    EXPECT_EQ(search.find("JVBER"), std::string::npos);
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
}

TEST(ImapMessage, AlternativeInsideMixed) {
    const std::string raw = msg(
        "From: a@example.com\nSubject: alt\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"mixed-b\"\n\n"
        "--mixed-b\nContent-Type: multipart/alternative; boundary=\"alt-b\"\n\n"
        "--alt-b\nContent-Type: text/plain; charset=UTF-8\n\nplain\n"
        "--alt-b\nContent-Type: text/html; charset=UTF-8\nContent-Transfer-Encoding: 7bit\n\n<b>html</b>\n"
        "--alt-b--\n\n"
        "--mixed-b\nContent-Type: image/png; name=dot.png\nContent-ID: <dot@x>\n"
        "Content-Transfer-Encoding: base64\nContent-Disposition: inline; filename=dot.png\n\n"
        "iVBORw0KGgo=\n--mixed-b--\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(bodystructure(idx, raw, false),
              R"(((("text" "plain" ("charset" "UTF-8") NIL NIL "7bit" 5 0))"
              R"(("text" "html" ("charset" "UTF-8") NIL NIL "7bit" 11 0) "alternative"))"
              R"(("image" "png" ("name" "dot.png") "<dot@x>" NIL "base64" 12) "mixed"))");
    EXPECT_EQ(
        bodystructure(idx, raw, true),
        R"(((("text" "plain" ("charset" "UTF-8") NIL NIL "7bit" 5 0 NIL NIL NIL NIL))"
        R"(("text" "html" ("charset" "UTF-8") NIL NIL "7bit" 11 0 NIL NIL NIL NIL) "alternative" )"
        R"(("boundary" "alt-b") NIL NIL NIL))"
        R"(("image" "png" ("name" "dot.png") "<dot@x>" NIL "base64" 12 NIL ("inline" ("filename" "dot.png")) )"
        R"(NIL NIL) "mixed" ("boundary" "mixed-b") NIL NIL NIL))");
    EXPECT_EQ(fetch(idx, raw, "1.1"), "plain");
    EXPECT_EQ(fetch(idx, raw, "1.2"), "<b>html</b>");
    EXPECT_EQ(fetch(idx, raw, "1.2.MIME"),
              "Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "1"),
              "--alt-b\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nplain\r\n"
              "--alt-b\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
              "<b>html</b>\r\n--alt-b--\r\n");
    EXPECT_EQ(fetch(idx, raw, "1.MIME"), "Content-Type: multipart/alternative; boundary=\"alt-b\"\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "2"), "iVBORw0KGgo=");
    EXPECT_EQ(fetch(idx, raw, "2.1"), "iVBORw0KGgo=");
    EXPECT_EQ(fetch(idx, raw, "1.3"), "");
    EXPECT_EQ(fetch(idx, raw, "3"), "");
    ASSERT_NE(idx.find({1, 2}), nullptr);
    EXPECT_EQ(idx.find({1, 2})->kind, Part::Kind::Text);
    EXPECT_EQ(idx.find({1})->kind, Part::Kind::Multipart);
    EXPECT_EQ(text_for_search(idx, raw), "plain\n<b>html</b>");
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
}

TEST(ImapMessage, AttachedMessage) {
    const std::string inner =
        "From: Eve <eve@example.net>\r\nTo: Carol <carol@example.org>\r\nSubject: lunch\r\n"
        "Date: Sun, 31 Dec 2023 09:00:00 +0100\r\nMessage-ID: <inner@example.net>\r\n"
        "In-Reply-To: <prev@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
        "--inner\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nNoon?\r\n"
        "--inner\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>Noon?</p>\r\n--inner--";
    const std::string raw =
        msg("From: Carol <carol@example.org>\nTo: Dave <dave@example.org>\nSubject: Fwd: lunch\n"
            "Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <outer@example.org>\n"
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=outer\n\n"
            "--outer\nContent-Type: text/plain\n\nSee below.\n"
            "--outer\nContent-Type: message/rfc822\nContent-Disposition: inline\n\n") +
        inner + "\r\n--outer--\r\n";
    auto idx = MessageIndex::build(raw);
    ASSERT_EQ(inner.size(), 396u);
    const std::string inner_env =
        R"(("Sun, 31 Dec 2023 09:00:00 +0100" "lunch" (("Eve" NIL "eve" "example.net")) )"
        R"((("Eve" NIL "eve" "example.net")) (("Eve" NIL "eve" "example.net")) )"
        R"((("Carol" NIL "carol" "example.org")) NIL NIL "<prev@example.org>" "<inner@example.net>"))";
    EXPECT_EQ(
        bodystructure(idx, raw, false),
        R"((("text" "plain" NIL NIL NIL "7bit" 10 0)("message" "rfc822" NIL NIL NIL "7bit" 396 )" +
            inner_env +
            R"( (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0))"
            R"(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0) "alternative") 17) "mixed"))");
    EXPECT_EQ(
        bodystructure(idx, raw, true),
        R"((("text" "plain" NIL NIL NIL "7bit" 10 0 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 396 )" +
            inner_env +
            R"( (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL))"
            R"(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0 NIL NIL NIL NIL) "alternative" )"
            R"(("boundary" "inner") NIL NIL NIL) 17 NIL ("inline" NIL) NIL NIL) "mixed" ("boundary" "outer") NIL NIL NIL))");
    EXPECT_EQ(fetch(idx, raw, "2"), inner);
    const std::string inner_header = inner.substr(0, inner.find("\r\n\r\n") + 4);
    EXPECT_EQ(fetch(idx, raw, "2.HEADER"), inner_header);
    EXPECT_EQ(fetch(idx, raw, "2.TEXT"), inner.substr(inner_header.size()));
    EXPECT_EQ(fetch(idx, raw, "2.1"), "Noon?");
    EXPECT_EQ(fetch(idx, raw, "2.2"), "<p>Noon?</p>");
    EXPECT_EQ(fetch(idx, raw, "2.1.MIME"), "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "2.MIME"),
              "Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "2.HEADER.FIELDS (SUBJECT from)"),
              "From: Eve <eve@example.net>\r\nSubject: lunch\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw,
                    "2.HEADER.FIELDS.NOT (Content-Type MIME-Version From To Date Message-ID In-Reply-To)"),
              "Subject: lunch\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "2.3"), "");
    EXPECT_EQ(fetch(idx, raw, "1.HEADER"), "");  // part 1 is not a message
    EXPECT_EQ(fetch(idx, raw, "1.TEXT"), "");
    const Part* p2 = idx.find({2});
    ASSERT_NE(p2, nullptr);
    ASSERT_EQ(p2->kind, Part::Kind::Message);
    EXPECT_EQ(idx.part(p2->message).kind, Part::Kind::Multipart);
    EXPECT_EQ(text_for_search(idx, raw), "See below.\nNoon?\n<p>Noon?</p>");
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
}

// A single-part attached message: 1.1 is the attached message's body (its only part).
TEST(ImapMessage, DigestDefaultsToMessage) {
    const std::string raw =
        msg("Content-Type: multipart/digest; boundary=d\n\n"
            "--d\n\nFrom: x@y\nSubject: one\n\nfirst\n"
            "--d\nContent-Type: text/plain\n\nnot a message\n--d--\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(
        bodystructure(idx, raw, false),
        R"((("message" "rfc822" NIL NIL NIL "7bit" 32 (NIL "one" ((NIL NIL "x" "y")) ((NIL NIL "x" "y")) )"
        R"(((NIL NIL "x" "y")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) 3))"
        R"(("text" "plain" NIL NIL NIL "7bit" 13 0) "digest"))");
    EXPECT_EQ(fetch(idx, raw, "1.MIME"), "\r\n");
    EXPECT_EQ(fetch(idx, raw, "1.HEADER"), "From: x@y\r\nSubject: one\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "1.TEXT"), "first");
    EXPECT_EQ(fetch(idx, raw, "1.1"), "first");
    EXPECT_EQ(fetch(idx, raw, "1.1.MIME"), "From: x@y\r\nSubject: one\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "2"), "not a message");
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
}

TEST(ImapMessage, Rfc2231Parameters) {
    const std::string raw =
        msg("From: a@b.c\nContent-Type: application/octet-stream;\n name*1=\"name.txt\";\n name*0=\"very "
            "long \"\n"
            "Content-Disposition: attachment;\n filename*0*=utf-8''%E2%82%AC%20rates;\n filename*1=\" "
            "2024.txt\";\n"
            " title*=us-ascii'en'x%20y; Size=12\n"
            "Content-Language: en, de\nContent-Location: http://x/y\nContent-ID: <id1@x>\n"
            "Content-Description: the rates\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\nabc\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(
        bodystructure(idx, raw, true),
        R"(("application" "octet-stream" ("name" "very long name.txt") "<id1@x>" "the rates" "7bit" 5 )"
        R"("Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename*" "utf-8''%E2%82%AC%20rates%202024.txt" )"
        R"("title*" "us-ascii'en'x%20y" "Size" "12")) ("en" "de") "http://x/y"))");
    EXPECT_EQ(
        bodystructure(idx, raw, false),
        R"(("application" "octet-stream" ("name" "very long name.txt") "<id1@x>" "the rates" "7bit" 5))");
    EXPECT_TRUE(GrammarOk(idx, raw));
}

TEST(ImapMessage, ParameterQuirks) {
    // Comments, an unquoted value with spaces, junk between parameters, quoted-pair escapes, case kept.
    const std::string raw =
        msg("Content-Type: Text/HTML (comment) ; CharSet=\"ISO-8859-1\" (latin) ; junk ; "
            "Name=my file.htm; q=\"a\\\"b\\\\c\"\n"
            "Content-Transfer-Encoding: Quoted-Printable (qp)\n\n<p>\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(bodystructure(idx, raw, false),
              R"(("Text" "HTML" ("CharSet" "ISO-8859-1" "Name" "my file.htm" "q" "a\"b\\c") NIL NIL )"
              R"("Quoted-Printable" 5 1))");
    // Invalid Content-Type (no subtype) is the RFC 2045 default.
    const std::string bad = msg("Content-Type: text\n\nx");
    auto bidx = MessageIndex::build(bad);
    EXPECT_EQ(bodystructure(bidx, bad, false),
              R"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0))");
}

TEST(ImapMessage, GroupsRoutesAndComments) {
    const std::string raw = msg(
        "From: \"Doe, John\" <john@x.org> (comment)\nSender: (nobody)\nReply-To: \n"
        "To: A Group: ann@x.org, \"Bo b\" <bob@y.org>;, undisclosed-recipients:;\n"
        "Cc: <@r1.org,@r2.org:route@dest.org>, chris@z.org (Chris Z),\n =?utf-8?q?J=C3=B6rg?= <joerg@x.de>\n"
        "Bcc: Joe Q. Public <jqp@w.org>, \"john doe\"@example.com, nodomain, <>\n"
        "Subject: say \"hi\" \\ back\\slash\nIn-Reply-To: \n\nhi\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(
        envelope(idx, raw),
        R"((NIL "say \"hi\" \\ back\\slash" (("Doe, John" NIL "john" "x.org")) (("Doe, John" NIL "john" "x.org")) )"
        R"((("Doe, John" NIL "john" "x.org")) )"
        R"(((NIL NIL "A Group" NIL)(NIL NIL "ann" "x.org")("Bo b" NIL "bob" "y.org")(NIL NIL NIL NIL))"
        R"((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) )"
        R"(((NIL "@r1.org,@r2.org" "route" "dest.org")("Chris Z" NIL "chris" "z.org"))"
        R"(("=?utf-8?q?J=C3=B6rg?=" NIL "joerg" "x.de")) )"
        R"((("Joe Q. Public" NIL "jqp" "w.org")(NIL NIL "john doe" "example.com")(NIL NIL "nodomain" "")(NIL NIL "" "")) )"
        R"("" NIL))");
    EXPECT_TRUE(GrammarOk(idx, raw));
}

TEST(ImapMessage, MissingHeaders) {
    const std::string raw = msg("From: x@y\nTo: someone\n\nbody\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(
        envelope(idx, raw),
        R"((NIL NIL ((NIL NIL "x" "y")) ((NIL NIL "x" "y")) ((NIL NIL "x" "y")) ((NIL NIL "someone" "")) NIL NIL NIL NIL))");
    EXPECT_EQ(bodystructure(idx, raw, false),
              R"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1))");
    const std::string none = msg("\nonly a body\n");
    auto nidx = MessageIndex::build(none);
    EXPECT_EQ(envelope(nidx, none), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
    EXPECT_EQ(fetch(nidx, none, "HEADER"), "\r\n");
    EXPECT_EQ(fetch(nidx, none, "TEXT"), "only a body\r\n");
    EXPECT_EQ(fetch(nidx, none, "HEADER.FIELDS (FROM)"), "\r\n");
}

TEST(ImapMessage, EightBitAndOddHeaderBytes) {
    const std::string raw =
        msg("From: J\xC3\xB6rg <j@x.de>\nSubject: Gr\xC3\xBC\xC3\x9F"
            "e\nX: a\n\nbody\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(envelope(idx, raw),
              "(NIL {7}\r\nGr\xC3\xBC\xC3\x9F"
              "e (({5}\r\nJ\xC3\xB6rg NIL \"j\" \"x.de\")) "
              "(({5}\r\nJ\xC3\xB6rg NIL \"j\" \"x.de\")) (({5}\r\nJ\xC3\xB6rg NIL \"j\" \"x.de\")) NIL NIL "
              "NIL NIL NIL)");
    EXPECT_TRUE(GrammarOk(idx, raw));
    // NUL becomes 0x80 inside the literal; a long subject is a literal too; a TAB may stay quoted.
    std::string nul = std::string("Subject: a") + '\0' + "b\r\n\r\n";
    auto nidx = MessageIndex::build(nul);
    EXPECT_EQ(envelope(nidx, nul),
              "(NIL {3}\r\na\x80"
              "b NIL NIL NIL NIL NIL NIL NIL NIL)");
    const std::string long_subject = "Subject: " + std::string(1100, 's') + "\r\n\r\n";
    auto lidx = MessageIndex::build(long_subject);
    EXPECT_EQ(envelope(lidx, long_subject).substr(0, 13), "(NIL {1100}\r\n");
    const std::string tab = "Subject: a\tb\r\n\r\n";
    auto tidx = MessageIndex::build(tab);
    EXPECT_EQ(envelope(tidx, tab), "(NIL \"a\tb\" NIL NIL NIL NIL NIL NIL NIL NIL)");
}

TEST(ImapMessage, HeaderFieldsWithFolding) {
    const std::string raw =
        msg("Received: from a\n  by b\n\tfor c\nSubject: folded\n subject line\nX-Empty:\n"
            "subject: second\nFrom: z@z\n\nbody\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(fetch(idx, raw, "HEADER.FIELDS (SUBJECT)"),
              "Subject: folded\r\n subject line\r\nsubject: second\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "HEADER.FIELDS (\"received\" X-EMPTY)"),
              "Received: from a\r\n  by b\r\n\tfor c\r\nX-Empty:\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "header.fields.not (Subject received)"), "X-Empty:\r\nFrom: z@z\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "HEADER.FIELDS (NOPE)"), "\r\n");
    EXPECT_EQ(fetch(idx, raw, "HEADER.FIELDS.NOT (NOPE)"), fetch(idx, raw, "HEADER"));
    EXPECT_EQ(envelope(idx, raw).substr(0, 27), "(NIL \"folded subject line\" ");
    EXPECT_EQ(header_field(raw, "received"), "from a  by b\tfor c");
    EXPECT_EQ(header_field(raw, "SUBJECT"), "folded subject line");
    EXPECT_EQ(header_field(raw, "x-empty"), "");
    EXPECT_EQ(header_field(raw, "to"), std::nullopt);
    EXPECT_EQ(header_field(raw, "body"), std::nullopt);
    // A header field at the very end without its CRLF still comes back as a whole line.
    const std::string cut = "A: 1\r\nB: 2";
    auto cidx = MessageIndex::build(cut);
    EXPECT_EQ(fetch(cidx, cut, "HEADER.FIELDS (B)"), "B: 2\r\n\r\n");
    EXPECT_EQ(fetch(cidx, cut, "HEADER"), cut);
    EXPECT_EQ(fetch(cidx, cut, "TEXT"), "");
}

TEST(ImapMessage, Partial) {
    const std::string b = "0123456789";
    EXPECT_EQ(partial(b, 0, 4), "0123");
    EXPECT_EQ(partial(b, 8, 10), "89");
    EXPECT_EQ(partial(b, 9, 1), "9");
    EXPECT_EQ(partial(b, 10, 1), "");
    EXPECT_EQ(partial(b, 11, 5), "");
    EXPECT_EQ(partial(b, 3, std::numeric_limits<std::uint64_t>::max()), "3456789");
    EXPECT_EQ(partial(b, std::numeric_limits<std::uint64_t>::max(), 1), "");
    EXPECT_EQ(partial("", 0, 1), "");
    EXPECT_EQ(section_label(Section{}, 8), "BODY[]<8>");
}

TEST(ImapMessage, ParseSectionAndLabels) {
    struct Case {
        const char* spec;
        const char* label;
    };
    for (const Case& c :
         {Case{"", "BODY[]"}, Case{"HEADER", "BODY[HEADER]"}, Case{"text", "BODY[TEXT]"},
          Case{"1", "BODY[1]"}, Case{"1.2.3", "BODY[1.2.3]"}, Case{"4294967295", "BODY[4294967295]"},
          Case{"1.2.MIME", "BODY[1.2.MIME]"}, Case{"3.header", "BODY[3.HEADER]"},
          Case{"3.TEXT", "BODY[3.TEXT]"}, Case{"3.HEADER.FIELDS (X)", "BODY[3.HEADER.FIELDS (X)]"},
          Case{"header.fields (date \"from\")", "BODY[HEADER.FIELDS (DATE FROM)]"},
          Case{"HEADER.FIELDS.NOT (A b)", "BODY[HEADER.FIELDS.NOT (A B)]"},
          Case{"HEADER.FIELDS (\"a b\" \"\" \"nil\" x])",
               "BODY[HEADER.FIELDS (\"A B\" \"\" \"NIL\" \"X]\")]"},
          Case{"HEADER.FIELDS (\"q\\\"\")", "BODY[HEADER.FIELDS (\"Q\\\"\")]"}}) {
        auto s = parse_section(c.spec);
        ASSERT_TRUE(s.has_value()) << c.spec;
        EXPECT_EQ(section_label(*s), c.label) << c.spec;
    }
    auto s = parse_section("2.HEADER.FIELDS (Date \"From\")");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->part, (std::vector<std::uint32_t>{2}));
    EXPECT_EQ(s->text, Section::Text::HeaderFields);
    EXPECT_EQ(s->fields, (std::vector<std::string>{"Date", "From"}));
    for (const char* bad : {"MIME",
                            "0",
                            "01",
                            "1.0",
                            "1.",
                            ".1",
                            "1..2",
                            "HEADER.FIELDS",
                            "HEADER.FIELDS ()",
                            "HEADER.FIELDS (A  B)",
                            "HEADER.FIELDS ( A)",
                            "HEADER.FIELDS (A )",
                            "HEADER.FIELDS (A) ",
                            "HEADER.FIELDS (\"A)",
                            "HEADER.FIELDS ({1}\r\nA)",
                            "HEADER.FIELDS (A%)",
                            "HEADER.FIELDS A",
                            "HEADER.FIELDS  (A)",
                            "TEXT.1",
                            "1.TEXTX",
                            "4294967296",
                            "99999999999",
                            "HEADER.FIELDS.NOT",
                            "BODY",
                            "1 ",
                            " 1",
                            "1.MIME.1",
                            "HEADER.",
                            "1.2.MIME (A)"})
        EXPECT_FALSE(parse_section(bad).has_value()) << bad;
    std::string many;
    for (int i = 0; i < 101; ++i) many += i ? ".1" : "1";
    EXPECT_FALSE(parse_section(many).has_value());
}

// ---- malformed and hostile
// ---------------------------------------------------------------------------------

TEST(ImapMessage, MissingClosingBoundary) {
    const std::string raw = msg(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\none\n--b\n\ntwo\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(
        bodystructure(idx, raw, false),
        R"((("text" "plain" NIL NIL NIL "7bit" 3 0)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 1) "mixed"))");
    EXPECT_EQ(fetch(idx, raw, "1"), "one");
    EXPECT_EQ(fetch(idx, raw, "2"), "two\r\n");
    EXPECT_EQ(fetch(idx, raw, "2.MIME"), "\r\n");
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
}

TEST(ImapMessage, BoundaryNeverFoundOrMissing) {
    for (const char* ct :
         {"multipart/mixed; boundary=zzz", "multipart/mixed", "multipart/mixed; boundary=\"\""}) {
        const std::string raw = msg(std::string("Content-Type: ") + ct + "\n\n--b\n\none\n");
        auto idx = MessageIndex::build(raw);
        EXPECT_EQ(bodystructure(idx, raw, false),
                  R"((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed"))")
            << ct;
        EXPECT_EQ(fetch(idx, raw, "1"), "");
        EXPECT_EQ(idx.find({1}), nullptr);
        EXPECT_EQ(fetch(idx, raw, "TEXT"), "--b\r\n\r\none\r\n");
        EXPECT_TRUE(RangesOk(idx));
        EXPECT_TRUE(GrammarOk(idx, raw));
    }
}

// The CRLF before a delimiter belongs to it: an empty line that ends a part's header and is also that
// CRLF leaves the header without it, and an attached message that starts there is empty.
TEST(ImapMessage, HeaderEndsAtDelimiter) {
    const std::string raw =
        msg("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\n--b\nX: "
            "y\n--b\n--b--");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(fetch(idx, raw, "1.MIME"), "Content-Type: message/rfc822\r\n");
    EXPECT_EQ(fetch(idx, raw, "1"), "");
    EXPECT_EQ(fetch(idx, raw, "1.HEADER"), "");
    EXPECT_EQ(fetch(idx, raw, "2.MIME"), "X: y");
    EXPECT_EQ(fetch(idx, raw, "3"), "");
    EXPECT_EQ(idx.root().children.size(), 3u);
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
}

TEST(ImapMessage, BoundaryPrefixes) {
    // Inner boundary extends the outer one and vice versa: the longest match wins.
    for (auto [outer, inner] : {std::pair{"abc", "abcdef"}, std::pair{"abcdef", "abc"}}) {
        const std::string o(outer), i(inner);
        const std::string raw = msg("Content-Type: multipart/mixed; boundary=" + o + "\n\n--" + o +
                                    "\nContent-Type: multipart/alternative; boundary=" + i + "\n\n--" + i +
                                    "\nContent-Type: text/plain\n\nx\n--" + i + "--\n--" + o +
                                    "\nContent-Type: text/plain\n\ny\n--" + o + "--\n");
        auto idx = MessageIndex::build(raw);
        EXPECT_EQ(
            bodystructure(idx, raw, false),
            R"(((("text" "plain" NIL NIL NIL "7bit" 1 0) "alternative")("text" "plain" NIL NIL NIL "7bit" 1 0) "mixed"))")
            << o << " " << i;
        EXPECT_EQ(fetch(idx, raw, "1.1"), "x");
        EXPECT_EQ(fetch(idx, raw, "2"), "y");
    }
    // An outer delimiter ends an inner multipart that never closed.
    const std::string raw = msg(
        "Content-Type: multipart/mixed; boundary=out\n\n--out\nContent-Type: multipart/mixed; boundary=in\n\n"
        "--in\n\nunclosed\n--out\n\nnext\n--out--\n");
    auto idx = MessageIndex::build(raw);
    EXPECT_EQ(fetch(idx, raw, "1.1"), "unclosed");
    EXPECT_EQ(fetch(idx, raw, "2"), "next");
    EXPECT_TRUE(RangesOk(idx));
}

TEST(ImapMessage, GarbageAndEmpty) {
    const std::vector<std::string> inputs = {
        "",
        "\r\n",
        std::string("\0\x01garbage without header\r\n--\r\n: x\r\n\r\n", 38),
        "Subject: only a header\r\nX: y",
        " leading continuation\r\nSubject: x\r\n\r\nbody",
        "Content-Type: message/rfc822\r\n\r\n",
        "Content-Type: message/rfc822",
        "Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
        "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a",
        "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a--",
        "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n--a\r\n--a\r\n",
        "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; "
        "boundary=a\r\n\r\n--a\r\n--a--\r\n--a--\r\n",
        "From: ((((((((\r\nTo: \"unterminated\r\nCc: <<<<@@@>>>,,,;;;:::\r\nBcc: a:b:c;d;e\r\nSender: "
        "[x\r\n\r\n",
        "Content-Type: ;;;===\"\"\"\r\nContent-Disposition: ; a*0*=x; a*1*=y; a*0=z\r\nContent-Language: "
        ",,(x),\r\n\r\nz",
    };
    for (const auto& raw : inputs) {
        auto idx = MessageIndex::build(raw);
        EXPECT_TRUE(RangesOk(idx)) << raw;
        EXPECT_TRUE(GrammarOk(idx, raw)) << raw;
        EXPECT_EQ(fetch(idx, raw, "HEADER") + fetch(idx, raw, "TEXT"), raw);
        (void)text_for_search(idx, raw);
    }
    const std::string g = inputs[2];
    auto idx = MessageIndex::build(g);
    EXPECT_EQ(fetch(idx, g, "HEADER"), "");
    EXPECT_EQ(fetch(idx, g, "1"), g);
    EXPECT_EQ(bodystructure(idx, g, false), R"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 38 4))");
}

TEST(ImapMessage, TenThousandNestedMultiparts) {
    std::string raw;
    const int n = 10000;
    char b[16];
    for (int i = 0; i < n; ++i) {
        std::snprintf(b, sizeof b, "b%05d", i);
        raw += std::string("Content-Type: multipart/mixed; boundary=") + b + "\r\n\r\n--" + b + "\r\n";
    }
    raw += "Content-Type: text/plain\r\n\r\ndeep\r\n";
    for (int i = n - 1; i >= 0; --i) {
        std::snprintf(b, sizeof b, "b%05d", i);
        raw += std::string("--") + b + "--\r\n";
    }
    auto idx = MessageIndex::build(raw);
    EXPECT_TRUE(idx.truncated());
    EXPECT_EQ(idx.parts().size(), 21u);  // depths 0..20
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
    std::vector<std::uint32_t> path(20, 1);
    const Part* deepest = idx.find(path);
    ASSERT_NE(deepest, nullptr);
    EXPECT_TRUE(deepest->opaque);
    EXPECT_EQ(deepest->type, "application");
    EXPECT_EQ(deepest->subtype, "octet-stream");
    EXPECT_EQ(deepest->depth, 20);
    auto spec = parse_section("1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.MIME");
    ASSERT_TRUE(spec);
    EXPECT_EQ(section_bytes(idx, raw, *spec), "Content-Type: multipart/mixed; boundary=b00020\r\n\r\n");
    std::string body = section_bytes(idx, raw, *parse_section("1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1"));
    EXPECT_EQ(body.substr(0, 9), "--b00020\r");
    EXPECT_EQ(body.substr(body.size() - 10), "--b00020--");
}

TEST(ImapMessage, TenThousandNestedMessages) {
    std::string raw;
    for (int i = 0; i < 10000; ++i)
        raw += "Subject: level " + std::to_string(i) + "\r\nContent-Type: message/rfc822\r\n\r\n";
    raw += "Subject: last\r\n\r\nbody\r\n";
    auto idx = MessageIndex::build(raw);
    EXPECT_TRUE(idx.truncated());
    EXPECT_EQ(idx.parts().size(), 21u);
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
    EXPECT_EQ(envelope(idx, raw), "(NIL \"level 0\" NIL NIL NIL NIL NIL NIL NIL NIL)");
    EXPECT_EQ(fetch(idx, raw, "1.HEADER"), "Subject: level 1\r\nContent-Type: message/rfc822\r\n\r\n");
    EXPECT_EQ(fetch(idx, raw, "1.1.HEADER"), "Subject: level 2\r\nContent-Type: message/rfc822\r\n\r\n");
}

TEST(ImapMessage, FiveThousandParts) {
    std::string raw = "Content-Type: multipart/mixed; boundary=p\r\n\r\n";
    for (int i = 0; i < 5000; ++i)
        raw += "--p\r\nContent-Type: text/plain\r\n\r\npart " + std::to_string(i) + "\r\n";
    raw += "--p--\r\n";
    auto idx = MessageIndex::build(raw);
    EXPECT_TRUE(idx.truncated());
    EXPECT_EQ(idx.parts().size(), 1000u);
    EXPECT_EQ(idx.root().children.size(), 999u);
    EXPECT_EQ(fetch(idx, raw, "999"), "part 998");
    EXPECT_EQ(fetch(idx, raw, "1000"), "");
    EXPECT_TRUE(RangesOk(idx));
    EXPECT_TRUE(GrammarOk(idx, raw));
    Limits small;
    small.max_parts = 10;
    auto sidx = MessageIndex::build(raw, small);
    EXPECT_EQ(sidx.parts().size(), 10u);
    EXPECT_TRUE(RangesOk(sidx, small));
}

TEST(ImapMessage, HeaderLineLimit) {
    std::string raw = "Subject: s\r\n";
    for (int i = 0; i < 20000; ++i) raw += "X-Filler: " + std::to_string(i) + "\r\n";
    raw += "Content-Type: text/html\r\nTo: late@x\r\n\r\nbody";
    auto idx = MessageIndex::build(raw);
    // The block still ends at its empty line; fields past 10,000 lines are not interpreted.
    EXPECT_EQ(fetch(idx, raw, "TEXT"), "body");
    EXPECT_EQ(idx.root().subtype, "plain");
    EXPECT_EQ(fetch(idx, raw, "HEADER.FIELDS (TO)"), "\r\n");
    EXPECT_EQ(envelope(idx, raw), "(NIL \"s\" NIL NIL NIL NIL NIL NIL NIL NIL)");
}

// Mutations of valid messages: whatever comes out must be in range and well-formed IMAP.
TEST(ImapMessage, MutatedMessagesStayWellFormed) {
    const std::vector<std::string> seeds = {
        msg("From: A <a@x>\nTo: g: b@y, c@z;\nSubject: s\nContent-Type: multipart/mixed; boundary=q\n\n"
            "--q\nContent-Type: text/plain; charset*0*=utf-8''a; charset*1=b\n\nhello\n"
            "--q\nContent-Type: message/rfc822\n\nFrom: c@d\nContent-Type: multipart/alternative; "
            "boundary=r\n\n"
            "--r\n\none\n--r\nContent-Type: text/html\n\n<p>\n--r--\n--q\nContent-Type: application/x\n"
            "Content-Disposition: attachment; filename=\"f\"\n\nAAAA\n--q--\n"),
        msg("Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: x\n\ny\n--d--\n"),
    };
    std::mt19937 rng(12345);
    const std::string inserts[] = {"--q", "--r", "--d", "\r\n", "\r\n\r\n", ":",
                                   "\"",  "(",   "<",   ";",    "--q--",    "\x80"};
    int checked = 0;
    for (const auto& seed : seeds) {
        for (int round = 0; round < 400; ++round) {
            std::string m = seed;
            int edits = 1 + static_cast<int>(rng() % 4);
            for (int e = 0; e < edits && !m.empty(); ++e) {
                std::size_t pos = rng() % m.size();
                switch (rng() % 4) {
                    case 0:
                        m[pos] = static_cast<char>(rng() % 256);
                        break;
                    case 1:
                        m.insert(pos, inserts[rng() % std::size(inserts)]);
                        break;
                    case 2:
                        m.erase(pos, rng() % 8);
                        break;
                    default:
                        m.resize(pos);
                        break;
                }
            }
            auto idx = MessageIndex::build(m);
            ASSERT_TRUE(RangesOk(idx)) << m;
            ASSERT_TRUE(GrammarOk(idx, m)) << m;
            for (const char* spec :
                 {"1", "2", "2.1", "2.HEADER", "2.TEXT", "2.1.MIME", "HEADER.FIELDS (FROM TO)", "3"})
                (void)section_bytes(idx, m, *parse_section(spec));
            (void)text_for_search(idx, m);
            ++checked;
        }
    }
    EXPECT_EQ(checked, 800);
}

TEST(ImapMessage, SearchTextDecodesAndConverts) {
    const std::string raw =
        msg("Content-Type: multipart/mixed; boundary=s\n\n"
            "--s\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: "
            "quoted-printable\n\nGr=FC=DFe\n"
            "--s\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\nPGI+aGk8L2I+\n"
            "--s\nContent-Type: application/octet-stream\n\nsecretbinary\n"
            "--s\nContent-Type: text/plain; charset=x-unknown-charset\n\nbad \xFF byte\n--s--\n");
    auto idx = MessageIndex::build(raw);
    std::string text = text_for_search(idx, raw);
    EXPECT_NE(text.find("Gr\xC3\xBC\xC3\x9F"
                        "e"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("<b>hi</b>"), std::string::npos) << text;
    EXPECT_EQ(text.find("secretbinary"), std::string::npos) << text;
    EXPECT_NE(text.find("bad "), std::string::npos) << text;
    EXPECT_EQ(text.find('\xFF'), std::string::npos) << text;  // made valid UTF-8
    EXPECT_LE(text_for_search(idx, raw, 4).size(), 4u);
}
