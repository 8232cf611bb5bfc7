// RFC 3501 section 5.1.3 mailbox international naming: modified UTF-7 <-> UTF-8.
//
// Printable US-ASCII (0x20-0x7E) stands for itself except "&", written "&-"; every other character is
// written as "&" + modified base64 (RFC 2152 base64 with "," for "/", no padding) of its UTF-16BE
// form + "-", one shift sequence per run of such characters.
//
// from_mutf7 treats its input as hostile and accepts only the canonical encoding, so every mailbox
// name has exactly one spelling: it refuses raw octets outside 0x20-0x7E, "&" not followed by "-" or
// modified base64 closed by "-", base64 with non-zero or 6+ leftover bits (non-shortest), adjacent
// shift sequences ("&AOQ-&AOQ-" must be "&AOQA5A-"), printable US-ASCII inside base64, unpaired or
// reversed UTF-16 surrogates, and U+0000 (never a legitimate mailbox name character).
// to_mutf7 takes UTF-8 from Graph; ill-formed UTF-8 (overlongs, surrogates, > U+10FFFF, truncated
// sequences) is not refused: each maximal ill-formed subpart becomes U+FFFD (Unicode 15 3.9), so a
// name is always produced. to_mutf7 never fails and from_mutf7(to_mutf7(s)) == s for well-formed s
// without U+0000.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gb::protocol::imap {

std::string to_mutf7(std::string_view utf8);
std::optional<std::string> from_mutf7(std::string_view mutf7);

}  // namespace gb::protocol::imap
