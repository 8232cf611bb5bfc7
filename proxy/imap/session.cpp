#include "proxy/imap/session.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <set>

#include "auth/crypto.h"
#include "common/ascii.h"
#include "protocol/imap/imap_format.h"
#include "protocol/imap/mutf7.h"
#include "proxy/imap/selected.h"

namespace gb::imap {

namespace pi = protocol::imap;

namespace {

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

using ascii::iequals;
using ascii::upper;

}  // namespace

std::string imap_date_time(std::int64_t t) {
    std::time_t secs = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    return fmt::format("{:02}-{}-{:04} {:02}:{:02}:{:02} +0000", tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900,
                       tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::optional<std::int64_t> parse_imap_date(std::string_view s) {
    // date-day "-" date-month "-" date-year, day 1 or 2 digits; optionally quoted by the caller already.
    auto d1 = s.find('-');
    if (d1 == std::string_view::npos || d1 == 0 || d1 > 2) return std::nullopt;
    auto d2 = s.find('-', d1 + 1);
    if (d2 == std::string_view::npos || d2 != d1 + 4 || s.size() != d2 + 5) return std::nullopt;
    int day = 0;
    for (std::size_t i = 0; i < d1; ++i) {
        if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
        day = day * 10 + (s[i] - '0');
    }
    int month = -1;
    for (int i = 0; i < 12; ++i)
        if (iequals(s.substr(d1 + 1, 3), kMonths[i])) month = i;
    int year = 0;
    for (std::size_t i = d2 + 1; i < s.size(); ++i) {
        if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
        year = year * 10 + (s[i] - '0');
    }
    if (month < 0 || day < 1 || day > 31 || year < 1900) return std::nullopt;
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month;
    tm.tm_mday = day;
    return static_cast<std::int64_t>(timegm(&tm));
}

std::string inbox_spelling(std::string name) {
    if (iequals(name, "INBOX")) return "INBOX";
    if (name.size() > 6 && iequals(name.substr(0, 6), "INBOX/")) return "INBOX" + name.substr(5);
    return name;
}

bool list_match(std::string_view p, std::string_view n) {
    // Iterative wildcard match with backtracking on the last '*' and the last '%'.
    std::size_t pi = 0, ni = 0, star_p = std::string_view::npos, star_n = 0;
    std::size_t pct_p = std::string_view::npos, pct_n = 0;
    while (ni < n.size()) {
        if (pi < p.size() && p[pi] == '*') {
            star_p = pi++;
            star_n = ni;
            pct_p = std::string_view::npos;
        } else if (pi < p.size() && p[pi] == '%') {
            pct_p = pi++;
            pct_n = ni;
        } else if (pi < p.size() && p[pi] == n[ni]) {
            ++pi;
            ++ni;
        } else if (pct_p != std::string_view::npos && n[pct_n] != '/') {
            pi = pct_p + 1;
            ni = ++pct_n;
        } else if (star_p != std::string_view::npos) {
            pi = star_p + 1;
            ni = ++star_n;
            pct_p = std::string_view::npos;
        } else {
            return false;
        }
    }
    while (pi < p.size() && (p[pi] == '*' || p[pi] == '%')) ++pi;
    return pi == p.size();
}

// ---------------------------------------------------------------------------------------------------

// Before login the reader's limits are narrow: nothing a client legitimately sends then (LOGIN, possibly
// with literals, AUTHENTICATE, ID, CAPABILITY, STARTTLS) comes near them, and a stranger must not make
// the bridge hold 64 MiB literals per connection (times max_connections) without a password.
pi::Limits Session::pre_login_limits() {
    pi::Limits l;
    l.max_line = 16 * 1024;
    l.max_literal = 4096;
    l.max_nonsync_literal = 4096;
    l.max_command = 32 * 1024;
    return l;
}

Session::Session(SessionServices services, SessionConfig config)
    : svc_(services), cfg_(std::move(config)) {
    reader_.set_limits(pre_login_limits());
    ctx_.conn_id = fmt::format("I{}", cfg_.conn_id);
    out(fmt::format("* OK [CAPABILITY {}] graphbridge IMAP4rev1 ready\r\n", capabilities()));
}

Session::~Session() {
    if (idle_tag_ && svc_.idling) --*svc_.idling;
    if (account_ && svc_.authenticated) --*svc_.authenticated;
    deselect();
}

std::string Session::take_output() {
    std::string o = std::move(output_);
    output_.clear();
    return o;
}

bool Session::has_output() const { return !output_.empty(); }

std::chrono::milliseconds Session::take_delay() {
    auto d = delay_;
    delay_ = std::chrono::milliseconds(0);
    return d;
}

void Session::set_wake(std::function<void()> wake) {
    std::lock_guard lock(changes_->mutex);
    changes_->wake = std::move(wake);
}

void Session::out(std::string_view text) { output_.append(text); }
void Session::untagged(std::string_view text) {
    output_ += "* ";
    output_.append(text);
    output_ += "\r\n";
}
void Session::tagged(const std::string& tag, std::string_view text) {
    output_ += tag;
    output_ += ' ';
    output_.append(text);
    output_ += "\r\n";
}
void Session::bad(const std::string& tag, std::string_view text) { tagged(tag, std::string("BAD ") + std::string(text)); }
void Session::no(const std::string& tag, std::string_view text) { tagged(tag, std::string("NO ") + std::string(text)); }
void Session::ok(const std::string& tag, std::string_view text) { tagged(tag, std::string("OK ") + std::string(text)); }

bool Session::login_allowed() const { return cfg_.tls_active || cfg_.loopback; }

std::string Session::capabilities() const {
    std::string c = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CONDSTORE QRESYNC CHILDREN "
                    "SPECIAL-USE LIST-EXTENDED LIST-STATUS";
    if (cfg_.tls_available && !cfg_.tls_active && !account_) c += " STARTTLS";
    if (!account_) c += login_allowed() ? " AUTH=PLAIN" : " LOGINDISABLED";
    return c;
}

void Session::internal_error(std::string_view what) {
    log::Logger::instance().write(log::Level::Error, "imap", &ctx_, "internal error, closing the connection",
                                  {{"error", std::string(what)}});
    job_.reset();
    // The state database busy (another process holding it past the busy timeout) or failing: the
    // client may retry later; anything else is our bug.
    if (what.find("state database") != std::string_view::npos)
        untagged("BYE [UNAVAILABLE] The mailbox state database is unavailable; please reconnect later");
    else
        untagged("BYE [SERVERBUG] Internal error; please reconnect");
    close_ = true;
}

void Session::shutdown() {
    if (close_) return;
    if (idle_tag_ && selected_) svc_.mail->set_fast(selected_->watch_id, false);
    untagged("BYE Server shutting down; please reconnect");
    close_ = true;
}

std::string Session::selected_path() const { return selected_ ? selected_->folder.path : std::string(); }

// ---------------------------------------------------------------------------------------------------

void Session::feed(std::string_view bytes) {
    if (close_) return;
    reader_.feed(bytes);
    process();
}

void Session::step() {
    if (job_) run_fetch();
    if (!job_) process();
}

void Session::process() {
    while (!close_ && !starttls_ && !job_) {
        auto ev = reader_.next();
        if (!ev) break;
        if (auto* c = std::get_if<pi::Command>(&*ev)) {
            handle(*c);
        } else if (std::get_if<pi::Continue>(&*ev)) {
            out("+ Ready for literal\r\n");
        } else if (auto* e = std::get_if<pi::Error>(&*ev)) {
            if (e->fatal) {
                untagged(std::string("BYE ") + e->text);
                close_ = true;
                break;
            }
            if (auth_tag_) {  // a bad continuation line ends the exchange
                bad(*auth_tag_, e->text);
                auth_tag_.reset();
            } else if (idle_tag_) {
                bad(*idle_tag_, "Expected DONE");
                idle_tag_.reset();
                if (svc_.idling) --*svc_.idling;
                if (selected_) svc_.mail->set_fast(selected_->watch_id, false);
            } else {
                bad(e->tag.empty() ? "*" : e->tag, e->text);
            }
        } else if (auto* r = std::get_if<pi::RawLine>(&*ev)) {
            handle_raw_line(r->text);
        }
    }
}

void Session::handle_raw_line(const std::string& line) {
    if (idle_tag_) {
        std::string tag = *idle_tag_;
        idle_tag_.reset();
        if (svc_.idling) --*svc_.idling;
        if (selected_) svc_.mail->set_fast(selected_->watch_id, false);
        if (!iequals(line, "DONE")) {
            bad(tag, "Expected DONE");
            return;
        }
        flush_updates(true);
        ok(tag, "IDLE terminated");
        return;
    }
    if (auth_tag_) {
        std::string tag = *auth_tag_;
        auth_tag_.reset();
        if (line == "*") {
            bad(tag, "Authentication cancelled");
            return;
        }
        auto b64 = auth::base64_decode(line);
        if (!b64) {
            bad(tag, "Invalid base64 in the AUTHENTICATE response");
            return;
        }
        std::string decoded = std::move(*b64);
        // authzid NUL authcid NUL password
        auto z1 = decoded.find('\0');
        auto z2 = z1 == std::string::npos ? std::string::npos : decoded.find('\0', z1 + 1);
        if (z2 == std::string::npos) {
            bad(tag, "Malformed PLAIN response");
            return;
        }
        std::string authzid = decoded.substr(0, z1), user = decoded.substr(z1 + 1, z2 - z1 - 1);
        Secret password(decoded.substr(z2 + 1));
        std::fill(decoded.begin(), decoded.end(), '\0');
        if (!authzid.empty() && authzid != user) {
            no(tag, "[AUTHORIZATIONFAILED] Acting as another user is not supported");
            return;
        }
        auto account = svc_.policy->authenticate(user, password);
        finish_login(tag, std::move(account), user);
        return;
    }
    bad("*", "Unexpected line");
}

// The command table (RFC 3501 section 6, states per section 3): the states each command is valid in and
// what runs it. Pipelining (RFC 3501 5.5): commands run one after another in arrival order; the four that
// end a pipeline enforce it themselves: STARTTLS and LOGOUT stop the session reading (wants_starttls /
// wants_close), AUTHENTICATE without an initial response and IDLE put the reader in raw-line mode, so
// the next line is SASL data or DONE, never a command.
namespace {
enum StateBit : unsigned { kNotAuth = 1, kAuth = 2, kSelected = 4, kAuthOrSelected = kAuth | kSelected,
                           kAnyState = kNotAuth | kAuth | kSelected };
}  // namespace

void Session::handle(const Command& c) {
    struct Row {
        const char* name;
        unsigned states;
        void (*run)(Session&, const Command&);
    };
    static const Row kTable[] = {
        {"CAPABILITY", kAnyState, [](Session& s, const Command& x) { s.cmd_capability(x); }},
        {"NOOP", kAnyState, [](Session& s, const Command& x) { s.cmd_noop(x); }},
        {"LOGOUT", kAnyState, [](Session& s, const Command& x) { s.cmd_logout(x); }},
        {"ID", kAnyState, [](Session& s, const Command& x) { s.cmd_id(x); }},
        {"STARTTLS", kNotAuth, [](Session& s, const Command& x) { s.cmd_starttls(x); }},
        {"LOGIN", kNotAuth, [](Session& s, const Command& x) { s.cmd_login(x); }},
        {"AUTHENTICATE", kNotAuth, [](Session& s, const Command& x) { s.cmd_authenticate(x); }},
        {"ENABLE", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_enable(x); }},
        {"NAMESPACE", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_namespace(x); }},
        {"LIST", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_list(x, false); }},
        {"LSUB", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_list(x, true); }},
        {"STATUS", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_status(x); }},
        {"SELECT", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_select(x, false); }},
        {"EXAMINE", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_select(x, true); }},
        {"IDLE", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_idle(x); }},
        {"APPEND", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_append(x); }},
        {"CREATE", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_create(x); }},
        {"DELETE", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_delete(x); }},
        {"RENAME", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_rename(x); }},
        {"SUBSCRIBE", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_subscribe(x, true); }},
        {"UNSUBSCRIBE", kAuthOrSelected, [](Session& s, const Command& x) { s.cmd_subscribe(x, false); }},
        {"CHECK", kSelected, [](Session& s, const Command& x) { s.cmd_check(x); }},
        {"CLOSE", kSelected, [](Session& s, const Command& x) { s.cmd_close(x, false); }},
        {"UNSELECT", kSelected, [](Session& s, const Command& x) { s.cmd_close(x, true); }},
        {"FETCH", kSelected, [](Session& s, const Command& x) { s.cmd_fetch(x, false, 0); }},
        {"SEARCH", kSelected, [](Session& s, const Command& x) { s.cmd_search(x, false, 0); }},
        {"UID", kSelected, [](Session& s, const Command& x) { s.cmd_uid(x); }},
        {"STORE", kSelected, [](Session& s, const Command& x) { s.cmd_store(x, false, 0); }},
        {"COPY", kSelected, [](Session& s, const Command& x) { s.cmd_copy(x, false, 0, false); }},
        {"MOVE", kSelected, [](Session& s, const Command& x) { s.cmd_copy(x, false, 0, true); }},
        {"EXPUNGE", kSelected, [](Session& s, const Command& x) { s.cmd_expunge(x, false, 0); }},
    };
    const Row* row = nullptr;
    for (const auto& r : kTable)
        if (c.name == r.name) row = &r;
    if (!row) return bad(c.tag, "Unknown command");
    // A reload (SIGHUP) may have removed the account or changed its password or mailbox since the login.
    if (account_ && svc_.policy && !svc_.policy->still_valid(*account_)) {
        log::Logger::instance().write(log::Level::Info, "imap", &ctx_, "session ended: the account changed",
                                      {{"login", log::client_text(account_->login)}});
        untagged("BYE The account changed (configuration reloaded); please log in again");
        close_ = true;
        return;
    }
    unsigned state = !account_ ? kNotAuth : selected_ ? kSelected : kAuth;
    if (!(row->states & state)) {
        if (state == kNotAuth) return bad(c.tag, "Log in first");
        if (row->states == kNotAuth) return bad(c.tag, "Already authenticated");
        return bad(c.tag, "No mailbox selected");
    }
    row->run(*this, c);
}

