// IMAP keywords <-> Outlook categories (state_store.h).
#include <algorithm>
#include <cstring>

#include "common/ascii.h"
#include "proxy/sync/state_store.h"

namespace gb::sync {

bool is_client_keyword(std::string_view k) {
    // What Thunderbird, Apple Mail, K-9/FairEmail, mutt and Evolution set for themselves (junk training,
    // read receipts sent, submission state), per their documentation and RFC 5788's registry.
    static const char* const kClient[] = {"$MDNSent",  "$Junk",          "$NotJunk",    "Junk",       "NonJunk",
                                          "NotJunk",   "$Phishing",      "$SubmitPending", "$Submitted", "$AutoJunk",
                                          "$AutoNotJunk", "$HasAttachment", "$HasNoAttachment", "$IsTrusted",
                                          "Old",       "$MailFlagBit0",  "$MailFlagBit1", "$MailFlagBit2"};
    return std::any_of(std::begin(kClient), std::end(kClient), [&](const char* c) { return ascii::iequals(k, c); });
}

std::string keyword_atom(std::string_view category) {
    std::string atom;
    for (char c : category) {
        auto u = static_cast<unsigned char>(c);
        bool ok = u > 0x20 && u < 0x7F && !std::strchr("(){%*\"\\]", c);
        atom.push_back(ok ? c : '_');
    }
    if (!atom.empty() && atom[0] == '\\') atom[0] = '_';
    return atom;
}

}  // namespace gb::sync
