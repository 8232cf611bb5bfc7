// FETCH data of one message (see imap_message.h): a single pass over the lines finds every entity's
// header and body ranges, header values are parsed by small RFC 5322 / 2045 / 2231 readers below, and
// the renderers turn the tree into RFC 3501 syntax. GMime appears only in text_for_search().
#include "graph/mail/imap_message.h"

#include <gmime/gmime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "common/ascii.h"
#include "graph/mail/gobject_ptr.h"

namespace gb::mail::imap {

namespace {

constexpr std::size_t kMaxQuoted = 1024;
constexpr std::size_t kMaxBoundary = 200;        // RFC 2046 says 70; longer is treated as no boundary
constexpr std::size_t kMaxParams = 1000;         // parameters read per header value
constexpr std::size_t kMaxSectionNumbers = 100;  // part numbers in one section spec

using ascii::iequals;
using ascii::istarts_with;

bool is_wsp(char c) {
    return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (is_wsp(s.front()) || s.front() == '\r' || s.front() == '\n')) s.remove_prefix(1);
    while (!s.empty() && (is_wsp(s.back()) || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
    return s;
}

// raw[b, e) clamped to raw (an index used with other bytes must not read out of bounds).
std::string_view slice(std::string_view raw, std::size_t b, std::size_t e) {
    b = std::min(b, raw.size());
    e = std::min(std::max(b, e), raw.size());
    return raw.substr(b, e - b);
}

// ---- IMAP strings --------------------------------------------------------------------------------

void append_string(std::string& out, std::string_view s) {
    bool quotable = s.size() <= kMaxQuoted;
    for (std::size_t i = 0; quotable && i < s.size(); ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if ((c < 0x20 && c != '\t') || c >= 0x7f) quotable = false;
    }
    if (quotable) {
        out.push_back('"');
        for (char c : s) {
            if (c == '"' || c == '\\') out.push_back('\\');
            out.push_back(c);
        }
        out.push_back('"');
        return;
    }
    out += '{';
    out += std::to_string(s.size());
    out += "}\r\n";
    for (char c : s) out.push_back(c == '\0' ? '\x80' : c);
}

void append_nstring(std::string& out, const std::optional<std::string>& s) {
    if (s)
        append_string(out, *s);
    else
        out += "NIL";
}

// ---- lines and header fields -----------------------------------------------------------------------

struct Line {
    std::size_t begin = 0, content_end = 0, end = 0;  // content excludes the CRLF / LF
};

Line line_at(std::string_view raw, std::size_t pos, std::size_t limit) {
    Line l;
    l.begin = pos;
    const void* nl = std::memchr(raw.data() + pos, '\n', limit - pos);
    if (!nl) {
        l.content_end = l.end = limit;
        return l;
    }
    auto p = static_cast<std::size_t>(static_cast<const char*>(nl) - raw.data());
    l.end = p + 1;
    l.content_end = (p > pos && raw[p - 1] == '\r') ? p - 1 : p;
    return l;
}

enum class LineKind { Blank, Continuation, Field, Invalid };

// A header line: the name is 1*(%x21-7E except ":"), optional WSP before the colon (obsolete syntax).
LineKind classify(std::string_view line, std::size_t* name_len = nullptr, std::size_t* colon = nullptr) {
    if (line.empty()) return LineKind::Blank;
    if (is_wsp(line[0])) return LineKind::Continuation;
    std::size_t i = 0;
    while (i < line.size()) {
        auto c = static_cast<unsigned char>(line[i]);
        if (c <= 32 || c >= 127 || c == ':') break;
        ++i;
    }
    if (i == 0) return LineKind::Invalid;
    std::size_t j = i;
    while (j < line.size() && is_wsp(line[j])) ++j;
    if (j >= line.size() || line[j] != ':') return LineKind::Invalid;
    if (name_len) *name_len = i;
    if (colon) *colon = j;
    return LineKind::Field;
}

struct Field {
    std::string_view name;
    std::size_t begin = 0, end = 0;  // the whole field, continuation lines and line end included
    std::size_t value_begin = 0;     // after the colon
};

// Calls f(Field) for every field of the header block [begin, end), interpreting at most max_lines
// lines. The block was delimited by the same classify() rules, so it holds only fields, their
// continuation lines and possibly the empty line.
template <class F>
void for_each_field(std::string_view raw, std::size_t begin, std::size_t end, std::size_t max_lines, F&& f) {
    end = std::min(end, raw.size());
    std::size_t pos = std::min(begin, end);
    std::size_t lines = 0;
    std::optional<Field> cur;
    while (pos < end && lines < max_lines) {
        Line l = line_at(raw, pos, end);
        ++lines;
        std::size_t name_len = 0, colon = 0;
        LineKind kind = classify(raw.substr(l.begin, l.content_end - l.begin), &name_len, &colon);
        if (kind == LineKind::Continuation && cur) {
            cur->end = l.end;
        } else if (kind == LineKind::Field) {
            if (cur) f(*cur);
            cur = Field{raw.substr(l.begin, name_len), l.begin, l.end, l.begin + colon + 1};
        } else {
            break;
        }
        pos = l.end;
    }
    if (cur) f(*cur);
}

// RFC 5322 unfolding (CR and LF removed: continuation lines start with WSP), then trimmed.
std::string unfold(std::string_view raw, std::size_t b, std::size_t e) {
    std::string_view v = trim(slice(raw, b, e));
    std::string out;
    out.reserve(v.size());
    for (char c : v)
        if (c != '\r' && c != '\n') out.push_back(c);
    std::string_view t = trim(out);
    return std::string(t);
}

// End of the header block starting at `begin`: after its empty line, or at the first line that is not
// a header line. Linear.
std::size_t header_block_end(std::string_view raw, std::size_t begin) {
    std::size_t pos = begin;
    bool any = false;
    while (pos < raw.size()) {
        Line l = line_at(raw, pos, raw.size());
        LineKind kind = classify(raw.substr(l.begin, l.content_end - l.begin));
        if (kind == LineKind::Blank) return l.end;
        if (kind == LineKind::Invalid || (kind == LineKind::Continuation && !any)) return pos;
        any = true;
        pos = l.end;
    }
    return raw.size();
}

// ---- RFC 2045 values: tokens, quoted strings, comments, parameters ------------------------------------

struct Cursor {
    std::string_view s;
    std::size_t i = 0;
    bool end() const { return i >= s.size(); }
    char peek() const { return s[i]; }
};

void skip_comment(Cursor& c) {  // at '('
    int depth = 0;
    while (!c.end()) {
        char ch = c.s[c.i];
        if (ch == '\\') {
            c.i += 2;
            continue;
        }
        ++c.i;
        if (ch == '(') ++depth;
        if (ch == ')' && --depth == 0) return;
    }
    c.i = c.s.size();
}

void skip_cfws(Cursor& c) {
    while (!c.end()) {
        char ch = c.peek();
        if (is_wsp(ch) || ch == '\r' || ch == '\n')
            ++c.i;
        else if (ch == '(')
            skip_comment(c);
        else
            break;
    }
    c.i = std::min(c.i, c.s.size());
}

bool is_tspecial(char c) {
    return std::strchr("()<>@,;:\\\"/[]?=", c) != nullptr;
}

// RFC 2045 token (8-bit octets tolerated).
std::string read_token(Cursor& c) {
    std::size_t start = c.i;
    while (!c.end()) {
        auto ch = static_cast<unsigned char>(c.peek());
        if (ch <= 32 || ch == 127 || is_tspecial(static_cast<char>(ch))) break;
        ++c.i;
    }
    return std::string(c.s.substr(start, c.i - start));
}

std::string read_quoted(Cursor& c) {  // at '"'; unescaped content; an unterminated string runs to the end
    std::string out;
    ++c.i;
    while (!c.end()) {
        char ch = c.s[c.i];
        if (ch == '"') {
            ++c.i;
            return out;
        }
        if (ch == '\\' && c.i + 1 < c.s.size()) {
            out.push_back(c.s[c.i + 1]);
            c.i += 2;
            continue;
        }
        if (ch != '\r' && ch != '\n') out.push_back(ch);
        ++c.i;
    }
    return out;
}

void skip_to_semicolon(Cursor& c) {
    while (!c.end() && c.peek() != ';') {
        if (c.peek() == '"')
            read_quoted(c);
        else
            ++c.i;
    }
}

bool is_attribute_char(unsigned char c) {
    return c > 32 && c < 127 && c != '*' && c != '\'' && c != '%' && !is_tspecial(static_cast<char>(c));
}

std::string percent_encode(std::string_view s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (is_attribute_char(c)) {
            out.push_back(ch);
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

// RFC 2231: name*0, name*1*, ... are joined in section order into one parameter; when the first
// section is extended the result is `name*` with the value still encoded (charset'lang'%xx), plain
// sections percent-encoded into it. Everything else passes through as written.
std::vector<Param> join_continuations(std::vector<Param> raw) {
    struct Seg {
        unsigned long num;
        bool ext;
        std::string base;
        std::string value;
    };
    struct Group {
        std::size_t slot;
        std::vector<Seg> segs;
    };
    std::vector<std::optional<Param>> out;
    std::map<std::string, Group> groups;
    for (auto& p : raw) {
        std::string_view name = p.name;
        bool ext = !name.empty() && name.back() == '*';
        if (ext) name.remove_suffix(1);
        std::size_t star = name.rfind('*');
        bool numbered = star != std::string_view::npos && star > 0 && star + 1 < name.size() &&
                        name.size() - star - 1 <= 4 &&
                        std::all_of(name.begin() + static_cast<std::ptrdiff_t>(star) + 1, name.end(),
                                    [](char c) { return c >= '0' && c <= '9'; });
        if (!numbered) {
            out.emplace_back(std::move(p));
            continue;
        }
        std::string base(name.substr(0, star));
        unsigned long num = std::stoul(std::string(name.substr(star + 1)));
        std::string key;
        for (char c : base) key.push_back(ascii::lower(c));
        auto it = groups.find(key);
        if (it == groups.end()) {
            it = groups.emplace(key, Group{out.size(), {}}).first;
            out.emplace_back(std::nullopt);
        }
        it->second.segs.push_back(Seg{num, ext, std::move(base), std::move(p.value)});
    }
    for (auto& [key, g] : groups) {
        std::stable_sort(g.segs.begin(), g.segs.end(),
                         [](const Seg& a, const Seg& b) { return a.num < b.num; });
        bool extended = g.segs.front().ext;
        Param joined;
        joined.name = g.segs.front().base + (extended ? "*" : "");
        unsigned long last = 0;
        bool first = true;
        for (const auto& s : g.segs) {
            if (!first && s.num == last) continue;  // a repeated section: the first one counts
            first = false;
            last = s.num;
            joined.value += extended && !s.ext ? percent_encode(s.value) : s.value;
        }
        out[g.slot] = std::move(joined);
    }
    std::vector<Param> result;
    for (auto& p : out)
        if (p) result.push_back(std::move(*p));
    return result;
}

// *(";" attribute "=" value), lenient: junk is skipped to the next ';', an unquoted value with spaces
// runs to the next ';'.
std::vector<Param> parse_params(Cursor& c) {
    std::vector<Param> raw;
    while (!c.end() && raw.size() < kMaxParams) {
        skip_cfws(c);
        if (c.end()) break;
        if (c.peek() != ';') {
            skip_to_semicolon(c);
            continue;
        }
        ++c.i;
        skip_cfws(c);
        if (c.end()) break;
        std::string name = read_token(c);
        if (name.empty()) {
            skip_to_semicolon(c);
            continue;
        }
        skip_cfws(c);
        if (c.end() || c.peek() != '=') {
            skip_to_semicolon(c);
            continue;
        }
        ++c.i;
        skip_cfws(c);
        std::string value;
        if (!c.end() && c.peek() == '"') {
            value = read_quoted(c);
        } else {
            std::size_t start = c.i;
            value = read_token(c);
            skip_cfws(c);
            if (!c.end() && c.peek() != ';') {
                skip_to_semicolon(c);
                value = std::string(trim(c.s.substr(start, c.i - start)));
            }
        }
        raw.push_back(Param{std::move(name), std::move(value)});
    }
    return join_continuations(std::move(raw));
}

struct ContentTypeValue {
    std::string type, subtype;
    std::vector<Param> params;
};

std::optional<ContentTypeValue> parse_content_type(std::string_view v) {
    Cursor c{v};
    skip_cfws(c);
    ContentTypeValue ct;
    ct.type = read_token(c);
    skip_cfws(c);
    if (ct.type.empty() || c.end() || c.peek() != '/') return std::nullopt;
    ++c.i;
    skip_cfws(c);
    ct.subtype = read_token(c);
    if (ct.subtype.empty()) return std::nullopt;
    ct.params = parse_params(c);
    return ct;
}

const Param* find_param(const std::vector<Param>& params, std::string_view name) {
    for (const auto& p : params)
        if (iequals(p.name, name)) return &p;
    return nullptr;
}

// ---- RFC 5322 address lists for ENVELOPE ----------------------------------------------------------

struct Tok {
    enum class Kind { Atom, Quoted, DomainLiteral, Special };
    Kind kind = Kind::Atom;
    std::string text;  // Atom / DomainLiteral: raw; Quoted: unescaped content; Special: the character
    bool space_before = false;
    bool is(char special) const { return kind == Kind::Special && text[0] == special; }
    bool word() const { return kind == Kind::Atom || kind == Kind::Quoted; }
};

struct Tokens {
    std::vector<Tok> toks;
    std::vector<std::pair<std::size_t, std::string>> comments;  // (index of the next token, text)
};

Tokens tokenize(std::string_view v) {
    Tokens t;
    bool space = false;
    std::size_t i = 0;
    const std::size_t n = v.size();
    while (i < n) {
        char c = v[i];
        if (is_wsp(c) || c == '\r' || c == '\n') {
            space = true;
            ++i;
            continue;
        }
        if (c == '(') {
            Cursor cur{v, i};
            skip_comment(cur);
            std::size_t close = cur.i;
            std::size_t inner_end = (close > i + 1 && v[close - 1] == ')') ? close - 1 : close;
            t.comments.emplace_back(t.toks.size(), std::string(trim(v.substr(i + 1, inner_end - i - 1))));
            space = true;
            i = close;
            continue;
        }
        Tok tok;
        tok.space_before = space;
        space = false;
        if (c == '"') {
            Cursor cur{v, i};
            tok.kind = Tok::Kind::Quoted;
            tok.text = read_quoted(cur);
            i = cur.i;
        } else if (c == '[') {
            std::size_t close = v.find(']', i);
            std::size_t e = close == std::string_view::npos ? n : close + 1;
            tok.kind = Tok::Kind::DomainLiteral;
            tok.text = std::string(v.substr(i, e - i));
            i = e;
        } else if (std::strchr("<>@,;:.", c)) {
            tok.kind = Tok::Kind::Special;
            tok.text = std::string(1, c);
            ++i;
        } else {
            std::size_t s = i;
            while (i < n && !is_wsp(v[i]) && v[i] != '\r' && v[i] != '\n' &&
                   !std::strchr("(\"[<>@,;:.", v[i]))
                ++i;
            tok.kind = Tok::Kind::Atom;
            tok.text = std::string(v.substr(s, i - s));
        }
        t.toks.push_back(std::move(tok));
    }
    return t;
}

class AddressWriter {
  public:
    explicit AddressWriter(const Tokens& t) : t_(t), n_(t.toks.size()) {}

    // "((name adl mailbox host)...)" or NIL when the list has no address.
    std::string run() {
        list(false);
        if (count_ == 0) return "NIL";
        return "(" + out_ + ")";
    }

  private:
    const Tok& tok(std::size_t k) const { return t_.toks[k]; }
    bool at(char special) const { return i_ < n_ && tok(i_).is(special); }

    void list(bool in_group) {
        while (i_ < n_) {
            if (at(',')) {
                ++i_;
                continue;
            }
            if (in_group && at(';')) return;
            std::size_t before = i_;
            address(in_group);
            if (i_ == before) ++i_;
        }
    }

    void address(bool in_group) {
        std::size_t start = i_;
        std::size_t j = i_;
        while (j < n_ && (tok(j).word() || tok(j).is('.'))) ++j;
        if (j < n_ && tok(j).is(':') && !in_group) return group(start, j);
        if (j < n_ && tok(j).is('<')) return angle(start, j, in_group);
        std::string local = local_part(start, j);
        i_ = j;
        std::string domain;
        bool has_domain = false;
        if (at('@')) {
            ++i_;
            domain = domain_part();
            has_domain = true;
        }
        if (local.empty() && !has_domain) return skip_junk(in_group);
        std::optional<std::string> name = comment_in(start, i_);
        skip_junk(in_group);
        emit(name, std::nullopt, local, domain);
    }

    void group(std::size_t start, std::size_t colon) {
        out_ += "(NIL NIL ";
        append_string(out_, phrase(start, colon));
        out_ += " NIL)";
        ++count_;
        i_ = colon + 1;
        list(true);
        if (at(';')) ++i_;
        out_ += "(NIL NIL NIL NIL)";
        skip_junk(false);
    }

    void angle(std::size_t start, std::size_t lt, bool in_group) {
        std::optional<std::string> name;
        if (std::string p = phrase(start, lt); !p.empty()) name = std::move(p);
        i_ = lt + 1;
        std::optional<std::string> adl;
        if (at('@')) {  // obs-route: "@a,@b:" before the addr-spec
            std::size_t save = i_;
            std::string route;
            while (i_ < n_ && !at(':') && !at('>')) route += tok(i_++).text;
            if (at(':')) {
                ++i_;
                adl = std::move(route);
            } else {
                i_ = save;
            }
        }
        std::size_t j = i_;
        while (j < n_ && (tok(j).word() || tok(j).is('.'))) ++j;
        std::string local = local_part(i_, j);
        i_ = j;
        std::string domain;
        if (at('@')) {
            ++i_;
            domain = domain_part();
        }
        while (i_ < n_ && !at('>') && !at(',')) ++i_;  // junk inside the brackets
        if (at('>')) ++i_;
        if (!name) name = comment_in(start, i_);
        skip_junk(in_group);
        emit(name, adl, local, domain);
    }

    // Display name: words unquoted, joined by one space where the message had white space.
    std::string phrase(std::size_t a, std::size_t b) const {
        std::string s;
        for (std::size_t k = a; k < b; ++k) {
            if (!s.empty() && tok(k).space_before) s.push_back(' ');
            s += tok(k).text;
        }
        return s;
    }

    std::string local_part(std::size_t a, std::size_t b) const {
        std::string s;
        for (std::size_t k = a; k < b; ++k) {
            if (!s.empty() && tok(k).space_before && !tok(k).is('.') && !tok(k - 1).is('.')) s.push_back(' ');
            s += tok(k).text;
        }
        return s;
    }

    std::string domain_part() {
        std::string s;
        while (i_ < n_ && (tok(i_).kind == Tok::Kind::Atom || tok(i_).kind == Tok::Kind::DomainLiteral ||
                           tok(i_).is('.')))
            s += tok(i_++).text;
        return s;
    }

    // The last comment among the tokens of this address (the "a@b (Name)" style display name).
    // Comments are in token order: a binary search, then a walk back over this address's own comments
    // only, keeps a long list linear.
    std::optional<std::string> comment_in(std::size_t start, std::size_t end) const {
        const auto& cs = t_.comments;
        auto it = std::upper_bound(cs.begin(), cs.end(), end,
                                   [](std::size_t e, const auto& c) { return e < c.first; });
        while (it != cs.begin()) {
            --it;
            if (it->first <= start) break;
            if (!it->second.empty()) return it->second;
        }
        return std::nullopt;
    }

    void skip_junk(bool in_group) {
        while (i_ < n_ && !at(',') && !(in_group && at(';'))) ++i_;
    }

    void emit(const std::optional<std::string>& name, const std::optional<std::string>& adl,
              const std::string& mailbox, const std::string& host) {
        out_ += '(';
        append_nstring(out_, name);
        out_ += ' ';
        append_nstring(out_, adl);
        out_ += ' ';
        append_string(out_, mailbox);
        out_ += ' ';
        append_string(out_, host);
        out_ += ')';
        ++count_;
    }

    const Tokens& t_;
    const std::size_t n_;
    std::size_t i_ = 0;
    std::size_t count_ = 0;
    std::string out_;
};

std::string address_list(const std::optional<std::string>& value) {
    if (!value) return "NIL";
    return AddressWriter(tokenize(*value)).run();
}

void append_envelope(std::string& out, std::string_view raw, std::size_t hb, std::size_t he,
                     std::size_t max_lines) {
    static constexpr std::string_view kNames[] = {"Date", "Subject", "From", "Sender",      "Reply-To",
                                                  "To",   "Cc",      "Bcc",  "In-Reply-To", "Message-ID"};
    std::optional<std::string> v[std::size(kNames)];
    for_each_field(raw, hb, he, max_lines, [&](const Field& f) {
        for (std::size_t k = 0; k < std::size(kNames); ++k)
            if (!v[k] && iequals(f.name, kNames[k])) v[k] = unfold(raw, f.value_begin, f.end);
    });
    std::string from = address_list(v[2]);
    std::string sender = address_list(v[3]);
    std::string reply_to = address_list(v[4]);
    out += '(';
    append_nstring(out, v[0]);
    out += ' ';
    append_nstring(out, v[1]);
    out += ' ';
    out += from;
    out += ' ';
    out += sender == "NIL" ? from : sender;
    out += ' ';
    out += reply_to == "NIL" ? from : reply_to;
    for (std::size_t k = 5; k < 8; ++k) {
        out += ' ';
        out += address_list(v[k]);
    }
    out += ' ';
    append_nstring(out, v[8]);
    out += ' ';
    append_nstring(out, v[9]);
    out += ')';
}

// ---- GMime (text_for_search only) ------------------------------------------------------------------

void init_gmime() {
    // g_mime_init() counts its callers, so this coexists with gb::mail::ensure_gmime().
    static std::once_flag once;
    std::call_once(once, [] {
        g_mime_init();
        std::atexit([] { g_mime_shutdown(); });
    });
}

std::string decoded_text(std::string_view entity) {
    GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(entity.data(), entity.size()));
    GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    GPtr<GMimeObject> obj(g_mime_parser_construct_part(parser.get(), nullptr));
    if (!obj) return {};
    std::string bytes;
    if (GMIME_IS_TEXT_PART(obj.get())) {
        GCharPtr text(g_mime_text_part_get_text(GMIME_TEXT_PART(obj.get())));
        if (text) bytes = text.get();
    } else if (GMIME_IS_PART(obj.get())) {
        if (GMimeDataWrapper* content = g_mime_part_get_content(GMIME_PART(obj.get()))) {
            GPtr<GMimeStream> mem(g_mime_stream_mem_new());
            g_mime_data_wrapper_write_to_stream(content, mem.get());
            GByteArray* arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.get()));
            if (arr && arr->len) bytes.assign(reinterpret_cast<const char*>(arr->data), arr->len);
        }
    }
    if (bytes.empty()) return {};
    GCharPtr valid(g_utf8_make_valid(bytes.data(), static_cast<gssize>(bytes.size())));
    return valid ? std::string(valid.get()) : std::string();
}

}  // namespace

// ---- the MIME tree: one pass over the lines ---------------------------------------------------------
//
// `open_` is the chain of entities that contain the current position (the message first); the last one
// is in its header (in_header_) or its body. `frames_` are the boundaries of the open multiparts that
// have not seen their close delimiter. A line starting with "--" is first matched against them; a match
// closes every entity inside that multipart (at the CRLF before the line) and opens the next part.

class Builder {
  public:
    Builder(std::string_view raw, const Limits& limits, MessageIndex& index)
        : raw_(raw), limits_(limits), parts_(index.parts_), index_(index) {}

