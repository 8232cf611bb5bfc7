// What IMAP and POP3 sessions use to read mailboxes: the per-mailbox sync engines, a poller that keeps
// watched mailboxes fresh, and message bodies through the disk cache.
//
// Polling: a mailbox with at least one watching session is synced every poll_interval (its folder tree
// every tree_interval); a folder watched "fast" (a client in IDLE) every idle_poll_interval. Graph's
// Retry-After pauses the whole mailbox. Sessions never wait for the poller except for the first sync of
// a folder they open (ensure_synced), so a slow Graph delays change notifications, not commands on
// data already here.
// Bodies: fetched once ($value), CRLF-normalised, kept in the cache; concurrent requests for the same
// body share one download (single flight).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "proxy/sync/body_cache.h"
#include "proxy/sync/mail_source.h"
#include "proxy/sync/mailbox_sync.h"
#include "proxy/sync/state_store.h"

namespace gb::sync {

struct MailServiceOptions {
    std::chrono::milliseconds poll_interval{15000};
    std::chrono::milliseconds idle_poll_interval{3000};
    std::chrono::milliseconds tree_interval{300000};
    int threads = 4;
};

struct MailServiceStats {
    std::uint64_t polls = 0, poll_errors = 0, body_downloads = 0, body_errors = 0;
};

class MailService {
public:
    MailService(StateStore& store, BodyCache& cache, MailServiceOptions options = {});
    ~MailService();
    MailService(const MailService&) = delete;
    MailService& operator=(const MailService&) = delete;

    // Registers a mailbox (lower-case address) and where its data comes from. Before start(), or later
    // (a reload adding an account): the scheduler picks it up at its next round.
    void add_mailbox(const std::string& address, MailSource& source);
    MailboxSync* mailbox(const std::string& address);
    StateStore& store() { return store_; }

    void start();
    void stop();

    // The folder tree and (folder_id != "") one folder synced at least once; blocks for the first sync
    // only. Returns the error when there is no data to serve.
    std::optional<SourceError> ensure_synced(const std::string& mailbox, const std::string& folder_id = "");

    // A session's interest in a folder (keeps its mailbox polled); fast while the client IDLEs.
    int watch(const std::string& mailbox, const std::string& folder_id);
    void set_fast(int watch_id, bool fast);
    void unwatch(int watch_id);
    // Sync this mailbox soon (e.g. on NOOP or when IDLE starts), without waiting for the interval.
    void poke(const std::string& mailbox);

    // A folder's messages as stored now, ordered by UID, shared by every session that has it selected
    // (an IMAP session holds a pointer, not a copy: 1,000 idle clients on a 10,000-message folder share one
    // list). Rebuilt on first use after a change.
    using Snapshot = std::shared_ptr<const std::vector<MessageRecord>>;
    Snapshot snapshot(const std::string& mailbox, const std::string& folder_id);

    // The message's MIME, CRLF-normalised (from the cache or Graph).
    SourceResult<std::string> body(const std::string& mailbox, const std::string& graph_id);

    // Moves a message (e.g. POP3 DELE -> "deleteditems") and syncs the mailbox soon.
    std::optional<SourceError> move(const std::string& mailbox, const std::string& graph_id,
                                    const std::string& destination);

    MailServiceStats stats() const;
    // Per mailbox: when its last complete poll succeeded (unix seconds); mailboxes never polled are absent.
    std::map<std::string, std::int64_t> last_synced() const;

    // ---- writes (IMAP) ---------------------------------------------------------------------------------
    // Each runs with the mailbox's sync held off (MailboxSync::exclusive), calls Graph, then records what
    // Graph did in the store and tells the sessions (their snapshots are rebuilt). A Graph failure stops
    // the operation at that message: what was done before it is recorded (it happened in Microsoft 365),
    // nothing after it, and the error is returned.

    struct FlagOp {
        enum class Mode { Add, Remove, Replace } mode = Mode::Add;
        std::uint32_t flags = 0;            // kSeen kAnswered kFlagged kDeleted kForwarded (kDraft ignored)
        std::vector<std::string> keywords;  // other IMAP keywords (Outlook categories)
        std::optional<std::uint64_t> unchanged_since;  // CONDSTORE UNCHANGEDSINCE
    };
    struct FlagResult {
        std::vector<std::uint32_t> modified;  // UNCHANGEDSINCE failed (RFC 7162 MODIFIED)
        std::optional<SourceError> error;
    };
    // STORE: one PATCH per message whose Graph-visible state changes (\Deleted is local only).
    FlagResult store_flags(const std::string& mailbox, const std::string& folder_id,
                           const std::vector<std::uint32_t>& uids, const FlagOp& op);