void Session::cmd_capability(const Command& c) {
    if (!c.args.empty()) return bad(c.tag, "CAPABILITY takes no arguments");
    untagged("CAPABILITY " + capabilities());
    flush_updates(true);
    ok(c.tag, "CAPABILITY completed");
}

void Session::cmd_noop(const Command& c) {
    if (!c.args.empty()) return bad(c.tag, "NOOP takes no arguments");
    if (account_) svc_.mail->poke(account_->mailbox);
    flush_updates(true);
    ok(c.tag, "NOOP completed");
}

void Session::cmd_logout(const Command& c) {
    if (!c.args.empty()) return bad(c.tag, "LOGOUT takes no arguments");
    untagged("BYE graphbridge logging out");
    ok(c.tag, "LOGOUT completed");
    close_ = true;
}

void Session::cmd_starttls(const Command& c) {
    if (!c.args.empty()) return bad(c.tag, "STARTTLS takes no arguments");
    if (!cfg_.tls_available || cfg_.tls_active) return bad(c.tag, "TLS is not available on this connection");
    ok(c.tag, "Begin TLS negotiation now");
    starttls_ = true;
}

void Session::tls_started() {
    starttls_ = false;
    cfg_.tls_active = true;
    // RFC 3501 6.2.1 / CVE-2011-0411: nothing the client sent before the handshake is executed after it.
    reader_ = pi::CommandReader(pre_login_limits());
}

