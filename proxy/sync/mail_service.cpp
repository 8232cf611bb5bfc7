#include "proxy/sync/mail_service.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>

#include "common/ascii.h"
#include "common/log.h"

namespace gb::sync {

using SteadyClock = std::chrono::steady_clock;

struct MailService::Box {
    std::string address;
    MailSource* source = nullptr;
    std::unique_ptr<MailboxSync> sync;
    SteadyClock::time_point next_full{}, next_tree{}, paused_until{};
    std::map<std::string, SteadyClock::time_point> next_fast;
    bool running = false;
    bool poked = false;
    std::int64_t last_success = 0;  // unix seconds of the last poll that completed without error
    std::mutex init_mutex;
    bool tree_synced = false;
};

namespace {
SourceError not_configured() { return SourceError{SourceError::Kind::NotFound, "mailbox not configured", {}}; }
}  // namespace

// Boxes are added before start() or by a reload, and never removed, so the pointer stays valid after the
// lock.
MailService::Box* MailService::find_box(const std::string& mailbox) const {
    std::lock_guard lock(mutex_);
    auto it = boxes_.find(mailbox);
    return it == boxes_.end() ? nullptr : it->second.get();
}

MailService::MailService(StateStore& store, BodyCache& cache, MailServiceOptions options)
    : store_(store), cache_(cache), options_(options) {}

MailService::~MailService() { stop(); }

void MailService::add_mailbox(const std::string& address, MailSource& source) {
    std::lock_guard lock(mutex_);
    auto box = std::make_unique<Box>();
    box->address = address;
    box->source = &source;
    box->sync = std::make_unique<MailboxSync>(address, source, store_);
    // First listener of the mailbox: a changed folder's snapshot is dropped before any session hears of
    // the change, so a session that reacts takes a fresh one.
    box->sync->subscribe("", [this, address](const std::string& folder_id, const FolderChange&) {
        std::lock_guard snap_lock(snapshot_mutex_);
        snapshots_.erase({address, folder_id});
    });
    boxes_[address] = std::move(box);
}

MailboxSync* MailService::mailbox(const std::string& address) {
    std::lock_guard lock(mutex_);
    auto it = boxes_.find(address);
    return it == boxes_.end() ? nullptr : it->second->sync.get();
}

void MailService::start() {
    std::lock_guard lock(mutex_);
    stopping_ = false;
    for (int i = 0; i < std::max(1, options_.threads); ++i)
        workers_.emplace_back([this] {
            std::unique_lock worker_lock(mutex_);
            while (true) {
                changed_.wait(worker_lock, [this] { return stopping_ || !jobs_.empty(); });
                if (stopping_) return;
                auto job = std::move(jobs_.front());
                jobs_.erase(jobs_.begin());
                worker_lock.unlock();
                // A job must never take the process down (an exception out of a thread is std::terminate):
                // run_poll() handles its own; this is the last line.
                try {
                    job();
                } catch (const std::exception& e) {
                    log::error("sync", "background job failed", {{"error", e.what()}});
                } catch (...) {
                    log::error("sync", "background job failed", {{"error", "unknown exception"}});
                }
                worker_lock.lock();
            }
        });
    scheduler_ = std::thread([this] { scheduler(); });
}

void MailService::stop() {
    {
        std::lock_guard lock(mutex_);
        if (stopping_ && !scheduler_.joinable()) return;
        stopping_ = true;
    }
    changed_.notify_all();
    if (scheduler_.joinable()) scheduler_.join();
    for (auto& t : workers_)
        if (t.joinable()) t.join();
    workers_.clear();
}

std::optional<SourceError> MailService::ensure_synced(const std::string& mailbox, const std::string& folder_id) {
    Box* box = find_box(mailbox);
    if (!box) return not_configured();
    std::lock_guard init(box->init_mutex);
    if (!box->tree_synced) {
        if (auto e = box->sync->sync_folders()) {
            if (store_.folders(mailbox).empty()) return e;  // nothing stored to serve from
            log::warn("sync", "folder tree refresh failed, serving the stored tree",
                      {{"mailbox", mailbox}, {"error", e->message}});
        }
        box->tree_synced = true;
    }
    if (folder_id.empty()) return std::nullopt;
    auto f = store_.folder(mailbox, folder_id);
    if (!f) return SourceError{SourceError::Kind::NotFound, "no such folder", {}};
    if (!f->delta_link.empty()) return std::nullopt;
    return box->sync->sync_folder(folder_id);
}

int MailService::watch(const std::string& mailbox, const std::string& folder_id) {
    std::lock_guard lock(mutex_);
    int id = next_watch_++;
    watches_[id] = Watch{mailbox, folder_id, false};
    return id;
}

void MailService::set_fast(int watch_id, bool fast) {
    {
        std::lock_guard lock(mutex_);
        auto it = watches_.find(watch_id);
        if (it == watches_.end()) return;
        it->second.fast = fast;
    }
    changed_.notify_all();
}

void MailService::unwatch(int watch_id) {
    std::lock_guard lock(mutex_);
    watches_.erase(watch_id);
}

void MailService::poke(const std::string& mailbox) {
    {
        std::lock_guard lock(mutex_);
        auto it = boxes_.find(mailbox);
        if (it == boxes_.end()) return;
        it->second->poked = true;
    }
    changed_.notify_all();
}

void MailService::scheduler() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        changed_.wait_for(lock, std::chrono::milliseconds(200));
        if (stopping_) break;
        auto now = SteadyClock::now();
        // Which mailboxes and fast folders have watchers.
        std::map<std::string, std::set<std::string>> fast;
        std::set<std::string> watched;
        for (const auto& [id, w] : watches_) {
            watched.insert(w.mailbox);
            if (w.fast) fast[w.mailbox].insert(w.folder_id);
        }
        for (auto& [address, box] : boxes_) {
            if (box->running || now < box->paused_until) continue;
            if (!watched.count(address) && !box->poked) continue;
            bool full = box->poked || now >= box->next_full;
            std::vector<std::string> due_fast;
            for (const auto& f : fast[address]) {
                auto& next = box->next_fast[f];
                if (now >= next) due_fast.push_back(f);
            }
            if (!full && due_fast.empty()) continue;
            box->running = true;
            box->poked = false;
            if (full) box->next_full = now + options_.poll_interval;
            for (const auto& f : due_fast) box->next_fast[f] = now + options_.idle_poll_interval;
            Box* b = box.get();
            jobs_.push_back([this, b, due_fast, full] { run_poll(*b, due_fast, full); });
            changed_.notify_all();
        }
    }
}

