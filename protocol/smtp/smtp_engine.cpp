// The SMTP server protocol engine. See smtp_engine.h for the RFCs, the policy and the driver contract.
#include "protocol/smtp/smtp_engine.h"

#include <algorithm>
#include <array>
#include <stdexcept>

#include "common/ascii.h"

namespace gb::protocol::smtp {
namespace {

using ascii::iequals;

bool is_control(unsigned char c) {
    return c < 0x20 || c == 0x7F;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// "d.ddd.ddd" whose class digit matches the reply code.
bool valid_enhanced(std::string_view e, int code) {
    if (e.size() < 5 || e[0] != static_cast<char>('0' + code / 100) || e[1] != '.') return false;
    std::size_t i = 2, digits = 0;
    int dots = 0;
    for (; i < e.size(); ++i) {
        if (e[i] == '.') {
            if (digits == 0 || ++dots > 1) return false;
            digits = 0;
        } else if (e[i] >= '0' && e[i] <= '9') {
            if (++digits > 3) return false;
        } else {
            return false;
        }
    }
    return dots == 1 && digits > 0;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
    if (s.empty() || s.size() > 20) return false;
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        std::uint64_t d = static_cast<std::uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    out = v;
    return true;
}

// AUTH identities: valid UTF-8, no control characters, bounded.
bool valid_identity(std::string_view s) {
    if (s.size() > 255 || !is_valid_utf8(s)) return false;
    return std::none_of(s.begin(), s.end(), [](char c) { return is_control(static_cast<unsigned char>(c)); });
}

constexpr std::string_view kLocalError = "Local error in processing";

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Command table: one row per command. no_args rows refuse arguments with 501 5.5.4 before the handler.

struct SmtpEngine::CommandSpec {
    std::string_view name;
    void (SmtpEngine::*handler)(std::string_view args);
    bool no_args;
};

const SmtpEngine::CommandSpec* SmtpEngine::find_command(std::string_view verb) {
    static const std::array<CommandSpec, 14> kTable{{
        {"EHLO", &SmtpEngine::cmd_ehlo, false},
        {"HELO", &SmtpEngine::cmd_helo, false},
        {"MAIL", &SmtpEngine::cmd_mail, false},
        {"RCPT", &SmtpEngine::cmd_rcpt, false},
        {"DATA", &SmtpEngine::cmd_data, true},
        {"BDAT", &SmtpEngine::cmd_bdat, false},
        {"RSET", &SmtpEngine::cmd_rset, true},
        {"NOOP", &SmtpEngine::cmd_noop, false},
        {"QUIT", &SmtpEngine::cmd_quit, false},
        {"VRFY", &SmtpEngine::cmd_vrfy, false},
        {"EXPN", &SmtpEngine::cmd_expn, false},
        {"HELP", &SmtpEngine::cmd_help, false},
        {"STARTTLS", &SmtpEngine::cmd_starttls, true},
        {"AUTH", &SmtpEngine::cmd_auth, false},
    }};
    for (const auto& row : kTable)
        if (iequals(row.name, verb)) return &row;
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------
// Construction, input, output.

SmtpEngine::SmtpEngine(SmtpConfig config, ConnectionInfo connection, SmtpBackend& backend)
    : config_(std::move(config)),
      backend_(backend),
      lines_(std::max<std::size_t>(config_.limits.max_command_line, 3) - 2) {
    auto& l = config_.limits;
    l.max_held_input = std::max(l.max_held_input, l.max_command_line + 1024);
    l.body_chunk = std::max<std::size_t>(l.body_chunk, 1);
    l.max_errors = std::max(l.max_errors, 1u);
    l.max_auth_failures = std::max(l.max_auth_failures, 1u);
    session_.loopback = connection.loopback;
    session_.tls_active = connection.tls_active;
    reply_plain(220, config_.hostname + " ESMTP graphbridge");
}

std::size_t SmtpEngine::feed(std::string_view bytes) {
    if (in_backend_) throw std::logic_error("SmtpEngine::feed() called from inside a backend call");
    if (mode_ == Mode::Closed || mode_ == Mode::StartTls) return bytes.size();
    if (pending_ != Pending::None) return hold(bytes);
    std::size_t used = process(bytes);
    if (used < bytes.size() && pending_ != Pending::None) used += hold(bytes.substr(used));
    flush_body();
    return used;
}

std::size_t SmtpEngine::hold(std::string_view in) {
    std::size_t room = config_.limits.max_held_input - std::min(held_.size(), config_.limits.max_held_input);
    std::size_t n = std::min(room, in.size());
    held_.append(in.substr(0, n));
    return n;
}

void SmtpEngine::drain_held() {
    if (!held_.empty() && pending_ == Pending::None && mode_ != Mode::Closed && mode_ != Mode::StartTls) {
        std::string work;
        work.swap(held_);
        std::size_t used = process(work);
        if (mode_ != Mode::Closed && mode_ != Mode::StartTls) held_.assign(work, used, std::string::npos);
    }
    flush_body();
}

std::size_t SmtpEngine::process(std::string_view in) {
    std::size_t used = 0;
    while (used < in.size()) {
        if (mode_ == Mode::Closed || mode_ == Mode::StartTls) return in.size();  // discard everything
        if (pending_ != Pending::None) break;
        std::string_view rest = in.substr(used);
        switch (mode_) {
            case Mode::Command:
            case Mode::AuthLine:
                used += step_line(rest);
                break;
            case Mode::Data:
                used += step_data(rest);
                break;
            case Mode::Bdat:
                used += step_bdat(rest);
                break;
            case Mode::StartTls:
            case Mode::Closed:
                return in.size();
        }
    }
    return used;
}

std::string SmtpEngine::take_output() {
    std::string out;
    out.swap(output_);
    return out;
}

void SmtpEngine::tls_started() {
    if (mode_ != Mode::StartTls) throw std::logic_error("SmtpEngine::tls_started() without STARTTLS");
    reset_session();
    session_.tls_active = true;
    mode_ = Mode::Command;
}

void SmtpEngine::resume(Answer answer) {
    if (mode_ == Mode::Closed) return;
    if (in_backend_) throw std::logic_error("SmtpEngine::resume() called from inside a backend call");
    if (pending_ == Pending::None) throw std::logic_error("SmtpEngine::resume() with nothing pending");
    if (answer.is_pending()) throw std::logic_error("SmtpEngine::resume() with a pending answer");
    Pending what = pending_;
    pending_ = Pending::None;
    apply(what, std::move(answer));
    drain_held();
}

void SmtpEngine::timeout() {
    if (mode_ == Mode::Closed) return;
    close_with(421, "4.4.2", config_.hostname + " Error: timeout exceeded");
}

void SmtpEngine::shutdown() {
    if (mode_ == Mode::Closed) return;
    close_with(421, "4.3.2", config_.hostname + " Service shutting down");
}

void SmtpEngine::connection_lost() {
    if (mode_ == Mode::Closed) return;
    drop_transaction();
    pending_ = Pending::None;
    mode_ = Mode::Closed;
    held_.clear();
    body_buf_.clear();
    wipe(auth_login_user_);
}

// ---------------------------------------------------------------------------------------------------
// Replies.

void SmtpEngine::reply(int code, std::string_view enhanced, std::string_view text) {
    std::string_view rest = text;
    for (;;) {
        std::size_t nl = rest.find('\n');
        std::string_view line = rest.substr(0, nl);
        bool last = nl == std::string_view::npos;
        output_.append(std::to_string(code));
        output_.push_back(last ? ' ' : '-');
        if (!enhanced.empty()) {
            output_.append(enhanced);
            output_.push_back(' ');
        }
        for (char c : line) output_.push_back(is_control(static_cast<unsigned char>(c)) ? '?' : c);
        output_.append("\r\n");
        if (last) break;
        rest.remove_prefix(nl + 1);
    }
}

void SmtpEngine::reply(const Reply& r) {
    reply(r.code, r.enhanced, r.text);
}

void SmtpEngine::reply_plain(int code, std::string_view text) {
    reply(code, {}, text);
}

void SmtpEngine::error(int code, std::string_view enhanced, std::string_view text) {
    reply(code, enhanced, text);
    if (++errors_ >= config_.limits.max_errors)
        close_with(421, "4.7.0", config_.hostname + " Error: too many errors");
}

void SmtpEngine::close_with(int code, std::string_view enhanced, std::string_view text) {
    reply(code, enhanced, text);
    drop_transaction();
    pending_ = Pending::None;
    mode_ = Mode::Closed;
    held_.clear();
    body_buf_.clear();
    wipe(auth_login_user_);
}

Reply SmtpEngine::checked(const Answer& a, const Reply& accept, const Reply& refuse, bool data_begin) const {
    switch (a.kind()) {
        case Answer::Kind::Accept:
            return accept;
        case Answer::Kind::Refuse:
            return refuse;
        case Answer::Kind::Pending:
            break;
        case Answer::Kind::Custom: {
            Reply r = a.reply();
            int cls = r.code / 100;
            bool ok = r.code >= 200 && r.code <= 599 &&
                      (cls == 2 || cls == 4 || cls == 5 || (data_begin && r.code == 354));
            if (!ok) return Reply{451, "4.3.0", std::string(kLocalError)};
            if (r.code == 354) return r;  // data_begin: proceed (the engine sends its own 354)
            if (!valid_enhanced(r.enhanced, r.code)) r.enhanced = std::to_string(cls) + ".0.0";
            return r;
        }
    }
    return Reply{451, "4.3.0", std::string(kLocalError)};
}

template <typename F>
Answer SmtpEngine::call_backend(F&& f) {
    struct Guard {
        bool& flag;
        explicit Guard(bool& f) : flag(f) { flag = true; }
        ~Guard() { flag = false; }
    } guard(in_backend_);
    try {
        return f();
    } catch (...) {
        return Answer(Reply{451, "4.3.0", std::string(kLocalError)});
    }
}

void SmtpEngine::drop_transaction() {
    bool seen = session_.transaction.has_value() || pending_ == Pending::Mail;
    if (seen) {
        in_backend_ = true;
        try {
            backend_.transaction_reset(session_);
        } catch (...) {
            // The transaction is gone either way.
        }
        in_backend_ = false;
    }
    session_.transaction.reset();
    pending_mail_.reset();
    pending_rcpt_.reset();
}

void SmtpEngine::reset_session() {
    drop_transaction();
    session_.helo.clear();
    session_.esmtp = false;
    session_.auth_user.reset();
    session_.auth_authzid.clear();
    auth_step_ = AuthStep::None;
    wipe(auth_login_user_);
    wipe(auth_authzid_);
    lines_ = LineReader(std::max<std::size_t>(config_.limits.max_command_line, 3) - 2);
    held_.clear();
    body_buf_.clear();
}

// ---------------------------------------------------------------------------------------------------
// Command lines.

std::size_t SmtpEngine::step_line(std::string_view in) {
    LineReader::Status status = LineReader::Status::NeedMore;
    std::size_t n = lines_.feed(in, status);
    bool auth = mode_ == Mode::AuthLine;
    switch (status) {
        case LineReader::Status::Line: {
            // AUTH PLAIN's initial response and every AUTH continuation line carry a credential.
            const std::string& l = lines_.line();
            bool secret = auth || (l.size() >= 5 && (l[0] | 0x20) == 'a' && (l[1] | 0x20) == 'u' &&
                                   (l[2] | 0x20) == 't' && (l[3] | 0x20) == 'h' && l[4] == ' ');
            if (auth)
                handle_auth_line(l);
            else
                handle_command(l);
            if (secret) lines_.wipe();
            break;
        }
        case LineReader::Status::TooLong:
            if (auth)
                auth_abort(500, "5.5.6", "Authentication exchange line is too long", true);
            else
                error(500, "5.5.2", "Line too long");
            break;
        case LineReader::Status::BareLf:
            if (auth)
                auth_abort(500, "5.5.2", "Bare CR or LF in line", true);
            else
                error(500, "5.5.2", "Bare CR or LF in command line");
            break;
        case LineReader::Status::NeedMore:
            break;
    }
    return n;
}

void SmtpEngine::handle_command(std::string_view raw) {
    std::string_view line = trim(raw);
    if (std::any_of(line.begin(), line.end(),
                    [](char c) { return is_control(static_cast<unsigned char>(c)); })) {
        error(500, "5.5.2", "Invalid characters in command");
        return;
    }
    std::size_t sp = line.find(' ');
    std::string_view verb = line.substr(0, sp);
    std::string_view args = sp == std::string_view::npos ? std::string_view{} : trim(line.substr(sp + 1));
    const CommandSpec* spec = find_command(verb);
    if (spec == nullptr) {
        static constexpr std::array<std::string_view, 7> kHttp{"GET",     "POST",    "HEAD",  "PUT",
                                                               "CONNECT", "OPTIONS", "DELETE"};
        bool http = std::find(kHttp.begin(), kHttp.end(), verb) != kHttp.end() &&
                    args.find("HTTP/") != std::string_view::npos;
        if (http)
            close_with(554, "5.7.0", "Non-SMTP command, closing connection");
        else
            error(500, "5.5.2", "Command unrecognized");
        return;
    }
    if (spec->no_args && !args.empty()) {
        error(501, "5.5.4", "Syntax: " + std::string(spec->name) + " takes no arguments");
        return;
    }
    (this->*(spec->handler))(args);
}

bool SmtpEngine::greet(std::string_view args, bool esmtp) {
    if (args.empty() || args.size() > 255 || !is_valid_utf8(args)) {
        error(501, "5.5.4", esmtp ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
        return false;
    }
    drop_transaction();
    session_.helo = std::string(args);
    session_.esmtp = esmtp;
    return true;
}

void SmtpEngine::cmd_ehlo(std::string_view args) {
    if (!greet(args, true)) return;
    std::string text = config_.hostname;
    text += "\nPIPELINING\nSIZE " + std::to_string(config_.limits.max_message_size);
    if (config_.tls_available && !session_.tls_active) text += "\nSTARTTLS";
    if (auth_allowed()) text += "\nAUTH PLAIN LOGIN";
    text += "\nENHANCEDSTATUSCODES\n8BITMIME\nSMTPUTF8\nCHUNKING";
    reply_plain(250, text);
}

void SmtpEngine::cmd_helo(std::string_view args) {
    if (!greet(args, false)) return;
    reply_plain(250, config_.hostname);
}

void SmtpEngine::cmd_mail(std::string_view args) {
    if (session_.helo.empty()) return error(503, "5.5.1", "Error: send EHLO/HELO first");
    if (session_.transaction) return error(503, "5.5.1", "Error: nested MAIL command");
    ParsedPath path;
    switch (parse_path_argument(args, "FROM", true, path)) {
        case PathError::None:
            break;
        case PathError::Syntax:
            return error(501, "5.5.2", "Syntax: MAIL FROM:<address>");
        case PathError::BadAddress:
            return error(501, "5.1.7", "Bad sender address syntax");
        case PathError::BadParameter:
            return error(501, "5.5.4", "Invalid parameter syntax");
    }
    MailRequest request;
    request.reverse_path = std::move(path.address);
    bool seen_size = false, seen_body = false, seen_utf8 = false, seen_auth = false;
    auto duplicate = [](bool& seen) {
        bool was = seen;
        seen = true;
        return was;
    };
    for (const auto& p : path.params) {
        if (p.keyword == "SIZE") {
            std::uint64_t n = 0;
            if (duplicate(seen_size) || !p.has_value || !parse_u64(p.value, n))
                return error(501, "5.5.4", "Invalid SIZE parameter");
            request.params.size = n;
        } else if (p.keyword == "BODY") {
            if (duplicate(seen_body) || !p.has_value) return error(501, "5.5.4", "Invalid BODY parameter");
            if (iequals(p.value, "7BIT"))
                request.params.body = BodyType::SevenBit;
            else if (iequals(p.value, "8BITMIME"))
                request.params.body = BodyType::EightBitMime;
            else
                return error(501, "5.5.4", "Unsupported BODY type");
        } else if (p.keyword == "SMTPUTF8") {
            if (duplicate(seen_utf8) || p.has_value) return error(501, "5.5.4", "Invalid SMTPUTF8 parameter");
            request.params.smtputf8 = true;
        } else if (p.keyword == "AUTH") {
            if (duplicate(seen_auth) || !p.has_value) return error(501, "5.5.4", "Invalid AUTH parameter");
            request.params.auth = p.value;
        } else {
            return error(555, "5.5.4", "Unsupported parameter " + p.keyword);
        }
    }
    if (request.params.size && *request.params.size > config_.limits.max_message_size)
        return reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
    if (!request.params.smtputf8 && !request.reverse_path.is_ascii())
        return reply(553, "5.6.7", "SMTPUTF8 required for UTF-8 sender address");
    pending_mail_ = std::move(request);
    Answer a = call_backend([&] { return backend_.mail_from(session_, *pending_mail_); });
    if (a.is_pending()) {
        pending_ = Pending::Mail;
        return;
    }
    apply_mail(std::move(a));
}

void SmtpEngine::apply_mail(Answer answer) {
    if (!pending_mail_) return;
    std::string addr = pending_mail_->reverse_path.to_string();
    Reply r = checked(answer, Reply{250, "2.1.0", "Sender <" + addr + "> OK"},
                      Reply{550, "5.7.1", "Sender <" + addr + "> rejected"});
    if (r.code / 100 == 2) {
        Transaction t;
        t.reverse_path = std::move(pending_mail_->reverse_path);
        t.params = std::move(pending_mail_->params);
        session_.transaction = std::move(t);
    }
    pending_mail_.reset();
    reply(r);
}

void SmtpEngine::cmd_rcpt(std::string_view args) {
    if (!session_.transaction) return error(503, "5.5.1", "Error: need MAIL command");
    ParsedPath path;
    switch (parse_path_argument(args, "TO", false, path)) {
        case PathError::None:
            break;
        case PathError::Syntax:
            return error(501, "5.5.2", "Syntax: RCPT TO:<address>");
        case PathError::BadAddress:
            return error(501, "5.1.3", "Bad recipient address syntax");
        case PathError::BadParameter:
            return error(501, "5.5.4", "Invalid parameter syntax");
    }
    Transaction& t = *session_.transaction;
    if (!path.params.empty())
        return error(555, "5.5.4", "Unsupported parameter " + path.params.front().keyword);
    if (!t.params.smtputf8 && !path.address.is_ascii()) {
        ++t.refused_recipients;
        return reply(553, "5.6.7", "SMTPUTF8 required for UTF-8 recipient address");
    }
    if (t.recipients.size() >= config_.limits.max_recipients) {
        ++t.refused_recipients;
        return reply(452, "4.5.3", "Too many recipients");
    }
    pending_rcpt_ = std::move(path.address);
    Answer a = call_backend([&] { return backend_.rcpt_to(session_, *pending_rcpt_); });
    if (a.is_pending()) {
        pending_ = Pending::Rcpt;
        return;
    }
    apply_rcpt(std::move(a));
}

void SmtpEngine::apply_rcpt(Answer answer) {
    if (!pending_rcpt_ || !session_.transaction) return;
    std::string addr = pending_rcpt_->to_string();
    Reply r = checked(answer, Reply{250, "2.1.5", "Recipient <" + addr + "> OK"},
                      Reply{550, "5.7.1", "Recipient <" + addr + "> rejected"});
    if (r.code / 100 == 2)
        session_.transaction->recipients.push_back(std::move(*pending_rcpt_));
    else
        ++session_.transaction->refused_recipients;
    pending_rcpt_.reset();
    reply(r);
}

void SmtpEngine::cmd_data(std::string_view) {
    if (!session_.transaction) return error(503, "5.5.1", "Error: need MAIL command");
    const Transaction& t = *session_.transaction;
    if (t.bdat) return error(503, "5.5.1", "Error: DATA not allowed after BDAT");
    if (t.recipients.empty()) {
        if (t.refused_recipients > 0) return error(554, "5.5.0", "Error: no valid recipients");
        return error(503, "5.5.1", "Error: need RCPT command");
    }
    pending_is_bdat_ = false;
    Answer a = call_backend([&] { return backend_.data_begin(session_); });
    if (a.is_pending()) {
        pending_ = Pending::DataBegin;
        return;
    }
    apply_data_begin(std::move(a));
}

void SmtpEngine::apply_data_begin(Answer answer) {
    if (!session_.transaction) return;
    Reply r = checked(answer, Reply{354, {}, {}}, Reply{451, "4.3.0", "Unable to accept message now"}, true);
    bool ok = r.code == 354 || r.code / 100 == 2;
    if (pending_is_bdat_) {
        if (ok) {
            session_.transaction->bdat = true;
            bdat_forward_ = true;
        } else {
            bdat_error_ = r;
            bdat_error_counts_ = false;
        }
        if (bdat_remaining_ == 0) finish_bdat_chunk();
        return;
    }
    if (!ok) return reply(r);
    reply_plain(354, "End data with <CR><LF>.<CR><LF>");
    mode_ = Mode::Data;
    body_state_ = BodyState::LineStart;
    rejection_ = Rejection::None;
    line_octets_ = 0;
    body_bytes_ = 0;
    body_buf_.clear();
}

// ---------------------------------------------------------------------------------------------------
// DATA body: dot-unstuffing, the only end is CRLF.CRLF, bare CR/LF and long lines reject the message.

void SmtpEngine::emit_body(char c) {
    if (rejection_ != Rejection::None) return;
    if (++body_bytes_ > config_.limits.max_message_size) {
        reject_body(Rejection::TooBig);
        return;
    }
    body_buf_.push_back(c);
    if (body_buf_.size() >= config_.limits.body_chunk) flush_body();
}

void SmtpEngine::flush_body() {
    if (body_buf_.empty()) return;
    if (rejection_ == Rejection::None) {
        in_backend_ = true;
        try {
            backend_.data_chunk(body_buf_);
        } catch (...) {
            rejection_ = Rejection::LocalError;
        }
        in_backend_ = false;
    }
    body_buf_.clear();
}

void SmtpEngine::reject_body(Rejection why) {
    if (rejection_ == Rejection::None) rejection_ = why;
    body_buf_.clear();
}

std::size_t SmtpEngine::step_data(std::string_view in) {
    const std::size_t max_line = config_.limits.max_data_line;
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (++line_octets_ > max_line) reject_body(Rejection::LineTooLong);
        switch (body_state_) {
            case BodyState::LineStart:
                if (c == '.') {
                    body_state_ = BodyState::Dot;
                    continue;
                }
                break;
            case BodyState::Dot:  // the leading dot is removed whatever follows (RFC 5321 4.5.2)
                if (c == '\r') {
                    body_state_ = BodyState::DotCr;
                    continue;
                }
                break;
            case BodyState::DotCr:
                if (c == '\n') {  // CRLF . CRLF: the only end of data
                    finish_data();
                    return i + 1;
                }
                reject_body(Rejection::BareCrLf);  // ".\r" + something else: a bare CR
                emit_body('\r');
                break;
            case BodyState::MidCr:
                if (c == '\n') {
                    emit_body('\r');
                    emit_body('\n');
                    body_state_ = BodyState::LineStart;
                    line_octets_ = 0;
                    continue;
                }
                reject_body(Rejection::BareCrLf);
                emit_body('\r');
                break;
            case BodyState::Mid:
                break;
        }
        // c in the middle of a line.
        if (c == '\r') {
            body_state_ = BodyState::MidCr;
        } else {
            if (c == '\n') reject_body(Rejection::BareCrLf);  // bare LF: never a line end
            emit_body(c);
            body_state_ = BodyState::Mid;
        }
    }
    return in.size();
}

void SmtpEngine::finish_data() {
    mode_ = Mode::Command;
    if (rejection_ == Rejection::None) flush_body();
    switch (rejection_) {
        case Rejection::None:
            break;
        case Rejection::BareCrLf:
            reply(554, "5.6.0", "Message rejected: bare CR or LF in message");
            return drop_transaction();
        case Rejection::LineTooLong:
            reply(554, "5.6.0", "Message rejected: line too long");
            return drop_transaction();
        case Rejection::TooBig:
            reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
            return drop_transaction();
        case Rejection::LocalError:
            reply(451, "4.3.0", kLocalError);
            return drop_transaction();
    }
    pending_is_bdat_ = false;
    Answer a = call_backend([&] { return backend_.data_end(session_); });
    if (a.is_pending()) {
        pending_ = Pending::DataEnd;
        return;
    }
    apply_data_end(std::move(a));
}

void SmtpEngine::apply_data_end(Answer answer) {
    Reply r = checked(answer, Reply{250, "2.0.0", "Ok: queued"}, Reply{554, "5.7.1", "Message rejected"});
    session_.transaction.reset();  // the transaction ends whatever the answer (RFC 5321 4.1.1.4)
    reply(r);
}

// ---------------------------------------------------------------------------------------------------
// BDAT (RFC 3030): n bytes of binary data follow the command line.

void SmtpEngine::cmd_bdat(std::string_view args) {
    std::size_t sp = args.find(' ');
    std::string_view size = args.substr(0, sp);
    std::string_view rest = sp == std::string_view::npos ? std::string_view{} : trim(args.substr(sp + 1));
    std::uint64_t n = 0;
    if (!parse_u64(size, n) || !(rest.empty() || iequals(rest, "LAST")))
        return error(501, "5.5.4", "Syntax: BDAT size [LAST]");
    bdat_remaining_ = n;
    bdat_chunk_size_ = n;
    bdat_last_ = !rest.empty();
    bdat_forward_ = false;
    bdat_error_.reset();
    bdat_error_counts_ = false;
    bdat_fails_transaction_ = false;
    mode_ = Mode::Bdat;  // the chunk is consumed whatever happens below

    if (!session_.transaction) {
        bdat_error_ = Reply{503, "5.5.1", "Error: need MAIL command"};
        bdat_error_counts_ = true;
    } else if (session_.transaction->recipients.empty()) {
        bdat_error_counts_ = true;
        if (session_.transaction->refused_recipients > 0)
            bdat_error_ = Reply{554, "5.5.0", "Error: no valid recipients"};
        else
            bdat_error_ = Reply{503, "5.5.1", "Error: need RCPT command"};
    } else if (n > config_.limits.max_message_size -
                       std::min(session_.transaction->bdat_bytes, config_.limits.max_message_size)) {
        bdat_error_ = Reply{552, "5.3.4", "Message size exceeds fixed maximum message size"};
        bdat_fails_transaction_ = true;
    } else if (!session_.transaction->bdat) {
        pending_is_bdat_ = true;
        Answer a = call_backend([&] { return backend_.data_begin(session_); });
        if (a.is_pending()) {
            pending_ = Pending::DataBegin;
            return;
        }
        apply_data_begin(std::move(a));  // finishes a zero-length chunk itself
        return;
    } else {
        bdat_forward_ = true;
    }
    if (bdat_remaining_ == 0) finish_bdat_chunk();
}

std::size_t SmtpEngine::step_bdat(std::string_view in) {
    std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(bdat_remaining_, in.size()));
    if (bdat_forward_ && take > 0) {
        in_backend_ = true;
        try {
            backend_.data_chunk(in.substr(0, take));
        } catch (...) {
            bdat_forward_ = false;
            bdat_error_ = Reply{451, "4.3.0", std::string(kLocalError)};
            bdat_fails_transaction_ = true;
        }
        in_backend_ = false;
    }
    bdat_remaining_ -= take;
    if (bdat_remaining_ == 0) finish_bdat_chunk();
    return take;
}

void SmtpEngine::finish_bdat_chunk() {
    mode_ = Mode::Command;
    if (bdat_error_) {
        Reply r = std::move(*bdat_error_);
        bdat_error_.reset();
        if (bdat_fails_transaction_) drop_transaction();
        if (bdat_error_counts_)
            error(r.code, r.enhanced, r.text);
        else
            reply(r);
        return;
    }
    Transaction& t = *session_.transaction;
    t.bdat_bytes += bdat_chunk_size_;
    if (!bdat_last_) return reply(250, "2.0.0", std::to_string(bdat_chunk_size_) + " octets received");
    pending_is_bdat_ = true;
    Answer a = call_backend([&] { return backend_.data_end(session_); });
    if (a.is_pending()) {
        pending_ = Pending::DataEnd;
        return;
    }
    apply_data_end(std::move(a));
}

// ---------------------------------------------------------------------------------------------------
// Small commands.

void SmtpEngine::cmd_rset(std::string_view) {
    drop_transaction();
    reply(250, "2.0.0", "Ok");
}

void SmtpEngine::cmd_noop(std::string_view) {
    reply(250, "2.0.0", "Ok");
}

void SmtpEngine::cmd_quit(std::string_view) {
    close_with(221, "2.0.0", "Bye");
}

void SmtpEngine::cmd_vrfy(std::string_view args) {
    if (args.empty()) return error(501, "5.5.4", "Syntax: VRFY address");
    reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
}

void SmtpEngine::cmd_expn(std::string_view) {
    error(502, "5.5.1", "EXPN not implemented");
}

void SmtpEngine::cmd_help(std::string_view) {
    reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH");
}

void SmtpEngine::cmd_starttls(std::string_view) {
    if (!config_.tls_available) return error(502, "5.5.1", "STARTTLS not available");
    if (session_.tls_active) return error(503, "5.5.1", "TLS already active");
    if (session_.transaction) return error(503, "5.5.1", "Error: MAIL transaction in progress");
    reply(220, "2.0.0", "Ready to start TLS");
    mode_ = Mode::StartTls;  // everything until tls_started() is discarded (CVE-2011-0411)
    held_.clear();
}

// ---------------------------------------------------------------------------------------------------
// AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN.

bool SmtpEngine::auth_allowed() const {
    return config_.auth_enabled && (session_.tls_active || session_.loopback);
}

void SmtpEngine::cmd_auth(std::string_view args) {
    if (!config_.auth_enabled) return error(502, "5.5.1", "AUTH not available");
    if (!session_.esmtp) return error(503, "5.5.1", "Error: send EHLO first");
    if (session_.auth_user) return error(503, "5.5.1", "Error: already authenticated");
    if (session_.transaction) return error(503, "5.5.1", "Error: MAIL transaction in progress");
    if (!auth_allowed())
        return error(538, "5.7.11", "Encryption required for requested authentication mechanism");
    std::size_t sp = args.find(' ');
    std::string_view mech = args.substr(0, sp);
    std::string_view initial = sp == std::string_view::npos ? std::string_view{} : trim(args.substr(sp + 1));
    bool has_initial = sp != std::string_view::npos && !initial.empty();
    if (mech.empty() || initial.find(' ') != std::string_view::npos)
        return error(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
    if (iequals(mech, "PLAIN")) {
        auth_mechanism_ = "PLAIN";
        if (has_initial) return auth_plain_response(initial);
        auth_step_ = AuthStep::PlainResponse;
        mode_ = Mode::AuthLine;
        return reply_plain(334, "");
    }
    if (iequals(mech, "LOGIN")) {
        auth_mechanism_ = "LOGIN";
        if (has_initial) return auth_login_user(initial);
        auth_step_ = AuthStep::LoginUser;
        mode_ = Mode::AuthLine;
        return reply_plain(334, "VXNlcm5hbWU6");  // "Username:"
    }
    error(504, "5.5.4", "Unrecognized authentication type");
}

void SmtpEngine::handle_auth_line(std::string_view line) {
    if (line == "*") return auth_abort(501, "5.0.0", "Authentication cancelled", true);
    switch (auth_step_) {
        case AuthStep::PlainResponse:
            return auth_plain_response(line);
        case AuthStep::LoginUser:
            return auth_login_user(line);
        case AuthStep::LoginPassword:
            return auth_login_password(line);
        case AuthStep::None:
            break;
    }
    auth_abort(503, "5.5.1", "Error: no AUTH in progress", true);
}

void SmtpEngine::auth_abort(int code, std::string_view enhanced, std::string_view text,
                            bool counts_as_error) {
    mode_ = Mode::Command;
    auth_step_ = AuthStep::None;
    wipe(auth_login_user_);
    if (counts_as_error)
        error(code, enhanced, text);
    else
        reply(code, enhanced, text);
}

void SmtpEngine::auth_plain_response(std::string_view b64) {
    std::string decoded;
    if (b64 != "=" && !decode_base64(b64, decoded)) {
        wipe(decoded);
        return auth_abort(501, "5.5.2", "Invalid base64 data", true);
    }
    // authzid NUL authcid NUL passwd
    std::size_t first = decoded.find('\0');
    std::size_t second = first == std::string::npos ? first : decoded.find('\0', first + 1);
    if (second == std::string::npos || decoded.find('\0', second + 1) != std::string::npos) {
        wipe(decoded);
        return auth_abort(501, "5.5.2", "Invalid PLAIN authentication data", true);
    }
    AuthRequest request;
    request.mechanism = "PLAIN";
    request.authzid = decoded.substr(0, first);
    request.user = decoded.substr(first + 1, second - first - 1);
    request.password = gb::Secret(decoded.substr(second + 1));
    wipe(decoded);
    if (request.user.empty() || !valid_identity(request.user) || !valid_identity(request.authzid))
        return auth_abort(501, "5.5.2", "Invalid PLAIN authentication data", true);
    auth_submit(std::move(request));
}

void SmtpEngine::auth_login_user(std::string_view b64) {
    std::string decoded;
    if (!decode_base64(b64, decoded) || decoded.empty() || !valid_identity(decoded)) {
        wipe(decoded);
        return auth_abort(501, "5.5.2", "Invalid base64 data", true);
    }
    auth_login_user_ = std::move(decoded);
    auth_step_ = AuthStep::LoginPassword;
    mode_ = Mode::AuthLine;
    reply_plain(334, "UGFzc3dvcmQ6");  // "Password:"
}

void SmtpEngine::auth_login_password(std::string_view b64) {
    std::string decoded;
    if (b64 != "=" && !decode_base64(b64, decoded)) {
        wipe(decoded);
        return auth_abort(501, "5.5.2", "Invalid base64 data", true);
    }
    AuthRequest request;
    request.mechanism = "LOGIN";
    request.user = std::move(auth_login_user_);
    auth_login_user_.clear();
    request.password = gb::Secret(std::move(decoded));
    auth_submit(std::move(request));
}

void SmtpEngine::auth_submit(AuthRequest request) {
    mode_ = Mode::Command;
    auth_step_ = AuthStep::None;
    auth_login_user_ = request.user;
    auth_authzid_ = request.authzid;
    Answer a = call_backend([&] { return backend_.authenticate(session_, request); });
    if (a.is_pending()) {
        pending_ = Pending::Auth;
        return;
    }
    apply_auth(std::move(a));
}

void SmtpEngine::apply_auth(Answer answer) {
    Reply r = checked(answer, Reply{235, "2.7.0", "Authentication successful"},
                      Reply{535, "5.7.8", "Authentication credentials invalid"});
    if (r.code / 100 == 2) {
        session_.auth_user = auth_login_user_;
        session_.auth_authzid = auth_authzid_;
    }
    auth_login_user_.clear();
    auth_authzid_.clear();
    reply(r);
    if (r.code / 100 == 5 && ++auth_failures_ >= config_.limits.max_auth_failures)
        close_with(421, "4.7.0", config_.hostname + " Error: too many authentication failures");
}

void SmtpEngine::apply(Pending what, Answer answer) {
    switch (what) {
        case Pending::Auth:
            return apply_auth(std::move(answer));
        case Pending::Mail:
            return apply_mail(std::move(answer));
        case Pending::Rcpt:
            return apply_rcpt(std::move(answer));
        case Pending::DataBegin:
            return apply_data_begin(std::move(answer));
        case Pending::DataEnd:
            return apply_data_end(std::move(answer));
        case Pending::None:
            break;
    }
}

}  // namespace gb::protocol::smtp
