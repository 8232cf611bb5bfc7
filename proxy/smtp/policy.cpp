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

std::shared_ptr<const Policy::Rules> Policy::make_rules(const config::Config& cfg) {
    auto rules = std::make_shared<Rules>();
    rules->relays = cfg.relays;
    for (const auto& a : cfg.accounts) {
        Account acc;
        acc.login = a.login;
        acc.password_hash = a.password_hash;
        acc.app = a.app;
        acc.mailbox = lower(a.mailbox);
        for (const auto& s : a.send_as) acc.send_as.push_back(lower(s));
        rules->accounts.emplace(a.login, std::move(acc));
    }
    return rules;
}

Policy::Policy(const config::Config& cfg) : rules_(make_rules(cfg)) {
    // Same cost parameters as real hashes, so an unknown login takes as long as a wrong password.
    dummy_hash_ = auth::hash_password("graphbridge-dummy-password");
}

void Policy::reload(const config::Config& cfg) {
    auto rules = make_rules(cfg);
    std::lock_guard lock(rules_mutex_);
    rules_ = std::move(rules);
}

std::shared_ptr<const Policy::Rules> Policy::rules() const {
    std::lock_guard lock(rules_mutex_);
    return rules_;
}

const Account* Policy::Rules::unchanged(const Account& account) const {
    auto it = accounts.find(account.login);
    if (it == accounts.end() || it->second.password_hash != account.password_hash || it->second.app != account.app ||
        it->second.mailbox != account.mailbox)
        return nullptr;
    return &it->second;
}

bool Policy::still_valid(const Account& account) const { return rules()->unchanged(account) != nullptr; }

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
    auto rules = this->rules();  // the account as it is when the check starts
    auto it = rules->accounts.find(std::string(login));
    if (it == rules->accounts.end()) {
        (void)verify(password, dummy_hash_);
        return std::nullopt;
    }
    if (!verify(password, it->second.password_hash)) return std::nullopt;
    return it->second;
}

std::optional<SenderIdentity> Policy::relay_in(const Rules& rules, const std::string& client_ip) {
    const auto& relays = rules.relays;
    for (std::size_t i = 0; i < relays.size(); ++i) {
        for (const auto& net : relays[i].networks) {
            if (net.contains(client_ip))
                return SenderIdentity{SenderIdentity::Kind::Relay, "relay[" + std::to_string(i) + "]", relays[i].app,
                                      lower(relays[i].mailbox)};
        }
    }
    return std::nullopt;
}

std::optional<SenderIdentity> Policy::relay_for(const std::string& client_ip) const {
    return relay_in(*rules(), client_ip);
}

Decision Policy::mail_from(const std::optional<Account>& account, const std::string& client_ip,
                           std::string_view reverse_path) const {
    std::string from = lower(reverse_path);
    auto rules = this->rules();
    if (account) {
        // The rules of now, not of the login: a reload may have removed the account, changed its
        // password (the session must log in again) or its send-as list (applies at once).
        const Account* current = rules->unchanged(*account);
        if (!current)
            return {false, 530, "5.7.0", "Authentication required: the account changed since this session logged in",
                    std::nullopt};
        const Account& now = *current;
        bool allowed = from.empty() || std::find(now.send_as.begin(), now.send_as.end(), from) != now.send_as.end();
        if (!allowed)
            return {false, 553, "5.7.1",
                    "Sender address rejected: " + now.login + " may not send as that address", std::nullopt};
        return {true, 250, "2.1.0", "Sender OK",
                SenderIdentity{SenderIdentity::Kind::Account, now.login, now.app, now.mailbox}};
    }
    if (auto relay = relay_in(*rules, client_ip)) return {true, 250, "2.1.0", "Sender OK (relay)", relay};
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
