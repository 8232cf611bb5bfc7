// The POP3 server protocol engine: bytes in, response bytes out, decisions delegated to a backend.
// Socket-free, no Asio, no TLS library, no logging; the driver (proxy/pop3) owns I/O and timers.
//
// Implements:
//   RFC 1939 (USER, PASS, STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT; states AUTHORIZATION,
//   TRANSACTION, UPDATE), RFC 2449 CAPA (TOP, UIDL, USER, SASL PLAIN, RESP-CODES, PIPELINING,
//   IMPLEMENTATION), RFC 3206 AUTH-RESP-CODE ([AUTH], [SYS/TEMP], [SYS/PERM]), RFC 2595 STLS,
//   RFC 5034 AUTH with PLAIN (RFC 4616), with an initial response or a "+ " continuation ("*" cancels).
//   "AUTH" without arguments lists the mechanisms (the pre-RFC 5034 form some old clients send).
// Deliberately not implemented: APOP (needs the plaintext password; the greeting has no timestamp),
//   LAST (removed in RFC 1725), other SASL mechanisms, EXPIRE and LOGIN-DELAY (not advertised: the
//   Inbox lives in Exchange, where retention policies and other clients may remove messages, so
//   "EXPIRE NEVER" would be a promise we cannot keep, and no login delay is enforced), exclusive
//   maildrop locking (the backend decides; concurrent sessions each have their own snapshot).
//
// Security policy (all input is hostile):
//   - Command lines end at CRLF only; a bare CR or LF inside one makes the whole line an error. Control
//     characters in a command line are refused. A command line longer than limits.max_command_line
//     (255 octets + CRLF, RFC 2449 section 4) gets one "-ERR Line too long" and is discarded up to its
//     CRLF, so the connection stays usable and memory stays bounded.
//   - STLS: after "+OK Begin TLS negotiation" every byte fed before tls_started() is discarded
//     (CVE-2011-0411 class); tls_started() resets the AUTHORIZATION state (a pending USER is dropped).
//   - USER/PASS and AUTH are refused ("-ERR [SYS/PERM] ...") before TLS unless the peer is loopback,
//     and CAPA then lists neither USER nor SASL PLAIN. Credentials only exist as gb::Secret on their way
//     to the backend; the lines and decoded copies that carried them are wiped.
//   - After limits.max_auth_failures failed logins the last "-ERR [AUTH] ..." is followed by a close;
//     after limits.max_errors protocol errors likewise.
//   - Message bytes from the backend are normalised while they are sent: a bare CR or bare LF becomes
//     CRLF (a message can never end the multi-line response early, whatever the sender put in it), a
//     line starting with '.' is dot-stuffed, a missing final CRLF is added, then ".\r\n".
//
// Memory held by the engine: the maildrop snapshot (uid + size per message, one deleted flag each), the
// partial command line (at most max(max_command_line, max_auth_line) octets), the reply text queued
// since the last take_output(), and while RETR/TOP is answered the one copy of that message the
// backend handed over (released once sent). Multi-line responses (LIST, UIDL, RETR, TOP) are produced
// lazily, at most limits.output_chunk octets per take_output() call, so a 50 MB message or a maildrop
// of 100 000 messages never exists twice in memory.
//
// Pipelining (RFC 2449): commands may be pipelined; responses come out in command order. The engine
// processes one command at a time: while a backend answer is pending or a multi-line response is still
// being produced it takes no further input (feed() returns less than it was given and the driver keeps
// the rest). Anything pipelined after STLS is discarded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/secret.h"
#include "protocol/line_reader.h"