    void run() {
        index_.size_ = raw_.size();
        parts_.reserve(std::min<std::size_t>(limits_.max_parts, 64));
        parts_.emplace_back();
        open_.push_back(0);
        in_header_ = true;
        std::size_t pos = 0;
        while (pos < raw_.size()) {
            Line l = line_at(raw_, pos, raw_.size());
            line(l);
            pos = l.end;
        }
        while (!open_.empty()) close_top(raw_.size());
        for (auto& p : parts_)
            if (p.kind == Part::Kind::Text || p.kind == Part::Kind::Message) {
                std::string_view body = slice(raw_, p.body_begin, p.body_end);
                p.lines = static_cast<std::uint64_t>(std::count(body.begin(), body.end(), '\n'));
            }
    }

  private:
    struct Frame {
        int node;
        std::string boundary;
    };

    Part& at(int i) { return parts_[static_cast<std::size_t>(i)]; }

    void line(const Line& l) {
        std::string_view content = raw_.substr(l.begin, l.content_end - l.begin);
        if (!frames_.empty() && content.size() >= 2 && content[0] == '-' && content[1] == '-') {
            if (int k = match_boundary(content.substr(2)); k >= 0)
                return delimiter(static_cast<std::size_t>(k), l);
        }
        while (in_header_) {
            int cur = open_.back();
            LineKind kind = classify(content);
            if (kind == LineKind::Blank) {
                at(cur).header_end = at(cur).body_begin = l.end;
                end_header(cur);
                return;
            }
            if (kind == LineKind::Field || (kind == LineKind::Continuation && header_has_field_)) {
                header_has_field_ = true;
                return;
            }
            // Not a header line: the header ends before it; it belongs to what follows (perhaps the
            // header of an encapsulated message).
            at(cur).header_end = at(cur).body_begin = l.begin;
            end_header(cur);
        }
    }