void Session::cmd_login(const Command& c) {
    if (c.args.size() != 2) return bad(c.tag, "LOGIN needs a user name and a password");
    auto user = c.args[0].astring();
    auto pass = c.args[1].astring();
    if (!user || !pass) return bad(c.tag, "LOGIN needs a user name and a password");
    if (!login_allowed()) return no(c.tag, "[PRIVACYREQUIRED] Use STARTTLS or the TLS port before LOGIN");
    Secret password{std::string(*pass)};
    auto account = svc_.policy->authenticate(*user, password);
    finish_login(c.tag, std::move(account), std::string(*user));
}

void Session::cmd_authenticate(const Command& c) {
    if (c.args.empty() || c.args.size() > 2 || !c.args[0].is_atom()) return bad(c.tag, "AUTHENTICATE needs a mechanism");
    if (!c.args[0].is_atom("PLAIN")) return no(c.tag, "[CANNOT] Only PLAIN is supported");
    if (!login_allowed()) return no(c.tag, "[PRIVACYREQUIRED] Use STARTTLS or the TLS port before AUTHENTICATE");
    auth_tag_ = c.tag;
    if (c.args.size() == 2) {  // SASL-IR (RFC 4959); "=" is an empty response
        auto ir = c.args[1].astring();
        if (!ir) {
            auth_tag_.reset();
            return bad(c.tag, "Invalid initial response");
        }
        handle_raw_line(*ir == "=" ? std::string() : std::string(*ir));
        return;
    }
    out("+ \r\n");
    reader_.set_raw_line_mode(true);
}