void MailService::run_poll(Box& box, std::vector<std::string> fast_folders, bool full) {
    std::optional<SourceError> err;
    bool store_failed = false;
    try {
        poll_once(box, fast_folders, full, err);
    } catch (const std::exception& e) {
        // The state database failed (locked by another process past the busy timeout, disk full, I/O
        // error): this round is lost, nothing else. Sessions keep serving what is stored; the next round
        // retries after a pause.
        err = SourceError{SourceError::Kind::Transient, std::string("state database: ") + e.what(), {}};
        store_failed = true;
    }
    std::lock_guard lock(mutex_);
    ++stats_.polls;
    if (!err && full)
        box.last_success = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    if (err) {
        ++stats_.poll_errors;
        if (err->kind == SourceError::Kind::Throttled)
            box.paused_until = SteadyClock::now() + std::chrono::seconds(std::max<std::int64_t>(1, err->retry_after.value_or(5)));
        if (store_failed) box.paused_until = SteadyClock::now() + std::chrono::seconds(5);
        log::warn("sync", "sync failed", {{"mailbox", box.address}, {"error", err->message}});
    }
    box.running = false;
    changed_.notify_all();
}

void MailService::poll_once(Box& box, const std::vector<std::string>& fast_folders, bool full,
                            std::optional<SourceError>& err) {
    if (full) {
        bool tree = SteadyClock::now() >= box.next_tree;
        if (tree) {
            err = box.sync->sync_folders();
            if (!err) box.next_tree = SteadyClock::now() + options_.tree_interval;
        }
        if (!err || err->kind != SourceError::Kind::Throttled) {
            for (const auto& f : store_.folders(box.address)) {
                auto e = box.sync->sync_folder(f.folder_id);
                if (e && !err) err = e;
                if (e && e->kind == SourceError::Kind::Throttled) break;
            }
        }
    } else {
        for (const auto& f : fast_folders) {
            auto e = box.sync->sync_folder(f);
            if (e && !err) err = e;
            if (e && e->kind == SourceError::Kind::Throttled) break;
        }
    }
}

