// Modified UTF-7 (RFC 3501 5.1.3). See mutf7.h for the exact rules.
#include "protocol/imap/mutf7.h"

#include <cstdint>
#include <vector>

namespace gb::protocol::imap {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

int b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == ',') return 63;
    return -1;
}

bool is_printable(std::uint32_t c) {
    return c >= 0x20 && c <= 0x7e;
}

// Decodes one UTF-8 sequence at s[i]; on ill-formed input returns U+FFFD and the length of the maximal
// ill-formed subpart (at least 1).
std::uint32_t decode_utf8(std::string_view s, std::size_t i, std::size_t& len) {
    auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = b(i);
    len = 1;
    if (c < 0x80) return c;
    std::size_t need;
    std::uint32_t cp;
    unsigned char lo = 0x80, hi = 0xbf;  // bounds for the second byte
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        cp = c & 0x0fu;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;  // no UTF-16 surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        cp = c & 0x07u;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;  // nothing above U+10FFFF
    } else {
        return 0xfffd;
    }
    for (std::size_t k = 1; k <= need; ++k) {
        if (i + k >= s.size()) return 0xfffd;
        unsigned char t = b(i + k);
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xbf;
        if (t < l || t > h) return 0xfffd;
        cp = (cp << 6) | (t & 0x3fu);
        len = k + 1;
    }
    return cp;
}

void append_utf8(std::string& out, std::uint32_t cp) {
    auto put = [&](std::uint32_t v) { out.push_back(static_cast<char>(v)); };
    if (cp < 0x80) {
        put(cp);
    } else if (cp < 0x800) {
        put(0xc0 | (cp >> 6));
        put(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        put(0xe0 | (cp >> 12));
        put(0x80 | ((cp >> 6) & 0x3f));
        put(0x80 | (cp & 0x3f));
    } else {
        put(0xf0 | (cp >> 18));
        put(0x80 | ((cp >> 12) & 0x3f));
        put(0x80 | ((cp >> 6) & 0x3f));
        put(0x80 | (cp & 0x3f));
    }
}

// "&" + modified base64 of the UTF-16BE units + "-".
void flush_shift(std::string& out, std::vector<std::uint16_t>& units) {
    if (units.empty()) return;
    out.push_back('&');
    std::uint32_t bits = 0;
    int nbits = 0;
    for (std::uint16_t u : units) {
        bits = (bits << 16) | u;
        nbits += 16;
        while (nbits >= 6) {
            nbits -= 6;
            out.push_back(kAlphabet[(bits >> nbits) & 0x3f]);
        }
        bits &= (1u << nbits) - 1;
    }
    if (nbits > 0) out.push_back(kAlphabet[(bits << (6 - nbits)) & 0x3f]);
    out.push_back('-');
    units.clear();
}

}  // namespace

std::string to_mutf7(std::string_view utf8) {
    std::string out;
    std::vector<std::uint16_t> units;
    for (std::size_t i = 0; i < utf8.size();) {
        std::size_t len = 1;
        std::uint32_t cp = decode_utf8(utf8, i, len);
        i += len;
        if (is_printable(cp)) {
            flush_shift(out, units);
            out.push_back(static_cast<char>(cp));
            if (cp == '&') out.push_back('-');
        } else if (cp < 0x10000) {
            units.push_back(static_cast<std::uint16_t>(cp));
        } else {
            cp -= 0x10000;
            units.push_back(static_cast<std::uint16_t>(0xd800 + (cp >> 10)));
            units.push_back(static_cast<std::uint16_t>(0xdc00 + (cp & 0x3ff)));
        }
    }
    flush_shift(out, units);
    return out;
}

std::optional<std::string> from_mutf7(std::string_view in) {
    std::string out;
    bool after_shift = false;  // the previous octet closed a base64 shift sequence
    for (std::size_t i = 0; i < in.size();) {
        char c = in[i];
        if (c != '&') {
            if (!is_printable(static_cast<unsigned char>(c))) return std::nullopt;
            out.push_back(c);
            ++i;
            after_shift = false;
            continue;
        }
        ++i;
        if (i < in.size() && in[i] == '-') {  // "&-" is "&"
            out.push_back('&');
            ++i;
            after_shift = false;
            continue;
        }
        if (after_shift) return std::nullopt;  // two adjacent shift sequences are one
        std::uint32_t bits = 0;
        int nbits = 0;
        std::uint32_t high = 0;  // pending high surrogate
        bool any = false;
        for (;;) {
            if (i == in.size()) return std::nullopt;  // unterminated
            char d = in[i++];
            if (d == '-') break;
            int v = b64_value(d);
            if (v < 0) return std::nullopt;
            any = true;
            bits = (bits << 6) | static_cast<std::uint32_t>(v);
            nbits += 6;
            if (nbits < 16) continue;
            nbits -= 16;
            auto unit = static_cast<std::uint32_t>((bits >> nbits) & 0xffff);
            bits &= (1u << nbits) - 1;
            if (high != 0) {
                if (unit < 0xdc00 || unit > 0xdfff) return std::nullopt;
                append_utf8(out, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00));
                high = 0;
            } else if (unit >= 0xd800 && unit <= 0xdbff) {
                high = unit;
            } else if (unit >= 0xdc00 && unit <= 0xdfff) {
                return std::nullopt;  // low surrogate first
            } else if (unit == 0 || is_printable(unit)) {
                return std::nullopt;  // NUL, or US-ASCII that must represent itself
            } else {
                append_utf8(out, unit);
            }
        }
        // Non-shortest or sloppy: 6 or more leftover bits, or non-zero padding bits, or "&" + "-"
        // handled above, or an empty sequence impossible here; a dangling high surrogate.
        if (!any || nbits >= 6 || bits != 0 || high != 0) return std::nullopt;
        after_shift = true;
    }
    return out;
}

}  // namespace gb::protocol::imap
