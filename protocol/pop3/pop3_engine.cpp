// The POP3 server protocol engine. See pop3_engine.h for the RFCs, the policy and the driver contract.
#include "protocol/pop3/pop3_engine.h"

#include <algorithm>
#include <array>
#include <set>
#include <stdexcept>

#include "common/ascii.h"
#include "protocol/smtp/smtp_parser.h"  // shared helpers: decode_base64, is_valid_utf8, wipe

namespace gb::protocol::pop3 {
namespace {

using smtp::decode_base64;
using smtp::is_valid_utf8;
using smtp::wipe;

using ascii::iequals;
using ascii::istarts_with;

bool is_control(unsigned char c) {
    return c < 0x20 || c == 0x7F;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
}

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decimal digits to a number, saturating at UINT64_MAX (a huge message number is just "no such message").
std::uint64_t parse_saturating(std::string_view s) {
    std::uint64_t v = 0;
    for (char c : s) {
        std::uint64_t d = static_cast<std::uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return UINT64_MAX;
        v = v * 10 + d;
    }
    return v;
}

// Login identities: valid UTF-8, no control characters, 1..255 octets.
bool valid_identity(std::string_view s) {
    if (s.empty() || s.size() > 255 || !is_valid_utf8(s)) return false;
    return std::none_of(s.begin(), s.end(), [](char c) { return is_control(static_cast<unsigned char>(c)); });
}

// RFC 1939 section 7: 1 to 70 characters in the range 0x21 to 0x7E.
bool valid_uid(std::string_view s) {
    if (s.empty() || s.size() > 70) return false;
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x21 && c <= 0x7E; });
}

constexpr std::size_t kMaxReplyText = 400;  // RFC 2449: response lines at most 512 octets
constexpr std::string_view kLocalError = "[SYS/TEMP] Local error in processing";
constexpr std::string_view kNeedTls = "[SYS/PERM] Authentication requires TLS, use STLS";
constexpr std::string_view kNoTls = "[SYS/PERM] Authentication is not available on this connection";

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Command table: one row per command, with the states it is valid in and whether its line carries a
// credential (wiped after handling). verbatim rows get their argument untrimmed (PASS: spaces are
// part of the password).

struct Pop3Engine::CommandSpec {
    std::string_view name;
    void (Pop3Engine::*handler)(std::string_view args);
    bool in_authorization;
    bool in_transaction;
    bool verbatim;
};

