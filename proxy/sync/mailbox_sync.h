// The sync engine of one mailbox: Graph (through a MailSource) -> the persistent StateStore, and the
// changes it finds -> the IMAP sessions that have a folder selected.
//
// - Folder tree: the whole tree with IMAP paths ('/' delimiter; the inbox is "INBOX" and its subfolders
//   "INBOX/..."; a '/' inside a display name becomes U+2215 DIVISION SLASH) and SPECIAL-USE from the
//   well-known folders (\Sent \Drafts \Trash \Junk \Archive).
// - Messages per folder through delta: a round is followed to its deltaLink, then applied as ONE batch
//   (new messages ordered by receivedDateTime, so UIDs grow with arrival), together with the new delta
//   link. A crash mid-round re-reads the round from the previous link; applying is idempotent.
// - A lost delta token (410, syncStateNotFound, resyncRequired) -> a full round reconciled against the
//   stored map: messages still there keep their UIDs, the rest are expunged.
// - One sync at a time per folder; listeners are called after the batch is committed, outside locks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "proxy/sync/mail_source.h"
#include "proxy/sync/state_store.h"

namespace gb::sync {

struct SyncStats {
    std::uint64_t rounds = 0;        // delta rounds completed
    std::uint64_t pages = 0;         // delta pages read
    std::uint64_t full_resyncs = 0;  // after a lost delta token
    std::uint64_t folder_syncs = 0;  // folder tree refreshes
};

class MailboxSync {
public:
    using Listener = std::function<void(const std::string& folder_id, const FolderChange& change)>;
    using Clock = std::function<std::int64_t()>;  // unix seconds

    MailboxSync(std::string mailbox, MailSource& source, StateStore& store, Clock clock = {});

    const std::string& mailbox() const { return mailbox_; }

    // Refreshes the folder tree. Returns the error that stopped it, if any (the stored tree is kept).
    std::optional<SourceError> sync_folders();
    // One delta round of one folder (a full one when the token was lost).
    std::optional<SourceError> sync_folder(const std::string& folder_id);
    // The tree, then every folder; stops at the first throttling (Retry-After applies to the mailbox).
    std::optional<SourceError> sync_all();

    // Listeners for one folder's changes ("" = every folder); the id is for unsubscribe(). Called on the
    // syncing thread after the batch is committed, in subscription order.
    int subscribe(const std::string& folder_id, Listener listener);
    void unsubscribe(int id);

    SyncStats stats() const;

    // For writes made over IMAP: holding this, no sync of the mailbox runs, so a delta round can never
    // apply data read before the write over the write's result.
    std::unique_lock<std::mutex> exclusive() { return std::unique_lock(sync_mutex_); }
    // Tells the listeners about a change made by a write (after it is committed to the store).
    void publish(const std::string& folder_id, const FolderChange& change) {
        if (!change.empty()) notify(folder_id, change);
    }
    // sync_folders() / sync_folder() for a caller that holds exclusive().
    std::optional<SourceError> sync_folders_locked();
    std::optional<SourceError> sync_folder_locked(const std::string& folder_id);

    // The IMAP path for a tree of folders (exposed for tests).
    static std::vector<FolderRecord> paths_for(const std::vector<RemoteFolder>& tree);

private:
    std::optional<SourceError> round(const std::string& folder_id, bool full);
    void notify(const std::string& folder_id, const FolderChange& change);
    std::int64_t now() const;

    std::string mailbox_;
    MailSource& source_;
    StateStore& store_;
    Clock clock_;

    std::mutex sync_mutex_;  // one sync at a time for this mailbox
    mutable std::mutex mutex_;
    std::map<int, std::pair<std::string, Listener>> listeners_;
    int next_listener_ = 1;
    SyncStats stats_;
};

}  // namespace gb::sync