SourceResult<std::string> MailService::body(const std::string& mailbox, const std::string& graph_id) {
    std::string key = mailbox + '\n' + graph_id;
    Box* box = find_box(mailbox);
    if (!box) return not_configured();
    MailSource* source = box->source;  // fixed after add_mailbox()
    {
        std::unique_lock lock(body_mutex_);
        body_done_.wait(lock, [&] { return !body_in_flight_.count(key); });
        if (auto hit = cache_.get(mailbox, graph_id)) return std::move(*hit);
        body_in_flight_.insert(key);
    }
    SourceResult<std::string> out = SourceError{};
    try {
        auto r = source->mime(mailbox, graph_id);
        if (auto* bytes = std::get_if<std::string>(&r)) {
            std::string normal = normalize_crlf(*bytes);
            cache_.put(mailbox, graph_id, normal);
            out = std::move(normal);
        } else {
            out = std::get<SourceError>(r);
        }
    } catch (const std::exception& e) {
        // Whoever waits for this body must be woken whatever happened (below), or they wait forever.
        out = SourceError{SourceError::Kind::Transient, std::string("body download: ") + e.what(), {}};
    }
    {
        std::lock_guard lock(mutex_);
        if (out.index() == 0) ++stats_.body_downloads;
        else ++stats_.body_errors;
    }
    {
        std::lock_guard lock(body_mutex_);
        body_in_flight_.erase(key);
    }
    body_done_.notify_all();
    return out;
}

std::optional<SourceError> MailService::move(const std::string& mailbox, const std::string& graph_id,
                                             const std::string& destination) {
    Box* box = find_box(mailbox);
    if (!box) return not_configured();
    MailSource* source = box->source;  // fixed after add_mailbox()
    auto r = source->move(mailbox, graph_id, destination);
    poke(mailbox);
    if (auto* e = std::get_if<SourceError>(&r)) return *e;
    return std::nullopt;
}

MailService::Snapshot MailService::snapshot(const std::string& mailbox, const std::string& folder_id) {
    std::lock_guard lock(snapshot_mutex_);
    auto& slot = snapshots_[{mailbox, folder_id}];
    if (!slot) slot = std::make_shared<const std::vector<MessageRecord>>(store_.messages(mailbox, folder_id));
    return slot;
}

// ---- writes ------------------------------------------------------------------------------------------