void Session::finish_login(const std::string& tag, std::optional<smtp::Account> account, const std::string& user) {
    // The answer waits for the throttle's delay whatever the outcome (as in SMTP and POP3): were only
    // failures delayed, an early answer would tell a guesser it hit, and it would hang up on the rest.
    auto delay = svc_.throttle ? svc_.throttle->delay_for(cfg_.client_ip) : std::chrono::milliseconds(0);
    delay_ = delay;
    if (!account) {
        if (svc_.throttle) svc_.throttle->record_failure(cfg_.client_ip);
        if (svc_.auth_failures) ++*svc_.auth_failures;
        log::Logger::instance().write(log::Level::Warn, "imap", &ctx_, "authentication failed",
                                      {{"ip", cfg_.client_ip}, {"login", log::client_text(user)}});
        no(tag, "[AUTHENTICATIONFAILED] Invalid credentials");
        if (++auth_failures_ >= 3) {
            untagged("BYE Too many failed logins");
            close_ = true;
        }
        return;
    }
    if (svc_.throttle) svc_.throttle->record_success(cfg_.client_ip);
    if (auto e = svc_.mail->ensure_synced(account->mailbox)) {
        log::Logger::instance().write(log::Level::Error, "imap", &ctx_, "mailbox unavailable",
                                      {{"mailbox", account->mailbox}, {"error", e->message}});
        no(tag, "[UNAVAILABLE] The mailbox cannot be read from Microsoft 365 right now");
        return;
    }
    account_ = std::move(account);
    if (svc_.authenticated) ++*svc_.authenticated;
    reader_.set_limits(pi::Limits{});  // APPEND of real messages needs the full limits
    log::Logger::instance().write(log::Level::Info, "imap", &ctx_, "authenticated",
                                  {{"ip", cfg_.client_ip}, {"login", log::client_text(account_->login)}});
    ok(tag, fmt::format("[CAPABILITY {}] Logged in", capabilities()));
}

void Session::cmd_enable(const Command& c) {
    if (c.args.empty()) return bad(c.tag, "ENABLE needs capability names");
    for (const auto& a : c.args)
        if (!a.is_atom()) return bad(c.tag, "ENABLE takes atoms");
    std::string enabled;
    for (const auto& a : c.args) {
        if (a.is_atom("CONDSTORE") && enabled.find(" CONDSTORE") == std::string::npos) {
            enable_condstore();
            enabled += " CONDSTORE";
        }
        if (a.is_atom("QRESYNC") && !qresync_) {  // implies CONDSTORE (RFC 7162 3.2.3)
            enable_condstore();
            qresync_ = true;
            enabled += " QRESYNC";
        }
    }
    untagged("ENABLED" + enabled);
    ok(c.tag, "ENABLE completed");
}

void Session::cmd_id(const Command& c) {
    if (c.args.size() != 1 || !(c.args[0].is_nil() || c.args[0].is_list())) return bad(c.tag, "ID takes a list or NIL");
    untagged("ID (\"name\" \"graphbridge\" \"vendor\" \"graphbridge\")");
    flush_updates(true);
    ok(c.tag, "ID completed");
}

void Session::cmd_namespace(const Command& c) {
    if (!c.args.empty()) return bad(c.tag, "NAMESPACE takes no arguments");
    untagged("NAMESPACE ((\"\" \"/\")) NIL NIL");
    flush_updates(true);
    ok(c.tag, "NAMESPACE completed");
}

std::vector<sync::FolderRecord> Session::folders() { return svc_.mail->store().folders(account_->mailbox); }

