// Message bodies (MIME from Graph's $value, CRLF-normalised) cached on disk, bounded in size.
//
// - One file per message, named by SHA-256(mailbox, immutable id): no client- or Graph-controlled text
//   ever reaches a path.
// - Self-checking: a small header with the length and a SHA-256 of the content; a file that does not
//   verify (a crash mid-write, a bit flip) is deleted and counts as a miss, so the body is fetched again.
//   It is a cache: files are written to a temp name and renamed, never fsync'd.
// - Bounded: least recently used files are evicted once the total exceeds max_bytes (sizes and use
//   order kept in memory, rebuilt from the directory at start, oldest mtime first).
// Thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/text.h"

namespace gb::sync {

struct BodyCacheStats {
    std::uint64_t hits = 0, misses = 0, evictions = 0, corrupt = 0;
    std::uint64_t bytes = 0, files = 0;
};

class BodyCache {
public:
    BodyCache(std::string dir, std::uint64_t max_bytes);
    std::optional<std::string> get(const std::string& mailbox, const std::string& graph_id);
    void put(const std::string& mailbox, const std::string& graph_id, const std::string& bytes);
    void erase(const std::string& mailbox, const std::string& graph_id);
    BodyCacheStats stats() const;

    static std::string key(const std::string& mailbox, const std::string& graph_id);

private:
    void touch_locked(const std::string& key, std::uint64_t size);
    void evict_locked();

    std::string dir_;
    std::uint64_t max_bytes_;
    mutable std::mutex mutex_;
    std::list<std::string> lru_;  // front = most recent
    struct Entry {
        std::uint64_t size;
        std::list<std::string>::iterator pos;
    };
    std::unordered_map<std::string, Entry> entries_;
    BodyCacheStats stats_;
};

// Bare LF and bare CR become CRLF (IMAP and POP3 serve CRLF lines; sizes are counted after this).
using gb::normalize_crlf;

}  // namespace gb::sync