    // Longest boundary that prefixes the line (after "--"); on a tie the innermost.
    int match_boundary(std::string_view rest) const {
        int best = -1;
        std::size_t best_len = 0;
        for (std::size_t k = frames_.size(); k-- > 0;) {
            const std::string& b = frames_[k].boundary;
            if (b.size() <= rest.size() && b.size() > best_len && rest.compare(0, b.size(), b) == 0) {
                best = static_cast<int>(k);
                best_len = b.size();
            }
        }
        return best;
    }

    void delimiter(std::size_t k, const Line& l) {
        const int m = frames_[k].node;
        std::size_t pe = l.begin;  // the CRLF before the delimiter line belongs to the delimiter
        if (pe >= 2 && raw_[pe - 2] == '\r' && raw_[pe - 1] == '\n')
            pe -= 2;
        else if (pe >= 1 && raw_[pe - 1] == '\n')
            pe -= 1;
        while (open_.back() != m) close_top(pe);
        in_header_ = false;
        const std::size_t after = l.begin + 2 + frames_[k].boundary.size();
        const bool close = l.content_end >= after + 2 && raw_[after] == '-' && raw_[after + 1] == '-';
        if (close) {
            frames_.pop_back();  // frames_[k] is the top now: the inner ones were popped with their nodes
            return;              // epilogue: the multipart's body
        }
        if (parts_.size() >= limits_.max_parts) {
            index_.truncated_ = true;  // parts beyond the limit are not indexed
            return;
        }
        int c = new_part(m, l.end);
        at(m).children.push_back(c);
    }

