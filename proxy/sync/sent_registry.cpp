#include "proxy/sync/sent_registry.h"

#include <openssl/evp.h>

#include <algorithm>

#include "common/ascii.h"
#include "graph/mail/imap_message.h"

namespace gb::sync {

namespace {

constexpr std::size_t kMaxHeader = 64 * 1024;

// The Message-ID of a header block ("<...>"), or "".
std::string message_id_of(std::string_view head) {
    auto value = mail::imap::header_field(head, "Message-ID");
    if (!value) return {};
    auto lt = value->find('<');
    auto gt = value->find('>', lt == std::string::npos ? 0 : lt);
    if (lt == std::string::npos || gt == std::string::npos || gt - lt < 3 || gt - lt > 998) return {};
    return value->substr(lt, gt - lt + 1);
}

}  // namespace

struct SentRegistry::Fingerprint::State {
    bool in_body = false, broken = false, last_cr = false;
    std::string header;         // the header block so far
    std::size_t pending = 0;    // line ends not yet hashed (dropped if nothing follows them)
    EVP_MD_CTX* ctx = nullptr;
    std::string out;            // hash input waiting for one EVP update
    State() : ctx(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr); }
    ~State() { EVP_MD_CTX_free(ctx); }
    void flush() {
        EVP_DigestUpdate(ctx, out.data(), out.size());
        out.clear();
    }
};

SentRegistry::Fingerprint::Fingerprint() : s_(std::make_unique<State>()) {}
SentRegistry::Fingerprint::~Fingerprint() = default;
SentRegistry::Fingerprint::Fingerprint(Fingerprint&&) noexcept = default;
SentRegistry::Fingerprint& SentRegistry::Fingerprint::operator=(Fingerprint&&) noexcept = default;

void SentRegistry::Fingerprint::append(std::string_view bytes) {
    auto& s = *s_;
    if (s.broken) return;
    if (!s.in_body) {
        // Find the empty line that ends the header block, also when it straddles two pieces.
        std::size_t before = s.header.size();
        std::size_t take = std::min(bytes.size(), kMaxHeader + 4 - std::min(before, kMaxHeader + 4));
        s.header.append(bytes.substr(0, take));
        std::size_t from = before > 3 ? before - 3 : 0;
        std::size_t end = std::string::npos;
        for (std::size_t i = from; i + 1 < s.header.size(); ++i) {
            if (s.header[i] != '\n') continue;
            if (s.header[i + 1] == '\n') end = i + 2;
            else if (i + 2 < s.header.size() && s.header[i + 1] == '\r' && s.header[i + 2] == '\n') end = i + 3;
            if (end != std::string::npos) break;
        }
        if (end == std::string::npos) {
            if (s.header.size() > kMaxHeader) s.broken = true;
            return;
        }
        s.in_body = true;
        std::string rest = s.header.substr(end);
        s.header.resize(end);
        body(rest);
        body(bytes.substr(take));
        return;
    }
    body(bytes);
}

// Line ends become CRLF; trailing line ends are held back until something follows them.
void SentRegistry::Fingerprint::body(std::string_view bytes) {
    auto& s = *s_;
    for (char c : bytes) {
        if (s.last_cr) {
            s.last_cr = false;
            ++s.pending;
            if (c == '\n') continue;
        }
        if (c == '\r') {
            s.last_cr = true;
        } else if (c == '\n') {
            ++s.pending;
        } else {
            for (; s.pending > 0; --s.pending) s.out += "\r\n";
            s.out.push_back(c);
            if (s.out.size() >= 64 * 1024) s.flush();
        }
    }
}

std::optional<std::pair<std::string, std::string>> SentRegistry::Fingerprint::finish() {
    auto& s = *s_;
    if (s.broken) return std::nullopt;
    std::string id = message_id_of(s.header);
    if (id.empty()) return std::nullopt;
    s.flush();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(s.ctx, md, &len);
    return std::make_pair(id, std::string(reinterpret_cast<const char*>(md), len));
}

SentRegistry::SentRegistry(std::chrono::seconds window, std::size_t capacity) : window_(window), capacity_(capacity) {}

void SentRegistry::expire(Clock::time_point now) {
    while (!entries_.empty() && (entries_.size() > capacity_ || now - entries_.front().at > window_)) entries_.pop_front();
}

void SentRegistry::record(const std::string& mailbox, Fingerprint fingerprint) {
    auto f = fingerprint.finish();
    if (!f) return;
    std::lock_guard lock(mutex_);
    auto now = Clock::now();
    entries_.push_back(Entry{ascii::lower(mailbox) + "\n" + f->first + "\n" + f->second, f->first, now});
    expire(now);
}

void SentRegistry::record(const std::string& mailbox, std::string_view mime) {
    Fingerprint f;
    f.append(mime);
    record(mailbox, std::move(f));
}

std::optional<std::string> SentRegistry::match(const std::string& mailbox, std::string_view mime) {
    Fingerprint fp;
    fp.append(mime);
    auto f = fp.finish();
    if (!f) return std::nullopt;
    std::string key = ascii::lower(mailbox) + "\n" + f->first + "\n" + f->second;
    std::lock_guard lock(mutex_);
    expire(Clock::now());
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
        if (it->key == key) return it->message_id;
    return std::nullopt;
}

std::size_t SentRegistry::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

}  // namespace gb::sync
