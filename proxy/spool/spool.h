// The durable outbound spool: accepted SMTP messages wait here until Graph has taken them.
//
// GUARANTEES
//   * "250 means on disk". A commit reports success only after the entry file's data, its rename into
//     queue/ and the queue/ directory entry are all on stable storage. Any failure on that path (ENOSPC,
//     EDQUOT, EIO, a failed fsync/syncfs) is reported as an error and the entry is removed again; success
//     is never reported for something that is not durable. After an fsync error the page cache is not
//     trusted: the whole entry is failed, never retried in place.
//   * At-least-once. A crash at any moment never loses an acknowledged entry. A message whose commit was
//     in flight at the crash may or may not survive (the client got no 250 and retries: a duplicate at
//     most). complete() returns only after the unlink is durable, so a delivered message comes back
//     only if the crash hit between Graph's acceptance and complete() returning.
//   * Self-checking entries. Every entry carries its lengths and a SHA-256 over everything before the
//     digest; recover() verifies each entry in full and moves torn, truncated or corrupt ones to corrupt/
//     (never delivered, never silently deleted). Temp files are never acknowledged and are deleted.
//   * Group commit. One committer thread takes every operation queued while it was busy and makes them
//     durable together: one data flush for the batch, the renames, then one fsync per touched directory.
//     Concurrent writers therefore share flushes (see Stats::batches / Stats::flushes).
//   * Bounded memory. Bodies stream through a fixed buffer into spool/tmp; they are never held whole.
//     Readers stream them back from disk (BodyReader), so every delivery attempt rebuilds its request
//     from the spool.
//
// HOSTILE INPUT
//   * Everything read back from disk after a crash: entry files and state files are parsed with hard
//     limits (envelope <= 8 MiB, lengths must add up to the file size, digests must match).
//   * Queue ids from the CLI (`graphbridge queue retry ID`): every public call validates the id against
//     the id alphabet before it is used in a path, so no path traversal is possible.
//   * Envelope strings come from SMTP clients: they are escaped when stored, never interpreted.
//
// LAYOUT (under the spool root)
//   tmp/      entries being received: unnamed O_TMPFILE inodes (a crash frees them; no directory lock is
//             taken per message), or "<id>" where O_TMPFILE is unsupported; state files being replaced
//             ("<id>.<n>.st"). Nothing in tmp/ was ever acknowledged: recover() deletes it.
//   queue/    committed entries "<id>" (immutable after commit)
//   state/    delivery state "<id>" (attempts, next attempt, last error), replaced atomically by rename;
//             absent = never attempted
//   dead/     dead letters "<id>" + "<id>.state": kept until an admin deletes them (queue delete ID). The
//             delivery side sends the bounce (as a new spool entry) before calling fail().
//   kick/     empty files "<id>": retry_now() notices for the running delivery side (take_kicks())
//   corrupt/  entries that failed verification on recover(), with their state, for a human to look at
//   lock      flock()ed by the process that owns delivery (Options::exclusive); recover() needs it
//
// ENTRY FILE FORMAT (all integers little-endian)
//   header  32 bytes: "GBSPOOL\n" | u32 version = 1 | u32 header size = 32 | 16 zero bytes
//   body    body_len bytes, exactly as received (after dot-unstuffing)
//   envelope env_len bytes: "key=value\n" lines, values %XX-escaped (see encode_envelope)
//   trailer 56 bytes: u64 body_len | u64 env_len | SHA-256 of all preceding bytes | "GBSPEND\n"
//   The file size must equal 32 + body_len + env_len + 56. Written strictly in this order, so the digest
//   streams along with the body.
//
// DURABILITY PROTOCOL (one batch of the committer)
//   1. data:   Sync::Syncfs: one syncfs(2) on the spool filesystem for the whole batch;
//              Sync::PerFile: sync_file_range(WRITE) on every file, then fdatasync each (jbd2 folds them).
//   2. name:   linkat(O_TMPFILE inode -> queue/<id>) or rename tmp/<id> -> queue/<id> with RENAME_NOREPLACE
//              (never replaces; a clash picks a new id), state tmp -> state/, unlinks for
//              complete()/remove(), renames to dead/.
//   3. fsync each directory touched by the batch, once (tmp/ is not synced: leftovers are deleted anyway).
//   4. report: callbacks run on the committer thread, after 3 succeeded (or with the error). A failure in
//              any step fails the op; a commit whose name was already linked is unlinked again.
//   Default is Sync::Syncfs: 2 flush calls per batch, whatever its size. Sync::PerFile (sync_file_range to
//   start all writeback, then fdatasync each) costs one fdatasync per message plus one directory fsync and
//   was slower in bench/spool_bench.cpp at 100 writers (numbers there). syncfs also flushes unrelated
//   dirty data on the same filesystem: give the spool its own filesystem when others write heavily to it.
//   With syncfs, writeback errors are reported since Linux 5.8 (errseq on the superblock); on older
//   kernels use Sync::PerFile.
//
// Thread safety: Spool is thread-safe. A SpoolWriter belongs to one thread at a time. Several processes
// may open the same spool (serve + the queue CLI); only the one holding the lock may call recover().
// A CLI retry_now() while serve runs also drops a notice in kick/ that serve collects with take_kicks()
// and acts on at once; a CLI remove() shows when serve next reads the entry (complete()/mark_attempt()
// on an id removed meanwhile report NotFound).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace gb::spool {

