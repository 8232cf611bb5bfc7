// One IMAP4rev1 session (RFC 3501, with RFC 9051's clarifications where compatible), socket-free: bytes
// in through feed(), response bytes out through take_output(). The Asio front end (server.h) runs it on
// a worker thread, because commands read the state store and may wait for Graph (first sync of a
// folder, message bodies); the engine itself is synchronous and single-threaded, except for
// notify_changes(), which the sync engine calls from its own thread.
//
// Read path: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE PLAIN (SASL-IR), ENABLE, ID,
// NAMESPACE, LIST (RFC 5258 selection/return options: SPECIAL-USE, SUBSCRIBED, CHILDREN, STATUS per
// RFC 5819) and LSUB, STATUS, SELECT, EXAMINE, CHECK, CLOSE, UNSELECT, FETCH/UID FETCH, SEARCH/UID SEARCH,
// IDLE.
// Write path (write.cpp): STORE (flags -> isRead, flag, last verb, categories; \Deleted local), EXPUNGE,
// UID EXPUNGE and CLOSE (to Deleted Items; in Deleted Items itself permanently, configurable), COPY and
// MOVE with COPYUID (RFC 4315, 6851), APPEND with APPENDUID, CREATE, DELETE, RENAME, SUBSCRIBE,
// UNSUBSCRIBE; CONDSTORE (RFC 7162: MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, SEARCH MODSEQ, HIGHESTMODSEQ).
// A Graph failure answers a tagged NO naming the reason; what Graph did before the failure is what the
// client is told about, nothing else.
//
// Untagged updates (RFC 3501 7.4.1 / RFC 9051 7.5.1): changes found by the sync engine are queued and
// sent at the end of a command as EXISTS, FETCH (FLAGS) and EXPUNGE; EXPUNGE is held back after FETCH,
// STORE and SEARCH (and their UID forms) so sequence numbers never shift under a client mid-command;
// during IDLE they are sent as soon as they arrive.
//
// Hostile input: the command reader (protocol/imap) bounds every token, line, literal and nesting
// level (before login with narrow limits: a 4 KiB literal, a 32 KiB command, so a stranger cannot make
// the bridge hold big literals); this layer bounds sequence-set expansion, SEARCH nesting, the number of
// FETCH attributes and the output held for a slow client (the server stops reading while output is
// pending).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/log.h"
#include "graph/mail/imap_message.h"
#include "protocol/imap/imap_parser.h"
#include "protocol/imap/sequence_set.h"
#include "proxy/smtp/policy.h"
#include "proxy/sync/mail_service.h"
#include "proxy/sync/sent_registry.h"

namespace gb::imap {

struct SessionConfig {
    std::string hostname = "localhost";
    bool loopback = false;       // plaintext LOGIN/AUTHENTICATE allowed without TLS
    bool tls_available = false;  // STARTTLS can be offered
    bool tls_active = false;     // implicit TLS, or after STARTTLS
    std::string client_ip;
    std::uint64_t conn_id = 0;
};

// What the session needs from the bridge.
struct SessionServices {
    const smtp::Policy* policy = nullptr;     // logins and passwords (scrypt)
    smtp::AuthThrottle* throttle = nullptr;   // per-IP delays after failed logins
    sync::MailService* mail = nullptr;        // folders, messages, bodies
    sync::SentRegistry* sent = nullptr;       // messages the bridge sent (APPEND to Sent Items dedup)
    bool trash_expunge_permanent = true;      // EXPUNGE in Deleted Items: permanentDelete (else DELETE)
    std::atomic<std::uint64_t>* auth_failures = nullptr;  // counted for /metrics (optional)
    std::atomic<std::size_t>* authenticated = nullptr;    // sessions logged in now (optional)
    std::atomic<std::size_t>* idling = nullptr;           // sessions in IDLE now (optional)
};

class Session {
public:
    Session(SessionServices services, SessionConfig config);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Processes complete commands in `bytes` (blocking on the store and on Graph as needed) until one
    // becomes a long job (a big FETCH): then busy() is true and the server alternates between writing
    // take_output() and step() until it is done; later commands wait in the reader meanwhile.
    void feed(std::string_view bytes);
    bool busy() const { return job_ != nullptr; }
    void step();
    // Response bytes produced so far (the greeting first).
    std::string take_output();
    bool has_output() const;

    // The connection should be closed once the output is written (LOGOUT, BYE, fatal input error).
    bool wants_close() const { return close_; }
    // STARTTLS was accepted: write the output, do the handshake, then call tls_started(). Anything the
    // client pipelined behind STARTTLS has been discarded.
    bool wants_starttls() const { return starttls_; }
    void tls_started();

