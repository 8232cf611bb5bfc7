// RFC 5322 / MIME helpers for the emulated Graph mail API: header parsing (unfolding, case-insensitive
// names, LF-only tolerated), address lists (quoted display names, groups, comments), the summary fields
// Graph exposes (subject, from, recipients, ids, dates), building messages from JSON fields, wrapping a
// message and its attachments in multipart/mixed, and removing Bcc for recipients' copies.
//
// Every input here is hostile (client-supplied MIME): all parsers are bounded and refuse absurd inputs
// (too many header fields, over-long values, deep nesting) instead of looping or recursing without end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gb::sandbox::mime {

inline constexpr std::size_t kMaxHeaderFields = 1000;
inline constexpr std::size_t kMaxHeaderBlock = 1024 * 1024;  // bytes of the root header block
inline constexpr std::size_t kMaxAddresses = 1000;
inline constexpr int kMaxMimeDepth = 8;
inline constexpr std::size_t kMaxParts = 200;

struct HeaderField {
    std::string name;           // as written
    std::string value;          // unfolded, trimmed
    std::size_t raw_begin = 0;  // byte range of the whole field (continuation lines and line end included)
    std::size_t raw_end = 0;
};

struct HeaderBlock {
    std::vector<HeaderField> fields;
    std::size_t body_offset = 0;  // first byte after the empty line (or the end of the input)
    bool crlf = true;             // the first line ended in CRLF (else LF only)

    // First field with this name (case-insensitive).
    std::optional<std::string_view> get(std::string_view name) const;
};

// Parse the header block at the start of `message`. nullopt if it exceeds the bounds above. A line that
// is neither a field nor a continuation ends the block (its bytes belong to the body).
std::optional<HeaderBlock> parse_headers(std::string_view message);

struct Address {
    std::string name;     // display name (RFC 2047 words decoded), may be empty
    std::string address;  // addr-spec as written
    bool operator==(const Address&) const = default;
};

// Parse an address-list header value. Entries without an @ are dropped; groups contribute their members.
// nullopt if the value is absurd (too many entries, unbalanced nesting beyond limits).
std::optional<std::vector<Address>> parse_address_list(std::string_view value);

// Decode RFC 2047 encoded words (B and Q), charset label ignored (bytes kept as is).
std::string decode_words(std::string_view value);

struct Summary {
    std::string subject;
    std::optional<Address> from;
    std::optional<Address> sender;
    std::vector<Address> to, cc, bcc;
    std::string message_id;
    std::string in_reply_to;
    std::optional<std::int64_t> date;  // unix seconds, when the Date header parses
    bool has_attachments = false;
    std::string body_type = "text";  // "text" or "html"
    std::string body;                // decoded body of the first text/html or text/plain part
};

// Parse the fields Graph exposes. nullopt on an absurd header block or address list.
std::optional<Summary> summarize(std::string_view message);

// Remove every field named `name` from the root header block; all other bytes are kept exactly.
std::string remove_header(std::string_view message, std::string_view name);
// Replace (or add at the end of the root header block) one field.
std::string replace_header(std::string_view message, std::string_view name, std::string_view value);

struct Attachment {
    std::string name;
    std::string content_type = "application/octet-stream";
    std::string bytes;
    bool is_inline = false;
    std::string content_id;
};

struct BuildFields {
    std::optional<Address> from;
    std::vector<Address> to, cc, bcc;
    std::string subject;
    std::int64_t date = 0;
    std::string message_id;                                          // with angle brackets
    std::string in_reply_to;                                         // "" = no In-Reply-To field
    std::string references;                                          // "" = no References field
    std::vector<std::pair<std::string, std::string>> extra_headers;  // e.g. X- headers
    std::string body_type = "text";                                  // "text" or "html"
    std::string body;
};

// A single-part message (base64 body, CRLF line ends) from JSON fields.
std::string build_message(const BuildFields& fields);

// Wrap `message` and the attachments in multipart/mixed; the root's non-content header fields are kept
// byte-exact, its content fields move into the first part. Returns `message` unchanged if none.
std::string add_attachments(std::string_view message, const std::vector<Attachment>& attachments);

// "Tue, 01 Jul 2025 10:00:00 +0000"
std::string format_rfc5322_date(std::int64_t unix_seconds);
std::optional<std::int64_t> parse_rfc5322_date(std::string_view text);
// "2025-07-01T10:00:00Z"
std::string format_iso(std::int64_t unix_seconds);
std::optional<std::int64_t> parse_iso(std::string_view text);

// Format an address for a header: `"Name" <addr>` (RFC 2047 for non-ASCII names) or `addr`.
std::string format_address(const Address& address);
// Base64 with CRLF line breaks every 76 characters.
std::string base64_lines(std::string_view bytes);

}  // namespace gb::sandbox::mime
