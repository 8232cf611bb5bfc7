// Messages the bridge itself just sent through Graph, so an IMAP APPEND of the same message to Sent
// Items (what mail clients do after sending over SMTP) is recognised: Graph's sendMail already saved a
// copy there, and a second one would be a duplicate (../shared/LESSONS.md, Proton's bridge does the same).
//
// A message is recognised by its Message-ID together with a SHA-256 of its body (everything after the
// header block, line ends normalised to CRLF): the header block differs between what was sent (the
// bridge may add Bcc, rewrite From, add Date) and what the client stores, the body does not. Messages
// without a Message-ID are never matched. Entries live `window` (default 15 minutes) and at most
// `capacity` are kept (oldest dropped): bounded memory, and an old APPEND (an import) is never swallowed.
// Thread-safe: the SMTP delivery workers record, IMAP sessions match.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace gb::sync {

class SentRegistry {
public:
    using Clock = std::chrono::steady_clock;
    explicit SentRegistry(std::chrono::seconds window = std::chrono::minutes(15), std::size_t capacity = 10000);

    // After Graph accepted `mime` for sending from `mailbox` (lower-case address).
    void record(const std::string& mailbox, std::string_view mime);
    // The Message-ID (with angle brackets) when `mime` is a message recorded for `mailbox` within the window.
    std::optional<std::string> match(const std::string& mailbox, std::string_view mime);

    std::size_t size() const;

    // The Message-ID field of a message ("<...>"), or "" (exposed for tests).
    static std::string message_id(std::string_view mime);

private:
    struct Entry {
        std::string key;  // mailbox \n message-id \n body hash
        std::string message_id;
        Clock::time_point at;
    };
    static std::optional<std::string> key_of(const std::string& mailbox, std::string_view mime, std::string* id);
    void expire(Clock::time_point now);

    std::chrono::seconds window_;
    std::size_t capacity_;
    mutable std::mutex mutex_;
    std::deque<Entry> entries_;
};

}  // namespace gb::sync
