// RFC 3501 character classes shared by the IMAP command reader and the response builders.
#pragma once

namespace gb::protocol::imap {

// ATOM-CHAR: CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]".
constexpr bool is_atom_char(char ch) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return false;
    switch (c) {
        case '(':
        case ')':
        case '{':
        case '%':
        case '*':
        case '"':
        case '\\':
        case ']':
            return false;
        default:
            return true;
    }
}

// ASTRING-CHAR: ATOM-CHAR or resp-specials ("]").
constexpr bool is_astring_char(char c) { return is_atom_char(c) || c == ']'; }

}  // namespace gb::protocol::imap
