// Where mailbox contents come from: Microsoft Graph in production (graph_source.h), a fake in unit tests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "graph/mail/prepare.h"
#include "proxy/sync/state_store.h"

namespace gb::sync {

struct RemoteFolder {
    std::string id;
    std::string parent_id;  // "" for children of the root (msgfolderroot)
    std::string name;
    std::string well_known;  // "inbox", "sentitems", "drafts", "deleteditems", "junkemail", "archive" or ""
};

struct DeltaPage {
    std::vector<RemoteMessage> items;
    std::string next_link;   // more pages in this round
    std::string delta_link;  // the round is complete; start the next one here
};

struct SourceError {
    enum class Kind {
        SyncStateLost,  // 410 / syncStateNotFound / resyncRequired: start a full round
        Throttled,      // 429 / 503 with Retry-After
        Transient,      // 5xx, network, token trouble
        NotFound,       // the folder or message is gone
        Permanent,      // 4xx that retrying will not fix (permissions, bad request)
    } kind = Kind::Transient;
    std::string message;
    std::optional<std::int64_t> retry_after;  // seconds
};

template <typename T>
using SourceResult = std::variant<T, SourceError>;

class MailSource {
public:
    virtual ~MailSource() = default;
    // The whole folder tree of a mailbox (mail folders only; search folders and hidden ones excluded).
    virtual SourceResult<std::vector<RemoteFolder>> folders(const std::string& mailbox) = 0;
    // One page of a folder's message delta. `link` is "" to start a new full round, else a next or delta
    // link returned earlier (used verbatim).
    virtual SourceResult<DeltaPage> delta(const std::string& mailbox, const std::string& folder_id,
                                          const std::string& link) = 0;
    // The message's MIME as Graph serves it ($value).
    virtual SourceResult<std::string> mime(const std::string& mailbox, const std::string& graph_id) = 0;
    // ---- writes (IMAP). Sources that cannot write answer Permanent. -----------------------------------
    // Moves a message to a folder (id or well-known name, e.g. "deleteditems") and returns its id there
    // (the same id with immutable ids). A message already gone is NotFound.
    virtual SourceResult<std::string> move(const std::string& mailbox, const std::string& graph_id,
                                           const std::string& destination) {
        (void)mailbox, (void)graph_id, (void)destination;
        return read_only();
    }
    // Copies a message into a folder; returns the new message's id.
    virtual SourceResult<std::string> copy(const std::string& mailbox, const std::string& graph_id,
                                           const std::string& destination) {
        (void)mailbox, (void)graph_id, (void)destination;
        return read_only();
    }
    // One update of a message's IMAP-visible state (one PATCH): only the fields set are sent.
    struct Patch {
        std::optional<bool> read;                           // \Seen -> isRead
        std::optional<bool> flagged;                        // \Flagged -> flag.flagStatus
        std::optional<int> last_verb;                       // \Answered 102, $Forwarded 104, none 0
        std::optional<std::vector<std::string>> categories; // keywords
        bool empty() const { return !read && !flagged && !last_verb && !categories; }
    };
    virtual std::optional<SourceError> update(const std::string& mailbox, const std::string& graph_id,
                                              const Patch& patch) {
        (void)mailbox, (void)graph_id, (void)patch;
        return read_only();
    }
    // Deletes a message: `permanent` = permanentDelete (gone, not recoverable by the user), else DELETE.
    virtual std::optional<SourceError> remove(const std::string& mailbox, const std::string& graph_id,
                                              bool permanent) {
        (void)mailbox, (void)graph_id, (void)permanent;
        return read_only();
    }
    // Creates a message in a folder: `body` is MIME (mime = true: Graph makes it a draft, exact bytes) or
    // a Graph JSON message (mime = false), then adds `attachments` (too big for one request; drafts only).
    // Returns the new message as Graph describes it; after a failure nothing is left behind.
    virtual SourceResult<RemoteMessage> create(const std::string& mailbox, const std::string& folder_id,
                                               const std::string& body, bool mime,
                                               const std::vector<mail::Attachment>& attachments) {
        (void)mailbox, (void)folder_id, (void)body, (void)mime, (void)attachments;
        return read_only();
    }
    // The id of the message with this Internet Message-ID in a folder (NotFound when none).
    virtual SourceResult<std::string> find_by_message_id(const std::string& mailbox, const std::string& folder_id,
                                                         const std::string& message_id) {
        (void)mailbox, (void)folder_id, (void)message_id;
        return read_only();
    }
    // Folders: create under `parent_id` ("" = top level), rename, move under another parent, delete.
    virtual SourceResult<RemoteFolder> create_folder(const std::string& mailbox, const std::string& parent_id,
                                                     const std::string& name) {
        (void)mailbox, (void)parent_id, (void)name;
        return read_only();
    }
    virtual std::optional<SourceError> rename_folder(const std::string& mailbox, const std::string& folder_id,
                                                     const std::string& name) {
        (void)mailbox, (void)folder_id, (void)name;
        return read_only();
    }
    virtual std::optional<SourceError> move_folder(const std::string& mailbox, const std::string& folder_id,
                                                   const std::string& parent_id) {
        (void)mailbox, (void)folder_id, (void)parent_id;
        return read_only();
    }
    virtual std::optional<SourceError> delete_folder(const std::string& mailbox, const std::string& folder_id) {
        (void)mailbox, (void)folder_id;
        return read_only();
    }

protected:
    static SourceError read_only() { return SourceError{SourceError::Kind::Permanent, "this source is read-only", {}}; }
};

}  // namespace gb::sync