    // Before answering the current output: wait this long (a login, right or wrong, from a throttled
    // address).
    std::chrono::milliseconds take_delay();

    // Called from any thread when the sync engine changed the selected folder; `wake` (set by the server)
    // is then invoked so the server calls deliver_updates() on the session's thread.
    void set_wake(std::function<void()> wake);
    // In IDLE: writes queued untagged updates now. Otherwise nothing (they go out at command end).
    void deliver_updates();
    bool idling() const { return idle_tag_.has_value(); }
    // No command in progress: nothing of one read, no long job, no AUTHENTICATE exchange (IDLE counts as
    // quiet). A graceful shutdown may say BYE now.
    bool quiet() const { return !close_ && reader_.buffered() == 0 && !job_ && !auth_tag_; }
    // Server shutdown: "* BYE Server shutting down", then close.
    void shutdown();
    bool authenticated() const { return account_.has_value(); }

    // Something below the session failed (an exception from the state store): logs it, answers
    // "* BYE [SERVERBUG]" and asks for the connection to be closed. The session must not be fed after.
    void internal_error(std::string_view what);

    // The selected folder (for tests): its path, or "" when none.
    std::string selected_path() const;

    struct Selected;  // the view of the selected folder (selected.h)
    struct FetchItem;  // one FETCH attribute (fetch.cpp)

private:
    using Value = protocol::imap::Value;
    using Command = protocol::imap::Command;

    void process();
    void handle(const Command& c);
    void handle_raw_line(const std::string& line);
    void out(std::string_view text);          // raw
    void untagged(std::string_view text);     // "* " text CRLF
    void tagged(const std::string& tag, std::string_view text);
    void bad(const std::string& tag, std::string_view text);
    void no(const std::string& tag, std::string_view text);
    void ok(const std::string& tag, std::string_view text);

    std::string capabilities() const;
    static protocol::imap::Limits pre_login_limits();  // the reader's until LOGIN/AUTHENTICATE succeeds
    bool login_allowed() const;
    void finish_login(const std::string& tag, std::optional<smtp::Account> account, const std::string& user);

    // Commands.
    void cmd_capability(const Command& c);
    void cmd_noop(const Command& c);
    void cmd_logout(const Command& c);
    void cmd_starttls(const Command& c);
    void cmd_login(const Command& c);
    void cmd_authenticate(const Command& c);
    void cmd_enable(const Command& c);
    void cmd_id(const Command& c);
    void cmd_namespace(const Command& c);
    void cmd_list(const Command& c, bool lsub);
    void cmd_status(const Command& c);
    void cmd_select(const Command& c, bool read_only);
    void cmd_check(const Command& c);
    void cmd_close(const Command& c, bool unselect);
    void cmd_fetch(const Command& c, bool uid, std::size_t first_arg);
    void cmd_search(const Command& c, bool uid, std::size_t first_arg);
    void cmd_idle(const Command& c);
    void cmd_uid(const Command& c);
    // Write commands (write.cpp).
    void cmd_store(const Command& c, bool uid, std::size_t first_arg);
    void cmd_copy(const Command& c, bool uid, std::size_t first_arg, bool move);
    void cmd_expunge(const Command& c, bool uid, std::size_t first_arg);
    void cmd_append(const Command& c);
    void cmd_create(const Command& c);
    void cmd_delete(const Command& c);
    void cmd_rename(const Command& c);
    void cmd_subscribe(const Command& c, bool subscribe);
    // The view indexes (ascending) / UIDs that a sequence set (or UID set) names; nullopt: invalid, or a
    // sequence number out of range.
    std::optional<std::vector<std::size_t>> resolve_indexes(const Value& set, bool uid);
    std::optional<std::vector<std::uint32_t>> resolve_set(const Value& set, bool uid);
    // "[UNAVAILABLE] ..." / "[CANNOT] ..." text for a Graph failure during a write.
    static std::string write_error(const sync::SourceError& e);
    // Expunges the \Deleted messages of the selected folder (all, or those among `only`); the EXPUNGE
    // responses come from the next flush_updates(true) (none for CLOSE, which deselects first).
    std::optional<sync::SourceError> expunge_selected(const std::optional<std::vector<std::uint32_t>>& only);
    // The parent folder id and display name for a new IMAP path; nullopt (with a reason) when it cannot be.
    struct NewPlace {
        std::string parent_id;
        std::string name;
    };
    std::variant<NewPlace, std::string> place_for(const std::string& utf8_path, bool create_parents);

