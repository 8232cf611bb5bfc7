#include "proxy/smtp/policy.h"

#include <algorithm>
#include <cctype>

#include "auth/password.h"

namespace gb::smtp {

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

Policy::Policy(const config::Config& cfg) : relays_(cfg.relays) {
    for (const auto& a : cfg.accounts) {
        Account acc;
        acc.login = a.login;
        acc.password_hash = a.password_hash;
        acc.app = a.app;
        acc.mailbox = lower(a.mailbox);
        for (const auto& s : a.send_as) acc.send_as.push_back(lower(s));
        accounts_.emplace(a.login, std::move(acc));
    }
    // Same cost parameters as real hashes, so an unknown login takes as long as a wrong password.
    dummy_hash_ = auth::hash_password("graphbridge-dummy-password");
}

// First come, first served: ticket t may start once all but kMaxConcurrentChecks - 1 of the checks before
// it have finished, so at most kMaxConcurrentChecks run, and a flood of IMAP logins cannot keep an SMTP
// or POP3 check waiting forever.
bool Policy::verify(const Secret& password, const std::string& hash) const {
    std::unique_lock lock(checks_mutex_);
    const std::uint64_t ticket = next_ticket_++;
    checks_cv_.wait(lock, [&] { return ticket < checks_finished_ + kMaxConcurrentChecks; });
    lock.unlock();
    struct Release {
        const Policy& p;
        ~Release() {
            {
                std::lock_guard l(p.checks_mutex_);
                ++p.checks_finished_;
            }
            p.checks_cv_.notify_all();
        }
    } release{*this};
    return auth::verify_password(password.reveal(), hash);
}

std::optional<Account> Policy::authenticate(std::string_view login, const Secret& password) const {
    auto it = accounts_.find(std::string(login));
    if (it == accounts_.end()) {
        (void)verify(password, dummy_hash_);
        return std::nullopt;
    }
    if (!verify(password, it->second.password_hash)) return std::nullopt;
    return it->second;
}

std::optional<SenderIdentity> Policy::relay_for(const std::string& client_ip) const {
    for (std::size_t i = 0; i < relays_.size(); ++i) {
        for (const auto& net : relays_[i].networks) {
            if (net.contains(client_ip))
                return SenderIdentity{SenderIdentity::Kind::Relay, "relay[" + std::to_string(i) + "]", relays_[i].app,
                                      lower(relays_[i].mailbox)};
        }
    }
    return std::nullopt;
}

Decision Policy::mail_from(const std::optional<Account>& account, const std::string& client_ip,
                           std::string_view reverse_path) const {
    std::string from = lower(reverse_path);
    if (account) {
        bool allowed = from.empty() || std::find(account->send_as.begin(), account->send_as.end(), from) !=
                                           account->send_as.end();
        if (!allowed)
            return {false, 553, "5.7.1",
                    "Sender address rejected: " + account->login + " may not send as that address", std::nullopt};
        return {true, 250, "2.1.0", "Sender OK",
                SenderIdentity{SenderIdentity::Kind::Account, account->login, account->app, account->mailbox}};
    }
    if (auto relay = relay_for(client_ip)) return {true, 250, "2.1.0", "Sender OK (relay)", relay};
    return {false, 530, "5.7.0", "Authentication required", std::nullopt};
}

std::chrono::milliseconds AuthThrottle::delay_for(const std::string& ip, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(ip);
    if (it == entries_.end()) return std::chrono::milliseconds(0);
    if (now - it->second.last > options_.window) {
        entries_.erase(it);
        return std::chrono::milliseconds(0);
    }
    int over = it->second.failures - options_.free_failures;
    if (over < 0) return std::chrono::milliseconds(0);
    auto delay = options_.base_delay * (1LL << std::min(over, 20));
    return std::min<std::chrono::milliseconds>(delay, options_.max_delay);
}

void AuthThrottle::record_failure(const std::string& ip, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(ip);
    if (it == entries_.end()) {
        if (entries_.size() >= options_.max_tracked) {
            // Forget the address seen longest ago.
            auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                           [](const auto& a, const auto& b) { return a.second.last < b.second.last; });
            entries_.erase(oldest);
        }
        it = entries_.emplace(ip, Entry{}).first;
    } else if (now - it->second.last > options_.window) {
        it->second.failures = 0;
    }
    ++it->second.failures;
    it->second.last = now;
}

void AuthThrottle::record_success(const std::string& ip) {
    // A user who mistyped is forgiven; an address already being delayed is not: a guesser who holds one
    // valid account could otherwise log into it between guesses and never be slowed down. The window
    // forgives those.
    std::lock_guard lock(mutex_);
    auto it = entries_.find(ip);
    if (it != entries_.end() && it->second.failures < options_.free_failures) entries_.erase(it);
}

std::size_t AuthThrottle::tracked() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

}  // namespace gb::smtp
