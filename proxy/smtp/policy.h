// Who may send, as whom: the relay's access policy (never an open relay).
//
// - An authenticated account sends as its Graph mailbox; MAIL FROM must be one of its send_as
//   addresses (553 5.7.1 otherwise). A null reverse path (<>) is taken as the account's mailbox.
// - A client in a [[relay]] network that does not authenticate sends as that rule's mailbox only; its
//   MAIL FROM is not an identity (printers put anything there), so it does not widen what is sent as.
// - Anyone else gets 530 5.7.0 at MAIL FROM.
// - Failed AUTH is throttled per client address with growing delays; nothing locks an account, so a
//   stranger cannot lock a device out.
// - Password checks (scrypt: 32 MiB and ~0.1 s of a core each) run at most kMaxConcurrentChecks at a time
//   across SMTP, IMAP and POP3, however many connections and threads ask: a login spray from strangers
//   costs bounded memory (IMAP checks on its 16 work threads: 512 MiB at once without the bound).
// - reload() (SIGHUP) swaps accounts and relay rules at once: sessions already open keep their
//   connection, but every later decision (MAIL FROM's send-as list, the relay networks, a session's
//   next command) sees the new rules; a session whose account was removed, moved to another mailbox or
//   app, or given a new password is no longer valid (still_valid()), and must log in again.
// Input from the network (logins, passwords, addresses, client IPs) is hostile; nothing here logs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/secret.h"
#include "proxy/config/config.h"

namespace gb::smtp {

struct Account {
    std::string login;
    std::string password_hash;
    std::string app;
    std::string mailbox;                // lower case
    std::vector<std::string> send_as;   // lower case
};

// Whom a session is allowed to send as (the identity bound to /users/{mailbox} and the header From).
struct SenderIdentity {
    enum class Kind { Account, Relay } kind = Kind::Account;
    std::string name;     // login, or "relay[N]"
    std::string app;
    std::string mailbox;  // the Graph mailbox messages are sent as
};

struct Decision {
    bool ok = false;
    int code = 250;
    std::string enhanced;  // "2.1.0", "5.7.1", ...
    std::string text;
    std::optional<SenderIdentity> identity;  // set when ok
};

class Policy {
public:
    explicit Policy(const config::Config& cfg);

    // Takes the accounts and relay rules of a new config (already validated), atomically.
    void reload(const config::Config& cfg);

    // Verifies a login and password (scrypt). Unknown logins cost the same as known ones.
    std::optional<Account> authenticate(std::string_view login, const Secret& password) const;

    // The relay rule covering a client address, if any.
    std::optional<SenderIdentity> relay_for(const std::string& client_ip) const;

    // MAIL FROM decision. `account` is the authenticated login (nullopt when not authenticated).
    Decision mail_from(const std::optional<Account>& account, const std::string& client_ip,
                       std::string_view reverse_path) const;

    // A snapshot of the accounts, by login.
    std::map<std::string, Account> accounts() const { return rules()->accounts; }

    // The account a session logged in as is still there, unchanged in password, app and mailbox. Its
    // send-as list may have changed: mail_from() always uses the current one.
    bool still_valid(const Account& account) const;

    static constexpr unsigned kMaxConcurrentChecks = 2;

private:
    bool verify(const Secret& password, const std::string& hash) const;  // waits for a free check slot

    struct Rules {
        std::map<std::string, Account> accounts;  // by login
        std::vector<config::RelayConfig> relays;
        // The account as it is now, if a session that logged in as `account` may still act for it (same
        // login, password hash, app and mailbox); nullptr otherwise.
        const Account* unchanged(const Account& account) const;
    };
    static std::shared_ptr<const Rules> make_rules(const config::Config& cfg);
    std::shared_ptr<const Rules> rules() const;
    static std::optional<SenderIdentity> relay_in(const Rules& rules, const std::string& client_ip);

    mutable std::mutex rules_mutex_;
    std::shared_ptr<const Rules> rules_;  // swapped whole by reload()
    std::string dummy_hash_;  // verified for unknown logins so timing does not reveal them
    mutable std::mutex checks_mutex_;
    mutable std::condition_variable checks_cv_;
    mutable std::uint64_t next_ticket_ = 0;      // password checks asked for
    mutable std::uint64_t checks_finished_ = 0;  // password checks done
};

// Per-address throttling of failed AUTH: after `free_failures` failures inside `window`, each further
// attempt from that address is answered only after a delay that doubles up to `max_delay`. Bounded:
// at most `max_tracked` addresses are remembered (the oldest are forgotten first).
class AuthThrottle {
public:
    using Clock = std::chrono::steady_clock;
    struct Options {
        int free_failures = 3;
        std::chrono::seconds window{600};
        std::chrono::milliseconds base_delay{1000};
        std::chrono::milliseconds max_delay{30000};
        std::size_t max_tracked = 10000;
    };
    AuthThrottle() : AuthThrottle(Options{}) {}
    explicit AuthThrottle(Options options) : options_(options) {}

    // How long to wait before answering this address's next AUTH attempt.
    std::chrono::milliseconds delay_for(const std::string& ip, Clock::time_point now = Clock::now());
    void record_failure(const std::string& ip, Clock::time_point now = Clock::now());
    void record_success(const std::string& ip);
    std::size_t tracked() const;

private:
    struct Entry {
        int failures = 0;
        Clock::time_point last;
    };
    Options options_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, Entry> entries_;
};

std::string lower(std::string_view s);

}  // namespace gb::smtp