namespace {

bool has_keyword(const std::vector<std::string>& list, const std::string& k) {
    return std::any_of(list.begin(), list.end(), [&](const std::string& x) { return ascii::iequals(x, k); });
}

// What a STORE leaves on a message. \Draft cannot change (Graph's isDraft is read-only). Exchange keeps
// one last verb, so \Answered and $Forwarded cannot both stick: the one being set wins. Keywords split
// into categories and client bookkeeping keywords (kept locally); a keyword naming a category by its atom
// form ("Red_category" for "Red category") means that category, so it is never renamed by a round trip.
struct StoreResult {
    std::uint32_t flags;
    std::vector<std::string> categories, local;
};
StoreResult apply_op(const MessageRecord& m, const MailService::FlagOp& op) {
    constexpr std::uint32_t kSettable = kSeen | kAnswered | kFlagged | kDeleted | kForwarded;
    std::uint32_t want = op.flags & kSettable;
    StoreResult r{m.flags, m.keywords, m.local_keywords};
    std::vector<std::string> cats, local;  // the request's keywords, sorted into the two kinds
    for (const auto& k : op.keywords) {
        if (is_client_keyword(k)) {
            local.push_back(k);
            continue;
        }
        auto it = std::find_if(m.keywords.begin(), m.keywords.end(),
                               [&](const std::string& c) { return ascii::iequals(keyword_atom(c), k); });
        cats.push_back(it != m.keywords.end() ? *it : k);
    }
    auto add_all = [](std::vector<std::string>& to, const std::vector<std::string>& from) {
        for (const auto& k : from)
            if (!has_keyword(to, k)) to.push_back(k);
    };
    auto remove_all = [](std::vector<std::string>& from, const std::vector<std::string>& gone) {
        from.erase(std::remove_if(from.begin(), from.end(), [&](const std::string& x) { return has_keyword(gone, x); }),
                   from.end());
    };
    switch (op.mode) {
        case MailService::FlagOp::Mode::Add:
            r.flags |= want;
            add_all(r.categories, cats);
            add_all(r.local, local);
            break;
        case MailService::FlagOp::Mode::Remove:
            r.flags &= ~want;
            remove_all(r.categories, cats);
            remove_all(r.local, local);
            break;
        case MailService::FlagOp::Mode::Replace:
            r.flags = (r.flags & kDraft) | want;
            r.categories.clear();
            r.local.clear();
            add_all(r.categories, cats);
            add_all(r.local, local);
            break;
    }
    if ((r.flags & kAnswered) && (r.flags & kForwarded)) {
        bool answered_new = !(m.flags & kAnswered);
        bool forwarded_new = !(m.flags & kForwarded);
        if (answered_new && !forwarded_new) r.flags &= ~kForwarded;
        else r.flags &= ~kAnswered;
    }
    return r;
}

int last_verb(std::uint32_t flags) { return flags & kForwarded ? 104 : flags & kAnswered ? 102 : 0; }

// The PATCH that takes a message from (flags, categories) to (to_flags, to_categories): only what differs.
MailSource::Patch patch_between(std::uint32_t flags, const std::vector<std::string>& categories,
                                std::uint32_t to_flags, const std::vector<std::string>& to_categories) {
    MailSource::Patch p;
    if ((flags ^ to_flags) & kSeen) p.read = (to_flags & kSeen) != 0;
    if ((flags ^ to_flags) & kFlagged) p.flagged = (to_flags & kFlagged) != 0;
    if (last_verb(flags) != last_verb(to_flags)) p.last_verb = last_verb(to_flags);
    if (categories != to_categories) p.categories = to_categories;
    return p;
}

// A stored message as it now also exists under `graph_id` (a copy, or moved elsewhere), minus `drop`.
RemoteMessage arrived_as(const MessageRecord& m, std::string graph_id, std::uint32_t drop) {
    RemoteMessage rm;
    rm.graph_id = std::move(graph_id);
    rm.flags = m.flags & ~drop;
    rm.keywords = m.keywords;
    rm.local_keywords = m.local_keywords;
    rm.size = m.size;
    rm.internal_date = m.internal_date;
    return rm;
}

}  // namespace

namespace {

// Runs call(i) for i in [0, n), at most `width` at a time (Graph allows 4 concurrent requests per
// mailbox; one slot is left for the bodies other sessions may be fetching). A throttled call waits for its
// Retry-After (up to 30 s) and is tried again, three times at most; after any other failure no new call
// starts. Returns per index: not run (nullopt), succeeded (an empty error) or the error.
using CallResult = std::optional<std::optional<SourceError>>;
std::vector<CallResult> fan_out(std::size_t n, std::size_t width,
                                const std::function<std::optional<SourceError>(std::size_t)>& call) {
    std::vector<CallResult> results(n);
    std::atomic<std::size_t> next{0};
    std::atomic<bool> stop{false};
    auto worker = [&] {
        while (!stop) {
            std::size_t i = next++;
            if (i >= n) return;
            std::optional<SourceError> e;
            for (int attempt = 0;; ++attempt) {
                e = call(i);
                if (!e || e->kind != SourceError::Kind::Throttled || attempt == 3 || e->retry_after.value_or(1) > 30) break;
                std::this_thread::sleep_for(std::chrono::seconds(std::max<std::int64_t>(1, e->retry_after.value_or(1))));
            }
            if (e && e->kind != SourceError::Kind::NotFound) stop = true;
            results[i] = e;
        }
    };
    width = std::max<std::size_t>(1, std::min(width, n));
    if (width == 1) {
        worker();
        return results;
    }
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < width; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    return results;
}

constexpr std::size_t kWriteWidth = 3;

// Writes over many messages go in chunks, the mailbox's lock taken for one chunk at a time: a MOVE of
// 5,000 messages does not hold off the polls and the other sessions of that mailbox for minutes.
constexpr std::size_t kWriteChunk = 60;

// Calls f(chunk) for consecutive chunks of `uids` until it returns false.
template <typename F>
void for_chunks(const std::vector<std::uint32_t>& uids, F&& f) {
    for (std::size_t i = 0; i < uids.size(); i += kWriteChunk) {
        std::vector<std::uint32_t> chunk(uids.begin() + static_cast<std::ptrdiff_t>(i),
                                         uids.begin() + static_cast<std::ptrdiff_t>(std::min(uids.size(), i + kWriteChunk)));
        if (!f(chunk)) return;
    }
}

// The first real failure among the results (NotFound means "already gone": not a failure of the write).
std::optional<SourceError> first_error(const std::vector<CallResult>& results) {
    for (const auto& r : results)
        if (r && *r && (*r)->kind != SourceError::Kind::NotFound) return **r;
    return std::nullopt;
}

bool succeeded(const CallResult& r) { return r && !*r; }

}  // namespace