std::optional<sync::FolderRecord> Session::find_folder(std::string_view name_mutf7) {
    auto utf8 = pi::from_mutf7(name_mutf7);
    if (!utf8) return std::nullopt;
    std::string name = inbox_spelling(*utf8);
    for (auto& f : folders())
        if (f.path == name) return f;
    return std::nullopt;
}

void Session::cmd_list(const Command& c, bool lsub) {
    // LIST [(selection-opts)] reference pattern|(patterns) [RETURN (return-opts)]   (RFC 5258)
    std::size_t i = 0;
    bool sel_special = false, sel_subscribed = lsub, ret_special = false, ret_children = false, ret_subscribed = false;
    std::vector<std::string> status;
    if (!lsub && i < c.args.size() && c.args[i].is_list()) {
        for (const auto& o : c.args[i].items) {
            if (o.is_atom("SPECIAL-USE")) sel_special = true;
            else if (o.is_atom("SUBSCRIBED")) sel_subscribed = true;
            else if (o.is_atom("REMOTE") || o.is_atom("RECURSIVEMATCH")) continue;
            else return bad(c.tag, "Unknown LIST selection option");
        }
        ++i;
    }
    if (c.args.size() < i + 2) return bad(c.tag, "LIST needs a reference and a mailbox pattern");
    auto reference = c.args[i].astring();
    if (!reference) return bad(c.tag, "Invalid reference");
    std::vector<std::string> patterns;
    if (c.args[i + 1].is_list() && !lsub) {
        for (const auto& p : c.args[i + 1].items) {
            auto lm = p.list_mailbox();
            if (!lm) return bad(c.tag, "Invalid mailbox pattern");
            patterns.emplace_back(*lm);
        }
    } else {
        auto lm = c.args[i + 1].list_mailbox();
        if (!lm) return bad(c.tag, "Invalid mailbox pattern");
        patterns.emplace_back(*lm);
    }
    i += 2;
    if (i < c.args.size()) {
        if (lsub || !c.args[i].is_atom("RETURN") || i + 2 != c.args.size() || !c.args[i + 1].is_list())
            return bad(c.tag, "Invalid LIST return options");
        const auto& opts = c.args[i + 1].items;
        for (std::size_t k = 0; k < opts.size(); ++k) {
            if (opts[k].is_atom("SPECIAL-USE")) ret_special = true;
            else if (opts[k].is_atom("CHILDREN")) ret_children = true;
            else if (opts[k].is_atom("SUBSCRIBED")) ret_subscribed = true;
            else if (opts[k].is_atom("STATUS") && k + 1 < opts.size() && opts[k + 1].is_list()) {
                for (const auto& s : opts[++k].items) {
                    if (!s.is_atom()) return bad(c.tag, "Invalid STATUS item");
                    status.push_back(upper(s.text));
                }
            } else {
                return bad(c.tag, "Unknown LIST return option");
            }
        }
    }
    (void)ret_children;  // \HasChildren / \HasNoChildren are always returned (CHILDREN capability)
    auto all = folders();
    std::set<std::string> parents;
    for (const auto& f : all) {
        auto slash = f.path.rfind('/');
        while (slash != std::string::npos) {
            parents.insert(f.path.substr(0, slash));
            slash = slash == 0 ? std::string::npos : f.path.rfind('/', slash - 1);
        }
    }
    const char* verb = lsub ? "LSUB" : "LIST";
    // An empty pattern asks for the delimiter (RFC 3501 6.3.8).
    if (patterns.size() == 1 && patterns[0].empty()) {
        untagged(fmt::format("{} (\\Noselect) \"/\" \"\"", verb));
        flush_updates(true);
        return ok(c.tag, std::string(verb) + " completed");
    }
    std::string ref = std::string(*reference);
    for (const auto& f : all) {
        std::string wire = pi::to_mutf7(f.path);
        bool match = false;
        for (const auto& p : patterns) {
            std::string full = ref + p;
            // INBOX is case-insensitive.
            std::string name = wire;
            if (f.path == "INBOX" || f.path.rfind("INBOX/", 0) == 0) {
                if (full.size() >= 5 && iequals(full.substr(0, 5), "INBOX")) full = "INBOX" + full.substr(5);
            }
            if (list_match(full, name)) match = true;
        }
        if (!match) continue;
        if (sel_special && f.special_use.empty()) continue;
        if (sel_subscribed && !f.subscribed) continue;
        std::string attrs = parents.count(f.path) ? "\\HasChildren" : "\\HasNoChildren";
        if ((ret_special || sel_special || !lsub) && !f.special_use.empty()) attrs += " " + f.special_use;
        if (ret_subscribed || sel_subscribed) {
            if (f.subscribed && !lsub) attrs += " \\Subscribed";
        }
        untagged(fmt::format("{} ({}) \"/\" {}", verb, attrs, pi::astring(wire)));
        if (!status.empty()) {
            auto body = status_items(f, status);
            if (!body.empty()) untagged(fmt::format("STATUS {} ({})", pi::astring(wire), body));
        }
    }
    flush_updates(true);
    ok(c.tag, std::string(verb) + " completed");
}

