// The SMTP server protocol engine: bytes in, reply bytes out, decisions delegated to a backend.
// Socket-free, no Asio, no TLS library, no logging; the driver (proxy/smtp) owns I/O and timers.
//
// Implements:
//   RFC 5321 (EHLO, HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY -> 252, HELP -> 214),
//   RFC 1870 SIZE, RFC 2920 PIPELINING, RFC 6152 8BITMIME (BODY=7BIT|8BITMIME), RFC 6531 SMTPUTF8,
//   RFC 2034/3463 ENHANCEDSTATUSCODES, RFC 3030 CHUNKING (BDAT), RFC 3207 STARTTLS,
//   RFC 4954 AUTH with PLAIN (RFC 4616) and LOGIN, initial response or 334 continuation.
// Deliberately not implemented: EXPN (502), TURN/ETRN, DSN (RFC 3461: RET/ENVID/NOTIFY/ORCPT are refused
//   as unknown parameters with 555), BINARYMIME, AUTH mechanisms other than PLAIN/LOGIN, the legacy
//   "AUTH=" EHLO line, delivery (the backend's job).
//
// Security policy (all input is hostile):
//   - Command lines end at CRLF only. A bare CR or LF inside a command line makes the whole line an
//     error (500 5.5.2); it never splits one line into two commands. Other control characters (NUL,
//     TAB, ...) inside a command line are refused the same way. Too-long lines get one 500 5.5.2 and
//     are skipped up to their CRLF, so the connection stays usable.
//   - DATA ends at "<CRLF>.<CRLF>" only (the CRLF ending the DATA command counts as the first CRLF).
//     "\n.\n", "\r.\r\n", "\n.\r\n" and any other variant never end DATA. Any bare CR or bare LF in the
//     body marks the message rejected; the engine keeps reading to the real end of data and then replies
//     "554 5.6.0 Message rejected: bare CR or LF in message" (the SMTP smuggling class is closed: the
//     bytes after a fake end can never be parsed as commands, and no such message is ever accepted).
//     A body line longer than limits.max_data_line (1000 incl. CRLF) is rejected the same way with
//     "554 5.6.0 Message rejected: line too long"; a body over max_message_size with "552 5.3.4".
//   - BDAT chunks are binary (no dot-unstuffing, no line checks); the n bytes of a syntactically valid
//     "BDAT n" are always consumed, even when the command is refused, so they are never run as commands.
//   - STARTTLS: after "220 2.0.0 Ready to start TLS" every byte fed before tls_started() is discarded
//     (CVE-2011-0411 class); tls_started() resets the whole session (EHLO required again, AUTH dropped).
//   - AUTH is refused before TLS (538 5.7.11) unless the peer is loopback, and only advertised when it
//     is allowed. Credentials only exist as gb::Secret on their way to the backend; decoded copies are wiped.
//   - Memory is bounded: a command line by limits.max_command_line, held input while waiting for the
//     backend by limits.max_held_input, the body by limits.body_chunk (it is streamed to the backend).
//   - Enhanced status codes are on every reply except the 220 greeting and the EHLO/HELO 250 lines.
//
// Leniencies (see smtp_parser.h for address syntax): "MAIL FROM: <a@b>", bare addresses without angle
// brackets, source routes stripped, trailing spaces on command lines, ESMTP parameters accepted after
// HELO as well as EHLO, NOOP and QUIT arguments ignored.
//
// Pipelining (RFC 2920): every command may be pipelined; a whole group is processed in one feed() and
// the replies come out in command order. The engine cannot see packet boundaries (and is tested to give
// identical output for any split of the input), so it does not police "last command in a group"; the
// only timing rule that matters for security, the STARTTLS discard, is enforced.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/secret.h"
#include "protocol/line_reader.h"
#include "protocol/smtp/smtp_parser.h"