MailService::FlagResult MailService::store_flags(const std::string& mailbox, const std::string& folder_id,
                                                 const std::vector<std::uint32_t>& uids, const FlagOp& op) {
    FlagResult all;
    for_chunks(uids, [&](const std::vector<std::uint32_t>& chunk) {
        auto r = store_flags_chunk(mailbox, folder_id, chunk, op);
        all.modified.insert(all.modified.end(), r.modified.begin(), r.modified.end());
        all.error = r.error;
        return !r.error;
    });
    return all;
}

MailService::FlagResult MailService::store_flags_chunk(const std::string& mailbox, const std::string& folder_id,
                                                       const std::vector<std::uint32_t>& uids, const FlagOp& op) {
    FlagResult result;
    Box* box = find_box(mailbox);
    if (!box) {
        result.error = not_configured();
        return result;
    }
    FolderChange change;
    {
        auto lock = box->sync->exclusive();
        if (!store_.folder(mailbox, folder_id)) {  // deleted meanwhile (here or in Outlook)
            result.error = SourceError{SourceError::Kind::NotFound, "the mailbox no longer exists", {}};
            return result;
        }
        // Decide against what Graph has now, not what the last poll saw: a message flagged in Outlook a
        // second ago and unflagged here must get its PATCH (one delta request, usually empty).
        if (auto e = box->sync->sync_folder_locked(folder_id))
            log::warn("sync", "refresh before STORE failed; deciding on the stored flags",
                      {{"mailbox", mailbox}, {"error", e->message}});
        struct Work {
            StateStore::FlagUpdate update;
            std::string graph_id;
            MailSource::Patch patch;
        };
        std::vector<Work> work;
        for (auto uid : uids) {
            auto m = store_.message(mailbox, folder_id, uid);
            if (!m) continue;  // expunged meanwhile
            if (op.unchanged_since && m->modseq > *op.unchanged_since) {
                result.modified.push_back(uid);
                continue;
            }
            auto [flags, kw, local] = apply_op(*m, op);
            if (flags == m->flags && kw == m->keywords && local == m->local_keywords) continue;
            Work w{{uid, flags, kw, local}, m->graph_id, patch_between(m->flags, m->keywords, flags, kw)};
            work.push_back(std::move(w));
        }
        auto results = fan_out(work.size(), kWriteWidth, [&](std::size_t i) -> std::optional<SourceError> {
            if (work[i].patch.empty()) return std::nullopt;  // \Deleted only: local
            return box->source->update(mailbox, work[i].graph_id, work[i].patch);
        });
        std::vector<StateStore::FlagUpdate> updates;
        for (std::size_t i = 0; i < work.size(); ++i)
            if (succeeded(results[i])) updates.push_back(work[i].update);  // a NotFound one: the next sync expunges it
        result.error = first_error(results);
        if (!updates.empty()) change = store_.set_flags(mailbox, folder_id, updates);
    }
    box->sync->publish(folder_id, change);
    return result;
}

MailService::CopyResult MailService::copy_messages(const std::string& mailbox, const std::string& folder_id,
                                                   const std::vector<std::uint32_t>& uids,
                                                   const std::string& dest_folder_id, bool move) {
    CopyResult all;
    for_chunks(uids, [&](const std::vector<std::uint32_t>& chunk) {
        auto r = copy_chunk(mailbox, folder_id, chunk, dest_folder_id, move);
        all.dest_uidvalidity = r.dest_uidvalidity;
        all.source_uids.insert(all.source_uids.end(), r.source_uids.begin(), r.source_uids.end());
        all.dest_uids.insert(all.dest_uids.end(), r.dest_uids.begin(), r.dest_uids.end());
        all.error = r.error;
        return !r.error;
    });
    if (all.error && !move && !all.dest_uids.empty()) {
        // The earlier chunks of a failed COPY are undone too (the chunk that failed undid its own).
        auto undo = expunge_chunk(mailbox, dest_folder_id, all.dest_uids, Removal::Delete);
        std::vector<std::uint32_t> kept_src, kept_dst;
        for (std::size_t i = 0; i < all.dest_uids.size(); ++i)
            if (!std::binary_search(undo.removed.begin(), undo.removed.end(), all.dest_uids[i])) {
                kept_src.push_back(all.source_uids[i]);
                kept_dst.push_back(all.dest_uids[i]);
            }
        all.source_uids = std::move(kept_src);
        all.dest_uids = std::move(kept_dst);
    }
    return all;
}

