// IMAP4rev1 response building blocks. See imap_format.h.
#include "protocol/imap/imap_format.h"

#include <algorithm>

#include "protocol/imap/imap_chars.h"

namespace gb::protocol::imap {
namespace {

bool is_nil(std::string_view s) {
    return s.size() == 3 && (s[0] == 'N' || s[0] == 'n') && (s[1] == 'I' || s[1] == 'i') &&
           (s[2] == 'L' || s[2] == 'l');
}

}  // namespace

std::string quoted_or_literal(std::string_view s) {
    bool quotable = s.size() <= kMaxQuoted && std::all_of(s.begin(), s.end(), [](char c) {
                        return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) <= 0x7e;
                    });
    std::string out;
    if (quotable) {
        out.reserve(s.size() + 2);
        out.push_back('"');
        for (char c : s) {
            if (c == '"' || c == '\\') out.push_back('\\');
            out.push_back(c);
        }
        out.push_back('"');
        return out;
    }
    out = "{" + std::to_string(s.size()) + "}\r\n";
    std::size_t head = out.size();
    out.append(s);
    std::replace(out.begin() + static_cast<std::ptrdiff_t>(head), out.end(), '\0', '\x80');
    return out;
}

std::string nstring(std::optional<std::string_view> s) {
    return s ? quoted_or_literal(*s) : std::string("NIL");
}

std::string astring(std::string_view s) {
    bool atom = !s.empty() && !is_nil(s) && std::all_of(s.begin(), s.end(), [](char c) {
        return is_astring_char(c) && c != '[';
    });
    return atom ? std::string(s) : quoted_or_literal(s);
}

bool is_valid_flag(std::string_view flag) {
    if (flag == "\\*") return true;
    if (!flag.empty() && flag[0] == '\\') flag.remove_prefix(1);
    return !flag.empty() && std::all_of(flag.begin(), flag.end(), is_atom_char);
}

std::string format_flags(const std::vector<std::string>& flags) {
    std::string out = "(";
    for (const std::string& f : flags) {
        if (!is_valid_flag(f)) continue;
        if (out.size() > 1) out.push_back(' ');
        out += f;
    }
    out.push_back(')');
    return out;
}

}  // namespace gb::protocol::imap