namespace gb::protocol::smtp {

// All limits in one place. Defaults are documented; every one is configurable.
struct SmtpLimits {
    std::size_t max_command_line = 2048;  // octets incl. CRLF (RFC 5321 says 512; AUTH lines need more)
    std::size_t max_data_line = 1000;     // octets incl. CRLF in DATA (RFC 5321 4.5.3.1.6)
    std::size_t max_recipients = 100;     // accepted RCPTs per transaction; more -> 452 4.5.3
    unsigned max_errors = 10;             // protocol errors per session; the last one -> 421 4.7.0, close
    unsigned max_auth_failures = 3;       // failed AUTH per session; the last one -> 421 4.7.0, close
    std::uint64_t max_message_size = 35ull * 1024 * 1024;  // SIZE advertised and enforced (unstuffed bytes)
    std::size_t max_held_input = 4096;                     // input buffered while a backend answer is pending
                                                           // (never less than max_command_line + 1024)
    std::size_t body_chunk = 16384;  // DATA body handed to the backend in pieces of at most this
};

struct SmtpConfig {
    std::string hostname = "localhost";  // used in the greeting, EHLO and 221/421 replies
    bool tls_available = false;          // a TLS context exists: advertise and accept STARTTLS
    bool auth_enabled = true;            // offer AUTH PLAIN LOGIN where allowed
    SmtpLimits limits;
};

struct ConnectionInfo {
    bool loopback = false;    // the peer is 127.0.0.0/8 or ::1: AUTH allowed without TLS
    bool tls_active = false;  // implicit TLS (port 465): the session starts encrypted
};

// A reply to send. Codes outside 200..599 (or not fitting the decision point) are replaced by
// "451 4.3.0" by the engine. text may hold several lines separated by '\n'; control characters in it
// are replaced, so client-supplied text cannot inject reply lines.
struct Reply {
    int code = 0;
    std::string enhanced;  // "2.1.0"; empty or malformed -> the engine uses "<class>.0.0"
    std::string text;
};

// A backend's answer to one decision point.
//   accept():  proceed with the engine's default success reply.
//   refuse():  the engine's default refusal for that point (see SmtpBackend).
//   a Reply:   sent as is; its code class decides success (2xx; 354 or 2xx for data_begin) or not.
//   pending(): the backend will answer later through SmtpEngine::resume().
class Answer {
  public:
    enum class Kind { Accept, Refuse, Custom, Pending };
    static Answer accept() { return Answer(Kind::Accept); }
    static Answer refuse() { return Answer(Kind::Refuse); }
    static Answer pending() { return Answer(Kind::Pending); }
    Answer(Reply reply) : kind_(Kind::Custom), reply_(std::move(reply)) {}  // NOLINT: implicit on purpose

    Kind kind() const { return kind_; }
    bool is_pending() const { return kind_ == Kind::Pending; }
    const Reply& reply() const { return reply_; }

  private:
    explicit Answer(Kind kind) : kind_(kind) {}
    Kind kind_;
    Reply reply_;
};

enum class BodyType { Unspecified, SevenBit, EightBitMime };

struct MailParams {
    std::optional<std::uint64_t> size;  // SIZE= (RFC 1870), the client's estimate
    BodyType body = BodyType::Unspecified;
    bool smtputf8 = false;            // RFC 6531: UTF-8 allowed in this transaction's addresses
    std::optional<std::string> auth;  // AUTH= (RFC 4954 5), xtext as sent; informational only
};

struct MailRequest {
    Address reverse_path;  // is_null() for "<>"
    MailParams params;
};

struct AuthRequest {
    std::string mechanism;  // "PLAIN" or "LOGIN"
    std::string authzid;    // PLAIN authorization identity, usually empty
    std::string user;       // authentication identity (valid UTF-8, no control characters)
    gb::Secret password;
};

// The current mail transaction (exists from an accepted MAIL to the end of data, RSET, EHLO, ...).
struct Transaction {
    Address reverse_path;
    MailParams params;
    std::vector<Address> recipients;     // accepted RCPTs, in order
    std::size_t refused_recipients = 0;  // RCPTs refused by the backend or the engine
    bool bdat = false;                   // a BDAT chunk has been accepted (DATA now refused)
    std::uint64_t bdat_bytes = 0;        // BDAT bytes received so far
};

// Session state the driver and policy may read (never write) through SmtpEngine::session().
struct Session {
    bool loopback = false;
    bool tls_active = false;
    bool esmtp = false;                    // the client said EHLO (not HELO)
    std::string helo;                      // EHLO/HELO argument (printable, no control characters)
    std::optional<std::string> auth_user;  // set after 235
    std::string auth_authzid;
    std::optional<Transaction> transaction;
};

// Policy and storage, implemented outside protocol/. Every call happens inside SmtpEngine::feed() or
// resume() on the engine's thread; a backend must not call back into the engine from within a call
// (answer pending() and call resume() later instead). Exceptions from a backend are caught and become
// "451 4.3.0" (or a dropped transaction), never escape feed().
class SmtpBackend {
  public:
    virtual ~SmtpBackend() = default;