// ---- errors --------------------------------------------------------------------------------------

enum class Errc {
    NoSpace,    // ENOSPC / EDQUOT: SMTP answers 452 4.3.1
    Io,         // EIO, failed fsync, anything else from the OS: 451 4.3.0
    NotFound,   // no such entry
    InvalidId,  // not a queue id (bad alphabet or length)
    Corrupt,    // entry failed verification
    Closed,     // spool shut down, or writer already committed/aborted
    Locked,     // recover() without the exclusive lock
};
std::string_view errc_name(Errc e);

struct Error {
    Errc code = Errc::Io;
    int sys_errno = 0;    // errno when the OS reported it
    std::string message;  // for logs: operation and path, never message content
};

// Outcome of a commit: the queue id, or an error. Never both.
struct CommitResult {
    std::string id;
    std::optional<Error> error;
    bool ok() const { return !error.has_value(); }
};

// ---- ids -----------------------------------------------------------------------------------------

// 16 characters of Crockford base32 (0-9 A-Z without I L O U): 45 bits of milliseconds since the epoch,
// 20 bits of a per-process counter, 15 random bits. Sorting ids sorts by acceptance time; unique within a
// process by construction and across processes by the random bits plus O_EXCL/RENAME_NOREPLACE.
constexpr std::size_t kIdLength = 16;
bool valid_id(std::string_view id);

// ---- envelope ------------------------------------------------------------------------------------

struct Envelope {
    std::string reverse_path;             // MAIL FROM ("" for <>)
    std::vector<std::string> recipients;  // RCPT TO, in order; authoritative for delivery
    std::string login;                    // authenticated login ("" if relayed by network rule)
    std::string relay_rule;               // the relay rule that admitted it ("" if authenticated)
    std::string mailbox;                  // the Graph mailbox to send as (/users/{mailbox})
    std::string app;                      // the configured app (credentials) to use
    std::int64_t received_at = 0;         // unix seconds; also the start of the queue lifetime
    std::string client_ip;
    std::string helo;
    bool tls = false;
    std::uint64_t size = 0;  // body bytes; set by commit() from what was appended
    std::vector<std::pair<std::string, std::string>> extra;  // free-form, in order; any bytes (escaped)

    bool operator==(const Envelope&) const = default;
};

// "key=value\n" lines, "v=1" first; control bytes, bytes >= 0x7f and '%' are written as %XX (in keys also
// '=' and ' '). Unknown keys are ignored on decode so a newer writer may add fields.
std::string encode_envelope(const Envelope& env);
std::optional<Envelope> decode_envelope(std::string_view text);

// ---- delivery state ------------------------------------------------------------------------------

enum class Status { Queued, Deferred, Dead };
std::string_view status_name(Status s);

struct DeliveryState {
    std::uint32_t attempts = 0;
    std::int64_t next_attempt_ms = 0;  // unix ms; 0 = as soon as possible
    std::int64_t last_attempt_ms = 0;
    std::string last_error;  // bounded to 1000 bytes when stored
    Status status = Status::Queued;
    std::string draft_id;    // the Graph draft the last attempt made ("" = none), checked after a crash
};

// What list() and recover() report per entry (no body, no full recipient list).
struct EntryInfo {
    std::string id;
    std::uint64_t size = 0;  // body bytes
    std::string sender;      // reverse path
    std::size_t recipient_count = 0;
    std::int64_t received_at = 0;  // unix seconds
    DeliveryState state;
};

// ---- reading an entry back -----------------------------------------------------------------------