namespace gb::protocol::pop3 {

// All limits in one place. Defaults are documented; every one is configurable.
struct Pop3Limits {
    std::size_t max_command_line = 255;  // octets excluding CRLF (RFC 2449: 255 for commands)
    std::size_t max_auth_line = 2048;    // an AUTH continuation line (base64), excluding CRLF
    unsigned max_errors = 20;            // protocol errors per session; the last one is followed by a close
    unsigned max_auth_failures = 3;      // refused logins per session; the last one is followed by a close
    std::size_t output_chunk = 65536;    // multi-line response octets per take_output() (at least 512)
};

struct Pop3Config {
    std::string hostname = "localhost";  // used in the greeting
    bool tls_available = false;          // a TLS context exists: advertise and accept STLS
    Pop3Limits limits;
};

struct ConnectionInfo {
    bool loopback = false;    // the peer is 127.0.0.0/8 or ::1: USER/PASS and AUTH allowed without TLS
    bool tls_active = false;  // implicit TLS (port 995): the session starts encrypted
};

// A response to send: "+OK text" or "-ERR text". Control characters in text are replaced and it is cut
// at 400 octets, so backend or client-derived text cannot inject response lines. A text may start with
// a response code ("[SYS/TEMP] ...", RFC 2449 section 8).
struct Reply {
    bool ok = false;
    std::string text;
};

// A backend's answer to one decision point.
//   accept():  proceed; the engine sends its own success response.
//   refuse():  the engine's default refusal for that point (see Pop3Backend).
//   a Reply:   ok -> treated as accept (the text is not used); !ok -> "-ERR text" sent as is.
//   pending(): the backend will answer later through Pop3Engine::resume().
class Answer {
  public:
    enum class Kind { Accept, Refuse, Custom, Pending };
    static Answer accept() { return Answer(Kind::Accept); }
    static Answer refuse() { return Answer(Kind::Refuse); }
    static Answer pending() { return Answer(Kind::Pending); }
    static Answer error(std::string text) { return Answer(Reply{false, std::move(text)}); }
    Answer(Reply reply) : kind_(Kind::Custom), reply_(std::move(reply)) {}  // NOLINT: implicit on purpose

    Kind kind() const { return kind_; }
    bool is_pending() const { return kind_ == Kind::Pending; }
    // Accept, or a Custom reply with ok set.
    bool is_success() const { return kind_ == Kind::Accept || (kind_ == Kind::Custom && reply_.ok); }
    const Reply& reply() const { return reply_; }

  private:
    explicit Answer(Kind kind) : kind_(kind) {}
    Kind kind_;
    Reply reply_;
};

// One message of the maildrop snapshot.
struct MessageInfo {
    std::string uid;         // UIDL: stable across sessions and restarts, 1..70 octets of 0x21-0x7E, unique
    std::uint64_t size = 0;  // octets of the message as RETR sends it (CRLF lines, before dot-stuffing)
};

enum class State { Authorization, Transaction, Update };

// Session state the driver and backend may read (never write) through Pop3Engine::session().
struct Session {
    bool loopback = false;
    bool tls_active = false;
    State state = State::Authorization;
    std::string user;            // the identity of the login in progress, then the logged-in user
    bool authenticated = false;  // the backend accepted the credentials (maildrop possibly still opening)
};

struct AuthRequest {
    std::string mechanism;  // "USER" (USER/PASS) or "PLAIN" (AUTH PLAIN)
    std::string user;       // valid UTF-8, 1..255 octets, no control characters
    gb::Secret password;
};

// Authentication and storage, implemented outside protocol/. Every call happens inside
// Pop3Engine::feed() or resume() on the engine's thread; a backend must not call back into the engine
// from within a call (answer pending() and call resume() later instead). Exceptions thrown by a backend
// are caught and become "-ERR [SYS/TEMP] ..." responses, never escape feed()/resume().
class Pop3Backend {
  public:
    virtual ~Pop3Backend() = default;

    // PASS or AUTH PLAIN. The request (and its Secret) lives only for the duration of the call: a
    // backend answering pending() copies what it needs. Success -> the engine calls open_maildrop();
    // refuse -> "-ERR [AUTH] Invalid login or password", counted towards max_auth_failures;
    // a custom -ERR (e.g. "[SYS/TEMP] Try again later") is sent as is and not counted.
    virtual Answer authenticate(const Session& session, const AuthRequest& request) = 0;

