#include "proxy/sync/sent_registry.h"

#include <algorithm>

#include "auth/crypto.h"
#include "common/ascii.h"

namespace gb::sync {

namespace {

// Where the body starts (after the empty line), or npos when there is no header/body separator.
std::size_t body_start(std::string_view m) {
    for (std::size_t i = 0; i < m.size(); ++i) {
        if (m[i] != '\n') continue;
        if (i + 1 < m.size() && m[i + 1] == '\n') return i + 2;
        if (i + 2 < m.size() && m[i + 1] == '\r' && m[i + 2] == '\n') return i + 3;
    }
    return std::string_view::npos;
}

// The body with every line end as CRLF and trailing empty lines dropped (transports add or drop them).
std::string normal_body(std::string_view b) {
    std::string out;
    out.reserve(b.size() + b.size() / 32);
    for (std::size_t i = 0; i < b.size(); ++i) {
        char c = b[i];
        if (c == '\r' && i + 1 < b.size() && b[i + 1] == '\n') continue;
        if (c == '\n' || c == '\r') out += "\r\n";
        else out.push_back(c);
    }
    while (out.size() >= 2 && out.compare(out.size() - 2, 2, "\r\n") == 0) out.resize(out.size() - 2);
    return out;
}

}  // namespace

SentRegistry::SentRegistry(std::chrono::seconds window, std::size_t capacity) : window_(window), capacity_(capacity) {}

std::string SentRegistry::message_id(std::string_view m) {
    std::size_t end = body_start(m);
    std::string_view head = m.substr(0, end == std::string_view::npos ? m.size() : end);
    std::size_t pos = 0;
    while (pos < head.size()) {
        std::size_t nl = head.find('\n', pos);
        if (nl == std::string_view::npos) nl = head.size();
        std::string_view line = head.substr(pos, nl - pos);
        if (line.size() >= 11 && ascii::iequals(line.substr(0, 11), "message-id:")) {
            // The value, with continuation lines (a folded Message-ID is legal).
            std::string value(line.substr(11));
            std::size_t next = nl + 1;
            while (next < head.size() && (head[next] == ' ' || head[next] == '\t')) {
                std::size_t e = head.find('\n', next);
                if (e == std::string_view::npos) e = head.size();
                value += head.substr(next, e - next);
                next = e + 1;
            }
            auto lt = value.find('<');
            auto gt = value.find('>', lt == std::string::npos ? 0 : lt);
            if (lt == std::string::npos || gt == std::string::npos || gt - lt < 3 || gt - lt > 998) return {};
            return value.substr(lt, gt - lt + 1);
        }
        pos = nl + 1;
    }
    return {};
}

std::optional<std::string> SentRegistry::key_of(const std::string& mailbox, std::string_view mime, std::string* id) {
    std::string mid = message_id(mime);
    if (mid.empty()) return std::nullopt;
    std::size_t b = body_start(mime);
    std::string body = normal_body(b == std::string_view::npos ? std::string_view() : mime.substr(b));
    if (id) *id = mid;
    return ascii::lower(mailbox) + "\n" + mid + "\n" + auth::sha256(body);
}

void SentRegistry::expire(Clock::time_point now) {
    while (!entries_.empty() && (entries_.size() > capacity_ || now - entries_.front().at > window_)) entries_.pop_front();
}

void SentRegistry::record(const std::string& mailbox, std::string_view mime) {
    std::string id;
    auto key = key_of(mailbox, mime, &id);
    if (!key) return;
    std::lock_guard lock(mutex_);
    auto now = Clock::now();
    entries_.push_back(Entry{std::move(*key), std::move(id), now});
    expire(now);
}

std::optional<std::string> SentRegistry::match(const std::string& mailbox, std::string_view mime) {
    auto key = key_of(mailbox, mime, nullptr);
    if (!key) return std::nullopt;
    std::lock_guard lock(mutex_);
    expire(Clock::now());
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
        if (it->key == *key) return it->message_id;
    return std::nullopt;
}

std::size_t SentRegistry::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

}  // namespace gb::sync