// Streams the body of one entry from disk. Holds its own descriptor, so an entry removed meanwhile can
// still be read to the end. Not thread-safe; open a new reader per attempt.
class BodyReader {
  public:
    BodyReader() = default;
    BodyReader(BodyReader&& o) noexcept;
    BodyReader& operator=(BodyReader&& o) noexcept;
    BodyReader(const BodyReader&) = delete;
    BodyReader& operator=(const BodyReader&) = delete;
    ~BodyReader();

    std::uint64_t size() const { return size_; }
    std::uint64_t remaining() const { return size_ - pos_; }
    // Reads up to `cap` bytes; returns the count (0 at the end) or -1 on an I/O error.
    std::int64_t read(char* out, std::size_t cap);
    // Convenience for small bodies: the whole body (fails above `max` bytes).
    std::optional<std::string> read_all(std::size_t max = 64u * 1024 * 1024);
    void rewind() { pos_ = 0; }

  private:
    friend class Spool;
    int fd_ = -1;
    std::uint64_t offset_ = 0;  // body start in the file
    std::uint64_t size_ = 0;
    std::uint64_t pos_ = 0;
};

struct LoadedEntry {
    std::string id;
    Envelope envelope;
    DeliveryState state;
    BodyReader body;
};

// ---- options and stats ---------------------------------------------------------------------------

enum class Sync { Syncfs, PerFile };

// Injectable system calls for fault tests. Each returns like the libc call (-1 and errno on failure).
struct IoHooks {
    std::function<long(int fd, const void* buf, std::size_t n)> write;  // file data writes
    std::function<int(int fd)> fdatasync;  // entry/state file data flush (PerFile)
    std::function<int(int fd)> syncfs;     // filesystem flush (Syncfs)
    std::function<int(int fd)> fsync_dir;  // directory flush
};

struct Options {
    std::string root;  // created if missing (0700)
    Sync sync = Sync::Syncfs;
    bool exclusive = true;                    // take root/lock (serve); false for read-mostly CLI use
    bool verify_on_load = true;               // load() checks the SHA-256 before handing out the body
    bool use_o_tmpfile = true;                // false: named temp files + rename (the fallback path)
    std::size_t write_buffer = 64 * 1024;     // per writer
    std::size_t max_batch = 4096;             // operations per group commit
    std::chrono::hours max_lifetime{24 * 5};  // queue lifetime (expired() helper)
    IoHooks hooks;
};

struct Stats {
    std::uint64_t commits = 0;  // entries made durable
    std::uint64_t failed_commits = 0;
    std::uint64_t batches = 0;  // group commits that flushed something
    std::uint64_t flushes = 0;  // syncfs + fdatasync + directory fsync calls
    std::uint64_t dir_fsyncs = 0;
    std::uint64_t bytes = 0;         // entry bytes written
    std::uint64_t data_sync_us = 0;  // time in the data flush phase (syncfs / fdatasync)
    std::uint64_t rename_us = 0;     // time in renames and unlinks
    std::uint64_t dir_sync_us = 0;   // time in directory fsyncs
};

class Spool;

// ---- writing -------------------------------------------------------------------------------------

// One message being received. append() as the body streams in; then exactly one of commit(),
// commit_sync() or abort(). The destructor aborts an uncommitted writer. A write error is sticky: later
// appends are ignored and commit reports it.
class SpoolWriter {
  public:
    SpoolWriter() = default;
    SpoolWriter(SpoolWriter&& o) noexcept;
    SpoolWriter& operator=(SpoolWriter&& o) noexcept;
    SpoolWriter(const SpoolWriter&) = delete;
    SpoolWriter& operator=(const SpoolWriter&) = delete;
    ~SpoolWriter();

    bool append(std::string_view bytes);  // false once an error is pending
    const std::optional<Error>& error() const { return error_; }
    std::uint64_t size() const { return body_len_; }
    const std::string& id() const { return id_; }  // provisional: the committed id may differ

    using Done = std::function<void(CommitResult)>;
    // Writes envelope and trailer and queues the entry for the next group commit. `done` runs once, on
    // the committer thread when durable (or failed) -- or synchronously when an error was already pending.
    // Keep `done` short (post to your strand). envelope.size is set from the appended byte count.
    void commit(Envelope envelope, Done done);
    CommitResult commit_sync(Envelope envelope);
    void abort();

  private:
    friend class Spool;
    bool flush_buffer();
    void fail(Errc code, int err, std::string what);
    void close_and_unlink();

