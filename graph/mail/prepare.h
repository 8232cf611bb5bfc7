// From a spooled SMTP message to what Graph must be asked: prepare() reconciles the SMTP envelope with
// the MIME headers, normalises printer quirks, applies the From policy and picks the delivery mode.
//
// Implemented (pure, no I/O):
// - the envelope is authoritative: RCPT TO recipients missing from To/Cc/Bcc are added to a Bcc: field of
//   the ROOT header block; header recipients outside the envelope switch to Mode::ExactRecipients (draft,
//   recipients PATCHed to exactly the envelope, send), since a MIME sendMail would deliver to them too;
// - quirks: an unquoted @ in the From display name, no From, To/Cc fields without any mailbox
//   (`To: Undisclosed recipients:;`, garbage) are removed so Graph sees only Bcc, missing Date and
//   Message-ID (with the sending mailbox's domain) are added;
// - From (and Sender) differing from the sending mailbox: FromPolicy Keep / Rewrite / Reject;
// - size: base64(MIME) over max_request_body -> Mode::Large: the biggest attachment leaves are cut out of
//   the raw bytes and returned decoded, for upload after a MIME draft create.
// Only the header fields that change are rewritten; every other byte (bodies, quoted-printable, 8-bit,
// signed parts, the header lines kept) is copied exactly. The line-end style of the message is kept.
//
// Deliberately not done: re-encoding bodies, DKIM/S/MIME awareness (cutting an attachment out of a signed
// part breaks that signature; such messages should be small enough for Mode::Mime), charset conversion.
// Hostile input: the whole message. Header blocks, field counts, address counts, MIME nesting depth and
// part counts are bounded (PreparePolicy); exceeding them returns an error, never a crash or a hang.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "graph/mail/gmime_support.h"

namespace gb::mail {

struct Envelope {
    std::string mailbox;                  // the Graph /users/{id} to send as (an address)
    std::string reverse_path;             // MAIL FROM (may be empty: null reverse path)
    std::vector<std::string> recipients;  // RCPT TO, authoritative
};

enum class FromPolicy {
    Keep,     // leave a foreign From; Graph needs Send As rights on it (else 403 ErrorSendAsDenied)
    Rewrite,  // From := the mailbox, the original From kept as Reply-To unless one exists; foreign Sender
              // dropped
    Reject,   // a foreign From or Sender is an error (SMTP 550 5.7.1)
};

struct PreparePolicy {
    FromPolicy from_policy = FromPolicy::Rewrite;
    std::size_t max_request_body = 4'000'000;  // bytes of base64 request body for one Graph call
    std::size_t max_header_block = 256 * 1024;
    std::size_t max_header_fields = 1000;
    std::size_t max_recipients = 500;  // Exchange's per-message recipient limit
    std::size_t max_parts = 500;
    int max_depth = 20;
    std::size_t min_detach = 16 * 1024;  // parts smaller than this stay in the MIME of a Large message
    std::int64_t now = 0;                // unix seconds for a missing Date; 0 = the system clock
    // A missing Message-ID is made from this (the same on every delivery attempt of one message, so a
    // draft an interrupted attempt left can be found by it); "" = random.
    std::string message_id_seed;
};

enum class Mode {
    Mime,             // one POST sendMail with the MIME
    ExactRecipients,  // MIME draft, PATCH recipients to exactly the envelope, send
    Large,  // MIME draft without the big attachments, upload them, (PATCH if patch_recipients), send
};

struct Attachment {
    std::string name;
    std::string content_type;
    std::string content_id;  // without angle brackets
    bool is_inline = false;
    std::string bytes;  // decoded
};

enum class PrepareErrorKind { Malformed, TooComplex, TooLarge, FromRejected, NoRecipients };

struct PrepareError {
    PrepareErrorKind kind = PrepareErrorKind::Malformed;
    std::string message;
    int smtp_code = 554;   // for the SMTP side / the bounce
    std::string enhanced;  // "5.6.0", ...
};

struct Prepared {
    std::optional<PrepareError> error;  // set: nothing else is meaningful
    Mode mode = Mode::Mime;
    std::string mailbox;
    std::string mime;  // the message to POST (base64-encoded by the deliverer)
    // Exactly the envelope, for the PATCH: To/Cc keep the header's display names where the address is in
    // the envelope; every other envelope recipient is Bcc.
    std::vector<Address> to, cc, bcc;
    bool patch_recipients = false;        // Mode::ExactRecipients, or Large with header-only recipients
    std::vector<Attachment> attachments;  // Mode::Large: cut out of `mime`, to upload
    std::vector<std::string> notes;       // what was rewritten, for the delivery log
    std::string message_id;               // the Message-ID header's value ("<...>"), as sent
    bool message_id_made = false;         // made by prepare() from message_id_seed: this message's alone

    bool ok() const { return !error.has_value(); }
};

Prepared prepare(const std::string& raw_mime, const Envelope& env, const PreparePolicy& policy = {});

// Request-body size of one Graph call carrying `raw_size` bytes of MIME as base64 (no line breaks).
constexpr std::size_t base64_size(std::size_t raw_size) {
    return (raw_size + 2) / 3 * 4;
}

// --- header-block helpers, also used by the bounce builder -----------------------------------------------

struct HeaderField {
    std::string_view name;  // as written
    std::size_t begin = 0;  // byte range of the whole field, continuation lines and line end included
    std::size_t end = 0;
    std::string_view raw_value(std::string_view message) const;  // after the colon, folded, line end cut
};

struct HeaderBlock {
    std::vector<HeaderField> fields;
    std::size_t fields_end = 0;  // where the last field ends (the empty line or the first body byte)
    std::size_t body = 0;        // first body byte
    bool crlf = true;
};

// Bounded scan of the header block at `offset`. nullopt when over max_bytes or max_fields.
std::optional<HeaderBlock> scan_headers(std::string_view message, std::size_t offset, std::size_t max_bytes,
                                        std::size_t max_fields);

}  // namespace gb::mail