    int new_part(int parent, std::size_t header_begin) {
        Part p;
        p.parent = parent;
        p.depth = at(parent).depth + 1;
        p.header_begin = p.header_end = p.body_begin = p.body_end = header_begin;
        parts_.push_back(std::move(p));
        int c = static_cast<int>(parts_.size() - 1);
        open_.push_back(c);
        in_header_ = true;
        header_has_field_ = false;
        return c;
    }

    // Closes the innermost open entity at `end`, or, when it is still in its header, ends the header
    // there first (which may open an encapsulated message, closed by the next call).
    void close_top(std::size_t end) {
        const int x = open_.back();
        Part& p = at(x);
        if (in_header_) {
            p.header_end = p.body_begin = std::max(end, p.header_begin);
            end_header(x);
            return;
        }
        const std::size_t e = std::max(end, p.header_begin);
        p.header_end = std::min(p.header_end, e);
        p.body_begin = std::min(p.body_begin, e);
        p.body_end = e;
        // A part that began after this end (its delimiter line's CRLF was the CRLF of ours) is empty
        // and is pulled back inside.
        for (auto it = p.children.rbegin(); it != p.children.rend() && at(*it).body_end > e; ++it)
            clamp(*it, e);
        if (p.message >= 0 && at(p.message).body_end > e) clamp(p.message, e);
        if (!frames_.empty() && frames_.back().node == x) frames_.pop_back();
        open_.pop_back();
        in_header_ = false;
    }

