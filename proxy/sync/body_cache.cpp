#include "proxy/sync/body_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "auth/crypto.h"

namespace gb::sync {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'G', 'B', 'B', 'O', 'D', 'Y', '1', '\n'};
constexpr std::size_t kHeader = 8 + 8 + 32;  // magic, u64 length (LE), SHA-256

std::string le64(std::uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xFF);
    return s;
}

std::uint64_t read_le64(const char* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return v;
}

}  // namespace

std::string BodyCache::key(const std::string& mailbox, const std::string& graph_id) {
    return auth::hex_lower(auth::sha256(mailbox + '\n' + graph_id));
}

BodyCache::BodyCache(std::string dir, std::uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {
    fs::create_directories(dir_);
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace);
    struct Found {
        std::string name;
        std::uint64_t size;
        fs::file_time_type mtime;
    };
    std::vector<Found> found;
    for (const auto& e : fs::directory_iterator(dir_)) {
        std::string name = e.path().filename().string();
        std::error_code ec;
        if (name.size() != 64 || !e.is_regular_file(ec)) {
            fs::remove(e.path(), ec);  // temp files of an interrupted put, strays
            continue;
        }
        found.push_back({name, static_cast<std::uint64_t>(e.file_size(ec)), e.last_write_time(ec)});
    }
    std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.mtime > b.mtime; });
    std::lock_guard lock(mutex_);
    for (const auto& f : found) {
        lru_.push_back(f.name);
        entries_[f.name] = Entry{f.size, std::prev(lru_.end())};
        stats_.bytes += f.size;
        ++stats_.files;
    }
    evict_locked();
}

std::optional<std::string> BodyCache::get(const std::string& mailbox, const std::string& graph_id) {
    std::string k = key(mailbox, graph_id);
    std::string path = dir_ + "/" + k;
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        std::lock_guard lock(mutex_);
        ++stats_.misses;
        return std::nullopt;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    std::string data = ss.str();
    bool ok = data.size() >= kHeader && std::memcmp(data.data(), kMagic, 8) == 0 &&
              read_le64(data.data() + 8) == data.size() - kHeader;
    std::string body;
    if (ok) {
        body = data.substr(kHeader);
        ok = auth::sha256(body) == data.substr(16, 32);
    }
    std::lock_guard lock(mutex_);
    if (!ok) {
        ++stats_.corrupt;
        ++stats_.misses;
        ::unlink(path.c_str());
        if (auto it = entries_.find(k); it != entries_.end()) {
            stats_.bytes -= it->second.size;
            --stats_.files;
            lru_.erase(it->second.pos);
            entries_.erase(it);
        }
        return std::nullopt;
    }
    ++stats_.hits;
    touch_locked(k, data.size());
    return body;
}

void BodyCache::put(const std::string& mailbox, const std::string& graph_id, const std::string& bytes) {
    if (bytes.size() + kHeader > max_bytes_) return;  // would evict everything else
    std::string k = key(mailbox, graph_id);
    std::string tmp = dir_ + "/." + k + ".tmp" + std::to_string(::getpid());
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(kMagic, 8);
        out << le64(bytes.size()) << auth::sha256(bytes);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!out) {
            ::unlink(tmp.c_str());
            return;  // a full disk makes it a miss next time, nothing worse
        }
    }
    if (::rename(tmp.c_str(), (dir_ + "/" + k).c_str()) != 0) {
        ::unlink(tmp.c_str());
        return;
    }
    std::lock_guard lock(mutex_);
    touch_locked(k, bytes.size() + kHeader);
    evict_locked();
}

void BodyCache::erase(const std::string& mailbox, const std::string& graph_id) {
    std::string k = key(mailbox, graph_id);
    ::unlink((dir_ + "/" + k).c_str());
    std::lock_guard lock(mutex_);
    if (auto it = entries_.find(k); it != entries_.end()) {
        stats_.bytes -= it->second.size;
        --stats_.files;
        lru_.erase(it->second.pos);
        entries_.erase(it);
    }
}

BodyCacheStats BodyCache::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

void BodyCache::touch_locked(const std::string& k, std::uint64_t size) {
    auto it = entries_.find(k);
    if (it != entries_.end()) {
        stats_.bytes -= it->second.size;
        lru_.erase(it->second.pos);
        entries_.erase(it);
    } else {
        ++stats_.files;
    }
    lru_.push_front(k);
    entries_[k] = Entry{size, lru_.begin()};
    stats_.bytes += size;
}

void BodyCache::evict_locked() {
    while (stats_.bytes > max_bytes_ && !lru_.empty()) {
        std::string victim = lru_.back();
        lru_.pop_back();
        auto it = entries_.find(victim);
        if (it != entries_.end()) {
            stats_.bytes -= it->second.size;
            entries_.erase(it);
        }
        --stats_.files;
        ++stats_.evictions;
        ::unlink((dir_ + "/" + victim).c_str());
    }
}

}  // namespace gb::sync
