// GMime 3 behind a small C++ surface: one-time initialisation, RFC 5322 address-list parsing (groups
// flattened, RFC 2047 names decoded), Content-Type parameters, formatting an address for a header, and
// decoding MIME leaf parts (transfer encodings undone) for the large-message path and for tests.
//
// Deliberately not here: re-serialising messages (the bridge splices header bytes itself so bodies stay
// byte-exact), charset conversion of bodies.
// Hostile input: every string comes from an SMTP client. Callers bound sizes and nesting before handing
// bytes to GMime (prepare() pre-scans the MIME tree; decode_parts() refuses more than `max_parts` leaves
// and nesting deeper than `max_depth`). Every GObject is released before returning.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gb::mail {

// g_mime_init() once per process; g_mime_shutdown() is registered with atexit so LeakSanitizer does not
// report GMime's one-time tables. Thread-safe.
void ensure_gmime();

struct Address {
    std::string name;     // display name, decoded (may be empty)
    std::string address;  // addr-spec
    bool operator==(const Address&) const = default;
};

// Mailboxes of an address-list header value (unfolded or folded). Group members are included; an empty
// group (`Undisclosed recipients:;`) contributes nothing. Entries without an @ are dropped. nullopt if
// there are more than max_addresses entries.
std::optional<std::vector<Address>> parse_address_list(std::string_view value,
                                                       std::size_t max_addresses = 1000);

// `"Name" <addr>` with the name quoted or RFC 2047 encoded as needed, or `<addr>` without a name.
std::string format_address(const Address& a);

// type/subtype in lower case and one parameter of a Content-Type value ("" if absent).
struct ContentType {
    std::string mime_type = "text/plain";
    std::string boundary;
    std::string charset;
    std::string name;  // the legacy name= parameter
};
ContentType parse_content_type(std::string_view value);

// One leaf MIME part (headers and body, as cut out of the message), decoded.
struct DecodedPart {
    std::string content_type;  // lower-case type/subtype
    std::string filename;      // Content-Disposition filename or Content-Type name ("" if none)
    std::string content_id;    // without angle brackets
    bool disposition_attachment = false;
    bool disposition_inline = false;
    std::string bytes;  // transfer encoding removed
};
std::optional<DecodedPart> decode_leaf(std::string_view part_bytes);

// Every leaf part of a whole message in depth-first order, decoded (GMime walks the tree). For tests and
// diagnostics; nullopt when GMime cannot parse it or the bounds are exceeded.
std::optional<std::vector<DecodedPart>> decode_parts(std::string_view message, std::size_t max_parts = 200,
                                                     int max_depth = 16);

}  // namespace gb::mail