    // AUTH. The request (and its Secret) lives only for the duration of the call: a backend answering
    // pending() copies what it needs. accept or 2xx -> 235 2.7.0 and session().auth_user set; refuse or 5xx
    // -> 535 5.7.8 by default, counted towards max_auth_failures; 4xx (e.g. 454 4.7.0) -> temporary, not
    // counted.
    virtual Answer authenticate(const Session& session, const AuthRequest& request) = 0;
    // MAIL, after the engine checked sequence, syntax, parameters, SIZE and SMTPUTF8.
    // accept -> "250 2.1.0"; refuse -> "550 5.7.1 Sender rejected". Only 2xx opens a transaction.
    virtual Answer mail_from(const Session& session, const MailRequest& request) = 0;
    // RCPT, after syntax, SMTPUTF8 and max_recipients checks. session.transaction is set.
    // accept -> "250 2.1.5"; refuse -> "550 5.7.1 Recipient rejected". Only 2xx adds the recipient.
    virtual Answer rcpt_to(const Session& session, const Address& recipient) = 0;
    // DATA or the first BDAT of a transaction, with at least one accepted recipient.
    // accept / 354 / 2xx -> body follows (the engine sends its own 354 for DATA);
    // refuse -> "451 4.3.0 Unable to accept message now".
    virtual Answer data_begin(const Session& session) = 0;
    // Body bytes in order: dot-unstuffed for DATA (the final CRLF before "." included), raw for BDAT.
    // Never called once the engine has rejected the message.
    virtual void data_chunk(std::string_view bytes) = 0;
    // The whole body was received and the engine found nothing wrong with it. The reply is the final
    // word on the message ("250 means on disk"). accept -> "250 2.0.0 Ok: queued"; refuse ->
    // "554 5.7.1 Message rejected". The transaction ends whatever the answer.
    virtual Answer data_end(const Session& session) = 0;
    // A transaction the backend has seen (MAIL accepted) was dropped without a data_end: RSET, EHLO,
    // HELO, STARTTLS, QUIT, an engine-rejected body, a failed BDAT, close, connection_lost(). Also
    // called when such a drop happens while an answer is pending; that answer is then ignored.
    virtual void transaction_reset(const Session& session) { (void)session; }
};

class SmtpEngine {
  public:
    // What the engine waits for while awaiting_backend().
    enum class Pending { None, Auth, Mail, Rcpt, DataBegin, DataEnd };

    // Queues the 220 greeting. The backend must outlive the engine.
    SmtpEngine(SmtpConfig config, ConnectionInfo connection, SmtpBackend& backend);

    SmtpEngine(const SmtpEngine&) = delete;
    SmtpEngine& operator=(const SmtpEngine&) = delete;

    // Consumes client bytes: processes every complete command it can, streams body bytes to the
    // backend, appends replies to the output. Returns how many bytes it took. It takes all of them
    // unless a backend answer is pending and the held-input buffer (limits.max_held_input) is full:
    // the driver then keeps the rest, stops reading from the socket, and feeds the rest again after
    // resume(). After wants_close() or wants_starttls() everything is taken and discarded.
    // Throws std::logic_error when called from inside a backend call.
    std::size_t feed(std::string_view bytes);

    // Reply bytes queued so far (the driver writes them out, then calls again after each feed/resume).
    std::string take_output();
    bool has_output() const { return !output_.empty(); }

    // The driver must write out the output and then close the connection.
    bool wants_close() const { return mode_ == Mode::Closed; }
    // The driver must write out the output ("220 2.0.0 Ready to start TLS"), run the TLS handshake and
    // call tls_started(), or close the connection if the handshake fails.
    bool wants_starttls() const { return mode_ == Mode::StartTls; }
    // The handshake completed: the session is reset to its initial state with tls_active set.
    void tls_started();

    // A backend call answered pending(): call resume() with the real answer (never pending()).
    bool awaiting_backend() const { return pending_ != Pending::None; }
    Pending pending() const { return pending_; }
    // Delivers the answer, then processes held input. A no-op after wants_close(). Throws
    // std::logic_error when nothing is pending or when called from inside a backend call.
    void resume(Answer answer);

    // The driver's idle/command timer fired: "421 4.4.2 <host> Error: timeout exceeded", then close.
    void timeout();
    // Server shutdown: "421 4.3.2 <host> Service shutting down", then close.
    void shutdown();
    // The peer went away: drop the transaction (backend.transaction_reset) and any pending answer.
    void connection_lost();
    // Nothing in progress: no mail transaction, no AUTH exchange, no answer pending, no partial command
    // (a graceful shutdown may say 421 now without cutting anything off).
    bool between_transactions() const {
        return mode_ == Mode::Command && !session_.transaction && pending_ == Pending::None && held_.empty() &&
               !lines_.partial();
    }

