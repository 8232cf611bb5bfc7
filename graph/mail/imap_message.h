// The message side of an IMAP4rev1 server (RFC 3501): from the bytes of one stored message to what
// FETCH answers: ENVELOPE, BODY / BODYSTRUCTURE, BODY[section]<partial> bytes, plus small helpers
// for SEARCH (one header field, the decoded text of the text/* parts).
//
// Implements: RFC 3501 6.4.5 (section specs, partial), 7.4.2 (ENVELOPE, BODY, BODYSTRUCTURE),
// RFC 5322 header fields and address lists (obsolete forms read leniently), RFC 2045/2046 MIME
// structure (multipart boundaries, message/rfc822, multipart/digest defaults), RFC 2231 parameter
// continuations (joined; extended values stay encoded as `name*` = charset'lang'%xx, as Dovecot
// reports them, so BODYSTRUCTURE stays 7-bit).
// Deliberately not: BINARY (RFC 3516), message/global, RFC 2047 decoding anywhere in FETCH output
// (RFC 3501 wants raw header text), charset conversion outside text_for_search().
//
// Bytes: every offset refers to the message as stored, i.e. after normalize_crlf(). The MIME tree is
// found by our own single pass over the raw bytes (sections are byte-exact substrings); GMime is used
// only by text_for_search() to undo transfer encodings and convert charsets.
//
// Hostile input: the whole message. Nothing here throws on bad input or fails to answer: malformed
// MIME gives a best-effort tree. Work is linear in the message size times the nesting depth, which
// Limits bounds, as it bounds the number of parts and the header lines interpreted per block.
//
// Choices where RFC 3501 leaves room (each deliberate, most as Dovecot does):
//   - A part number that does not exist, or HEADER/TEXT/HEADER.FIELDS on a part that is not
//     message/rfc822, gives the empty string (section_bytes() returns ""); the FETCH layer answers
//     BODY[5] "" like UW imapd and Dovecot. MessageIndex::find() tells existence apart.
//   - A non-multipart entity's only sub-part is itself: BODY[1] of a single-part message is its body,
//     and BODY[1.1] of a text/plain part 1 is part 1 again (Dovecot does the same).
//   - Strings: quoted when 7-bit printable (TAB allowed) and at most 1024 octets, otherwise a literal
//     {n}\r\n (8-bit header bytes, long values). NUL cannot appear in IMAP4rev1 strings: it becomes
//     0x80 inside a literal, so the announced size stays right.
//   - Types, subtypes, parameter names and values are reported as written in the message; absent or
//     syntactically invalid Content-Type gives "text" "plain" ("charset" "us-ascii") (RFC 2045 5.2),
//     or "message" "rfc822" inside multipart/digest (RFC 2046 5.1.5). No Content-Transfer-Encoding
//     gives "7bit". A multipart with no parts is reported with one empty text/plain part, since the
//     grammar needs one (as Dovecot).
//   - Line counts (text/*, message/rfc822) are the number of LFs in the body; the CRLF before a
//     boundary belongs to the boundary (RFC 2046), so a one-line part without a final CRLF has 0.
//   - Boundaries: a line that starts with "--" + boundary (any trailing text ignored, as GMime and
//     Dovecot) of any enclosing multipart; the longest matching boundary wins, then the innermost.
//   - ENVELOPE: the first occurrence of each field; values unfolded (CRLF removed) and trimmed, not
//     decoded; a field present with an empty value is "" (NIL only when absent). Addresses: display
//     names unquoted with words joined by one space; a comment after an address gives the name when
//     there is none ("a@b (Ann)"); the local part is unquoted; a missing local part or domain is "";
//     a field with no address at all is NIL.
//   - HEADER.FIELDS[.NOT]: whole field lines (continuations included) in message order, then CRLF;
//     a last field without its CRLF (header at end of data) gets one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/text.h"

namespace gb::mail::imap {

// Bare LF -> CRLF, bare CR -> CRLF, CRLF kept. What the store keeps; every offset below refers to it.
using gb::normalize_crlf;

// Bounds on the work one message can cause. Beyond them the index is still an answer, just coarser
// (MessageIndex::truncated() tells): a multipart or message/rfc822 at max_depth is an opaque
// application/octet-stream leaf; delimiters after max_parts entities start no new part (those bytes
// belong to no part; BODY[n] for them is ""); a header block still ends at its empty line, but only its
// first max_header_lines lines are read for fields (MIME, ENVELOPE, HEADER.FIELDS[.NOT]). Fixed
// internal bounds: boundaries over 200 octets count as absent, 1000 parameters per field are read, a
// section spec has at most 100 part numbers.
struct Limits {
    int max_depth = 20;                    // entity nesting below the message (which is depth 0)
    std::size_t max_parts = 1000;          // entities indexed (the message and encapsulated ones count)
    std::size_t max_header_lines = 10000;  // header lines interpreted per header block
};

struct Param {
    std::string name;   // as written (an RFC 2231 extended value keeps its trailing '*')
    std::string value;  // unquoted
    bool operator==(const Param&) const = default;
};

// One entity: the message itself, a body part of a multipart, or the message inside message/rfc822.
struct Part {
    enum class Kind { Basic, Text, Multipart, Message };
    Kind kind = Kind::Text;

