// StateStore on SQLite: one connection, serialised by a mutex; every mutating call is one IMMEDIATE
// transaction. WAL journal with synchronous=NORMAL: a crash loses at most the last transactions, never
// consistency; and everything here can be rebuilt from Graph except the UID map, whose loss shows as a
// new UIDVALIDITY (clients resync) rather than as wrong UIDs.
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "proxy/sync/state_store.h"

namespace gb::sync {
namespace {

constexpr int kSchemaVersion = 1;

const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders(
  mailbox TEXT NOT NULL, folder_id TEXT NOT NULL, parent_id TEXT NOT NULL, name TEXT NOT NULL,
  path TEXT NOT NULL, special_use TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL,
  highestmodseq INTEGER NOT NULL, delta_link TEXT NOT NULL, subscribed INTEGER NOT NULL,
  synced_at INTEGER NOT NULL,
  PRIMARY KEY(mailbox, folder_id));
CREATE TABLE IF NOT EXISTS messages(
  mailbox TEXT NOT NULL, folder_id TEXT NOT NULL, uid INTEGER NOT NULL, graph_id TEXT NOT NULL,
  flags INTEGER NOT NULL, keywords TEXT NOT NULL, size INTEGER NOT NULL, internal_date INTEGER NOT NULL,
  modseq INTEGER NOT NULL,
  PRIMARY KEY(mailbox, folder_id, uid));
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_graph_id ON messages(mailbox, folder_id, graph_id);
CREATE TABLE IF NOT EXISTS derived(
  mailbox TEXT NOT NULL, graph_id TEXT NOT NULL, exact_size INTEGER NOT NULL, envelope TEXT NOT NULL,
  bodystructure TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY(mailbox, graph_id));
)SQL";

std::string join_keywords(const std::vector<std::string>& k) {
    std::string out;
    for (const auto& s : k) {
        if (!out.empty()) out.push_back('\n');
        out += s;
    }
    return out;
}

std::vector<std::string> split_keywords(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < s.size()) {
        auto nl = s.find('\n', start);
        if (nl == std::string::npos) nl = s.size();
        out.push_back(s.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

// A SQLite failure with its result code (corruption is told apart from "locked" and the rest).
class DbError : public std::runtime_error {
public:
    DbError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
    int code() const { return code_; }
    bool corrupt() const { return (code_ & 0xff) == SQLITE_CORRUPT || (code_ & 0xff) == SQLITE_NOTADB; }
    bool busy() const { return (code_ & 0xff) == SQLITE_BUSY || (code_ & 0xff) == SQLITE_LOCKED; }

private:
    int code_;
};

class Db {
public:
    explicit Db(const std::string& path) {
        int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
        if (rc != SQLITE_OK) {
            std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close(db_);
            db_ = nullptr;
            throw DbError(rc, fmt::format("state database {}: {}", path, msg));
        }
        sqlite3_busy_timeout(db_, 5000);
        // Folder names, subjects and addresses (ENVELOPE) live here: owner-only, like the spool. SQLite
        // creates the -wal and -shm files with the database's mode; older ones are fixed too.
        for (const char* suffix : {"", "-wal", "-shm"}) ::chmod((path + suffix).c_str(), 0600);
    }
    ~Db() { sqlite3_close(db_); }
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    void exec(const char* sql) {
        char* err = nullptr;
        if (int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err); rc != SQLITE_OK) {
            std::string msg = err ? err : "unknown error";
            sqlite3_free(err);
            throw DbError(sqlite3_extended_errcode(db_), "state database: " + msg);
        }
    }
    sqlite3* get() const { return db_; }
    std::string error() const { return sqlite3_errmsg(db_); }

private:
    sqlite3* db_ = nullptr;
};

// A prepared statement, reset for reuse; binds by position (1-based).
class Stmt {
public:
    Stmt(Db& db, const char* sql) : db_(db) {
        if (sqlite3_prepare_v2(db.get(), sql, -1, &stmt_, nullptr) != SQLITE_OK)
            throw DbError(sqlite3_extended_errcode(db.get()), "state database: " + db.error());
    }
    ~Stmt() { sqlite3_finalize(stmt_); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& reset() {
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
        return *this;
    }
    Stmt& bind(int i, const std::string& s) {
        sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Stmt& bind(int i, std::int64_t v) {
        sqlite3_bind_int64(stmt_, i, v);
        return *this;
    }
    // SQLITE_ROW -> true, SQLITE_DONE -> false, anything else throws.
    bool step() {
        int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        throw DbError(rc, "state database: " + db_.error());
    }
    void run() {
        while (step()) {
        }
    }
    std::int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
    std::string text(int col) const {
        const unsigned char* p = sqlite3_column_text(stmt_, col);
        return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
                 : std::string();
    }

private:
    Db& db_;
    sqlite3_stmt* stmt_ = nullptr;
};

class SqliteStore final : public StateStore {
public:
    // `uidvalidity_floor`: UIDVALIDITYs handed out start above it (a store rebuilt after corruption
    // must not hand a folder a value its clients already hold with other UIDs).
    SqliteStore(const std::string& path, std::int64_t uidvalidity_floor) : db_(path) {
        db_.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
        {
            // Damage anywhere (a torn page, a file overwritten) shows here at start rather than as
            // errors in the middle of sessions later. Linear in the file's size: ~0.1 s per 100 MB.
            Stmt check(db_, "PRAGMA quick_check");
            std::string verdict = check.step() ? check.text(0) : "no answer";
            if (verdict != "ok") throw DbError(SQLITE_CORRUPT, "state database " + path + ": " + verdict);
        }
        db_.exec(kSchema);
        // Added after version 1 shipped: an old file gets the column (empty), nothing else changes.
        {
            bool has = false;
            Stmt cols(db_, "PRAGMA table_info(messages)");
            while (cols.step()) has = has || cols.text(1) == "local_keywords";
            if (!has) db_.exec("ALTER TABLE messages ADD COLUMN local_keywords TEXT NOT NULL DEFAULT ''");
        }
        Stmt get(db_, "SELECT value FROM meta WHERE key='schema'");
        if (get.step()) {
            if (get.text(0) != std::to_string(kSchemaVersion))
                throw std::runtime_error("state database " + path + ": schema version " + get.text(0) +
                                         " is not " + std::to_string(kSchemaVersion) +
                                         " (made by another graphbridge version)");
        } else {
            Stmt put(db_, "INSERT INTO meta(key, value) VALUES('schema', ?)");
            put.bind(1, std::to_string(kSchemaVersion)).run();
        }
        if (uidvalidity_floor > 0) {
            Stmt put(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES('last_uidvalidity', ?)");
            put.bind(1, std::to_string(uidvalidity_floor)).run();
        }
    }

    std::vector<FolderRecord> folders(const std::string& mailbox) override {
        std::lock_guard lock(mutex_);
        return load_folders(mailbox);
    }

    std::optional<FolderRecord> folder(const std::string& mailbox, const std::string& folder_id) override {
        std::lock_guard lock(mutex_);
        return load_folder(mailbox, folder_id);
    }

    std::vector<FolderRecord> replace_folders(const std::string& mailbox,
                                              const std::vector<FolderRecord>& current) override {
        std::lock_guard lock(mutex_);
        Txn txn(db_);
        std::map<std::string, FolderRecord> known;
        for (auto& f : load_folders(mailbox)) known.emplace(f.folder_id, std::move(f));
        std::set<std::string> keep;
        for (const auto& c : current) {
            keep.insert(c.folder_id);
            auto it = known.find(c.folder_id);
            if (it != known.end()) {
                Stmt up(db_, "UPDATE folders SET parent_id=?, name=?, path=?, special_use=? "
                             "WHERE mailbox=? AND folder_id=?");
                up.bind(1, c.parent_id).bind(2, c.name).bind(3, c.path).bind(4, c.special_use).bind(5, mailbox)
                    .bind(6, c.folder_id).run();
            } else {
                Stmt ins(db_, "INSERT INTO folders(mailbox, folder_id, parent_id, name, path, special_use, "
                              "uidvalidity, uidnext, highestmodseq, delta_link, subscribed, synced_at) "
                              "VALUES(?,?,?,?,?,?,?,1,1,'',1,0)");
                ins.bind(1, mailbox).bind(2, c.folder_id).bind(3, c.parent_id).bind(4, c.name).bind(5, c.path)
                    .bind(6, c.special_use).bind(7, static_cast<std::int64_t>(next_uidvalidity())).run();
            }
        }
        for (const auto& [id, f] : known) {
            if (keep.count(id)) continue;
            Stmt del(db_, "DELETE FROM messages WHERE mailbox=? AND folder_id=?");
            del.bind(1, mailbox).bind(2, id).run();
            Stmt delf(db_, "DELETE FROM folders WHERE mailbox=? AND folder_id=?");
            delf.bind(1, mailbox).bind(2, id).run();
        }
        txn.commit();
        return load_folders(mailbox);
    }

    std::vector<MessageRecord> messages(const std::string& mailbox, const std::string& folder_id) override {
        std::lock_guard lock(mutex_);
        std::vector<MessageRecord> out;
        Stmt q(db_, "SELECT uid, graph_id, flags, keywords, size, internal_date, modseq, local_keywords FROM messages "
                    "WHERE mailbox=? AND folder_id=? ORDER BY uid");
        q.bind(1, mailbox).bind(2, folder_id);
        while (q.step()) out.push_back(row(q));
        return out;
    }

    std::optional<MessageRecord> message(const std::string& mailbox, const std::string& folder_id,
                                         std::uint32_t uid) override {
        std::lock_guard lock(mutex_);
        Stmt q(db_, "SELECT uid, graph_id, flags, keywords, size, internal_date, modseq, local_keywords FROM messages "
                    "WHERE mailbox=? AND folder_id=? AND uid=?");
        q.bind(1, mailbox).bind(2, folder_id).bind(3, static_cast<std::int64_t>(uid));
        if (!q.step()) return std::nullopt;
        return row(q);
    }

    FolderChange apply(const std::string& mailbox, const std::string& folder_id,
                       const std::vector<RemoteMessage>& items, bool complete, const std::string& delta_link,
                       std::int64_t now) override {
        std::lock_guard lock(mutex_);
        Txn txn(db_);
        auto f = load_folder(mailbox, folder_id);
        if (!f) throw std::runtime_error("state database: unknown folder");
        FolderChange change;
        std::uint32_t uidnext = f->uidnext;
        std::uint64_t modseq = f->highestmodseq;

        // The folder's current map, by immutable id: all of it for a complete round (what is not in the
        // round goes), else only the ids the round names (an incremental round, usually empty, must not
        // read a 10,000-message folder: every poll and every STORE runs one).
        struct Local {
            std::uint32_t uid;
            std::uint32_t flags;
            std::string keywords;
            std::uint64_t size;
        };
        std::unordered_map<std::string, Local> local;
        auto add_row = [&](const Stmt& q) {
            local.emplace(q.text(0), Local{static_cast<std::uint32_t>(q.i64(1)), static_cast<std::uint32_t>(q.i64(2)),
                                           q.text(3), static_cast<std::uint64_t>(q.i64(4))});
        };
        if (complete) {
            Stmt q(db_, "SELECT graph_id, uid, flags, keywords, size FROM messages WHERE mailbox=? AND folder_id=?");
            q.bind(1, mailbox).bind(2, folder_id);
            while (q.step()) add_row(q);
        } else if (!items.empty()) {
            Stmt q(db_, "SELECT graph_id, uid, flags, keywords, size FROM messages WHERE mailbox=? AND folder_id=? "
                        "AND graph_id=?");
            for (const auto& m : items) {
                q.reset().bind(1, mailbox).bind(2, folder_id).bind(3, m.graph_id);
                if (q.step()) add_row(q);
            }
        }
        Stmt ins(db_, kInsertMessage);
        Stmt upd(db_, "UPDATE messages SET flags=?, keywords=?, size=?, modseq=? WHERE mailbox=? AND folder_id=? "
                      "AND uid=?");
        Stmt del(db_, "DELETE FROM messages WHERE mailbox=? AND folder_id=? AND uid=?");
        std::set<std::string> seen;
        for (const auto& m : items) {
            auto it = local.find(m.graph_id);
            if (m.removed) {
                if (it == local.end()) continue;
                del.reset().bind(1, mailbox).bind(2, folder_id).bind(3, static_cast<std::int64_t>(it->second.uid)).run();
                change.removed.push_back(it->second.uid);
                local.erase(it);
                continue;
            }
            seen.insert(m.graph_id);
            std::string kw = join_keywords(m.keywords);
            if (it != local.end()) {
                std::uint32_t flags = (m.flags & ~static_cast<std::uint32_t>(kDeleted)) | (it->second.flags & kDeleted);
                if (flags == it->second.flags && kw == it->second.keywords && m.size == it->second.size) continue;
                bool visible = flags != it->second.flags || kw != it->second.keywords;
                if (visible) ++modseq;
                upd.reset()
                    .bind(1, static_cast<std::int64_t>(flags))
                    .bind(2, kw)
                    .bind(3, static_cast<std::int64_t>(m.size))
                    .bind(4, static_cast<std::int64_t>(modseq))
                    .bind(5, mailbox)
                    .bind(6, folder_id)
                    .bind(7, static_cast<std::int64_t>(it->second.uid))
                    .run();
                it->second.flags = flags;
                it->second.keywords = kw;
                it->second.size = m.size;
                if (visible) change.changed.push_back(it->second.uid);
                continue;
            }
            std::uint32_t uid = uidnext++;
            ++modseq;
            insert_row(ins, mailbox, folder_id, uid, m, m.flags & ~static_cast<std::uint32_t>(kDeleted), kw, "", modseq);
            local.emplace(m.graph_id, Local{uid, m.flags, kw, m.size});
            change.added.push_back(uid);
        }
        if (complete) {
            for (auto it = local.begin(); it != local.end();) {
                if (seen.count(it->first)) {
                    ++it;
                    continue;
                }
                del.reset().bind(1, mailbox).bind(2, folder_id).bind(3, static_cast<std::int64_t>(it->second.uid)).run();
                change.removed.push_back(it->second.uid);
                it = local.erase(it);
            }
        }
        // An expunge changes the folder too: HIGHESTMODSEQ moves, so a client comparing it (CONDSTORE,
        // QRESYNC) knows to look (RFC 7162 3.1.10).
        if (!change.removed.empty()) ++modseq;
        Stmt fu(db_, "UPDATE folders SET uidnext=?, highestmodseq=?, delta_link=?, synced_at=? WHERE mailbox=? AND "
                     "folder_id=?");
        fu.bind(1, static_cast<std::int64_t>(uidnext))
            .bind(2, static_cast<std::int64_t>(modseq))
            .bind(3, delta_link)
            .bind(4, now)
            .bind(5, mailbox)
            .bind(6, folder_id)
            .run();
        txn.commit();
        std::sort(change.removed.begin(), change.removed.end());
        std::sort(change.changed.begin(), change.changed.end());
        change.changed.erase(std::unique(change.changed.begin(), change.changed.end()), change.changed.end());
        change.uidnext = uidnext;
        change.highestmodseq = modseq;
        return change;
    }

    FolderChange set_flags(const std::string& mailbox, const std::string& folder_id,
                           const std::vector<FlagUpdate>& updates) override {
        std::lock_guard lock(mutex_);
        Txn txn(db_);
        auto f = load_folder(mailbox, folder_id);
        if (!f) throw std::runtime_error("state database: unknown folder");
        FolderChange change;
        std::uint64_t modseq = f->highestmodseq;
        Stmt q(db_, "SELECT flags, keywords, local_keywords FROM messages WHERE mailbox=? AND folder_id=? AND uid=?");
        Stmt upd(db_, "UPDATE messages SET flags=?, keywords=?, local_keywords=?, modseq=? WHERE mailbox=? AND "
                      "folder_id=? AND uid=?");
        for (const auto& u : updates) {
            q.reset().bind(1, mailbox).bind(2, folder_id).bind(3, static_cast<std::int64_t>(u.uid));
            if (!q.step()) continue;
            std::string kw = join_keywords(u.keywords), local = join_keywords(u.local_keywords);
            if (static_cast<std::uint32_t>(q.i64(0)) == u.flags && q.text(1) == kw && q.text(2) == local) continue;
            set_row_flags(upd, mailbox, folder_id, u.uid, u.flags, kw, local, ++modseq);
            change.changed.push_back(u.uid);
        }
        finish(mailbox, folder_id, f->uidnext, modseq, change);
        txn.commit();
        return change;
    }

    std::pair<std::vector<std::uint32_t>, FolderChange> add_known(const std::string& mailbox,
                                                                  const std::string& folder_id,
                                                                  const std::vector<RemoteMessage>& items) override {
        std::lock_guard lock(mutex_);
        Txn txn(db_);
        auto f = load_folder(mailbox, folder_id);
        if (!f) throw std::runtime_error("state database: unknown folder");
        FolderChange change;
        std::vector<std::uint32_t> uids;
        std::uint32_t uidnext = f->uidnext;
        std::uint64_t modseq = f->highestmodseq;
        Stmt q(db_, "SELECT uid, flags, keywords, local_keywords FROM messages WHERE mailbox=? AND folder_id=? AND "
                    "graph_id=?");
        Stmt upd(db_, "UPDATE messages SET flags=?, keywords=?, local_keywords=?, modseq=? WHERE mailbox=? AND "
                      "folder_id=? AND uid=?");
        Stmt ins(db_, kInsertMessage);
        for (const auto& m : items) {
            std::string kw = join_keywords(m.keywords), local = join_keywords(m.local_keywords);
            q.reset().bind(1, mailbox).bind(2, folder_id).bind(3, m.graph_id);
            if (q.step()) {
                auto uid = static_cast<std::uint32_t>(q.i64(0));
                uids.push_back(uid);
                if (static_cast<std::uint32_t>(q.i64(1)) == m.flags && q.text(2) == kw && q.text(3) == local) continue;
                set_row_flags(upd, mailbox, folder_id, uid, m.flags, kw, local, ++modseq);
                change.changed.push_back(uid);
                continue;
            }
            std::uint32_t uid = uidnext++;
            ++modseq;
            insert_row(ins, mailbox, folder_id, uid, m, m.flags, kw, local, modseq);
            uids.push_back(uid);
            change.added.push_back(uid);
        }
        finish(mailbox, folder_id, uidnext, modseq, change);
        txn.commit();
        return {uids, change};
    }

    FolderChange remove_messages(const std::string& mailbox, const std::string& folder_id,
                                 const std::vector<std::uint32_t>& uids) override {
        std::lock_guard lock(mutex_);
        Txn txn(db_);
        auto f = load_folder(mailbox, folder_id);
        if (!f) throw std::runtime_error("state database: unknown folder");
        FolderChange change;
        Stmt del(db_, "DELETE FROM messages WHERE mailbox=? AND folder_id=? AND uid=?");
        for (auto uid : uids) {
            del.reset().bind(1, mailbox).bind(2, folder_id).bind(3, static_cast<std::int64_t>(uid)).run();
            if (sqlite3_changes(db_.get()) > 0) change.removed.push_back(uid);
        }
        // An expunge is a change of the folder (RFC 7162 3.1.10 wants HIGHESTMODSEQ to move).
        std::uint64_t modseq = f->highestmodseq + (change.removed.empty() ? 0 : 1);
        finish(mailbox, folder_id, f->uidnext, modseq, change);
        txn.commit();
        return change;
    }

    void set_subscribed(const std::string& mailbox, const std::string& folder_id, bool subscribed) override {
        std::lock_guard lock(mutex_);
        Stmt q(db_, "UPDATE folders SET subscribed=? WHERE mailbox=? AND folder_id=?");
        q.bind(1, static_cast<std::int64_t>(subscribed ? 1 : 0)).bind(2, mailbox).bind(3, folder_id).run();
    }

    void reset_delta(const std::string& mailbox, const std::string& folder_id) override {
        std::lock_guard lock(mutex_);
        Stmt q(db_, "UPDATE folders SET delta_link='' WHERE mailbox=? AND folder_id=?");
        q.bind(1, mailbox).bind(2, folder_id).run();
    }

    std::optional<Derived> derived(const std::string& mailbox, const std::string& graph_id) override {
        std::lock_guard lock(mutex_);
        Stmt q(db_, "SELECT exact_size, envelope, bodystructure, body FROM derived WHERE mailbox=? AND graph_id=?");
        q.bind(1, mailbox).bind(2, graph_id);
        if (!q.step()) return std::nullopt;
        return Derived{static_cast<std::uint64_t>(q.i64(0)), q.text(1), q.text(2), q.text(3)};
    }

    void put_derived(const std::string& mailbox, const std::string& graph_id, const Derived& d) override {
        std::lock_guard lock(mutex_);
        Stmt q(db_, "INSERT OR REPLACE INTO derived(mailbox, graph_id, exact_size, envelope, bodystructure, body) "
                    "VALUES(?,?,?,?,?,?)");
        q.bind(1, mailbox)
            .bind(2, graph_id)
            .bind(3, static_cast<std::int64_t>(d.exact_size))
            .bind(4, d.envelope)
            .bind(5, d.bodystructure)
            .bind(6, d.body)
            .run();
    }

private:
    // BEGIN IMMEDIATE ... COMMIT; rolled back when not committed (an exception on the way).
    class Txn {
    public:
        explicit Txn(Db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
        ~Txn() {
            if (!done_) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        }
        void commit() {
            db_.exec("COMMIT");
            done_ = true;
        }

    private:
        Db& db_;
        bool done_ = false;
    };

    static constexpr const char* kInsertMessage =
        "INSERT INTO messages(mailbox, folder_id, uid, graph_id, flags, keywords, size, internal_date, modseq, "
        "local_keywords) VALUES(?,?,?,?,?,?,?,?,?,?)";
    // A new message row (through a kInsertMessage statement) with the given UID, flags and keywords.
    static void insert_row(Stmt& ins, const std::string& mailbox, const std::string& folder_id, std::uint32_t uid,
                           const RemoteMessage& m, std::uint32_t flags, const std::string& keywords,
                           const std::string& local, std::uint64_t modseq) {
        ins.reset()
            .bind(1, mailbox)
            .bind(2, folder_id)
            .bind(3, static_cast<std::int64_t>(uid))
            .bind(4, m.graph_id)
            .bind(5, static_cast<std::int64_t>(flags))
            .bind(6, keywords)
            .bind(7, static_cast<std::int64_t>(m.size))
            .bind(8, m.internal_date)
            .bind(9, static_cast<std::int64_t>(modseq))
            .bind(10, local)
            .run();
    }

    // One message's flags and keywords through `upd` ("UPDATE messages SET flags=?, keywords=?,
    // local_keywords=?, modseq=? WHERE mailbox=? AND folder_id=? AND uid=?").
    static void set_row_flags(Stmt& upd, const std::string& mailbox, const std::string& folder_id, std::uint32_t uid,
                              std::uint32_t flags, const std::string& keywords, const std::string& local,
                              std::uint64_t modseq) {
        upd.reset()
            .bind(1, static_cast<std::int64_t>(flags))
            .bind(2, keywords)
            .bind(3, local)
            .bind(4, static_cast<std::int64_t>(modseq))
            .bind(5, mailbox)
            .bind(6, folder_id)
            .bind(7, static_cast<std::int64_t>(uid))
            .run();
    }

    // Stores the folder's counters after a local write and completes the change record.
    void finish(const std::string& mailbox, const std::string& folder_id, std::uint32_t uidnext, std::uint64_t modseq,
                FolderChange& change) {
        Stmt fu(db_, "UPDATE folders SET uidnext=?, highestmodseq=? WHERE mailbox=? AND folder_id=?");
        fu.bind(1, static_cast<std::int64_t>(uidnext))
            .bind(2, static_cast<std::int64_t>(modseq))
            .bind(3, mailbox)
            .bind(4, folder_id)
            .run();
        std::sort(change.removed.begin(), change.removed.end());
        std::sort(change.changed.begin(), change.changed.end());
        change.changed.erase(std::unique(change.changed.begin(), change.changed.end()), change.changed.end());
        change.uidnext = uidnext;
        change.highestmodseq = modseq;
    }

    static MessageRecord row(const Stmt& q) {
        MessageRecord m;
        m.uid = static_cast<std::uint32_t>(q.i64(0));
        m.graph_id = q.text(1);
        m.flags = static_cast<std::uint32_t>(q.i64(2));
        m.keywords = split_keywords(q.text(3));
        m.size = static_cast<std::uint64_t>(q.i64(4));
        m.internal_date = q.i64(5);
        m.modseq = static_cast<std::uint64_t>(q.i64(6));
        m.local_keywords = split_keywords(q.text(7));
        return m;
    }

    static FolderRecord folder_row(const Stmt& q) {
        FolderRecord f;
        f.folder_id = q.text(0);
        f.parent_id = q.text(1);
        f.name = q.text(2);
        f.path = q.text(3);
        f.special_use = q.text(4);
        f.uidvalidity = static_cast<std::uint32_t>(q.i64(5));
        f.uidnext = static_cast<std::uint32_t>(q.i64(6));
        f.highestmodseq = static_cast<std::uint64_t>(q.i64(7));
        f.delta_link = q.text(8);
        f.subscribed = q.i64(9) != 0;
        f.synced_at = q.i64(10);
        return f;
    }

    static constexpr const char* kFolderCols =
        "folder_id, parent_id, name, path, special_use, uidvalidity, uidnext, highestmodseq, delta_link, "
        "subscribed, synced_at";

    std::vector<FolderRecord> load_folders(const std::string& mailbox) {
        std::vector<FolderRecord> out;
        Stmt q(db_, fmt::format("SELECT {} FROM folders WHERE mailbox=? ORDER BY path", kFolderCols).c_str());
        q.bind(1, mailbox);
        while (q.step()) out.push_back(folder_row(q));
        return out;
    }

    std::optional<FolderRecord> load_folder(const std::string& mailbox, const std::string& folder_id) {
        Stmt q(db_, fmt::format("SELECT {} FROM folders WHERE mailbox=? AND folder_id=?", kFolderCols).c_str());
        q.bind(1, mailbox).bind(2, folder_id);
        if (!q.step()) return std::nullopt;
        return folder_row(q);
    }

    // Strictly increasing across the store's life: max(now, last + 1), kept in meta (inside the caller's
    // transaction). 32-bit unix time lasts until 2106.
    std::uint32_t next_uidvalidity() {
        std::int64_t last = 0;
        {
            Stmt q(db_, "SELECT value FROM meta WHERE key='last_uidvalidity'");
            if (q.step()) last = std::stoll(q.text(0));
        }
        std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
        std::int64_t v = std::max<std::int64_t>(now, last + 1);
        if (v > 0xFFFFFFFFll) v = last + 1;  // never wraps silently; practically unreachable
        Stmt put(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES('last_uidvalidity', ?)");
        put.bind(1, std::to_string(v)).run();
        return static_cast<std::uint32_t>(v);
    }

    Db db_;
    std::mutex mutex_;
};

}  // namespace

std::unique_ptr<StateStore> open_sqlite_store(const std::string& path, std::string* moved_aside) {
    try {
        return std::make_unique<SqliteStore>(path, 0);
    } catch (const DbError& e) {
        if (e.busy())
            throw std::runtime_error(std::string(e.what()) +
                                     " (another process holds it: another graphbridge with the same state_dir, "
                                     "or a tool with the file open; stop it and start again)");
        if (!e.corrupt()) throw;
        // Corrupt: keep the damaged file for inspection, start an empty store and let the sync rebuild it
        // from Graph. Only the UID map is lost: every folder gets a new UIDVALIDITY, above any value the
        // old file can have handed out (those are at most its last write time + one per folder ever
        // created: 10^6 leaves room), so clients drop their caches instead of trusting wrong UIDs.
        struct stat st {};
        std::int64_t floor = ::stat(path.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_mtime) : 0;
        floor = std::max<std::int64_t>(floor, std::chrono::duration_cast<std::chrono::seconds>(
                                                  std::chrono::system_clock::now().time_since_epoch())
                                                  .count()) +
                1'000'000;
        std::string aside = fmt::format("{}.corrupt-{}", path, std::time(nullptr));
        for (const char* suffix : {"", "-wal", "-shm"}) {
            std::string from = path + suffix;
            if (::access(from.c_str(), F_OK) == 0 && std::rename(from.c_str(), (aside + suffix).c_str()) != 0)
                throw std::runtime_error(fmt::format("{} (and it cannot be moved aside to {}: {})", e.what(),
                                                     aside + suffix, std::strerror(errno)));
        }
        if (moved_aside) *moved_aside = aside;
        return std::make_unique<SqliteStore>(path, floor);
    }
}

}  // namespace gb::sync
