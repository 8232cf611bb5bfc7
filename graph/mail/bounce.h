// RFC 3464 delivery status notifications for messages Graph refused permanently.
//
// Implemented: multipart/report; report-type=delivery-status with (1) a human-readable text/plain part
// naming the reason, the Graph error code/message/request-id, (2) message/delivery-status with
// Reporting-MTA, Arrival-Date, and per recipient Final-Recipient, Action: failed, Status 5.x.x and a
// Diagnostic-Code of type X-Graph (Graph is not SMTP, so no smtp; diagnostic), (3) the original header
// block as text/rfc822-headers. CRLF line ends, Auto-Submitted: auto-replied.
// The caller stores it in the sender's Inbox (Deliverer::store_in_inbox: a MIME import, which Graph
// always creates as a draft; accepted, see deliverer.h).
// Deliberately not: the full original message (headers only keep the bounce small and safe), DSN
// extensions of the SMTP side (ENVID/ORCPT: added when the SMTP engine records them, via
// original_envelope_id). Hostile input: the original message and Graph's error text: the header block is
// bounded (64 KiB), and every value put in a header or DSN field is reduced to one printable line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gb::mail {

struct BounceInfo {
    std::string reporting_mta = "graphbridge";  // host name for Reporting-MTA: dns;
    std::string notify;                         // who gets the bounce (the sending mailbox / reverse path)
    std::string from;                           // bounce From address ("" -> postmaster@<notify's domain>)
    std::vector<std::string> recipients;        // the failed recipients
    std::string status = "5.0.0";               // RFC 3463
    std::string reason;                         // one sentence for humans
    int http_status = 0;
    std::string graph_code, graph_message, request_id;
    std::string original;              // the original message (only its header block is used)
    std::string original_envelope_id;  // ENVID, if the client gave one
    std::int64_t arrival = 0;          // unix seconds the message was accepted (0 = omitted)
    std::int64_t now = 0;              // 0 = the system clock
};

std::string make_bounce(const BounceInfo& info);

}  // namespace gb::mail