    // Byte ranges [begin, end) in the normalised message. The header block includes its empty line
    // when there is one; the body runs to the CRLF before the next boundary (excluded) or the end.
    std::size_t header_begin = 0, header_end = 0;
    std::size_t body_begin = 0, body_end = 0;

    std::string type = "text", subtype = "plain";  // as reported ("application" "octet-stream" if opaque)
    std::vector<Param> params;
    std::optional<std::string> id, description, encoding, md5, location;
    std::optional<std::string> disposition;
    std::vector<Param> disposition_params;
    std::vector<std::string> language;

    std::uint64_t lines = 0;  // Text and Message only
    int depth = 0;
    bool opaque = false;  // a multipart or message/rfc822 beyond Limits: reported as application/octet-stream
    int parent = -1;
    std::vector<int> children;  // Multipart: body parts in order
    int message = -1;           // Message: the encapsulated message entity

    std::uint64_t body_size() const { return body_end - body_begin; }
};

class MessageIndex {
  public:
    // Never fails: malformed or hostile input gives a best-effort tree within the limits.
    static MessageIndex build(std::string_view raw, const Limits& limits = {});

    const std::vector<Part>& parts() const { return parts_; }
    const Part& root() const { return parts_.front(); }
    const Part& part(int i) const { return parts_[static_cast<std::size_t>(i)]; }
    std::size_t size() const { return size_; }     // bytes of the message it was built from
    bool truncated() const { return truncated_; }  // max_parts or max_depth was reached
    std::size_t max_header_lines() const { return max_header_lines_; }

    // The entity an IMAP part number names ("1.2" = {1, 2}); nullptr when there is none. Empty path:
    // the message.
    const Part* find(const std::vector<std::uint32_t>& path) const;

  private:
    friend class Builder;
    std::vector<Part> parts_;
    std::size_t size_ = 0;
    std::size_t max_header_lines_ = Limits{}.max_header_lines;
    bool truncated_ = false;
};

// RFC 3501 ENVELOPE of the message: "(date subject from sender reply-to to cc bcc in-reply-to
// message-id)".
std::string envelope(const MessageIndex& index, std::string_view raw);

// RFC 3501 BODYSTRUCTURE (extended = true) or BODY (false), the parenthesised body.
std::string bodystructure(const MessageIndex& index, std::string_view raw, bool extended);

// A BODY[...] section spec.
struct Section {
    enum class Text { None, Header, HeaderFields, HeaderFieldsNot, Text, Mime };
    std::vector<std::uint32_t> part;  // empty = the whole message
    Text text = Text::None;
    std::vector<std::string> fields;  // HeaderFields / HeaderFieldsNot, as the client gave them
    bool operator==(const Section&) const = default;
};

// The text between [ and ] of BODY[...]: "", "HEADER", "TEXT", "HEADER.FIELDS (A B)",
// "HEADER.FIELDS.NOT (A B)", "1.2", "1.2.MIME", "3.HEADER", ... Keywords are case-insensitive;
// field names are astrings (atom or quoted string); exactly RFC 3501's spacing. nullopt if invalid.
std::optional<Section> parse_section(std::string_view spec);

// The bytes of a section per RFC 3501 6.4.5 ("" for a part that does not exist; see above).
std::string section_bytes(const MessageIndex& index, std::string_view raw, const Section& section);

// <origin.count>: at most `count` octets from `origin`; "" when origin is at or beyond the end.
std::string partial(std::string_view bytes, std::uint64_t origin, std::uint64_t count);

// The FETCH response item name: BODY[1.2.HEADER.FIELDS (DATE FROM)] (field names upper-cased), with
// "<origin>" appended for a partial fetch.
std::string section_label(const Section& section, std::optional<std::uint64_t> origin = std::nullopt);

// --- for SEARCH ------------------------------------------------------------------------------------

// The first `name` field (case-insensitive) of the message's header, unfolded and trimmed, not decoded.
std::optional<std::string> header_field(std::string_view raw, std::string_view name);

// The text of every text/* part (encapsulated messages included), transfer encoding undone and
// converted to UTF-8 (invalid sequences replaced), parts separated by "\n"; at most max_bytes.
std::string text_for_search(const MessageIndex& index, std::string_view raw,
                            std::size_t max_bytes = 16 * 1024 * 1024);

}  // namespace gb::mail::imap