std::string Session::status_items(const sync::FolderRecord& folder, const std::vector<std::string>& items) {
    // Counts come from the stored state; a folder never synced is synced once first.
    if (folder.delta_link.empty()) svc_.mail->ensure_synced(account_->mailbox, folder.folder_id);
    auto f = svc_.mail->store().folder(account_->mailbox, folder.folder_id).value_or(folder);
    auto snap = svc_.mail->snapshot(account_->mailbox, f.folder_id);
    const auto& msgs = *snap;
    std::string out;
    for (const auto& it : items) {
        std::string v;
        if (it == "MESSAGES") v = std::to_string(msgs.size());
        else if (it == "RECENT") v = "0";
        else if (it == "UIDNEXT") v = std::to_string(f.uidnext);
        else if (it == "UIDVALIDITY") v = std::to_string(f.uidvalidity);
        else if (it == "HIGHESTMODSEQ") v = std::to_string(f.highestmodseq);
        else if (it == "UNSEEN")
            v = std::to_string(std::count_if(msgs.begin(), msgs.end(),
                                             [](const sync::MessageRecord& m) { return !(m.flags & sync::kSeen); }));
        else return "";
        out += (out.empty() ? "" : " ") + it + " " + v;
    }
    return out;
}

void Session::cmd_status(const Command& c) {
    if (c.args.size() != 2 || !c.args[1].is_list() || c.args[1].items.empty())
        return bad(c.tag, "STATUS needs a mailbox and a list of items");
    auto name = c.args[0].astring();
    if (!name) return bad(c.tag, "Invalid mailbox name");
    std::vector<std::string> items;
    for (const auto& v : c.args[1].items) {
        std::string u = upper(v.text);
        if (!v.is_atom() || (u != "MESSAGES" && u != "RECENT" && u != "UIDNEXT" && u != "UIDVALIDITY" &&
                             u != "UNSEEN" && u != "HIGHESTMODSEQ"))
            return bad(c.tag, "Unknown STATUS item");
        if (u == "HIGHESTMODSEQ") enable_condstore();
        items.push_back(u);
    }
    auto f = find_folder(*name);
    if (!f) return no(c.tag, "[NONEXISTENT] No such mailbox");
    untagged(fmt::format("STATUS {} ({})", pi::astring(pi::to_mutf7(f->path)), status_items(*f, items)));
    flush_updates(true);
    ok(c.tag, "STATUS completed");
}

void Session::deselect() {
    if (!selected_) return;
    if (auto* mb = svc_.mail->mailbox(account_->mailbox)) mb->unsubscribe(selected_->listener_id);
    svc_.mail->unwatch(selected_->watch_id);
    selected_.reset();
    std::lock_guard lock(changes_->mutex);
    changes_->dirty = false;
}