    // Every offset of an entity and of everything inside it pulled back to at most `limit`.
    void clamp(int i, std::size_t limit) {
        Part& p = at(i);
        p.header_begin = std::min(p.header_begin, limit);
        p.header_end = std::min(p.header_end, limit);
        p.body_begin = std::min(p.body_begin, limit);
        p.body_end = std::min(p.body_end, limit);
        for (int c : p.children) clamp(c, limit);
        if (p.message >= 0) clamp(p.message, limit);
    }

    void end_header(int x) {
        in_header_ = false;
        parse_fields(x);
        Part& p = at(x);
        const bool container =
            iequals(p.type, "multipart") || (iequals(p.type, "message") && iequals(p.subtype, "rfc822"));
        if (container && (p.depth >= limits_.max_depth || parts_.size() >= limits_.max_parts)) {
            p.kind = Part::Kind::Basic;
            p.type = "application";
            p.subtype = "octet-stream";
            p.opaque = true;
            index_.truncated_ = true;
            return;
        }
        if (iequals(p.type, "multipart")) {
            p.kind = Part::Kind::Multipart;
            const Param* b = find_param(p.params, "boundary");
            if (b && !b->value.empty() && b->value.size() <= kMaxBoundary)
                frames_.push_back(Frame{x, b->value});
        } else if (container) {
            p.kind = Part::Kind::Message;
            const std::size_t body = p.body_begin;
            int c = new_part(x, body);
            at(x).message = c;
        } else {
            p.kind = iequals(p.type, "text") ? Part::Kind::Text : Part::Kind::Basic;
        }
    }

