// SMTP path, parameter and base64 parsing. See smtp_parser.h for the grammar and the leniencies.
#include "protocol/smtp/smtp_parser.h"

#include "common/ascii.h"

namespace gb::protocol::smtp {
namespace {

constexpr std::size_t kMaxLocal = 64;
constexpr std::size_t kMaxDomain = 255;
constexpr std::size_t kMaxPath = 256;

bool is_alpha(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}
bool is_alnum(unsigned char c) {
    return is_alpha(c) || is_digit(c);
}

// RFC 5322 atext, plus bytes >= 0x80 (RFC 6531 UTF8-non-ascii; well-formedness is checked afterwards).
bool is_atext(unsigned char c) {
    if (is_alnum(c) || c >= 0x80) return true;
    switch (c) {
        case '!':
        case '#':
        case '$':
        case '%':
        case '&':
        case '\'':
        case '*':
        case '+':
        case '-':
        case '/':
        case '=':
        case '?':
        case '^':
        case '_':
        case '`':
        case '{':
        case '|':
        case '}':
        case '~':
            return true;
        default:
            return false;
    }
}

using ascii::iequals;
using ascii::upper;

// A cursor over the argument; every accessor is bounds-checked.
struct Cursor {
    std::string_view s;
    std::size_t pos = 0;
    bool done() const { return pos >= s.size(); }
    unsigned char peek() const { return done() ? 0 : static_cast<unsigned char>(s[pos]); }
    bool eat(char c) {
        if (!done() && s[pos] == c) {
            ++pos;
            return true;
        }
        return false;
    }
};

// Dot-string = Atom *("." Atom)
bool parse_dot_string(Cursor& c, std::string& out) {
    for (;;) {
        std::size_t start = c.pos;
        while (!c.done() && is_atext(c.peek())) ++c.pos;
        if (c.pos == start) return false;
        out.append(c.s.substr(start, c.pos - start));
        if (c.peek() != '.') return true;
        ++c.pos;
        out.push_back('.');
    }
}

// Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP %d32-33 / %d35-91 / %d93-126 (+ UTF-8),
// quoted-pairSMTP = "\" %d32-126.
bool parse_quoted(Cursor& c, std::string& out) {
    if (!c.eat('"')) return false;
    for (;;) {
        if (c.done()) return false;
        unsigned char ch = c.peek();
        ++c.pos;
        if (ch == '"') return true;
        if (ch == '\\') {
            if (c.done()) return false;
            unsigned char q = c.peek();
            if (q < 32 || q > 126) return false;
            ++c.pos;
            out.push_back(static_cast<char>(q));
            continue;
        }
        if (ch < 32 || ch == 127) return false;
        out.push_back(static_cast<char>(ch));
    }
}

// Domain = sub-domain *("." sub-domain); lenient: '_' allowed, UTF-8 U-labels allowed (checked later).
bool parse_domain(Cursor& c, std::string& out) {
    for (;;) {
        std::size_t start = c.pos;
        while (!c.done()) {
            unsigned char ch = c.peek();
            if (is_alnum(ch) || ch == '-' || ch == '_' || ch >= 0x80)
                ++c.pos;
            else
                break;
        }
        std::string_view label = c.s.substr(start, c.pos - start);
        if (label.empty() || label.front() == '-' || label.back() == '-') return false;
        out.append(label);
        if (c.peek() != '.') return true;
        ++c.pos;
        out.push_back('.');
    }
}

// address-literal = "[" ( IPv4 / "IPv6:" ... / General ) "]"; checked for dcontent characters only.
bool parse_address_literal(Cursor& c, std::string& out) {
    std::size_t start = c.pos;
    if (!c.eat('[')) return false;
    std::size_t inner = c.pos;
    while (!c.done() && c.peek() != ']') {
        unsigned char ch = c.peek();
        if (ch < 33 || ch > 126 || ch == '[' || ch == '\\') return false;
        ++c.pos;
    }
    if (c.pos == inner || !c.eat(']')) return false;
    out.append(c.s.substr(start, c.pos - start));
    return true;
}

// At-domain *( "," At-domain ) ":" -- parsed and thrown away.
bool skip_source_route(Cursor& c) {
    for (;;) {
        if (!c.eat('@')) return false;
        std::string ignored;
        if (!parse_domain(c, ignored)) return false;
        if (c.eat(':')) return true;
        if (!c.eat(',')) return false;
    }
}

bool parse_mailbox(Cursor& c, Address& out, bool allow_postmaster) {
    if (c.peek() == '"') {
        if (!parse_quoted(c, out.local)) return false;
        out.quoted = true;
    } else if (!parse_dot_string(c, out.local)) {
        return false;
    }
    if (!c.eat('@')) {
        // RFC 5321 4.5.1: "<Postmaster>" without a domain must be accepted as a recipient.
        return allow_postmaster && !out.quoted && iequals(out.local, "postmaster");
    }
    if (c.peek() == '[') return parse_address_literal(c, out.domain);
    return parse_domain(c, out.domain);
}

// C1 controls (U+0080..U+009F, NEL among them) and the Unicode line and paragraph separators (U+2028,
// U+2029) in UTF-8 form: control characters too, and line ends to some parsers. s is valid UTF-8, so a
// 0xC2 or 0xE2 byte always starts a character.
bool has_unicode_controls(std::string_view s) {
    for (std::size_t i = 0; i + 1 < s.size(); ++i) {
        auto b0 = static_cast<unsigned char>(s[i]), b1 = static_cast<unsigned char>(s[i + 1]);
        if (b0 == 0xC2 && b1 >= 0x80 && b1 <= 0x9F) return true;
        if (b0 == 0xE2 && b1 == 0x80 && i + 2 < s.size() &&
            (static_cast<unsigned char>(s[i + 2]) == 0xA8 || static_cast<unsigned char>(s[i + 2]) == 0xA9))
            return true;
    }
    return false;
}

bool valid_lengths(const Address& a) {
    if (a.local.size() > kMaxLocal || a.domain.size() > kMaxDomain) return false;
    return a.local.size() + a.domain.size() + 1 <= kMaxPath;
}

bool is_keyword_char(unsigned char c) {
    return is_alnum(c) || c == '-';
}

// esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531 section 3.3).
bool is_value_char(unsigned char c) {
    return (c >= 33 && c <= 126 && c != '=') || c >= 0x80;
}

bool parse_params(std::string_view rest, std::vector<Parameter>& out) {
    std::size_t i = 0;
    while (i < rest.size()) {
        while (i < rest.size() && rest[i] == ' ') ++i;
        if (i == rest.size()) break;
        std::size_t start = i;
        while (i < rest.size() && rest[i] != ' ') ++i;
        std::string_view token = rest.substr(start, i - start);
        Parameter p;
        std::size_t eq = token.find('=');
        std::string_view key = token.substr(0, eq);
        if (key.empty() || !is_alnum(static_cast<unsigned char>(key.front()))) return false;
        for (char ch : key) {
            if (!is_keyword_char(static_cast<unsigned char>(ch))) return false;
            p.keyword.push_back(upper(ch));
        }
        if (eq != std::string_view::npos) {
            std::string_view value = token.substr(eq + 1);
            if (value.empty()) return false;
            for (char ch : value)
                if (!is_value_char(static_cast<unsigned char>(ch))) return false;
            if (!is_valid_utf8(value) || has_unicode_controls(value)) return false;
            p.value = std::string(value);
            p.has_value = true;
        }
        out.push_back(std::move(p));
    }
    return true;
}

bool is_dot_string(std::string_view s) {
    if (s.empty() || s.front() == '.' || s.back() == '.') return false;
    char prev = 0;
    for (char ch : s) {
        if (ch == '.' && prev == '.') return false;
        if (ch != '.' && !is_atext(static_cast<unsigned char>(ch))) return false;
        prev = ch;
    }
    return true;
}

}  // namespace

bool Address::is_ascii() const {
    for (char ch : local)
        if (static_cast<unsigned char>(ch) >= 0x80) return false;
    for (char ch : domain)
        if (static_cast<unsigned char>(ch) >= 0x80) return false;
    return true;
}

std::string Address::to_string() const {
    if (is_null()) return {};
    std::string out;
    if (is_dot_string(local)) {
        out = local;
    } else {
        out.push_back('"');
        for (char ch : local) {
            if (ch == '"' || ch == '\\') out.push_back('\\');
            out.push_back(ch);
        }
        out.push_back('"');
    }
    if (!domain.empty()) {
        out.push_back('@');
        out.append(domain);
    }
    return out;
}

PathError parse_path_argument(std::string_view arg, std::string_view keyword, bool allow_null,
                              ParsedPath& out) {
    out = ParsedPath{};
    if (arg.size() < keyword.size() + 1 || !iequals(arg.substr(0, keyword.size()), keyword) ||
        arg[keyword.size()] != ':')
        return PathError::Syntax;
    Cursor c{arg, keyword.size() + 1};
    while (c.eat(' ')) {
    }  // leniency: "MAIL FROM: <a@b>"
    if (c.done()) return PathError::BadAddress;

    bool allow_postmaster = !allow_null;  // forward paths only
    if (c.eat('<')) {
        if (c.eat('>')) {
            if (!allow_null) return PathError::BadAddress;
        } else {
            if (c.peek() == '@' && !skip_source_route(c)) return PathError::BadAddress;
            if (!parse_mailbox(c, out.address, allow_postmaster)) return PathError::BadAddress;
            if (!c.eat('>')) return PathError::BadAddress;
        }
    } else {
        // Leniency: a bare address without angle brackets.
        if (!parse_mailbox(c, out.address, allow_postmaster)) return PathError::BadAddress;
    }
    if (!valid_lengths(out.address) || !is_valid_utf8(out.address.local) ||
        !is_valid_utf8(out.address.domain) || has_unicode_controls(out.address.local) ||
        has_unicode_controls(out.address.domain))
        return PathError::BadAddress;
    if (c.done()) return PathError::None;
    if (c.peek() != ' ') return PathError::BadAddress;  // e.g. "<a@b>junk" or "a@b>x"
    if (!parse_params(arg.substr(c.pos), out.params)) return PathError::BadParameter;
    return PathError::None;
}

bool is_valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        auto b0 = static_cast<unsigned char>(s[i]);
        if (b0 < 0x80) {
            ++i;
            continue;
        }
        std::size_t len;
        std::uint32_t cp;
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            len = 2;
            cp = b0 & 0x1Fu;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            len = 3;
            cp = b0 & 0x0Fu;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            len = 4;
            cp = b0 & 0x07u;
        } else {
            return false;
        }
        if (i + len > s.size()) return false;
        for (std::size_t k = 1; k < len; ++k) {
            auto b = static_cast<unsigned char>(s[i + k]);
            if ((b & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (b & 0x3Fu);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

bool decode_base64(std::string_view in, std::string& out) {
    out.clear();
    if (in.size() % 4 != 0) return false;
    auto value = [](char ch) -> int {
        if (ch >= 'A' && ch <= 'Z') return ch - 'A';
        if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
        if (ch >= '0' && ch <= '9') return ch - '0' + 52;
        if (ch == '+') return 62;
        if (ch == '/') return 63;
        return -1;
    };
    for (std::size_t i = 0; i < in.size(); i += 4) {
        bool last = i + 4 == in.size();
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; ++k) {
            char ch = in[i + static_cast<std::size_t>(k)];
            if (ch == '=' && last && k >= 2) {
                v[k] = 0;
                ++pad;
                continue;
            }
            if (pad > 0) return false;  // data after padding
            v[k] = value(ch);
            if (v[k] < 0) return false;
        }
        std::uint32_t n = (static_cast<std::uint32_t>(v[0]) << 18) |
                          (static_cast<std::uint32_t>(v[1]) << 12) | (static_cast<std::uint32_t>(v[2]) << 6) |
                          static_cast<std::uint32_t>(v[3]);
        out.push_back(static_cast<char>((n >> 16) & 0xFF));
        if (pad < 2) out.push_back(static_cast<char>((n >> 8) & 0xFF));
        if (pad < 1) out.push_back(static_cast<char>(n & 0xFF));
        // Canonical encoding only: the unused bits of the last symbol must be zero.
        if ((pad == 2 && (v[1] & 0x0F) != 0) || (pad == 1 && (v[2] & 0x03) != 0)) return false;
    }
    return true;
}

std::string encode_base64(std::string_view in) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < in.size(); i += 3) {
        std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16;
        if (i + 1 < in.size()) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
        if (i + 2 < in.size()) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 2]));
        out.push_back(kAlphabet[(n >> 18) & 63]);
        out.push_back(kAlphabet[(n >> 12) & 63]);
        out.push_back(i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=');
        out.push_back(i + 2 < in.size() ? kAlphabet[n & 63] : '=');
    }
    return out;
}

void wipe(std::string& s) {
    volatile char* p = s.data();
    for (std::size_t i = 0; i < s.size(); ++i) p[i] = 0;
    s.clear();
}

}  // namespace gb::protocol::smtp
