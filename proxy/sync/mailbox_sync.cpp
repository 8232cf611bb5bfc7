#include "proxy/sync/mailbox_sync.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <unordered_map>

#include "common/ascii.h"
#include "common/log.h"

namespace gb::sync {
namespace {

std::string special_use_for(const std::string& well_known) {
    if (well_known == "sentitems") return "\\Sent";
    if (well_known == "drafts") return "\\Drafts";
    if (well_known == "deleteditems") return "\\Trash";
    if (well_known == "junkemail") return "\\Junk";
    if (well_known == "archive") return "\\Archive";
    return "";
}

// A display name as one IMAP path segment: '/' is the hierarchy delimiter, so it becomes U+2215.
std::string segment(const std::string& name) {
    std::string out;
    for (char c : name) {
        if (c == '/') out += "\xE2\x88\x95";
        else if (static_cast<unsigned char>(c) < 0x20) out += ' ';
        else out.push_back(c);
    }
    return out.empty() ? std::string("(unnamed)") : out;
}

using ascii::iequals;

}  // namespace

MailboxSync::MailboxSync(std::string mailbox, MailSource& source, StateStore& store, Clock clock)
    : mailbox_(std::move(mailbox)), source_(source), store_(store), clock_(std::move(clock)) {}

std::int64_t MailboxSync::now() const {
    if (clock_) return clock_();
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::vector<FolderRecord> MailboxSync::paths_for(const std::vector<RemoteFolder>& tree) {
    std::unordered_map<std::string, const RemoteFolder*> by_id;
    for (const auto& f : tree) by_id.emplace(f.id, &f);
    std::vector<FolderRecord> out;
    for (const auto& f : tree) {
        // Walk up to the root (bounded: a cycle in hostile data ends the walk).
        std::vector<const RemoteFolder*> chain = {&f};
        for (int depth = 0; depth < 64; ++depth) {
            auto it = by_id.find(chain.back()->parent_id);
            if (chain.back()->parent_id.empty() || it == by_id.end()) break;
            chain.push_back(it->second);
        }
        std::string path;
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
            std::string seg = (*it)->well_known == "inbox" ? std::string("INBOX") : segment((*it)->name);
            // Only the real inbox may be called INBOX (case-insensitively) at the top level.
            if (it == chain.rbegin() && (*it)->well_known != "inbox" && iequals(seg, "INBOX")) seg += "_";
            path += (path.empty() ? "" : "/") + seg;
        }
        FolderRecord r;
        r.folder_id = f.id;
        r.parent_id = f.parent_id;
        r.name = f.name;
        r.path = path;
        r.special_use = special_use_for(f.well_known);
        out.push_back(std::move(r));
    }
    return out;
}

std::optional<SourceError> MailboxSync::sync_folders() {
    std::lock_guard sync_lock(sync_mutex_);
    return sync_folders_locked();
}

std::optional<SourceError> MailboxSync::sync_folders_locked() {
    auto tree = source_.folders(mailbox_);
    if (auto* e = std::get_if<SourceError>(&tree)) return *e;
    // A folder gone from Graph (deleted over IMAP or in Outlook) loses its messages with it: sessions that
    // have it selected are told (every message expunged) and its shared snapshot is dropped.
    std::set<std::string> before;
    for (const auto& f : store_.folders(mailbox_)) before.insert(f.folder_id);
    auto now = store_.replace_folders(mailbox_, paths_for(std::get<0>(tree)));
    for (const auto& f : now) before.erase(f.folder_id);
    {
        std::lock_guard lock(mutex_);
        ++stats_.folder_syncs;
    }
    for (const auto& id : before) notify(id, FolderChange{});  // listeners re-read: no messages now
    return std::nullopt;
}

std::optional<SourceError> MailboxSync::sync_folder(const std::string& folder_id) {
    std::unique_lock sync_lock(sync_mutex_);
    return sync_folder_locked(folder_id);
}

std::optional<SourceError> MailboxSync::sync_folder_locked(const std::string& folder_id) {
    auto f = store_.folder(mailbox_, folder_id);
    if (!f) return SourceError{SourceError::Kind::NotFound, "unknown folder", {}};
    auto err = round(folder_id, f->delta_link.empty());
    if (err && err->kind == SourceError::Kind::SyncStateLost) {
        log::warn("sync", "delta token lost, resynchronising the folder",
                  {{"mailbox", mailbox_}, {"folder", f->path}, {"error", err->message}});
        store_.reset_delta(mailbox_, folder_id);
        {
            std::lock_guard lock(mutex_);
            ++stats_.full_resyncs;
        }
        err = round(folder_id, true);
    }
    return err;
}

std::optional<SourceError> MailboxSync::round(const std::string& folder_id, bool full) {
    auto f = store_.folder(mailbox_, folder_id);
    if (!f) return SourceError{SourceError::Kind::NotFound, "unknown folder", {}};
    std::string link = full ? std::string() : f->delta_link;
    std::vector<RemoteMessage> items;
    std::string delta_link;
    for (int pages = 0;; ++pages) {
        if (pages > 100000) return SourceError{SourceError::Kind::Transient, "delta round does not end", {}};
        auto page = source_.delta(mailbox_, folder_id, link);
        if (auto* e = std::get_if<SourceError>(&page)) return *e;
        auto& p = std::get<DeltaPage>(page);
        {
            std::lock_guard lock(mutex_);
            ++stats_.pages;
        }
        for (auto& m : p.items) items.push_back(std::move(m));
        if (!p.delta_link.empty()) {
            delta_link = p.delta_link;
            break;
        }
        link = p.next_link;
    }
    // The same message may appear more than once in a round: the last word counts.
    std::unordered_map<std::string, std::size_t> last;
    for (std::size_t i = 0; i < items.size(); ++i) last[items[i].graph_id] = i;
    std::vector<RemoteMessage> batch;
    batch.reserve(last.size());
    for (std::size_t i = 0; i < items.size(); ++i)
        if (last[items[i].graph_id] == i) batch.push_back(std::move(items[i]));
    // New UIDs follow arrival order.
    std::stable_sort(batch.begin(), batch.end(), [](const RemoteMessage& a, const RemoteMessage& b) {
        return a.internal_date < b.internal_date;
    });
    FolderChange change = store_.apply(mailbox_, folder_id, batch, full, delta_link, now());
    {
        std::lock_guard lock(mutex_);
        ++stats_.rounds;
    }
    if (!change.empty()) notify(folder_id, change);
    return std::nullopt;
}

std::optional<SourceError> MailboxSync::sync_all() {
    if (auto e = sync_folders()) return e;
    std::optional<SourceError> first;
    for (const auto& f : store_.folders(mailbox_)) {
        auto e = sync_folder(f.folder_id);
        if (!e) continue;
        if (e->kind == SourceError::Kind::Throttled) return e;
        if (!first) first = e;
    }
    return first;
}

int MailboxSync::subscribe(const std::string& folder_id, Listener listener) {
    std::lock_guard lock(mutex_);
    int id = next_listener_++;
    listeners_.emplace(id, std::make_pair(folder_id, std::move(listener)));
    return id;
}

void MailboxSync::unsubscribe(int id) {
    std::lock_guard lock(mutex_);
    listeners_.erase(id);
}

void MailboxSync::notify(const std::string& folder_id, const FolderChange& change) {
    std::vector<Listener> targets;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [id, entry] : listeners_)
            if (entry.first == folder_id || entry.first.empty()) targets.push_back(entry.second);
    }
    for (auto& l : targets) l(folder_id, change);
}

SyncStats MailboxSync::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

}  // namespace gb::sync