MailService::CopyResult MailService::copy_chunk(const std::string& mailbox, const std::string& folder_id,
                                                const std::vector<std::uint32_t>& uids,
                                                const std::string& dest_folder_id, bool move) {
    CopyResult result;
    Box* box = find_box(mailbox);
    if (!box) {
        result.error = not_configured();
        return result;
    }
    FolderChange src_change, dst_change;
    {
        auto lock = box->sync->exclusive();
        auto dest = store_.folder(mailbox, dest_folder_id);
        if (!dest || !store_.folder(mailbox, folder_id)) {
            result.error = SourceError{SourceError::Kind::NotFound, "no such folder", {}};
            return result;
        }
        result.dest_uidvalidity = dest->uidvalidity;
        std::vector<MessageRecord> sources;
        for (auto uid : uids)
            if (auto m = store_.message(mailbox, folder_id, uid)) sources.push_back(std::move(*m));
        std::vector<std::string> new_ids(sources.size());
        auto results = fan_out(sources.size(), kWriteWidth, [&](std::size_t i) -> std::optional<SourceError> {
            auto r = move ? box->source->move(mailbox, sources[i].graph_id, dest_folder_id)
                          : box->source->copy(mailbox, sources[i].graph_id, dest_folder_id);
            if (auto* e = std::get_if<SourceError>(&r)) return *e;
            new_ids[i] = std::get<std::string>(r);
            return std::nullopt;
        });
        result.error = first_error(results);
        if (result.error && !move) {
            // A failed COPY leaves the destination as it was (RFC 3501 6.4.7): the copies already made are
            // deleted again; one that cannot be is kept and recorded (it exists), so nothing is hidden.
            for (std::size_t i = 0; i < sources.size(); ++i)
                if (succeeded(results[i]) && !box->source->remove(mailbox, new_ids[i], false)) results[i].reset();
        }
        std::vector<RemoteMessage> arrived;
        for (std::size_t i = 0; i < sources.size(); ++i) {
            if (!succeeded(results[i])) continue;
            const auto& m = sources[i];
            RemoteMessage rm = arrived_as(m, new_ids[i], move ? static_cast<std::uint32_t>(kDeleted) : 0u);
            if (!move) {  // the copy has the same bytes: reuse what was computed from them
                if (auto d = store_.derived(mailbox, m.graph_id)) store_.put_derived(mailbox, rm.graph_id, *d);
            }
            arrived.push_back(std::move(rm));
            result.source_uids.push_back(m.uid);
        }
        if (!arrived.empty()) {
            auto [dest_uids, ch] = store_.add_known(mailbox, dest_folder_id, arrived);
            result.dest_uids = std::move(dest_uids);
            dst_change = std::move(ch);
        }
        if (move && !result.source_uids.empty()) src_change = store_.remove_messages(mailbox, folder_id, result.source_uids);
    }
    box->sync->publish(dest_folder_id, dst_change);
    box->sync->publish(folder_id, src_change);
    return result;
}

MailService::ExpungeResult MailService::expunge(const std::string& mailbox, const std::string& folder_id,
                                                const std::vector<std::uint32_t>& uids, Removal how) {
    ExpungeResult all;
    for_chunks(uids, [&](const std::vector<std::uint32_t>& chunk) {
        auto r = expunge_chunk(mailbox, folder_id, chunk, how);
        all.removed.insert(all.removed.end(), r.removed.begin(), r.removed.end());
        all.error = r.error;
        return !r.error;
    });
    return all;
}

