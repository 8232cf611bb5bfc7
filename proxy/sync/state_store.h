// The persistent IMAP view of Microsoft 365 mailboxes: folders with their UIDVALIDITY, UIDNEXT and delta
// links, and per folder the map immutable Graph id <-> IMAP UID with flags, sizes, dates and the
// ENVELOPE/BODYSTRUCTURE once computed.
//
// GUARANTEES (every implementation)
//   * UIDs are assigned in increasing order per folder and never reused: uidnext only grows, also across
//     restarts and resyncs. A message keeps its UID for as long as it stays in the folder (its immutable
//     id is the key), also across a full resync after a lost delta token.
//   * UIDVALIDITY is assigned once per folder (per Graph folder id) and is strictly greater than every
//     UIDVALIDITY this store handed out before, so a folder deleted and re-created under the same name
//     never reuses one.
//   * Every mutating call is one transaction: after a crash either all of a batch is there or none.
//   * MODSEQ: every change to a message's flags (and every new message) takes the next value of the
//     folder's highestmodseq (RFC 7162 semantics, local counter); a batch that expunges raises it too.
//
// The interface is narrow and semantic (apply a batch, not "run this SQL") so that a shared database can
// replace SQLite when several instances serve the same mailboxes: UID assignment happens inside the
// store's transaction, never in the caller.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gb::sync {

// IMAP system flags kept per message (bit set).
enum Flag : std::uint32_t {
    kSeen = 1u << 0,
    kAnswered = 1u << 1,
    kFlagged = 1u << 2,
    kDeleted = 1u << 3,  // local only until EXPUNGE (issue: IMAP writes)
    kDraft = 1u << 4,
    kForwarded = 1u << 5,  // the $Forwarded keyword
};

struct FolderRecord {
    std::string folder_id;    // Graph folder id (stable)
    std::string parent_id;    // "" for top-level folders
    std::string name;         // display name (UTF-8)
    std::string path;         // IMAP name, UTF-8, '/' separated; "INBOX" for the inbox
    std::string special_use;  // "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive" or ""
    std::uint32_t uidvalidity = 0;
    std::uint32_t uidnext = 1;
    std::uint64_t highestmodseq = 1;
    std::string delta_link;   // "" = never synced (or reset after a lost token)
    bool subscribed = true;
    std::int64_t synced_at = 0;  // unix seconds of the last completed delta round
};

// IMAP keywords that mail clients set for their own bookkeeping ($MDNSent, Junk, NonJunk, $Phishing,
// ...): kept by graphbridge only, never written to Outlook, where they would show as a category on every
// message a client has classified. Case-insensitive.
bool is_client_keyword(std::string_view keyword);
// A category as an IMAP keyword atom: characters an atom cannot hold become '_'; "" for nothing usable.
std::string keyword_atom(std::string_view category);

struct MessageRecord {
    std::uint32_t uid = 0;
    std::string graph_id;  // immutable id
    std::uint32_t flags = 0;
    std::vector<std::string> keywords;        // Outlook categories
    std::vector<std::string> local_keywords;  // client bookkeeping keywords (is_client_keyword), local only
    std::uint64_t size = 0;             // RFC822.SIZE
    std::int64_t internal_date = 0;     // receivedDateTime, unix seconds
    std::uint64_t modseq = 0;
};

// What Graph says about one message (one delta item).
struct RemoteMessage {
    std::string graph_id;
    bool removed = false;  // @removed
    std::uint32_t flags = 0;  // kSeen, kFlagged, kDraft, kAnswered, kForwarded (never kDeleted)
    std::vector<std::string> keywords;
    std::vector<std::string> local_keywords;  // add_known only (a copy keeps them); apply() ignores it
    std::uint64_t size = 0;
    std::int64_t internal_date = 0;
};

// The effect of a batch on a folder, for the sessions that have it selected.
struct FolderChange {
    std::vector<std::uint32_t> added;    // new UIDs, ascending
    std::vector<std::uint32_t> changed;  // UIDs whose flags or keywords changed
    std::vector<std::uint32_t> removed;  // UIDs gone from the folder
    std::uint32_t uidnext = 1;
    std::uint64_t highestmodseq = 1;
    bool empty() const { return added.empty() && changed.empty() && removed.empty(); }
};

class StateStore {
public:
    virtual ~StateStore() = default;