    Spool* spool_ = nullptr;
    int fd_ = -1;
    std::string id_;
    std::string tmp_path_;
    std::string buf_;
    std::size_t buf_cap_ = 0;
    std::uint64_t body_len_ = 0;
    std::uint64_t file_len_ = 0;
    void* sha_ = nullptr;  // EVP_MD_CTX*
    std::optional<Error> error_;
};

// ---- the spool -----------------------------------------------------------------------------------

class Spool {
  public:
    // Creates the directories, takes the lock if exclusive, starts the committer. Throws
    // std::runtime_error on failure (startup only).
    explicit Spool(Options options);
    ~Spool();  // drains queued operations, stops the committer
    Spool(const Spool&) = delete;
    Spool& operator=(const Spool&) = delete;

    const Options& options() const { return opts_; }

    SpoolWriter begin();

    // On start (exclusive only): deletes tmp/, verifies every entry (bad -> corrupt/), drops orphan state,
    // and returns all pending entries in queue (id) order. Dead letters are not returned.
    std::vector<EntryInfo> recover(std::optional<Error>* error = nullptr);

    // Reads envelope and state, verifies the entry (if verify_on_load), opens a body reader.
    std::optional<LoadedEntry> load(std::string_view id, std::optional<Error>* error = nullptr);
    // Full verification of one entry (structure + digest).
    std::optional<Error> verify(std::string_view id);

    // Pending entries (queue/) in id order, and dead letters (dead/).
    std::vector<EntryInfo> list();
    std::vector<EntryInfo> list_dead();

    using Done = std::function<void(std::optional<Error>)>;
    // An attempt made this Graph draft (before uploading its attachments); durable when it returns.
    std::optional<Error> set_draft(std::string_view id, std::string_view draft_id);
    // A failed attempt: attempts+1, last error, next attempt time; durable when it returns.
    std::optional<Error> mark_attempt(std::string_view id, std::string_view error,
                                      std::int64_t next_attempt_ms);
    void mark_attempt_async(std::string_view id, std::string_view error, std::int64_t next_attempt_ms,
                            Done d);
    // Delivered: unlink entry and state, durable when it returns.
    std::optional<Error> complete(std::string_view id);
    void complete_async(std::string_view id, Done d);
    // Undeliverable: move entry + state (with the reason) to dead/. Send the bounce first.
    std::optional<Error> fail(std::string_view id, std::string_view reason);
    // Admin: next attempt = now (queue/), or back from dead/ into queue/ with attempts reset.
    std::optional<Error> retry_now(std::string_view id);
    // Ids whose retry_now() notice has not been collected yet (each returned once, then forgotten).
    std::vector<std::string> take_kicks();
    // Admin delete from queue/ or dead/.
    std::optional<Error> remove(std::string_view id);

    // Received longer ago than max_lifetime: bounce instead of retrying.
    bool expired(const EntryInfo& e, std::int64_t now_unix_s) const;

    Stats stats() const;

    struct Op;  // internal: one unit of group-committed work

  private:
    friend class SpoolWriter;
    std::string new_id();
    void submit(std::unique_ptr<Op> op);
    // Queues op and waits until its batch is durable; `release`, if given, is unlocked once queued.
    std::optional<Error> submit_and_wait(std::unique_ptr<Op> op, std::unique_lock<std::mutex>* release = nullptr);
    void committer_loop();
    void run_batch(std::vector<std::unique_ptr<Op>>& batch);
    std::optional<Error> write_state_tmp(const std::string& id, const DeliveryState& st, Op& op);
    std::optional<DeliveryState> read_state(const std::string& path);
    std::optional<EntryInfo> read_info(const std::string& dir, const std::string& id, bool dead);
    std::vector<EntryInfo> list_dir(const std::string& dir, bool dead);
    std::optional<Error> update_state(std::string_view id, const std::function<void(DeliveryState&)>& f,
                                      std::unique_ptr<Op>& op);

    Options opts_;
    std::string tmp_dir_, queue_dir_, state_dir_, dead_dir_, corrupt_dir_, kick_dir_;
    int root_fd_ = -1;
    int lock_fd_ = -1;
    int dir_fds_[4] = {-1, -1, -1, -1};  // tmp, queue, state, dead

    std::mutex state_mutex_;  // serialises read-modify-write of state files

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::unique_ptr<Op>> pending_;
    bool stopping_ = false;
    std::thread committer_;

    std::atomic<std::uint64_t> counter_{0};
    std::atomic<std::uint64_t> rng_{0};

    mutable std::mutex stats_mutex_;
    Stats stats_;
};

}  // namespace gb::spool