    void parse_fields(int x) {
        Part& p = at(x);
        bool seen_type = false, seen_cte = false, seen_disp = false, seen_lang = false;
        std::optional<ContentTypeValue> ct;
        for_each_field(raw_, p.header_begin, p.header_end, limits_.max_header_lines, [&](const Field& f) {
            if (!istarts_with(f.name, "Content-")) return;
            std::string_view rest = f.name.substr(8);
            auto value = [&] { return unfold(raw_, f.value_begin, f.end); };
            if (iequals(rest, "Type")) {
                if (!seen_type) ct = parse_content_type(value());
                seen_type = true;
            } else if (iequals(rest, "Transfer-Encoding")) {
                if (seen_cte) return;
                seen_cte = true;
                std::string v = value();
                Cursor c{v};
                skip_cfws(c);
                if (std::string tok = read_token(c); !tok.empty()) p.encoding = std::move(tok);
            } else if (iequals(rest, "ID")) {
                if (!p.id) p.id = value();
            } else if (iequals(rest, "Description")) {
                if (!p.description) p.description = value();
            } else if (iequals(rest, "MD5")) {
                if (!p.md5) p.md5 = value();
            } else if (iequals(rest, "Location")) {
                if (!p.location) p.location = value();
            } else if (iequals(rest, "Disposition")) {
                if (seen_disp) return;
                seen_disp = true;
                std::string v = value();
                Cursor c{v};
                skip_cfws(c);
                std::string type = read_token(c);
                if (type.empty()) return;
                p.disposition = std::move(type);
                p.disposition_params = parse_params(c);
            } else if (iequals(rest, "Language")) {
                if (seen_lang) return;
                seen_lang = true;
                std::string v = value();
                Cursor c{v};
                while (!c.end() && p.language.size() < kMaxParams) {
                    skip_cfws(c);
                    std::string tag = read_token(c);
                    if (!tag.empty()) p.language.push_back(std::move(tag));
                    skip_cfws(c);
                    if (!c.end() && c.peek() != ',') skip_to_comma(c);
                    if (!c.end()) ++c.i;
                }
            }
        });
        if (ct) {
            p.type = std::move(ct->type);
            p.subtype = std::move(ct->subtype);
            p.params = std::move(ct->params);
        } else if (!seen_type && p.parent >= 0 && at(p.parent).kind == Part::Kind::Multipart &&
                   iequals(at(p.parent).subtype, "digest")) {
            p.type = "message";
            p.subtype = "rfc822";
        } else {
            p.type = "text";
            p.subtype = "plain";
            p.params = {Param{"charset", "us-ascii"}};
        }
    }

    static void skip_to_comma(Cursor& c) {
        while (!c.end() && c.peek() != ',') ++c.i;
    }