    const Session& session() const { return session_; }
    // Bytes of client input the engine is holding (held input + the partial command line).
    std::size_t buffered_input() const {
        bool discarding = mode_ == Mode::Closed || mode_ == Mode::StartTls;
        return held_.size() + (discarding ? 0 : lines_.buffered());
    }

  private:
    enum class Mode { Command, AuthLine, Data, Bdat, StartTls, Closed };
    enum class AuthStep { None, PlainResponse, LoginUser, LoginPassword };
    enum class BodyState { LineStart, Dot, DotCr, Mid, MidCr };
    enum class Rejection { None, BareCrLf, LineTooLong, TooBig, LocalError };
    struct CommandSpec;
    static const CommandSpec* find_command(std::string_view verb);

    std::size_t process(std::string_view in);
    std::size_t hold(std::string_view in);
    void drain_held();
    std::size_t step_line(std::string_view in);
    std::size_t step_data(std::string_view in);
    std::size_t step_bdat(std::string_view in);
    void handle_command(std::string_view line);
    void handle_auth_line(std::string_view line);

    void cmd_helo(std::string_view args);
    void cmd_ehlo(std::string_view args);
    void cmd_mail(std::string_view args);
    void cmd_rcpt(std::string_view args);
    void cmd_data(std::string_view args);
    void cmd_bdat(std::string_view args);
    void cmd_rset(std::string_view args);
    void cmd_noop(std::string_view args);
    void cmd_quit(std::string_view args);
    void cmd_vrfy(std::string_view args);
    void cmd_expn(std::string_view args);
    void cmd_help(std::string_view args);
    void cmd_starttls(std::string_view args);
    void cmd_auth(std::string_view args);

    bool greet(std::string_view args, bool esmtp);
    bool auth_allowed() const;
    void auth_plain_response(std::string_view b64);
    void auth_login_user(std::string_view b64);
    void auth_login_password(std::string_view b64);
    void auth_submit(AuthRequest request);
    void auth_abort(int code, std::string_view enhanced, std::string_view text, bool counts_as_error);

    void emit_body(char c);
    void flush_body();
    void reject_body(Rejection why);
    void finish_data();
    void finish_bdat_chunk();

    void apply(Pending what, Answer answer);
    void apply_auth(Answer answer);
    void apply_mail(Answer answer);
    void apply_rcpt(Answer answer);
    void apply_data_begin(Answer answer);
    void apply_data_end(Answer answer);
    template <typename F>
    Answer call_backend(F&& f);

    void reply(int code, std::string_view enhanced, std::string_view text);
    void reply(const Reply& r);
    void reply_plain(int code, std::string_view text);  // no enhanced code (greeting, HELO)
    void error(int code, std::string_view enhanced, std::string_view text);
    void close_with(int code, std::string_view enhanced, std::string_view text);
    void drop_transaction();
    void reset_session();
    Reply checked(const Answer& a, const Reply& accept, const Reply& refuse, bool data_begin = false) const;

    SmtpConfig config_;
    SmtpBackend& backend_;
    Session session_;
    Mode mode_ = Mode::Command;
    Pending pending_ = Pending::None;
    bool in_backend_ = false;
    LineReader lines_;
    std::string held_;
    std::string output_;
    unsigned errors_ = 0;
    unsigned auth_failures_ = 0;

    // AUTH exchange in progress.
    AuthStep auth_step_ = AuthStep::None;
    std::string auth_mechanism_;
    std::string auth_login_user_;  // LOGIN user, then the identity being decided
    std::string auth_authzid_;

    // Decisions in flight.
    std::optional<MailRequest> pending_mail_;
    std::optional<Address> pending_rcpt_;
    bool pending_is_bdat_ = false;  // DataBegin/DataEnd for BDAT rather than DATA

    // DATA body.
    BodyState body_state_ = BodyState::LineStart;
    Rejection rejection_ = Rejection::None;
    std::size_t line_octets_ = 0;
    std::uint64_t body_bytes_ = 0;
    std::string body_buf_;

    // BDAT chunk.
    std::uint64_t bdat_remaining_ = 0;
    std::uint64_t bdat_chunk_size_ = 0;
    bool bdat_last_ = false;
    bool bdat_forward_ = false;        // chunk bytes go to the backend
    std::optional<Reply> bdat_error_;  // reply for the chunk when it is refused
    bool bdat_error_counts_ = false;   // ... and it is a protocol error (max_errors)
    bool bdat_fails_transaction_ = false;
};

}  // namespace gb::protocol::smtp