MailService::ExpungeResult MailService::expunge_chunk(const std::string& mailbox, const std::string& folder_id,
                                                      const std::vector<std::uint32_t>& uids, Removal how) {
    ExpungeResult result;
    Box* box = find_box(mailbox);
    if (!box) {
        result.error = not_configured();
        return result;
    }
    FolderChange change, trash_change;
    std::string trash_id;
    {
        auto lock = box->sync->exclusive();
        bool exists = false;
        for (const auto& f : store_.folders(mailbox)) {
            if (f.special_use == "\\Trash") trash_id = f.folder_id;
            exists = exists || f.folder_id == folder_id;
        }
        if (!exists) {
            result.error = SourceError{SourceError::Kind::NotFound, "the mailbox no longer exists", {}};
            return result;
        }
        std::vector<MessageRecord> victims;
        for (auto uid : uids)
            if (auto m = store_.message(mailbox, folder_id, uid)) victims.push_back(std::move(*m));
        std::vector<std::string> moved_ids(victims.size());
        auto results = fan_out(victims.size(), kWriteWidth, [&](std::size_t i) -> std::optional<SourceError> {
            if (how != Removal::ToTrash)
                return box->source->remove(mailbox, victims[i].graph_id, how == Removal::PermanentDelete);
            auto r = box->source->move(mailbox, victims[i].graph_id, trash_id.empty() ? "deleteditems" : trash_id);
            if (auto* e = std::get_if<SourceError>(&r)) return *e;
            moved_ids[i] = std::get<std::string>(r);
            return std::nullopt;
        });
        std::vector<RemoteMessage> trashed;
        for (std::size_t i = 0; i < victims.size(); ++i) {
            const auto& r = results[i];
            if (!r) continue;  // not attempted
            if (*r && (*r)->kind != SourceError::Kind::NotFound) continue;  // failed: still here
            result.removed.push_back(victims[i].uid);  // done, or already gone from Graph
            if (succeeded(r) && !moved_ids[i].empty() && !trash_id.empty() && trash_id != folder_id) {
                trashed.push_back(arrived_as(victims[i], moved_ids[i], kDeleted));
            }
        }
        result.error = first_error(results);
        if (!result.removed.empty()) change = store_.remove_messages(mailbox, folder_id, result.removed);
        if (!trashed.empty()) trash_change = store_.add_known(mailbox, trash_id, trashed).second;
    }
    box->sync->publish(folder_id, change);
    if (!trash_id.empty()) box->sync->publish(trash_id, trash_change);
    return result;
}

SourceResult<MailService::AppendResult> MailService::append(const std::string& mailbox, const std::string& folder_id,
                                                            const AppendRequest& request) {
    Box* box = find_box(mailbox);
    if (!box) return not_configured();
    AppendResult result;
    std::string sent_copy;
    if (!request.sent_message_id.empty()) {
        // Graph saves the message in Sent Items when it sends it, which may be a moment after the SMTP
        // 250 (queue, then sendMail): wait a little for the copy (without holding the mailbox), so the
        // client gets its APPENDUID; if it is still not there, OK without one and the sync brings it.
        for (int attempt = 0; attempt < 10; ++attempt) {
            auto found = box->source->find_by_message_id(mailbox, folder_id, request.sent_message_id);
            if (auto* id = std::get_if<std::string>(&found)) {
                sent_copy = *id;
                break;
            }
            const auto& e = std::get<SourceError>(found);
            if (e.kind != SourceError::Kind::NotFound) return e;
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
        }
        result.existing = true;
        if (sent_copy.empty()) {
            auto folder = store_.folder(mailbox, folder_id);
            if (folder) result.uidvalidity = folder->uidvalidity;
            return result;
        }
    }
    FolderChange change;
    {
        auto lock = box->sync->exclusive();
        auto folder = store_.folder(mailbox, folder_id);
        if (!folder) return SourceError{SourceError::Kind::NotFound, "no such folder", {}};
        result.uidvalidity = folder->uidvalidity;
        RemoteMessage rm;
        std::uint32_t flags = request.flags;  // what the message has in Graph once this is done
        std::vector<std::string> keywords = request.keywords;
        if (!sent_copy.empty()) {
            // Map the APPEND onto the copy Graph saved, never a second one; what the client asked is set.
            rm.graph_id = sent_copy;
            MailSource::Patch patch;
            patch.read = (request.flags & kSeen) != 0;
            if (request.flags & kFlagged) patch.flagged = true;
            if (!request.keywords.empty()) patch.categories = request.keywords;
            if (auto e = box->source->update(mailbox, rm.graph_id, patch)) return *e;
            flags &= ~static_cast<std::uint32_t>(kDraft);
        } else {
            auto created = box->source->create(mailbox, folder_id, request.body, request.mime, request.attachments);
            if (auto* e = std::get_if<SourceError>(&created)) return *e;
            rm = std::move(std::get<RemoteMessage>(created));
            // A MIME create cannot carry flags: what Graph did not take from the request is patched after.
            // (A JSON create carried them all; its answer just does not echo the last verb.)
            if (request.mime) {
                auto patch = patch_between(rm.flags, rm.keywords, request.flags, request.keywords);
                if (!patch.empty()) {
                    if (auto e = box->source->update(mailbox, rm.graph_id, patch)) {
                        // The message exists, with the flags Graph gave it: those are what the client sees.
                        log::warn("sync", "appended message created, but its flags could not be set",
                                  {{"mailbox", mailbox}, {"error", e->message}});
                        flags = rm.flags | (request.flags & kDeleted);
                        keywords = rm.keywords;
                    }
                }
                flags |= kDraft;  // every MIME import is a draft
            } else {
                flags = (flags & ~static_cast<std::uint32_t>(kDraft)) | (rm.flags & kDraft);
            }
        }
        rm.flags = flags;
        rm.keywords = keywords;
        rm.local_keywords = request.local_keywords;
        // Until the next delta round: the size of what the client sent, its internal date.
        if (rm.size == 0) rm.size = request.size;
        if (rm.internal_date == 0) rm.internal_date = request.internal_date;
        auto [uids, ch] = store_.add_known(mailbox, folder_id, {rm});
        result.uid = uids.empty() ? 0 : uids.front();
        change = std::move(ch);
    }
    box->sync->publish(folder_id, change);
    return result;
}