void Session::cmd_select(const Command& c, bool read_only) {
    // SELECT mailbox [(CONDSTORE)] / [(QRESYNC (uidvalidity modseq [known-uids [seq-match]]))]
    // (RFC 7162 3.1.8, 3.2.5)
    if (c.args.size() != 1 && !(c.args.size() == 2 && c.args[1].is_list()))
        return bad(c.tag, "SELECT needs a mailbox name");
    struct Resync {
        std::uint32_t uidvalidity = 0;
        std::uint64_t modseq = 0;
        std::optional<pi::SequenceSet> known;
    };
    std::optional<Resync> resync;
    if (c.args.size() == 2) {
        const auto& params = c.args[1].items;
        for (std::size_t i = 0; i < params.size(); ++i) {
            if (params[i].is_atom("CONDSTORE")) {
                enable_condstore();
            } else if (params[i].is_atom("QRESYNC") && i + 1 < params.size() && params[i + 1].is_list()) {
                if (!qresync_) return bad(c.tag, "ENABLE QRESYNC first");
                const auto& q = params[++i].items;
                auto number = [](const Value& v, std::uint64_t max) -> std::optional<std::uint64_t> {
                    auto n = v.is_atom() ? pi::parse_number(v.text, max) : std::nullopt;
                    if (!n || *n == 0) return std::nullopt;
                    return n;
                };
                if (q.size() < 2 || q.size() > 4) return bad(c.tag, "Invalid QRESYNC parameter");
                auto validity = number(q[0], 0xFFFFFFFFull);
                auto modseq = number(q[1], pi::kMaxModSeq);
                if (!validity || !modseq) return bad(c.tag, "Invalid QRESYNC parameter");
                Resync r{static_cast<std::uint32_t>(*validity), *modseq, std::nullopt};
                if (q.size() >= 3) {
                    if (!q[2].is_atom() || !(r.known = pi::parse_sequence_set(q[2].text)))
                        return bad(c.tag, "Invalid known-uids");
                }
                // The optional sequence match data only narrows what may be reported; every vanished
                // UID is reported anyway, so it is accepted and not needed.
                if (q.size() == 4 && !q[3].is_list()) return bad(c.tag, "Invalid sequence match data");
                resync = r;
            } else {
                return bad(c.tag, "Unknown SELECT parameter");
            }
        }
    }
    auto name = c.args[0].astring();
    if (!name) return bad(c.tag, "Invalid mailbox name");
    // A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1); a new one first closes the old.
    bool had = selected_ != nullptr;
    deselect();
    if (had) untagged("OK [CLOSED] Previous mailbox closed");
    auto f = find_folder(*name);
    if (!f) return no(c.tag, "[NONEXISTENT] No such mailbox");
    if (auto e = svc_.mail->ensure_synced(account_->mailbox, f->folder_id)) {
        log::Logger::instance().write(log::Level::Warn, "imap", &ctx_, "select failed",
                                      {{"folder", f->path}, {"error", e->message}});
        return no(c.tag, "[UNAVAILABLE] The folder cannot be read from Microsoft 365 right now");
    }
    auto sel = std::make_unique<Selected>();
    sel->read_only = read_only;
    auto* mb = svc_.mail->mailbox(account_->mailbox);
    // Subscribe before the snapshot so no change falls between them (a change seen twice is harmless).
    sel->listener_id = mb->subscribe(f->folder_id, [q = changes_](const std::string&, const sync::FolderChange& ch) {
        (void)ch;
        std::function<void()> wake;
        {
            std::lock_guard lock(q->mutex);
            q->dirty = true;
            wake = q->wake;
        }
        if (wake) wake();
    });
    sel->watch_id = svc_.mail->watch(account_->mailbox, f->folder_id);
    sel->folder = svc_.mail->store().folder(account_->mailbox, f->folder_id).value_or(*f);
    sel->view = svc_.mail->snapshot(account_->mailbox, f->folder_id);
    selected_ = std::move(sel);
    const auto& msgs = selected_->messages();
    untagged("FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)");
    // \Draft is Graph's read-only isDraft; every other flag and any keyword (an Outlook category) sticks.
    if (selected_->read_only) untagged("OK [PERMANENTFLAGS ()] Read-only mailbox");
    else untagged("OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen $Forwarded \\*)] Flags permitted");
    untagged(fmt::format("{} EXISTS", msgs.size()));
    untagged("0 RECENT");
    for (std::size_t i = 0; i < msgs.size(); ++i) {
        if (!(msgs[i].flags & sync::kSeen)) {
            untagged(fmt::format("OK [UNSEEN {}] First unseen", i + 1));
            break;
        }
    }
    untagged(fmt::format("OK [UIDVALIDITY {}] UIDs valid", selected_->folder.uidvalidity));
    untagged(fmt::format("OK [UIDNEXT {}] Predicted next UID", selected_->folder.uidnext));
    untagged(fmt::format("OK [HIGHESTMODSEQ {}] Highest", selected_->folder.highestmodseq));
    if (resync && resync->uidvalidity == selected_->folder.uidvalidity) {
        // What the client missed since its modseq: every UID it may know that is gone (a superset of those
        // expunged since then, which RFC 7162 3.2.5.2 allows), then the messages changed since.
        auto gone = vanished_set(resync->known);
        if (!gone.empty()) untagged("VANISHED (EARLIER) " + gone);
        for (std::size_t i = 0; i < msgs.size(); ++i)
            if (msgs[i].modseq > resync->modseq)
                untagged(fmt::format("{} FETCH (UID {} FLAGS ({}) MODSEQ ({}))", i + 1, msgs[i].uid, flag_list(msgs[i]),
                                     msgs[i].modseq));
    }
    ok(c.tag, std::string(selected_->read_only ? "[READ-ONLY]" : "[READ-WRITE]") + " " + c.name + " completed");
}

void Session::cmd_check(const Command& c) {
    if (!c.args.empty()) return bad(c.tag, "CHECK takes no arguments");
    flush_updates(true);
    ok(c.tag, "CHECK completed");
}

void Session::cmd_close(const Command& c, bool unselect) {
    if (!c.args.empty()) return bad(c.tag, "takes no arguments");
    // CLOSE expunges silently (RFC 3501 6.4.2) in a read-write mailbox; UNSELECT does not.
    if (!unselect && !selected_->read_only) {
        if (auto e = expunge_selected(std::nullopt))
            log::Logger::instance().write(log::Level::Warn, "imap", &ctx_, "expunge at CLOSE failed",
                                          {{"folder", selected_->folder.path}, {"error", e->message}});
    }
    deselect();
    ok(c.tag, unselect ? "UNSELECT completed" : "CLOSE completed");
}

void Session::cmd_uid(const Command& c) {
    if (c.args.empty() || !c.args[0].is_atom()) return bad(c.tag, "UID needs a command");
    if (c.args[0].is_atom("FETCH")) return cmd_fetch(c, true, 1);
    if (c.args[0].is_atom("SEARCH")) return cmd_search(c, true, 1);
    if (c.args[0].is_atom("STORE")) return cmd_store(c, true, 1);
    if (c.args[0].is_atom("COPY")) return cmd_copy(c, true, 1, false);
    if (c.args[0].is_atom("MOVE")) return cmd_copy(c, true, 1, true);
    if (c.args[0].is_atom("EXPUNGE")) return cmd_expunge(c, true, 1);
    bad(c.tag, "Unknown UID command");
}

void Session::cmd_idle(const Command& c) {
    if (!c.args.empty()) return bad(c.tag, "IDLE takes no arguments");
    idle_tag_ = c.tag;
    if (svc_.idling) ++*svc_.idling;
    out("+ idling\r\n");
    reader_.set_raw_line_mode(true);
    if (selected_) {
        svc_.mail->set_fast(selected_->watch_id, true);
        svc_.mail->poke(account_->mailbox);
    }
    flush_updates(true);
}