    // Folders of one mailbox, any order.
    virtual std::vector<FolderRecord> folders(const std::string& mailbox) = 0;
    virtual std::optional<FolderRecord> folder(const std::string& mailbox, const std::string& folder_id) = 0;

    // Replaces the mailbox's folder list with `current` (folder_id, parent_id, name, path, special_use are
    // taken from it): known ids keep uidvalidity, uidnext, modseq, delta link and subscription; new ids get
    // a fresh uidvalidity; folders no longer present are deleted with their messages. Returns the result.
    virtual std::vector<FolderRecord> replace_folders(const std::string& mailbox,
                                                      const std::vector<FolderRecord>& current) = 0;

    // Messages of a folder ordered by UID.
    virtual std::vector<MessageRecord> messages(const std::string& mailbox, const std::string& folder_id) = 0;
    virtual std::optional<MessageRecord> message(const std::string& mailbox, const std::string& folder_id,
                                                 std::uint32_t uid) = 0;

    // Applies one delta round. Upserts: a known graph_id updates flags/keywords/size (keeping the local
    // kDeleted bit), an unknown one gets the next UID (in the order given: callers sort by date). Removed
    // items delete their row. With `complete` (a full round after a lost delta token), every local
    // message whose id is not among the upserts is removed too. `delta_link` is stored with the batch.
    virtual FolderChange apply(const std::string& mailbox, const std::string& folder_id,
                               const std::vector<RemoteMessage>& items, bool complete,
                               const std::string& delta_link, std::int64_t now) = 0;

    // Forgets the delta link (the next sync is a full round reconciled against the stored map).
    virtual void reset_delta(const std::string& mailbox, const std::string& folder_id) = 0;

    // ---- local writes (the IMAP write path), each one transaction --------------------------------------
    struct FlagUpdate {
        std::uint32_t uid = 0;
        std::uint32_t flags = 0;
        std::vector<std::string> keywords;
        std::vector<std::string> local_keywords;
    };
    // New flags and keywords for messages of a folder, as Graph now has them (plus the local kDeleted);
    // unknown UIDs are skipped; every message that changes takes the next modseq.
    virtual FolderChange set_flags(const std::string& mailbox, const std::string& folder_id,
                                   const std::vector<FlagUpdate>& updates) = 0;
    // Messages that exist in Graph now (the answer to a create, copy or move): an id already in the folder
    // keeps its UID (and takes the flags given), a new one takes the next UID at once, so COPYUID and
    // APPENDUID can be answered before the next delta round, which then finds the id known. Returns the
    // UIDs in the order given, and the change.
    virtual std::pair<std::vector<std::uint32_t>, FolderChange> add_known(const std::string& mailbox,
                                                                          const std::string& folder_id,
                                                                          const std::vector<RemoteMessage>& items) = 0;
    // Removes messages from a folder by UID (expunged or moved away over IMAP).
    virtual FolderChange remove_messages(const std::string& mailbox, const std::string& folder_id,
                                         const std::vector<std::uint32_t>& uids) = 0;
    // SUBSCRIBE / UNSUBSCRIBE (kept across restarts and folder tree refreshes).
    virtual void set_subscribed(const std::string& mailbox, const std::string& folder_id, bool subscribed) = 0;

    // Cached FETCH data computed from the MIME, keyed by immutable id (survives moves between folders).
    struct Derived {
        std::uint64_t exact_size = 0;  // octets of the CRLF-normalised MIME served for BODY[]
        std::string envelope;
        std::string bodystructure;
        std::string body;  // BODY (non-extensible BODYSTRUCTURE)
    };
    virtual std::optional<Derived> derived(const std::string& mailbox, const std::string& graph_id) = 0;
    virtual void put_derived(const std::string& mailbox, const std::string& graph_id, const Derived& d) = 0;
};

// SQLite under `path` (created if missing, WAL mode, checked with PRAGMA quick_check). A corrupt file
// (or one that is not a database) is renamed to `path.corrupt-<unix time>` (its -wal/-shm too), its name
// put in *moved_aside, and an empty store returned whose UIDVALIDITYs are all new: the sync rebuilds it
// from Graph. Throws std::runtime_error with a one-line reason when the file is locked by another
// process, cannot be opened, or was made by another schema version.
std::unique_ptr<StateStore> open_sqlite_store(const std::string& path, std::string* moved_aside = nullptr);

}  // namespace gb::sync