SourceResult<std::string> MailService::create_folder(const std::string& mailbox, const std::string& parent_id,
                                                     const std::string& name) {
    Box* box = find_box(mailbox);
    if (!box) return not_configured();
    auto lock = box->sync->exclusive();
    auto r = box->source->create_folder(mailbox, parent_id, name);
    if (auto* e = std::get_if<SourceError>(&r)) return *e;
    if (auto e = box->sync->sync_folders_locked())
        log::warn("sync", "folder tree refresh after CREATE failed", {{"mailbox", mailbox}, {"error", e->message}});
    return std::get<RemoteFolder>(r).id;
}

std::optional<SourceError> MailService::rename_folder(const std::string& mailbox, const std::string& folder_id,
                                                      const std::string& new_parent_id, const std::string& new_name) {
    Box* box = find_box(mailbox);
    if (!box) return not_configured();
    auto lock = box->sync->exclusive();
    auto f = store_.folder(mailbox, folder_id);
    if (!f) return SourceError{SourceError::Kind::NotFound, "no such folder", {}};
    if (f->parent_id != new_parent_id)
        if (auto e = box->source->move_folder(mailbox, folder_id, new_parent_id)) return e;
    if (f->name != new_name)
        if (auto e = box->source->rename_folder(mailbox, folder_id, new_name)) return e;
    if (auto e = box->sync->sync_folders_locked())
        log::warn("sync", "folder tree refresh after RENAME failed", {{"mailbox", mailbox}, {"error", e->message}});
    return std::nullopt;
}

std::optional<SourceError> MailService::delete_folder(const std::string& mailbox, const std::string& folder_id) {
    Box* box = find_box(mailbox);
    if (!box) return not_configured();
    auto lock = box->sync->exclusive();
    if (auto e = box->source->delete_folder(mailbox, folder_id); e && e->kind != SourceError::Kind::NotFound) return e;
    if (auto e = box->sync->sync_folders_locked())
        log::warn("sync", "folder tree refresh after DELETE failed", {{"mailbox", mailbox}, {"error", e->message}});
    return std::nullopt;
}

MailServiceStats MailService::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

std::map<std::string, std::int64_t> MailService::last_synced() const {
    std::lock_guard lock(mutex_);
    std::map<std::string, std::int64_t> out;
    for (const auto& [address, box] : boxes_)
        if (box->last_success) out[address] = box->last_success;
    return out;
}

}  // namespace gb::sync