    struct CopyResult {
        std::vector<std::uint32_t> source_uids, dest_uids;  // done, in the same order (COPYUID)
        std::uint32_t dest_uidvalidity = 0;
        std::optional<SourceError> error;
    };
    // COPY / MOVE within a mailbox: Graph's copy / move per message (never a re-upload); the destination
    // UIDs are assigned at once; moved messages leave the source folder at once.
    CopyResult copy_messages(const std::string& mailbox, const std::string& folder_id,
                             const std::vector<std::uint32_t>& uids, const std::string& dest_folder_id, bool move);

    struct ExpungeResult {
        std::vector<std::uint32_t> removed;
        std::optional<SourceError> error;
    };
    // EXPUNGE: the messages move to Deleted Items, are deleted (DELETE: into Recoverable Items), or are
    // deleted for good (permanentDelete).
    enum class Removal { ToTrash, Delete, PermanentDelete };
    ExpungeResult expunge(const std::string& mailbox, const std::string& folder_id,
                          const std::vector<std::uint32_t>& uids, Removal how);

    struct AppendRequest {
        std::string body;  // what to POST: the MIME (mime = true, Graph makes a draft) or a Graph JSON message
        bool mime = false;
        std::uint32_t flags = 0;  // the flags the client asked for
        std::vector<std::string> keywords;        // categories
        std::vector<std::string> local_keywords;  // client bookkeeping keywords (kept locally)
        std::string sent_message_id;  // set: look for this message in the folder instead of creating it
        std::vector<mail::Attachment> attachments;  // too big for the create request: uploaded after it
        std::uint64_t size = 0;          // octets of the message as the client sent it
        std::int64_t internal_date = 0;  // the client's date-time, else now (unix seconds)
    };
    struct AppendResult {
        std::uint32_t uidvalidity = 0, uid = 0;  // uid 0: created, but its UID is not known yet
        bool existing = false;                   // mapped onto a message Graph already had
    };
    SourceResult<AppendResult> append(const std::string& mailbox, const std::string& folder_id,
                                      const AppendRequest& request);

    // Folders (the tree is refreshed from Graph afterwards). parent_id "" = top level.
    SourceResult<std::string> create_folder(const std::string& mailbox, const std::string& parent_id,
                                            const std::string& name);
    std::optional<SourceError> rename_folder(const std::string& mailbox, const std::string& folder_id,
                                             const std::string& new_parent_id, const std::string& new_name);
    std::optional<SourceError> delete_folder(const std::string& mailbox, const std::string& folder_id);

private:
    FlagResult store_flags_chunk(const std::string& mailbox, const std::string& folder_id,
                                 const std::vector<std::uint32_t>& uids, const FlagOp& op);
    CopyResult copy_chunk(const std::string& mailbox, const std::string& folder_id,
                          const std::vector<std::uint32_t>& uids, const std::string& dest_folder_id, bool move);
    ExpungeResult expunge_chunk(const std::string& mailbox, const std::string& folder_id,
                                const std::vector<std::uint32_t>& uids, Removal how);
    struct Box;
    struct Watch {
        std::string mailbox, folder_id;
        bool fast = false;
    };
    Box* find_box(const std::string& mailbox) const;
    void scheduler();
    void run_poll(Box& box, std::vector<std::string> fast_folders, bool full);
    // One round of run_poll(): the Graph/store work; errors from Graph into `err`, the store's throw.
    void poll_once(Box& box, const std::vector<std::string>& fast_folders, bool full,
                   std::optional<SourceError>& err);

    StateStore& store_;
    BodyCache& cache_;
    MailServiceOptions options_;

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::map<std::string, std::unique_ptr<Box>> boxes_;
    std::map<int, Watch> watches_;
    int next_watch_ = 1;
    bool stopping_ = false;
    std::thread scheduler_;
    std::vector<std::thread> workers_;
    std::vector<std::function<void()>> jobs_;
    MailServiceStats stats_;

    std::mutex snapshot_mutex_;
    std::map<std::pair<std::string, std::string>, Snapshot> snapshots_;

    std::mutex body_mutex_;
    std::condition_variable body_done_;
    std::set<std::string> body_in_flight_;
};

}  // namespace gb::sync