const Pop3Engine::CommandSpec* Pop3Engine::find_command(std::string_view verb) {
    static const std::array<CommandSpec, 14> kTable{{
        {"CAPA", &Pop3Engine::cmd_capa, true, true, false},
        {"USER", &Pop3Engine::cmd_user, true, false, false},
        {"PASS", &Pop3Engine::cmd_pass, true, false, true},
        {"AUTH", &Pop3Engine::cmd_auth, true, false, false},
        {"STLS", &Pop3Engine::cmd_stls, true, false, false},
        {"STAT", &Pop3Engine::cmd_stat, false, true, false},
        {"LIST", &Pop3Engine::cmd_list, false, true, false},
        {"UIDL", &Pop3Engine::cmd_uidl, false, true, false},
        {"RETR", &Pop3Engine::cmd_retr, false, true, false},
        {"TOP", &Pop3Engine::cmd_top, false, true, false},
        {"DELE", &Pop3Engine::cmd_dele, false, true, false},
        {"RSET", &Pop3Engine::cmd_rset, false, true, false},
        {"NOOP", &Pop3Engine::cmd_noop, false, true, false},
        {"QUIT", &Pop3Engine::cmd_quit, true, true, false},
    }};
    for (const auto& row : kTable)
        if (iequals(row.name, verb)) return &row;
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------
// Construction, input, output.

Pop3Engine::Pop3Engine(Pop3Config config, ConnectionInfo connection, Pop3Backend& backend)
    : config_(std::move(config)),
      backend_(backend),
      lines_(std::max(config_.limits.max_command_line, config_.limits.max_auth_line)) {
    auto& l = config_.limits;
    l.max_errors = std::max(l.max_errors, 1u);
    l.max_auth_failures = std::max(l.max_auth_failures, 1u);
    l.output_chunk = std::max<std::size_t>(l.output_chunk, 512);
    session_.loopback = connection.loopback;
    session_.tls_active = connection.tls_active;
    ok(config_.hostname + " POP3 graphbridge ready");
}

std::size_t Pop3Engine::feed(std::string_view bytes) {
    if (in_backend_) throw std::logic_error("Pop3Engine::feed() called from inside a backend call");
    std::size_t used = 0;
    while (used < bytes.size()) {
        if (mode_ == Mode::Closed || mode_ == Mode::StartTls) return bytes.size();  // discard everything
        if (pending_ != Pending::None || stream_.kind != StreamKind::None) break;  // busy: the driver keeps the rest
        used += step_line(bytes.substr(used));
    }
    if (mode_ == Mode::Closed || mode_ == Mode::StartTls) return bytes.size();
    return used;
}

std::string Pop3Engine::take_output() {
    std::string out;
    out.swap(output_);
    if (stream_.kind != StreamKind::None && mode_ != Mode::Closed) pump(out, config_.limits.output_chunk);
    return out;
}

void Pop3Engine::tls_started() {
    if (mode_ != Mode::StartTls) throw std::logic_error("Pop3Engine::tls_started() without STLS");
    session_.tls_active = true;
    session_.user.clear();
    session_.authenticated = false;
    user_given_ = false;
    lines_ = LineReader(std::max(config_.limits.max_command_line, config_.limits.max_auth_line));
    mode_ = Mode::Command;
}

void Pop3Engine::resume(Answer answer) {
    if (mode_ == Mode::Closed) return;
    if (in_backend_) throw std::logic_error("Pop3Engine::resume() called from inside a backend call");
    if (pending_ == Pending::None) throw std::logic_error("Pop3Engine::resume() with nothing pending");
    if (answer.is_pending()) throw std::logic_error("Pop3Engine::resume() with a pending answer");
    Pending what = pending_;
    pending_ = Pending::None;
    apply(what, std::move(answer));
}

void Pop3Engine::timeout() {
    if (mode_ == Mode::Closed) return;
    close_with(std::nullopt);  // RFC 1939 section 3: autologout, no response, no UPDATE
}

void Pop3Engine::shutdown() {
    if (mode_ == Mode::Closed) return;
    if (stream_.kind != StreamKind::None) {
        close_with(std::nullopt);  // a response line in the middle of a message would corrupt it
        return;
    }
    close_with(Reply{false, "[SYS/TEMP] Server shutting down"});
}

void Pop3Engine::connection_lost() {
    if (mode_ == Mode::Closed) return;
    close_with(std::nullopt);
    output_.clear();
}

// ---------------------------------------------------------------------------------------------------
// Responses.

void Pop3Engine::reply(const Reply& r) {
    output_.append(r.ok ? "+OK" : "-ERR");
    if (!r.text.empty()) {
        output_.push_back(' ');
        std::size_t n = std::min(r.text.size(), kMaxReplyText);
        for (std::size_t i = 0; i < n; ++i) {
            char c = r.text[i];
            output_.push_back(is_control(static_cast<unsigned char>(c)) ? '?' : c);
        }
    }
    output_.append("\r\n");
}

void Pop3Engine::ok(std::string_view text) {
    reply(Reply{true, std::string(text)});
}

void Pop3Engine::err(std::string_view text) {
    reply(Reply{false, std::string(text)});
}

void Pop3Engine::error(std::string_view text) {
    err(text);
    if (++errors_ >= config_.limits.max_errors) close_with(std::nullopt);
}

void Pop3Engine::close_with(std::optional<Reply> last) {
    if (last) reply(*last);
    mode_ = Mode::Closed;
    pending_ = Pending::None;
    release_message();
    stream_ = Stream{};
    user_given_ = false;
}

void Pop3Engine::release_message() {
    std::string().swap(stream_.message);
}

template <typename F>
Answer Pop3Engine::call_backend(F&& f) {
    struct Guard {
        bool& flag;
        explicit Guard(bool& fl) : flag(fl) { flag = true; }
        ~Guard() { flag = false; }
    } guard(in_backend_);
    try {
        return f();
    } catch (...) {
        return Answer::error(std::string(kLocalError));
    }
}

// ---------------------------------------------------------------------------------------------------
// Command lines.

std::size_t Pop3Engine::step_line(std::string_view in) {
    LineReader::Status status = LineReader::Status::NeedMore;
    std::size_t n = lines_.feed(in, status);
    bool auth = mode_ == Mode::AuthLine;
    switch (status) {
        case LineReader::Status::Line: {
            const std::string& l = lines_.line();
            // PASS, AUTH with an initial response and every AUTH continuation carry a credential.
            bool secret = auth || istarts_with(l, "PASS") || istarts_with(l, "AUTH");
            if (auth)
                handle_auth_line(l);
            else if (l.size() > config_.limits.max_command_line)
                error("Line too long");
            else
                handle_command(l);
            if (secret) lines_.wipe();
            break;
        }
        case LineReader::Status::TooLong:
            mode_ = Mode::Command;  // an AUTH exchange is aborted; the rest of the line is skipped
            error(auth ? "Authentication line too long" : "Line too long");
            break;
        case LineReader::Status::BareLf:
            mode_ = Mode::Command;
            error("Bare CR or LF in command line");
            break;
        case LineReader::Status::NeedMore:
            break;
    }
    return n;
}

void Pop3Engine::handle_command(std::string_view line) {
    if (std::any_of(line.begin(), line.end(), [](char c) { return is_control(static_cast<unsigned char>(c)); })) {
        error("Invalid characters in command");
        return;
    }
    std::size_t sp = line.find(' ');
    std::string_view verb = line.substr(0, sp);
    std::string_view rest = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
    const CommandSpec* spec = find_command(verb);
    if (spec == nullptr) {
        static constexpr std::array<std::string_view, 7> kHttp{"GET",     "POST",    "HEAD",  "PUT",
                                                               "CONNECT", "OPTIONS", "DELETE"};
        bool http = std::find(kHttp.begin(), kHttp.end(), verb) != kHttp.end() &&
                    rest.find("HTTP/") != std::string_view::npos;
        if (http)
            close_with(Reply{false, "Not a POP3 command, closing connection"});
        else
            error("Unknown command");
        return;
    }
    bool allowed = session_.state == State::Authorization ? spec->in_authorization
                                                           : session_.state == State::Transaction && spec->in_transaction;
    if (!allowed) {
        error("Command not valid in this state");
        return;
    }
    (this->*(spec->handler))(spec->verbatim ? rest : trim(rest));
}

// ---------------------------------------------------------------------------------------------------
// AUTHORIZATION: CAPA, USER, PASS, AUTH (RFC 5034), STLS (RFC 2595).

bool Pop3Engine::auth_allowed() const {
    return session_.tls_active || session_.loopback;
}

void Pop3Engine::cmd_capa(std::string_view args) {
    if (!args.empty()) return error("Syntax: CAPA");
    std::string text = "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
    if (session_.state == State::Authorization) {
        if (auth_allowed()) text += "USER\r\nSASL PLAIN\r\n";
        if (config_.tls_available && !session_.tls_active) text += "STLS\r\n";
    }
    text += "IMPLEMENTATION graphbridge\r\n.\r\n";
    output_ += text;
}

void Pop3Engine::cmd_user(std::string_view args) {
    user_given_ = false;
    if (!auth_allowed()) return error(config_.tls_available ? kNeedTls : kNoTls);
    if (args.empty()) return error("Syntax: USER name");
    if (!valid_identity(args)) return error("Invalid user name");
    session_.user.assign(args);
    user_given_ = true;
    ok("Send PASS");
}

void Pop3Engine::cmd_pass(std::string_view args) {
    if (!auth_allowed()) return error(config_.tls_available ? kNeedTls : kNoTls);
    if (!user_given_) return error("Send USER first");
    user_given_ = false;
    if (args.empty()) return error("Syntax: PASS password");
    AuthRequest request;
    request.mechanism = "USER";
    request.user = session_.user;
    request.password = gb::Secret(std::string(args));
    auth_submit(std::move(request));
}

void Pop3Engine::cmd_auth(std::string_view args) {
    user_given_ = false;
    if (!auth_allowed()) return error(config_.tls_available ? kNeedTls : kNoTls);
    if (args.empty()) {  // the pre-RFC 5034 listing form
        output_ += "+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n";
        return;
    }
    std::size_t sp = args.find(' ');
    std::string_view mech = args.substr(0, sp);
    std::string_view initial = sp == std::string_view::npos ? std::string_view{} : trim(args.substr(sp + 1));
    if (initial.find(' ') != std::string_view::npos) return error("Syntax: AUTH mechanism [initial-response]");
    if (!iequals(mech, "PLAIN")) return error("Unsupported authentication mechanism");
    if (!initial.empty()) return auth_plain_response(initial);
    mode_ = Mode::AuthLine;
    output_ += "+ \r\n";  // empty challenge
}

void Pop3Engine::handle_auth_line(std::string_view line) {
    mode_ = Mode::Command;
    if (line == "*") return error("Authentication cancelled");
    auth_plain_response(line);
}

void Pop3Engine::auth_plain_response(std::string_view b64) {
    std::string decoded;
    if (b64 != "=" && !decode_base64(b64, decoded)) {
        wipe(decoded);
        return error("Invalid base64 data");
    }
    // authzid NUL authcid NUL passwd (RFC 4616)
    std::size_t first = decoded.find('\0');
    std::size_t second = first == std::string::npos ? first : decoded.find('\0', first + 1);
    if (second == std::string::npos || decoded.find('\0', second + 1) != std::string::npos) {
        wipe(decoded);
        return error("Invalid PLAIN authentication data");
    }
    std::string authzid = decoded.substr(0, first);
    AuthRequest request;
    request.mechanism = "PLAIN";
    request.user = decoded.substr(first + 1, second - first - 1);
    request.password = gb::Secret(decoded.substr(second + 1));
    wipe(decoded);
    if (!valid_identity(request.user)) return error("Invalid PLAIN authentication data");
    if (!authzid.empty() && authzid != request.user) {
        // No proxy authorization: acting as someone else is a failed login.
        session_.user = request.user;
        return apply_auth(Answer::refuse());
    }
    auth_submit(std::move(request));
}

void Pop3Engine::auth_submit(AuthRequest request) {
    session_.user = request.user;
    Answer a = call_backend([&] { return backend_.authenticate(session_, request); });
    if (a.is_pending()) {
        pending_ = Pending::Auth;
        return;
    }
    apply_auth(std::move(a));
}

void Pop3Engine::cmd_stls(std::string_view args) {
    if (!args.empty()) return error("Syntax: STLS");
    if (session_.tls_active) return error("Command not permitted when TLS active");
    if (!config_.tls_available) return error("STLS not available");
    user_given_ = false;
    ok("Begin TLS negotiation");
    mode_ = Mode::StartTls;
}

// ---------------------------------------------------------------------------------------------------
// Backend answers.

void Pop3Engine::apply(Pending what, Answer answer) {
    switch (what) {
        case Pending::Auth:
            return apply_auth(std::move(answer));
        case Pending::Maildrop:
            return apply_maildrop(std::move(answer));
        case Pending::Retrieve:
            return apply_retrieve(std::move(answer));
        case Pending::Commit:
            return apply_commit(std::move(answer));
        case Pending::None:
            break;
    }
}

void Pop3Engine::login_failed_softly() {
    session_.authenticated = false;
    session_.user.clear();
}

void Pop3Engine::apply_auth(Answer answer) {
    if (answer.is_success()) {
        session_.authenticated = true;
        Answer a = call_backend([&] { return backend_.open_maildrop(session_); });
        if (a.is_pending()) {
            pending_ = Pending::Maildrop;
            return;
        }
        return apply_maildrop(std::move(a));
    }
    if (answer.kind() == Answer::Kind::Custom) {  // temporary trouble: not a failed login
        reply(answer.reply());
        login_failed_softly();
        return;
    }
    login_failed_softly();
    if (++auth_failures_ >= config_.limits.max_auth_failures) {
        close_with(Reply{false, "[AUTH] Invalid login or password, closing connection"});
        return;
    }
    err("[AUTH] Invalid login or password");
}

void Pop3Engine::apply_maildrop(Answer answer) {
    if (!answer.is_success()) {
        if (answer.kind() == Answer::Kind::Custom)
            reply(answer.reply());
        else
            err("[SYS/TEMP] Unable to open the maildrop, try again later");
        login_failed_softly();
        return;
    }
    std::vector<MessageInfo> list;
    bool valid = true;
    try {
        in_backend_ = true;
        list = backend_.maildrop();
        in_backend_ = false;
    } catch (...) {
        in_backend_ = false;
        valid = false;
    }
    std::set<std::string_view> seen;
    for (const auto& m : list) {
        if (!valid) break;
        valid = valid_uid(m.uid) && seen.insert(m.uid).second;
    }
    if (!valid) {
        err("[SYS/TEMP] Maildrop unavailable");
        login_failed_softly();
        return;
    }
    messages_ = std::move(list);
    deleted_.assign(messages_.size(), false);
    deleted_count_ = 0;
    session_.state = State::Transaction;
    std::uint64_t octets = 0;
    for (const auto& m : messages_) octets += m.size;
    ok("maildrop has " + std::to_string(messages_.size()) + " messages (" + std::to_string(octets) + " octets)");
}

void Pop3Engine::apply_retrieve(Answer answer) {
    std::size_t number = pending_index_ + 1;
    if (!answer.is_success()) {
        if (answer.kind() == Answer::Kind::Custom)
            reply(answer.reply());
        else
            err("[SYS/TEMP] Unable to retrieve message " + std::to_string(number));
        return;
    }
    std::string message;
    try {
        in_backend_ = true;
        message = backend_.take_message();
        in_backend_ = false;
    } catch (...) {
        in_backend_ = false;
        err("[SYS/TEMP] Unable to retrieve message " + std::to_string(number));
        return;
    }
    if (pending_top_)
        ok("top of message follows");
    else
        ok(std::to_string(message.size()) + " octets");
    stream_ = Stream{};
    stream_.kind = StreamKind::Message;
    stream_.message = std::move(message);
    stream_.body_left = pending_top_;
}

void Pop3Engine::apply_commit(Answer answer) {
    std::size_t left = messages_.size() - deleted_count_;
    if (answer.is_success()) {
        close_with(Reply{true, "graphbridge POP3 server signing off (" + std::to_string(left) + " messages left)"});
    } else if (answer.kind() == Answer::Kind::Custom) {
        close_with(answer.reply());
    } else {
        close_with(Reply{false, "some deleted messages not removed"});
    }
}

// ---------------------------------------------------------------------------------------------------
// TRANSACTION (RFC 1939 section 5).

std::optional<std::size_t> Pop3Engine::message_arg(std::string_view arg) {
    if (!all_digits(arg) || arg.size() > 40) {  // RFC 2449: arguments up to 40 characters
        error("Invalid message number");
        return std::nullopt;
    }
    std::uint64_t n = parse_saturating(arg);
    if (n == 0 || n > messages_.size()) {
        err("no such message, only " + std::to_string(messages_.size() - deleted_count_) +
            " messages in maildrop");
        return std::nullopt;
    }
    std::size_t index = static_cast<std::size_t>(n - 1);
    if (deleted_[index]) {
        err("message " + std::to_string(n) + " already deleted");
        return std::nullopt;
    }
    return index;
}

void Pop3Engine::cmd_stat(std::string_view args) {
    if (!args.empty()) return error("Syntax: STAT");
    std::uint64_t octets = 0;
    for (std::size_t i = 0; i < messages_.size(); ++i)
        if (!deleted_[i]) octets += messages_[i].size;
    ok(std::to_string(messages_.size() - deleted_count_) + " " + std::to_string(octets));
}

void Pop3Engine::cmd_list(std::string_view args) {
    if (args.empty()) {
        std::uint64_t octets = 0;
        for (std::size_t i = 0; i < messages_.size(); ++i)
            if (!deleted_[i]) octets += messages_[i].size;
        ok(std::to_string(messages_.size() - deleted_count_) + " messages (" + std::to_string(octets) +
           " octets)");
        stream_ = Stream{};
        stream_.kind = StreamKind::List;
        return;
    }
    auto index = message_arg(args);
    if (!index) return;
    ok(std::to_string(*index + 1) + " " + std::to_string(messages_[*index].size));
}

void Pop3Engine::cmd_uidl(std::string_view args) {
    if (args.empty()) {
        ok("unique-id listing follows");
        stream_ = Stream{};
        stream_.kind = StreamKind::Uidl;
        return;
    }
    auto index = message_arg(args);
    if (!index) return;
    ok(std::to_string(*index + 1) + " " + messages_[*index].uid);
}

void Pop3Engine::cmd_retr(std::string_view args) {
    if (args.empty()) return error("Syntax: RETR msg");
    auto index = message_arg(args);
    if (!index) return;
    start_retrieve(*index, std::nullopt);
}

void Pop3Engine::cmd_top(std::string_view args) {
    std::size_t sp = args.find(' ');
    std::string_view msg = args.substr(0, sp);
    std::string_view lines = sp == std::string_view::npos ? std::string_view{} : trim(args.substr(sp + 1));
    if (msg.empty() || !all_digits(lines) || lines.size() > 40) return error("Syntax: TOP msg n");
    auto index = message_arg(msg);
    if (!index) return;
    start_retrieve(*index, parse_saturating(lines));
}

void Pop3Engine::start_retrieve(std::size_t index, std::optional<std::uint64_t> top_lines) {
    pending_index_ = index;
    pending_top_ = top_lines;
    Answer a = call_backend([&] { return backend_.retrieve(session_, index); });
    if (a.is_pending()) {
        pending_ = Pending::Retrieve;
        return;
    }
    apply_retrieve(std::move(a));
}

void Pop3Engine::cmd_dele(std::string_view args) {
    if (args.empty()) return error("Syntax: DELE msg");
    auto index = message_arg(args);
    if (!index) return;
    deleted_[*index] = true;
    ++deleted_count_;
    ok("message " + std::to_string(*index + 1) + " deleted");
}

void Pop3Engine::cmd_rset(std::string_view args) {
    if (!args.empty()) return error("Syntax: RSET");
    deleted_.assign(messages_.size(), false);
    deleted_count_ = 0;
    std::uint64_t octets = 0;
    for (const auto& m : messages_) octets += m.size;
    ok("maildrop has " + std::to_string(messages_.size()) + " messages (" + std::to_string(octets) + " octets)");
}

void Pop3Engine::cmd_noop(std::string_view args) {
    if (!args.empty()) return error("Syntax: NOOP");
    ok("");
}

void Pop3Engine::cmd_quit(std::string_view) {
    if (session_.state != State::Transaction) {
        close_with(Reply{true, "graphbridge POP3 server signing off"});
        return;
    }
    if (deleted_count_ == 0) {
        close_with(Reply{true, "graphbridge POP3 server signing off (" + std::to_string(messages_.size()) +
                                   " messages left)"});
        return;
    }
    session_.state = State::Update;
    std::vector<std::size_t> indexes;
    indexes.reserve(deleted_count_);
    for (std::size_t i = 0; i < deleted_.size(); ++i)
        if (deleted_[i]) indexes.push_back(i);
    Answer a = call_backend([&] { return backend_.commit_deletes(session_, indexes); });
    if (a.is_pending()) {
        pending_ = Pending::Commit;
        return;
    }
    apply_commit(std::move(a));
}

// ---------------------------------------------------------------------------------------------------
// Multi-line responses, produced lazily.

void Pop3Engine::pump(std::string& out, std::size_t budget) {
    std::size_t limit = out.size() + budget;
    switch (stream_.kind) {
        case StreamKind::List:
        case StreamKind::Uidl: {
            bool uidl = stream_.kind == StreamKind::Uidl;
            while (stream_.next < messages_.size() && out.size() < limit) {
                std::size_t i = stream_.next++;
                if (deleted_[i]) continue;
                out += std::to_string(i + 1);
                out.push_back(' ');
                out += uidl ? messages_[i].uid : std::to_string(messages_[i].size);
                out += "\r\n";
            }
            if (stream_.next < messages_.size()) return;
            break;
        }
        case StreamKind::Message:
            if (!pump_message(out, budget)) return;
            break;
        case StreamKind::None:
            return;
    }
    out += ".\r\n";
    release_message();
    stream_ = Stream{};
}

// Appends about `budget` octets of the message: every line ending (CRLF, bare CR, bare LF) becomes CRLF,
// lines starting with '.' get another '.', TOP stops after the header and the requested body lines.
// Returns true when the message (or its top) is complete, without the terminating ".\r\n".
bool Pop3Engine::pump_message(std::string& out, std::size_t budget) {
    Stream& s = stream_;
    const std::string& m = s.message;
    std::size_t limit = out.size() + budget;
    while (out.size() < limit) {
        if (s.line_start) {
            if (s.body_left && !s.in_header && *s.body_left == 0) return true;  // TOP: enough body lines
            if (s.pos >= m.size()) return true;
            if (m[s.pos] == '.') out.push_back('.');
            s.line_start = false;
        }
        if (s.pos >= m.size()) {  // the last line had no line ending
            out += "\r\n";
            return true;
        }
        std::size_t end = m.find_first_of("\r\n", s.pos);
        std::size_t stop = end == std::string::npos ? m.size() : end;
        std::size_t take = std::min(stop - s.pos, limit > out.size() ? limit - out.size() : 0);
        out.append(m, s.pos, take);
        s.pos += take;
        s.line_octets += take;
        if (s.pos < stop) break;  // budget used up mid-line
        if (end == std::string::npos) continue;  // reaches the "no line ending" case above
        s.pos += (m[s.pos] == '\r' && s.pos + 1 < m.size() && m[s.pos + 1] == '\n') ? 2 : 1;
        out += "\r\n";
        if (s.body_left) {
            if (s.in_header) {
                if (s.line_octets == 0) s.in_header = false;  // the blank line ending the header
            } else {
                --*s.body_left;
            }
        }
        s.line_octets = 0;
        s.line_start = true;
    }
    return false;
}

}  // namespace gb::protocol::pop3