    // After a successful authentication (session.authenticated, session.user set): take the maildrop
    // snapshot. Success -> the engine calls maildrop() once, enters TRANSACTION and answers
    // "+OK maildrop has N messages (M octets)"; refuse -> "-ERR [SYS/TEMP] Unable to open the maildrop";
    // a custom -ERR (e.g. "[IN-USE] ...") is sent as is. Either failure returns to AUTHORIZATION, not
    // authenticated, without counting as a failed login.
    virtual Answer open_maildrop(const Session& session) = 0;
    // The snapshot, oldest first (message number i is element i-1). Called exactly once after
    // open_maildrop() succeeded. An invalid or duplicate uid makes the engine refuse the login with
    // "-ERR [SYS/TEMP] Maildrop unavailable" (a backend bug must not reach clients as garbage).
    virtual std::vector<MessageInfo> maildrop() = 0;

    // RETR or TOP of a message that is not deleted (index: 0-based position in the snapshot).
    // Success -> the engine calls take_message() once and sends it (TOP: only the header, the blank line
    // and the requested body lines); refuse -> "-ERR [SYS/TEMP] Unable to retrieve message N";
    // a custom -ERR is sent as is (e.g. "message 3 no longer exists").
    virtual Answer retrieve(const Session& session, std::size_t index) = 0;
    // The message retrieve() prepared: CRLF lines, not dot-stuffed. Moved into the engine, which keeps
    // this one copy until it has been sent.
    virtual std::string take_message() = 0;

    // QUIT in TRANSACTION with messages marked deleted (0-based indexes, ascending, never empty): the
    // UPDATE state. Success -> "+OK ... signing off"; refuse -> "-ERR some deleted messages not
    // removed"; a custom -ERR is sent as is. The connection closes whatever the answer. Not called for
    // a QUIT without deletions, a lost connection, a timeout or a shutdown (RFC 1939: no UPDATE then).
    virtual Answer commit_deletes(const Session& session, const std::vector<std::size_t>& indexes) = 0;
};

class Pop3Engine {
  public:
    // What the engine waits for while awaiting_backend().
    enum class Pending { None, Auth, Maildrop, Retrieve, Commit };

    // Queues the "+OK" greeting. The backend must outlive the engine.
    Pop3Engine(Pop3Config config, ConnectionInfo connection, Pop3Backend& backend);

    Pop3Engine(const Pop3Engine&) = delete;
    Pop3Engine& operator=(const Pop3Engine&) = delete;

    // Consumes client bytes and processes every complete command it can, appending responses. Returns
    // how many bytes it took. It stops taking input while busy: a backend answer is pending
    // (awaiting_backend()) or a multi-line response is still being produced (has_output() stays true
    // until take_output() has returned all of it). The driver keeps the rest and feeds it again once
    // the engine is no longer busy; it need not read from the socket meanwhile. After wants_close() or
    // wants_stls() everything is taken and discarded. Throws std::logic_error when called from inside
    // a backend call.
    std::size_t feed(std::string_view bytes);

    // Response bytes: everything queued so far, then at most limits.output_chunk octets of a multi-line
    // response in progress. The driver writes them out and calls again while has_output().
    std::string take_output();
    bool has_output() const { return !output_.empty() || stream_.kind != StreamKind::None; }

    // The driver must write out the output and then close the connection.
    bool wants_close() const { return mode_ == Mode::Closed; }
    // The driver must write out the output ("+OK Begin TLS negotiation"), run the TLS handshake and
    // call tls_started(), or close the connection if the handshake fails.
    bool wants_stls() const { return mode_ == Mode::StartTls; }
    // The handshake completed: AUTHORIZATION starts over (no new greeting, RFC 2595) with tls_active.
    void tls_started();

    // A backend call answered pending(): call resume() with the real answer (never pending()).
    bool awaiting_backend() const { return pending_ != Pending::None; }
    Pending pending() const { return pending_; }
    // Delivers the answer. A no-op after wants_close(). Throws std::logic_error when nothing is pending
    // or when called from inside a backend call.
    void resume(Answer answer);

    // The driver's idle timer fired: RFC 1939's autologout, the connection closes without a response
    // and without entering UPDATE (nothing is deleted).
    void timeout();
    // Server shutdown: "-ERR [SYS/TEMP] Server shutting down" (unless a multi-line response is in
    // progress), then close; nothing is deleted.
    void shutdown();
    // The peer went away: drop everything; nothing is deleted, a pending answer is ignored.
    void connection_lost();

