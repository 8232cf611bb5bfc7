// SMTP command-argument parsing, socket-free and allocation-bounded by the command line length.
//
// Implements: RFC 5321 section 4.1.2 path syntax (Reverse-path / Forward-path, Mailbox, Dot-string and
// Quoted-string local parts, domains and address literals, ESMTP parameters), RFC 6531 UTF-8 in local
// parts and domains (UTF8-non-ascii, validated as well-formed UTF-8), RFC 4648 base64 for RFC 4954 AUTH.
//
// Leniencies (printers and ERPs send these; each is deliberate):
//   - spaces after the colon: "MAIL FROM: <a@b>" and "RCPT TO:   <a@b>";
//   - missing angle brackets: "MAIL FROM:a@b SIZE=10" (the address then ends at the first space);
//   - source routes "<@relay1,@relay2:user@example.com>" are accepted and stripped (RFC 5321 4.1.2 obs);
//   - '_' in domain labels (internal hostnames), a case-insensitive "<postmaster>" without a domain
//     for RCPT (RFC 5321 4.5.1);
//   - several spaces between parameters.
// Deliberately strict: dot-string local parts (no leading, trailing or doubled dots unless quoted), the
// RFC 5321 4.5.3.1 lengths (local part 64, domain 255, path 256 octets), no control characters anywhere
// (C1 controls such as NEL and the Unicode line/paragraph separators U+2028/U+2029 included, quoted or not).
// No parsed field can ever contain CR, LF, NUL or another control character, so nothing parsed here
// can inject a header or a reply line.
//
// All input is hostile: every function takes the whole command argument and never reads past it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gb::protocol::smtp {

struct Address {
    std::string local;    // local part; for a quoted local part the content with quoted-pairs resolved
    std::string domain;   // domain or "[address literal]"; empty for the null path and "<postmaster>"
    bool quoted = false;  // the local part was sent as a Quoted-string

    bool is_null() const { return local.empty() && domain.empty(); }
    bool is_ascii() const;
    // RFC 5321 form without angle brackets: local@domain, the local part re-quoted when it is not a
    // dot-string; "" for the null path.
    std::string to_string() const;
};

struct Parameter {
    std::string keyword;  // upper-cased esmtp-keyword
    std::string value;    // esmtp-value, empty when absent
    bool has_value = false;
};

enum class PathError {
    None,
    Syntax,        // "FROM:" / "TO:" missing, or junk after the path
    BadAddress,    // the path or mailbox is malformed or too long
    BadParameter,  // an esmtp-param is malformed
};

struct ParsedPath {
    Address address;
    std::vector<Parameter> params;
};

// Parses the argument of MAIL ("FROM:<path> params") or RCPT ("TO:<path> params"). keyword is "FROM"
// or "TO"; allow_null permits "<>" (MAIL only). Returns PathError::None and fills out on success.
PathError parse_path_argument(std::string_view arg, std::string_view keyword, bool allow_null,
                              ParsedPath& out);

// True when s is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view s);

// Strict RFC 4648 base64 (standard alphabet, padding required, no whitespace). Returns false on any
// malformed input; out is then unspecified.
bool decode_base64(std::string_view in, std::string& out);
std::string encode_base64(std::string_view in);

// Overwrites a buffer that held credentials before it is released.
void wipe(std::string& s);

}  // namespace gb::protocol::smtp
