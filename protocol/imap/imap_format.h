// Building blocks for IMAP4rev1 server responses (RFC 3501 section 9 string, nstring, astring, flag
// lists). Every function returns exactly what goes on the wire; none of them can emit a bare CR or LF
// outside a literal, so data can never inject a response line.
//
// Choices:
//   - A string is sent quoted when it is at most kMaxQuoted octets of printable US-ASCII (0x20-0x7E);
//     anything else (controls, CR, LF, 8-bit, longer text) is sent as a literal "{n}\r\n" + octets.
//   - NUL cannot be sent in IMAP4rev1 (CHAR8 excludes it, literal8 needs BINARY): it is replaced by
//     0x80 in literals, so the octet count stays the same.
//   - astring() never sends NIL as an atom (a client would read it as nil): "NIL" in any case is quoted;
//     nor text with "[" (valid in an atom, but parsers that special-case BODY[...] stumble on it).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gb::protocol::imap {

inline constexpr std::size_t kMaxQuoted = 1024;

// RFC 3501 string: "quoted" or {n}\r\n literal.
std::string quoted_or_literal(std::string_view s);
// RFC 3501 nstring: NIL for nullopt, else quoted_or_literal.
std::string nstring(std::optional<std::string_view> s);
// RFC 3501 astring: the bare atom when s is non-empty ASTRING-CHARs without "[" (and not "NIL"),
// else quoted_or_literal.
std::string astring(std::string_view s);

// RFC 3501 flag: "\Answered" etc. or "\" atom (flag-extension), a keyword atom, or "\*" (flag-perm).
bool is_valid_flag(std::string_view flag);
// "(\Seen $Forwarded)": a parenthesised flag list in the given order; invalid flags (see
// is_valid_flag) are left out, since a flag cannot be quoted.
std::string format_flags(const std::vector<std::string>& flags);

}  // namespace gb::protocol::imap