    const Session& session() const { return session_; }
    // Messages in the snapshot (0 before TRANSACTION) and how many of them are marked deleted.
    std::size_t message_count() const { return messages_.size(); }
    std::size_t deleted_count() const { return deleted_count_; }
    // Bytes of client input the engine is holding (the partial command line).
    std::size_t buffered_input() const { return mode_ == Mode::Closed ? 0 : lines_.buffered(); }
    // Nothing in progress: no AUTH exchange, no answer pending or being sent, no partial command (a
    // graceful shutdown may say goodbye now without cutting anything off).
    bool between_commands() const {
        return mode_ == Mode::Command && pending_ == Pending::None && !has_output() && !lines_.partial();
    }

  private:
    enum class Mode { Command, AuthLine, StartTls, Closed };
    enum class StreamKind { None, List, Uidl, Message };
    struct CommandSpec;
    static const CommandSpec* find_command(std::string_view verb);

    // A multi-line response produced lazily by take_output().
    struct Stream {
        StreamKind kind = StreamKind::None;
        std::size_t next = 0;                  // List/Uidl: next snapshot index
        std::string message;                   // Message: the one copy from the backend
        std::size_t pos = 0;                   // Message: next octet of message
        bool line_start = true;                // Message: at the start of a line
        std::size_t line_octets = 0;           // Message: octets of the current line so far
        bool in_header = true;                 // TOP: still in the header block
        std::optional<std::uint64_t> body_left;  // TOP: body lines still to send; nullopt = RETR
    };

    std::size_t step_line(std::string_view in);
    void handle_command(std::string_view line);
    void handle_auth_line(std::string_view line);

    void cmd_capa(std::string_view args);
    void cmd_user(std::string_view args);
    void cmd_pass(std::string_view args);
    void cmd_auth(std::string_view args);
    void cmd_stls(std::string_view args);
    void cmd_stat(std::string_view args);
    void cmd_list(std::string_view args);
    void cmd_uidl(std::string_view args);
    void cmd_retr(std::string_view args);
    void cmd_top(std::string_view args);
    void cmd_dele(std::string_view args);
    void cmd_rset(std::string_view args);
    void cmd_noop(std::string_view args);
    void cmd_quit(std::string_view args);

    bool auth_allowed() const;
    void auth_plain_response(std::string_view b64);
    void auth_submit(AuthRequest request);
    void apply(Pending what, Answer answer);
    void apply_auth(Answer answer);
    void apply_maildrop(Answer answer);
    void apply_retrieve(Answer answer);
    void apply_commit(Answer answer);
    void login_failed_softly();
    template <typename F>
    Answer call_backend(F&& f);

    // Resolves a message-number argument to a 0-based index of a message that is not deleted; on
    // failure sends the -ERR and returns nullopt.
    std::optional<std::size_t> message_arg(std::string_view arg);
    void start_retrieve(std::size_t index, std::optional<std::uint64_t> top_lines);
    void pump(std::string& out, std::size_t budget);
    bool pump_message(std::string& out, std::size_t budget);

    void ok(std::string_view text);
    void err(std::string_view text);
    void reply(const Reply& r);
    void error(std::string_view text);  // a protocol error: -ERR, counted towards max_errors
    void close_with(std::optional<Reply> last);
    void release_message();

    Pop3Config config_;
    Pop3Backend& backend_;
    Session session_;
    Mode mode_ = Mode::Command;
    Pending pending_ = Pending::None;
    bool in_backend_ = false;
    LineReader lines_;
    std::string output_;
    Stream stream_;
    unsigned errors_ = 0;
    unsigned auth_failures_ = 0;
    bool user_given_ = false;  // USER accepted, PASS expected

    // Decisions in flight.
    std::size_t pending_index_ = 0;
    std::optional<std::uint64_t> pending_top_;

    // TRANSACTION: the snapshot.
    std::vector<MessageInfo> messages_;
    std::vector<bool> deleted_;
    std::size_t deleted_count_ = 0;
};

}  // namespace gb::protocol::pop3
