// Messages the bridge itself accepted for sending, so an IMAP APPEND of the same message to Sent Items
// (what mail clients do right after the SMTP 250) is recognised: Graph's sendMail saves a copy there, and
// a second one would be a duplicate (../shared/LESSONS.md; Proton's bridge does the same).
//
// A message is recognised by its Message-ID together with a SHA-256 of its body (everything after the
// header block, line ends normalised to CRLF, trailing empty lines ignored): the header block differs
// between what was sent (the bridge may add Bcc, rewrite From, add Date) and what the client stores, the
// body does not. Messages without a Message-ID are never matched. Recorded when the SMTP side accepts the
// message (the client's APPEND may come before Graph has even been called); entries live `window`
// (default 15 minutes) and at most `capacity` are kept, oldest dropped: bounded memory, and an old
// APPEND (an import) is never swallowed.
// Thread-safe: SMTP sessions record, IMAP sessions match.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace gb::sync {

class SentRegistry {
public:
    using Clock = std::chrono::steady_clock;

    // The recognisable identity of one message, computed while its bytes stream by (bounded memory:
    // the header block is kept up to 64 KiB, the body only hashed).
    class Fingerprint {
    public:
        Fingerprint();
        ~Fingerprint();
        Fingerprint(Fingerprint&&) noexcept;
        Fingerprint& operator=(Fingerprint&&) noexcept;
        void append(std::string_view bytes);
        // The Message-ID ("<...>") and the body hash; nullopt when the message has no Message-ID or its
        // header block is over the bound.
        std::optional<std::pair<std::string, std::string>> finish();

    private:
        void body(std::string_view bytes);
        struct State;
        std::unique_ptr<State> s_;
    };

    explicit SentRegistry(std::chrono::seconds window = std::chrono::minutes(15), std::size_t capacity = 10000);

    void record(const std::string& mailbox, Fingerprint fingerprint);
    void record(const std::string& mailbox, std::string_view mime);  // the whole message at once
    // The Message-ID (with angle brackets) when `mime` is a message recorded for `mailbox` within the window.
    std::optional<std::string> match(const std::string& mailbox, std::string_view mime);

    std::size_t size() const;

private:
    struct Entry {
        std::string key;  // mailbox \n message-id \n body hash
        std::string message_id;
        Clock::time_point at;
    };
    void expire(Clock::time_point now);

    std::chrono::seconds window_;
    std::size_t capacity_;
    mutable std::mutex mutex_;
    std::deque<Entry> entries_;
};

}  // namespace gb::sync
