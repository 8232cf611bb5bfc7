#include "proxy/sync/mail_service.h"

#include <algorithm>

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
    std::mutex init_mutex;
    bool tree_synced = false;
};

namespace {
SourceError not_configured() { return SourceError{SourceError::Kind::NotFound, "mailbox not configured", {}}; }
}  // namespace

// Boxes are added before start() and never removed, so the pointer stays valid after the lock.
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
                job();
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
    std::lock_guard lock(mutex_);
    ++stats_.polls;
    if (err) {
        ++stats_.poll_errors;
        if (err->kind == SourceError::Kind::Throttled)
            box.paused_until = SteadyClock::now() + std::chrono::seconds(std::max<std::int64_t>(1, err->retry_after.value_or(5)));
        log::warn("sync", "sync failed", {{"mailbox", box.address}, {"error", err->message}});
    }
    box.running = false;
    changed_.notify_all();
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
    auto r = source->mime(mailbox, graph_id);
    SourceResult<std::string> out = SourceError{};
    if (auto* bytes = std::get_if<std::string>(&r)) {
        std::string normal = normalize_crlf(*bytes);
        cache_.put(mailbox, graph_id, normal);
        out = std::move(normal);
    } else {
        out = std::get<SourceError>(r);
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
    auto e = source->move(mailbox, graph_id, destination);
    poke(mailbox);
    return e;
}

MailService::Snapshot MailService::snapshot(const std::string& mailbox, const std::string& folder_id) {
    std::lock_guard lock(snapshot_mutex_);
    auto& slot = snapshots_[{mailbox, folder_id}];
    if (!slot) slot = std::make_shared<const std::vector<MessageRecord>>(store_.messages(mailbox, folder_id));
    return slot;
}

MailServiceStats MailService::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

}  // namespace gb::sync