    std::string_view raw_;
    const Limits& limits_;
    std::vector<Part>& parts_;
    MessageIndex& index_;
    std::vector<int> open_;
    std::vector<Frame> frames_;
    bool in_header_ = false;
    bool header_has_field_ = false;
};

MessageIndex MessageIndex::build(std::string_view raw, const Limits& limits) {
    MessageIndex index;
    Limits l = limits;
    l.max_parts = std::max<std::size_t>(l.max_parts, 1);
    l.max_depth = std::max(l.max_depth, 0);
    index.max_header_lines_ = l.max_header_lines;
    Builder(raw, l, index).run();
    return index;
}

namespace {

// The entities a part number picks from (RFC 3501 6.4.5): a multipart's body parts; for a message, its
// body parts when it is multipart, else the message itself as part 1; for message/rfc822, those of
// the encapsulated message; any other entity only has itself.
struct Choices {
    const std::vector<int>* list = nullptr;
    int single = -1;
    std::size_t size() const { return list ? list->size() : 1; }
    int operator[](std::size_t k) const { return list ? (*list)[k] : single; }
};

Choices message_parts(const MessageIndex& idx, int m) {
    const Part& p = idx.part(m);
    if (p.kind == Part::Kind::Multipart) return Choices{&p.children, -1};
    return Choices{nullptr, m};
}

Choices entity_parts(const MessageIndex& idx, int e) {
    const Part& p = idx.part(e);
    if (p.kind == Part::Kind::Multipart) return Choices{&p.children, -1};
    if (p.kind == Part::Kind::Message && p.message >= 0) return message_parts(idx, p.message);
    return Choices{nullptr, e};
}

}  // namespace

const Part* MessageIndex::find(const std::vector<std::uint32_t>& path) const {
    if (path.empty()) return &root();
    Choices choices = message_parts(*this, 0);
    int cur = -1;
    for (std::uint32_t n : path) {
        if (n == 0 || n > choices.size()) return nullptr;
        cur = choices[n - 1];
        choices = entity_parts(*this, cur);
    }
    return &part(cur);
}

// ---- ENVELOPE and BODYSTRUCTURE -------------------------------------------------------------------------

std::string envelope(const MessageIndex& index, std::string_view raw) {
    std::string out;
    const Part& r = index.root();
    append_envelope(out, raw, r.header_begin, r.header_end, index.max_header_lines());
    return out;
}

namespace {

void append_params(std::string& out, const std::vector<Param>& params) {
    if (params.empty()) {
        out += "NIL";
        return;
    }
    out += '(';
    for (std::size_t k = 0; k < params.size(); ++k) {
        if (k) out += ' ';
        append_string(out, params[k].name);
        out += ' ';
        append_string(out, params[k].value);
    }
    out += ')';
}

// body-fld-dsp SP body-fld-lang SP body-fld-loc
void append_common_ext(std::string& out, const Part& p) {
    out += ' ';
    if (p.disposition) {
        out += '(';
        append_string(out, *p.disposition);
        out += ' ';
        append_params(out, p.disposition_params);
        out += ')';
    } else {
        out += "NIL";
    }
    out += ' ';
    if (p.language.empty()) {
        out += "NIL";
    } else {
        out += '(';
        for (std::size_t k = 0; k < p.language.size(); ++k) {
            if (k) out += ' ';
            append_string(out, p.language[k]);
        }
        out += ')';
    }
    out += ' ';
    append_nstring(out, p.location);
}

void append_body(std::string& out, const MessageIndex& idx, std::string_view raw, int i, bool ext) {
    const Part& p = idx.part(i);
    out += '(';
    if (p.kind == Part::Kind::Multipart) {
        if (p.children.empty())  // the grammar needs one part: an empty text/plain stands in (as Dovecot)
            out += ext ? R"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL))"
                       : R"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0))";
        for (int c : p.children) append_body(out, idx, raw, c, ext);
        out += ' ';
        append_string(out, p.subtype);
        if (ext) {
            out += ' ';
            append_params(out, p.params);
            append_common_ext(out, p);
        }
        out += ')';
        return;
    }
    append_string(out, p.type);
    out += ' ';
    append_string(out, p.subtype);
    out += ' ';
    append_params(out, p.params);
    out += ' ';
    append_nstring(out, p.id);
    out += ' ';
    append_nstring(out, p.description);
    out += ' ';
    append_string(out, p.encoding ? *p.encoding : std::string("7bit"));
    out += ' ';
    out += std::to_string(p.body_size());
    if (p.kind == Part::Kind::Message && p.message >= 0) {
        const Part& m = idx.part(p.message);
        out += ' ';
        append_envelope(out, raw, m.header_begin, m.header_end, idx.max_header_lines());
        out += ' ';
        append_body(out, idx, raw, p.message, ext);
        out += ' ';
        out += std::to_string(p.lines);
    } else if (p.kind == Part::Kind::Text) {
        out += ' ';
        out += std::to_string(p.lines);
    }
    if (ext) {
        out += ' ';
        append_nstring(out, p.md5);
        append_common_ext(out, p);
    }
    out += ')';
}

}  // namespace

std::string bodystructure(const MessageIndex& index, std::string_view raw, bool extended) {
    std::string out;
    append_body(out, index, raw, 0, extended);
    return out;
}

// ---- sections ------------------------------------------------------------------------------------------

namespace {

bool is_astring_char(unsigned char c) {
    // ATOM-CHAR (CHAR except atom-specials) or resp-specials "]"
    if (c <= 0x20 || c >= 0x7f) return false;
    return !std::strchr("(){%*\"\\", static_cast<char>(c));
}

// "(" astring *(SP astring) ")" and nothing after it.
std::optional<std::vector<std::string>> parse_header_list(std::string_view s) {
    if (s.size() < 3 || s.front() != '(' || s.back() != ')') return std::nullopt;
    s = s.substr(1, s.size() - 2);
    std::vector<std::string> names;
    std::size_t i = 0;
    while (true) {
        if (i >= s.size()) return std::nullopt;
        std::string name;
        if (s[i] == '"') {
            ++i;
            bool closed = false;
            while (i < s.size()) {
                char c = s[i];
                if (c == '"') {
                    closed = true;
                    ++i;
                    break;
                }
                if (c == '\r' || c == '\n' || c == '\0') return std::nullopt;
                if (c == '\\') {
                    if (i + 1 >= s.size() || (s[i + 1] != '"' && s[i + 1] != '\\')) return std::nullopt;
                    name.push_back(s[i + 1]);
                    i += 2;
                    continue;
                }
                name.push_back(c);
                ++i;
            }
            if (!closed) return std::nullopt;
        } else {
            std::size_t start = i;
            while (i < s.size() && is_astring_char(static_cast<unsigned char>(s[i]))) ++i;
            if (i == start) return std::nullopt;
            name = std::string(s.substr(start, i - start));
        }
        names.push_back(std::move(name));
        if (i == s.size()) return names;
        if (s[i] != ' ' || i + 1 >= s.size()) return std::nullopt;
        ++i;
    }
}

void append_field_name(std::string& out, std::string_view name) {
    std::string upper = ascii::upper(name);
    // "]" is an ASTRING-CHAR but would end the section in a client's reader: quoted instead.
    bool atom =
        !upper.empty() && !iequals(upper, "NIL") && std::all_of(upper.begin(), upper.end(), [](char c) {
            return c != ']' && is_astring_char(static_cast<unsigned char>(c));
        });
    if (atom)
        out += upper;
    else
        append_string(out, upper);
}

std::string header_fields(std::string_view raw, std::size_t hb, std::size_t he, std::size_t max_lines,
                          const std::vector<std::string>& names, bool exclude) {
    std::string out;
    for_each_field(raw, hb, he, max_lines, [&](const Field& f) {
        bool match =
            std::any_of(names.begin(), names.end(), [&](const std::string& n) { return iequals(f.name, n); });
        if (match == exclude) return;
        std::string_view bytes = slice(raw, f.begin, f.end);
        out += bytes;
        if (bytes.empty() || bytes.back() != '\n') out += "\r\n";
    });
    out += "\r\n";
    return out;
}

}  // namespace

std::optional<Section> parse_section(std::string_view spec) {
    Section sec;
    std::size_t i = 0;
    auto digit = [&](std::size_t k) { return k < spec.size() && spec[k] >= '0' && spec[k] <= '9'; };
    while (digit(i)) {
        if (spec[i] == '0') return std::nullopt;  // nz-number: no zero, no leading zeros
        std::uint64_t n = 0;
        std::size_t start = i;
        while (digit(i)) {
            n = n * 10 + static_cast<std::uint64_t>(spec[i] - '0');
            if (++i - start > 10) return std::nullopt;
        }
        if (n > 4294967295ull) return std::nullopt;
        sec.part.push_back(static_cast<std::uint32_t>(n));
        if (sec.part.size() > kMaxSectionNumbers) return std::nullopt;
        if (i == spec.size()) return sec;
        if (spec[i] != '.' || i + 1 == spec.size()) return std::nullopt;
        ++i;
    }
    std::string_view rest = spec.substr(i);
    if (rest.empty()) return sec;  // only reachable with no part numbers: the whole message
    if (iequals(rest, "HEADER")) {
        sec.text = Section::Text::Header;
    } else if (iequals(rest, "TEXT")) {
        sec.text = Section::Text::Text;
    } else if (iequals(rest, "MIME")) {
        if (sec.part.empty()) return std::nullopt;
        sec.text = Section::Text::Mime;
    } else if (istarts_with(rest, "HEADER.FIELDS.NOT ") || istarts_with(rest, "HEADER.FIELDS ")) {
        bool exclude = istarts_with(rest, "HEADER.FIELDS.NOT ");
        auto names = parse_header_list(rest.substr(exclude ? 18 : 14));
        if (!names) return std::nullopt;
        sec.text = exclude ? Section::Text::HeaderFieldsNot : Section::Text::HeaderFields;
        sec.fields = std::move(*names);
    } else {
        return std::nullopt;
    }
    return sec;
}

std::string section_bytes(const MessageIndex& index, std::string_view raw, const Section& section) {
    const Part* msg = &index.root();
    if (!section.part.empty()) {
        const Part* p = index.find(section.part);
        if (!p) return {};
        switch (section.text) {
            case Section::Text::None:
                return std::string(slice(raw, p->body_begin, p->body_end));
            case Section::Text::Mime:
                return std::string(slice(raw, p->header_begin, p->header_end));
            default:
                if (p->kind != Part::Kind::Message || p->message < 0) return {};
                msg = &index.part(p->message);
        }
    }
    switch (section.text) {
        case Section::Text::None:
            return std::string(raw);
        case Section::Text::Header:
            return std::string(slice(raw, msg->header_begin, msg->header_end));
        case Section::Text::Text:
            return std::string(slice(raw, msg->body_begin, msg->body_end));
        case Section::Text::HeaderFields:
        case Section::Text::HeaderFieldsNot:
            return header_fields(raw, msg->header_begin, msg->header_end, index.max_header_lines(),
                                 section.fields, section.text == Section::Text::HeaderFieldsNot);
        case Section::Text::Mime:
            return {};  // MIME needs a part number; parse_section() never yields this
    }
    return {};
}

std::string partial(std::string_view bytes, std::uint64_t origin, std::uint64_t count) {
    if (origin >= bytes.size()) return {};
    auto o = static_cast<std::size_t>(origin);
    auto n = static_cast<std::size_t>(std::min<std::uint64_t>(count, bytes.size() - o));
    return std::string(bytes.substr(o, n));
}

std::string section_label(const Section& section, std::optional<std::uint64_t> origin) {
    std::string out = "BODY[";
    for (std::size_t k = 0; k < section.part.size(); ++k) {
        if (k) out += '.';
        out += std::to_string(section.part[k]);
    }
    if (!section.part.empty() && section.text != Section::Text::None) out += '.';
    switch (section.text) {
        case Section::Text::None:
            break;
        case Section::Text::Header:
            out += "HEADER";
            break;
        case Section::Text::Text:
            out += "TEXT";
            break;
        case Section::Text::Mime:
            out += "MIME";
            break;
        case Section::Text::HeaderFields:
        case Section::Text::HeaderFieldsNot:
            out += section.text == Section::Text::HeaderFields ? "HEADER.FIELDS (" : "HEADER.FIELDS.NOT (";
            for (std::size_t k = 0; k < section.fields.size(); ++k) {
                if (k) out += ' ';
                append_field_name(out, section.fields[k]);
            }
            out += ')';
            break;
    }
    out += ']';
    if (origin) out += "<" + std::to_string(*origin) + ">";
    return out;
}

// ---- SEARCH helpers ------------------------------------------------------------------------------------

std::optional<std::string> header_field(std::string_view raw, std::string_view name) {
    std::optional<std::string> value;
    for_each_field(raw, 0, header_block_end(raw, 0), Limits{}.max_header_lines, [&](const Field& f) {
        if (!value && iequals(f.name, name)) value = unfold(raw, f.value_begin, f.end);
    });
    return value;
}

std::string text_for_search(const MessageIndex& index, std::string_view raw, std::size_t max_bytes) {
    init_gmime();
    std::string out;
    for (const Part& p : index.parts()) {
        if (p.kind != Part::Kind::Text) continue;
        if (out.size() >= max_bytes) break;
        std::string text = decoded_text(slice(raw, p.header_begin, p.body_end));
        if (text.empty()) continue;
        if (!out.empty()) out += '\n';
        out += text;
    }
    if (out.size() > max_bytes) {
        std::size_t cut = max_bytes;
        while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
        out.resize(cut);
    }
    return out;
}

}  // namespace gb::mail::imap
