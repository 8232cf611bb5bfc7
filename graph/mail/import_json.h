// IMAP APPEND of a non-draft message: the JSON body of `POST /users/{id}/mailFolders/{id}/messages`.
//
// A MIME create (Content-Type: text/plain, base64 MIME) always yields a draft, and a later PATCH cannot
// clear that; a JSON create can carry PidTagMessageFlags (Integer 0x0E07) and so yields a normal, read or
// unread message (GRAPH-FACTS B.2, B.8). The price: Exchange regenerates the MIME from the properties,
// so build_import_json() carries over what Graph can hold and lists the rest in ImportJson::notes.
//
// What goes into the JSON (pure, no I/O):
// - subject (RFC 2047 decoded), from / sender / toRecipients / ccRecipients / bccRecipients / replyTo
//   (entries without a usable address skipped), internetMessageId (Message-ID with its angle brackets,
//   omitted when missing or malformed), importance (Importance:, else X-Priority 1-2 high, 3 normal,
//   4-5 low);
// - body: the HTML part when there is one (multipart/alternative: the last text/html, else the last
//   text/plain; multipart/related: its root part; multipart/mixed and others: the first part that has a
//   body), converted to UTF-8 from its charset (GMime); invalid bytes are replaced, never copied;
// - attachments (fileAttachment with contentBytes): every other leaf part; inline (isInline, contentId)
//   when it has a Content-ID and sits in multipart/related or says Content-Disposition: inline;
//   message/rfc822 parts as "<their Subject>.eml"; parts without a file name get one (attachment-N.ext);
//   empty unnamed parts, the non-chosen alternatives (a text/calendar alternative is kept as invite.ics)
//   and the signature part of multipart/signed are left out;
// - singleValueExtendedProperties: Integer 0x0E07 always ("1" read, "0" unread: no mfUnsent, so not a
//   draft), SystemTime 0x0039 (Date, ISO 8601 UTC), SystemTime 0x0E06 (options.received), String
//   0x1042 (In-Reply-To), String 0x1039 (References), Integer 0x1081 (options.last_verb);
// - flag and categories from the options.
//
// Hostile input: any bytes. The MIME tree is found by imap::MessageIndex (bounded, never fails); more
// than 20 levels of nesting or more than 500 leaf parts is an error before GMime sees anything. GMime
// is only given single leaf parts, rebuilt from their first Content-Type / Content-Transfer-Encoding /
// Content-Disposition / Content-ID fields, and never a multipart or message/* part, so it cannot recurse
// into structure the bound did not see. A message more than 4 x max_json + 64 KiB long is TooLarge
// without decoding anything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "graph/mail/prepare.h"

namespace gb::mail {

struct ImportOptions {
    bool read = false;                     // \Seen -> Integer 0x0E07 = "1" (else "0")
    bool flagged = false;                  // \Flagged -> "flag":{"flagStatus":"flagged"}
    std::optional<int> last_verb;          // \Answered 102, $Forwarded 104 -> Integer 0x1081
    std::vector<std::string> categories;   // other IMAP keywords
    std::optional<std::int64_t> received;  // IMAP internal date, unix seconds -> SystemTime 0x0E06
    std::size_t max_json = 3'900'000;      // the Graph request body limit (4 MB); bigger -> TooLarge
    bool draft = false;                    // \Draft: 0x0E07 gets mfUnsent (8): Outlook opens it as a draft
    // Attachments over this many (decoded) bytes are not put in the JSON but returned in ImportJson::large,
    // for an upload session after the create (Graph takes those on drafts only). The message as a whole
    // may then exceed 4 x max_json.
    std::size_t max_inline_attachment = static_cast<std::size_t>(-1);
};

struct ImportJson {
    std::string json;                // the request body (UTF-8, valid JSON)
    std::vector<std::string> notes;  // what could not be carried over
    std::vector<Attachment> large;   // over max_inline_attachment: to upload after the create
};

struct ImportError {
    enum class Kind {
        Malformed,  // no header block, header block or MIME tree over the limits
        TooLarge,   // the JSON would exceed ImportOptions::max_json
    } kind = Kind::Malformed;
    std::string message;
};

std::variant<ImportJson, ImportError> build_import_json(std::string_view mime, const ImportOptions& o);

}  // namespace gb::mail