    // FETCH as a job (fetch.cpp).
    struct FetchJob {
        std::string tag;
        bool uid = false;
        std::vector<FetchItem> items;
        std::vector<std::size_t> indexes;  // into the selected view
        std::size_t next = 0;
        bool failed = false;
        bool modseq = false;  // MODSEQ item (asked for, or CHANGEDSINCE)
        std::vector<std::uint32_t> seen_now;  // UIDs this FETCH marked \Seen (ascending)
        std::shared_ptr<const std::vector<sync::MessageRecord>> latest;  // the folder after that
    };
    std::optional<std::vector<FetchItem>> parse_fetch_items(const Value& v);
    void run_fetch();
    // A message's bytes, MIME index and derived FETCH data, loaded on first use.
    class MessageData {
    public:
        MessageData(Session& s, const sync::MessageRecord& m);
        const std::string* raw();  // nullptr when Graph cannot give it now
        const mail::imap::MessageIndex* index();
        std::optional<sync::StateStore::Derived> derived();         // computed (downloads) if needed
        std::optional<sync::StateStore::Derived> cached_derived();  // never downloads
    private:
        Session& s_;
        const sync::MessageRecord& m_;
        std::optional<std::string> raw_;
        std::optional<mail::imap::MessageIndex> index_;
        std::optional<sync::StateStore::Derived> derived_;
        bool failed_ = false;
    };
    friend class MessageData;

    // Helpers shared by commands.
    std::optional<sync::FolderRecord> find_folder(std::string_view imap_name_mutf7);
    std::vector<sync::FolderRecord> folders();
    std::string status_items(const sync::FolderRecord& f, const std::vector<std::string>& items);
    // `report`: UIDs to send FETCH FLAGS for even when unchanged (STORE); `suppress`: changed UIDs whose
    // FLAGS not to send (STORE .SILENT, or already told); with `silent_store` and CONDSTORE they still get
    // a FETCH with their MODSEQ (RFC 7162 3.1.3). Both lists ascending.
    void flush_updates(bool allow_expunge, const std::vector<std::uint32_t>* report = nullptr,
                       const std::vector<std::uint32_t>* suppress = nullptr, bool silent_store = false);
    void enable_condstore();
    // UIDs below UIDNEXT (within `known`, if given) that are not in the selected view, as a UID set: what
    // a client may still hold that is gone (VANISHED (EARLIER)); "" when none.
    std::string vanished_set(const std::optional<protocol::imap::SequenceSet>& known) const;
    void deselect();

    SessionServices svc_;
    SessionConfig cfg_;
    log::Context ctx_;
    protocol::imap::CommandReader reader_;
    std::string output_;
    bool close_ = false;
    bool starttls_ = false;
    std::chrono::milliseconds delay_{0};

    std::optional<smtp::Account> account_;
    int auth_failures_ = 0;
    std::optional<std::string> auth_tag_;  // AUTHENTICATE waiting for its continuation line
    std::optional<std::string> idle_tag_;  // IDLE in progress

    bool condstore_ = false;  // RFC 7162: MODSEQ in untagged FETCH, HIGHESTMODSEQ
    bool qresync_ = false;    // RFC 7162 QRESYNC: VANISHED instead of EXPUNGE
    std::unique_ptr<Selected> selected_;
    std::unique_ptr<FetchJob> job_;

    // Changes from the sync engine, appended on its thread. Shared with the listener, so a notification
    // racing with the session's end never touches freed memory.
    struct ChangeQueue {
        std::mutex mutex;
        bool dirty = false;  // the selected folder changed since the view was last compared
        std::function<void()> wake;
    };
    std::shared_ptr<ChangeQueue> changes_ = std::make_shared<ChangeQueue>();
};

// RFC 3501 date-time for INTERNALDATE: "29-Nov-2026 07:00:00 +0000".
std::string imap_date_time(std::int64_t unix_seconds);
// RFC 3501 date (SEARCH BEFORE/ON/SINCE): "1-Feb-1994" -> unix seconds of 00:00 UTC that day.
std::optional<std::int64_t> parse_imap_date(std::string_view text);
// A mailbox name (UTF-8) with INBOX, case-insensitive in IMAP, spelled "INBOX" as stored ("inbox/x" ->
// "INBOX/x"); other names unchanged.
std::string inbox_spelling(std::string name);
// LIST pattern matching: '*' matches anything, '%' anything but the delimiter '/'.
bool list_match(std::string_view pattern, std::string_view name);

}  // namespace gb::imap