// ---- untagged updates --------------------------------------------------------------------------------

void Session::deliver_updates() {
    if (idle_tag_) flush_updates(true);
}

void Session::enable_condstore() { condstore_ = true; }

void Session::flush_updates(bool allow_expunge, const std::vector<std::uint32_t>* report,
                            const std::vector<std::uint32_t>* suppress, bool silent_store) {
    if (!selected_) return;
    bool dirty;
    {
        std::lock_guard lock(changes_->mutex);
        dirty = changes_->dirty;
        changes_->dirty = false;
    }
    auto& s = *selected_;
    auto latest = dirty ? svc_.mail->snapshot(account_->mailbox, s.folder.folder_id) : s.view;
    const auto& old = *s.view;
    const auto& now = *latest;
    // Compare the client's view with the store by UID (both ascending): what is gone, what changed, what
    // is new. The diff, not the change events, decides what the client is told, so nothing is told twice
    // or missed however changes and flushes interleave.
    std::vector<sync::MessageRecord> ghosts;  // gone, but their EXPUNGE must wait
    std::vector<std::size_t> gone;            // indexes into old
    std::vector<std::uint32_t> changed;       // UIDs with new flags
    if (latest != s.view) {
        std::size_t i = 0, j = 0;
        while (i < old.size()) {
            if (j < now.size() && now[j].uid == old[i].uid) {
                if (now[j].flags != old[i].flags || now[j].keywords != old[i].keywords ||
                    now[j].local_keywords != old[i].local_keywords ||
                    (condstore_ && now[j].modseq != old[i].modseq))
                    changed.push_back(old[i].uid);
                ++i, ++j;
            } else if (j < now.size() && now[j].uid < old[i].uid) {
                ++j;  // cannot happen (UIDs only grow); skip
            } else {
                if (allow_expunge) gone.push_back(i);
                else ghosts.push_back(old[i]);
                ++i;
            }
        }
    }
    // STORE .SILENT with CONDSTORE: no FLAGS, but the new MODSEQ must still be told (RFC 7162 3.1.3).
    std::vector<std::uint32_t> modseq_only;
    if (suppress && silent_store && condstore_) {
        for (auto u : changed)
            if (std::binary_search(suppress->begin(), suppress->end(), u)) modseq_only.push_back(u);
    }
    if (suppress) {
        changed.erase(std::remove_if(changed.begin(), changed.end(),
                                     [&](std::uint32_t u) {
                                         return std::binary_search(suppress->begin(), suppress->end(), u);
                                     }),
                      changed.end());
    }
    changed.insert(changed.end(), modseq_only.begin(), modseq_only.end());
    if (report) {
        changed.insert(changed.end(), report->begin(), report->end());
        std::sort(changed.begin(), changed.end());
        changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
    }
    if (qresync_) {
        // With QRESYNC enabled, expunges are told as VANISHED with UIDs (RFC 7162 3.2.10).
        if (!gone.empty()) {
            std::vector<std::uint32_t> uids;
            for (auto i : gone) uids.push_back(old[i].uid);
            untagged("VANISHED " + uid_set_text(uids));
        }
    } else {
        // EXPUNGE, highest sequence number first, so every number is valid when it is sent.
        for (auto it = gone.rbegin(); it != gone.rend(); ++it) untagged(fmt::format("{} EXPUNGE", *it + 1));
    }
    std::size_t old_count = old.size() - gone.size();
    if (latest != s.view) {
        if (ghosts.empty()) {
            s.view = latest;
        } else {
            auto merged = std::make_shared<std::vector<sync::MessageRecord>>();
            merged->reserve(now.size() + ghosts.size());
            std::merge(now.begin(), now.end(), ghosts.begin(), ghosts.end(), std::back_inserter(*merged),
                       [](const sync::MessageRecord& a, const sync::MessageRecord& b) { return a.uid < b.uid; });
            s.view = std::move(merged);
            // Still dirty: the held-back EXPUNGEs go out at the next command that allows them.
            std::lock_guard lock(changes_->mutex);
            changes_->dirty = true;
        }
    }
    const auto& view = *s.view;
    if (view.size() > old_count) untagged(fmt::format("{} EXISTS", view.size()));
    if (!changed.empty()) {
        // Both lists ascend by UID: one merge walk.
        std::size_t k = 0;
        for (std::size_t n = 0; n < view.size() && k < changed.size();) {
            if (view[n].uid < changed[k]) {
                ++n;
            } else if (view[n].uid > changed[k]) {
                ++k;
            } else {
                std::string modseq = condstore_ ? fmt::format(" MODSEQ ({})", view[n].modseq) : std::string();
                if (std::binary_search(modseq_only.begin(), modseq_only.end(), view[n].uid))
                    untagged(fmt::format("{} FETCH (UID {} MODSEQ ({}))", n + 1, view[n].uid, view[n].modseq));
                else
                    untagged(fmt::format("{} FETCH (UID {} FLAGS ({}){})", n + 1, view[n].uid, flag_list(view[n]), modseq));
                ++n, ++k;
            }
        }
    }
    if (dirty)
        if (auto f = svc_.mail->store().folder(account_->mailbox, s.folder.folder_id)) s.folder = *f;
}

}  // namespace gb::imap
