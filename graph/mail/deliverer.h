// Delivers one prepared message through Microsoft Graph, synchronously (GRAPH-FACTS B.1-B.3, C.1).
//
// Implemented:
// - Mode::Mime: POST /v1.0/users/{mailbox}/sendMail, text/plain base64 MIME -> 202;
// - Mode::ExactRecipients / Mode::Large: MIME draft (POST .../messages -> 201 {id}); PATCH to/cc/bcc
//   recipients to exactly the envelope when Prepared::patch_recipients; each detached attachment as a
//   fileAttachment POST (small) or an upload session (PUT ranges of a multiple of 320 KiB, <= 4 MiB, in
//   order, no Authorization header, through the plain http::Client); then POST .../send -> 202. Any failure
//   after the draft exists deletes the draft, so retries do not pile drafts up;
// - every Graph call carries Prefer: IdType="ImmutableId"; request-ids are collected;
// - the outcome is classified: Delivered, Transient (429/5xx/network/token: retry later, with Retry-After
//   when Graph gave one) or Permanent (4xx: bounce), with Graph's code, message and request-id.
// - store_in_inbox(): puts a MIME message (a bounce) into a mailbox's Inbox via POST
//   /users/{mb}/mailFolders/inbox/messages. Graph creates every MIME import as a draft (isDraft = true),
//   so the bounce shows in the Inbox as an unsent item; that is accepted (the content is what matters).
//
// Deliberately not here: retries and backoff (the queue worker decides), the 150 MB / 35 MB whole-message
// caps (Graph answers them), resuming an upload session (a retry starts the message over).
// Hostile input: every response body (parsed with rapidjson, bounded by the http::Client).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "graph/http/graph_client.h"
#include "graph/http/http_client.h"
#include "graph/mail/prepare.h"

namespace gb::mail {

struct DeliveryOptions {
    std::size_t upload_chunk = 10 * 327'680;        // 3,200 KiB: a multiple of 320 KiB, under 4 MiB
    std::size_t simple_attachment_max = 2'900'000;  // larger (decoded) attachments use an upload session
    long timeout_ms = 120'000;                      // per HTTP call
};

enum class Outcome { Delivered, Transient, Permanent };

struct DeliveryResult {
    Outcome outcome = Outcome::Transient;
    int http_status = 0;     // of the failing call (202 when delivered)
    std::string step;        // "sendMail", "create draft", "patch recipients", ...
    std::string graph_code;  // Graph error code, "" if none
    std::string graph_message;
    std::string request_id;                   // of the failing call
    std::optional<std::int64_t> retry_after;  // seconds, from Retry-After
    std::string detail;                       // one line for the delivery log and the bounce
    std::vector<std::string> request_ids;     // every Graph call made, in order
    bool draft_deleted = false;               // a draft was created and then removed after a failure

    bool delivered() const { return outcome == Outcome::Delivered; }
    // RFC 3463 status for the bounce / SMTP reply: 5.1.1, 5.7.1, 5.3.4, 4.4.x, ...
    std::string enhanced_status() const;
};

// A Graph request as the caller makes it (Prefer header, timeout and request-id bookkeeping included).
using GraphCall = std::function<http::GraphResult(http::Request)>;

// Adds one attachment to a draft (`message_path` = "/v1.0/users/{mailbox}/messages/{id}"): a fileAttachment
// POST up to options.simple_attachment_max, else an upload session whose ranges are PUT through `upload`
// (no Authorization header). Upload request-ids are appended to `request_ids`. nullopt on success, else
// the failure, classified like a delivery (the caller decides what to do with the draft).
std::optional<DeliveryResult> attach_file(const GraphCall& call, http::Client& upload, const std::string& message_path,
                                          const Attachment& attachment, const DeliveryOptions& options,
                                          std::vector<std::string>& request_ids);

class Deliverer {
  public:
    // Both references must outlive the Deliverer. `upload_http` performs the unauthenticated upload PUTs.
    Deliverer(http::GraphClient& graph, http::Client& upload_http, DeliveryOptions options = {});

    // A draft made by an earlier attempt of the same message, and where to record the one this attempt
    // makes (drafts are made for big messages and exact recipients: create, attachments, send). The
    // caller persists the id before the attachments go up, so that after a crash the next attempt can
    // tell "already sent" (the id no longer names a draft: delivered, nothing sent twice) from "never
    // sent" (deleted, then made afresh: no orphan left in the sender's Drafts).
    struct Drafts {
        std::string previous;                               // "" = none
        std::function<void(const std::string&)> created;  // may throw (nothing is cleaned up then)
        // An earlier attempt may have died while its draft was being created (a crash, or a create
        // request that timed out but was carried out), so its id was never known: look in Drafts for
        // drafts with this message's Message-ID and delete them first. Only for a Message-ID the bridge
        // made for this queue entry (Prepared::message_id_made): a client's own may be shared by another
        // entry (one message split into two transactions) or by the user's own draft.
        bool check_orphans = false;
    };
    DeliveryResult deliver(const Prepared& message, const Drafts* drafts = nullptr);

    // Create `mime` in the Inbox of `mailbox` (see the header comment: it is a draft there).
    DeliveryResult store_in_inbox(std::string_view mailbox, const std::string& mime);

  private:
    http::GraphClient& graph_;
    http::Client& upload_;
    DeliveryOptions options_;
};

}  // namespace gb::mail
