// The IMAP4rev1 command reader: client bytes in, parsed commands out. Socket-free, no Asio, no logging;
// the server (proxy/imap) owns I/O, the command table, states and replies.
//
// Implements: RFC 3501 section 9 command syntax at the generic level (tag SP command-name *(SP value)
// CRLF, where a value is an atom, NIL, a quoted string, a literal {n} or a parenthesised list), the
// literal continuation handshake (RFC 3501 7.5), non-synchronizing literals {n+} (RFC 7888 LITERAL+).
// Deliberately not implemented: literal8 ~{n} (RFC 3516 BINARY), UTF8 in atoms, literals inside a
// BODY[...] section (the "[" then has no "]" on its line, so it is read as a plain atom and the
// command ends up refused), interpreting arguments (the server's per-command layer does that with
// Value's accessors, parse_sequence_set() and from_mutf7()).
//
// Security policy (all input is hostile):
//   - Command lines end at CRLF only. A bare CR or LF inside a line refuses the whole command (BAD); it
//     never splits one line into two commands. Literal bytes are opaque except that NUL is refused.
//   - Every refused command is skipped whole before its Error is reported: the rest of the line, and
//     the bytes of any non-synchronizing literal announced at the end of a refused line (they are
//     discarded as they stream in, never stored). A synchronizing literal announced on a refused line
//     gets the BAD instead of "+", so the client does not send it (RFC 3501 7.5).
//   - Memory is bounded by Limits: the non-literal text of a command (max_line), one literal
//     (max_literal), the whole command (max_command), list nesting (max_depth, no recursion: 10,000
//     '(' cost nothing beyond the limit), value count (max_values). Sizes are checked when a literal is
//     announced, before anything is allocated; an over-long line is dropped while it streams in.
//   - The only fatal error is a non-synchronizing literal whose size cannot be read (more than 2^64-1):
//     the reader cannot know where the next command starts, so the server must send BYE and close.
//
// Choices where the RFC leaves room (each deliberate):
//   - Exactly one SP between tag, name and arguments; no leading, trailing or doubled spaces; "(" and
//     ")" are not followed / preceded by SP. Anything else is BAD (RFC 3501 9 grammar, no leniency).
//   - An empty line gets "* BAD" (every CRLF-terminated line yields exactly one event).
//   - Quoted strings may contain 8-bit octets (UTF-8 from clients that ignore RFC 3501's 7-bit rule, as
//     RFC 6855/9051 allow); Limits::allow_8bit_quoted = false refuses them. Other TEXT-CHARs (TAB and
//     the rest of %x01-7F except CR and LF) are allowed as RFC 3501 says.
//   - An argument atom is any run of %x21-7E except ( ) { " : ATOM-CHAR plus the list-wildcards % *,
//     resp-specials ] and \ (flags like \Seen, LIST patterns, sequence sets 1:*). The per-command layer
//     narrows it with Value::astring() / list_mailbox(). A "[" whose matching "]" is on the same line
//     (outside quoted strings and parentheses, with balanced parentheses, SP, ATOM-CHARs and quoted
//     strings between) opens a section kept verbatim, so BODY.PEEK[HEADER.FIELDS (A B)]<0.10> is ONE
//     atom; a "<...>" partial is ordinary atom text after it. A "[" without such a "]" is an ordinary
//     ATOM-CHAR, so "foo[" stays a valid atom/astring (RFC 3501). Nesting inside [...] counts
//     against max_depth.
//   - A literal size above 4294967295 (RFC 3501 number) is treated as too big.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace gb::protocol::imap {

// All limits in one place; defaults documented here.
struct Limits {
    std::size_t max_line = 64 * 1024;                 // non-literal octets of one command, CRLFs included
    std::uint64_t max_literal = 64ull * 1024 * 1024;  // one literal ({n} or {n+})
    std::uint64_t max_nonsync_literal = 64ull * 1024 * 1024;      // one {n+}; 4096 when advertising LITERAL-
    std::uint64_t max_command = 64ull * 1024 * 1024 + 64 * 1024;  // whole command, literals included
    std::size_t max_depth = 32;                                   // parenthesis nesting (also inside [...])
    std::size_t max_values = 100000;  // values per command (lists count as one each)
    bool allow_8bit_quoted = true;    // octets >= 0x80 inside quoted strings
};

struct Value {
    enum class Kind { Atom, String, List, Nil };

    Kind kind = Kind::Atom;
    // Atom: the text as sent (case preserved). String: the content (escapes resolved, or the literal's
    // octets). Nil: the atom as sent ("NIL", "nil", ...). List: empty.
    std::string text;
    bool literal = false;      // String only: it was sent as a literal ({n} or {n+})
    std::vector<Value> items;  // List only

    bool is_atom() const { return kind == Kind::Atom; }
    bool is_string() const { return kind == Kind::String; }
    bool is_list() const { return kind == Kind::List; }
    bool is_nil() const { return kind == Kind::Nil; }
    // An Atom equal to word, ASCII case-insensitively ("FLAGS", "BODY.PEEK[]", ...).
    bool is_atom(std::string_view word) const;
    // RFC 3501 astring: a String, or an Atom made of ASTRING-CHARs only (so no % * \ ( ) [ ] spaces
    // from a section), or NIL taken as the 3-letter name. nullopt otherwise.
    std::optional<std::string_view> astring() const;
    // RFC 3501 list-mailbox (LIST/LSUB pattern): a String, or an Atom of ATOM-CHAR / % / * / ].
    std::optional<std::string_view> list_mailbox() const;
};

// A complete command line, literals included.
struct Command {
    std::string tag;
    std::string name;            // upper-cased ("UID", "FETCH", ...); "UID FETCH" is name UID, args FETCH ...
    std::vector<Value> args;     // top-level arguments in order
    std::size_t wire_bytes = 0;  // octets the command took on the wire (CRLFs and literals included)
};

// A synchronizing literal {size} within limits was announced: send "+ Ready for literal\r\n" now; the
// reader then expects its size octets.
struct Continue {
    std::uint64_t size = 0;
};

// The command was refused and has been skipped whole. Send "<tag> BAD <text>" (tag is "*" when no
// valid tag could be read, and always "*" in raw-line mode). fatal: send "* BYE <text>" and close;
// the reader then discards all input.
struct Error {
    std::string tag;
    std::string text;  // constant text, safe to send (no client bytes, no CR/LF)
    bool fatal = false;
};

// Raw-line mode only: the next CRLF-terminated line, without its CRLF, otherwise untouched.
struct RawLine {
    std::string text;
};

using Event = std::variant<Command, Continue, Error, RawLine>;

// Incremental reader. Usage: feed(bytes), then next() until nullopt, then read more from the socket.
// The reader stops after each event and parses no further until next() is called again, so the
// server can switch to raw-line mode after a Command (AUTHENTICATE, IDLE) before the following
// bytes are looked at; bytes after a complete command stay buffered for the next one (pipelining).
// Results are identical however the input is split.
class CommandReader {
  public:
    explicit CommandReader(Limits limits = {});

    // Takes all the bytes. Processes them up to the first event; the rest is buffered.
    void feed(std::string_view bytes);
    // The next event, parsing buffered input as needed; nullopt when more input is needed.
    std::optional<Event> next();

    // Raw-line mode: the next line is returned as RawLine (or an Error: "* BAD" too long / bare CR or
    // LF) and the mode switches off by itself. The line is limited to max_line octets incl. CRLF.
    // Only between commands (at_command_start()); throws std::logic_error otherwise. set(false)
    // cancels a mode that has not been used.
    void set_raw_line_mode(bool on);
    bool raw_line_mode() const { return raw_; }

    // Octets held: the current command (its text, literals and parsed values, sizeof(Value) each) plus
    // input not parsed yet. Bounded by max_command + max_values * sizeof(Value), plus whatever was fed
    // while an event was waiting to be taken.
    std::size_t buffered() const;
    // No part of a command has been read (input may be buffered behind a pending event).
    bool at_command_start() const;
    // A fatal Error was produced; everything fed since is discarded.
    bool failed() const { return state_ == State::Dead; }
    const Limits& limits() const { return limits_; }
    // Other limits for what is read from now on (meant for between commands: the server widens them
    // once the client has logged in). The command being read, if any, is checked against both.
    void set_limits(const Limits& limits) { limits_ = limits; }

  private:
    enum class State { Line, Literal, SkipLine, SkipLiteral, Dead };
    enum class Expect { Value, ListFirst, AfterValue };

    // Streaming detector of "{digits}" or "{digits+}" at the end of a line being skipped.
    struct LiteralTail {
        enum class S { None, Open, Digits, Plus, Closed };
        S s = S::None;
        bool nonsync = false;
        bool overflow = false;  // more than 2^64-1
        std::uint64_t size = 0;
        void push(char c);
    };

    struct Outcome {
        enum class Kind { Complete, Literal, Error };
        Kind kind = Kind::Complete;
        const char* error = nullptr;
        std::uint64_t size = 0;
        bool sync = true;
        bool unreadable = false;  // literal size overflowed 64 bits
    };

    std::size_t process(std::string_view data);
    void drain();
    std::size_t step_line(std::string_view rest);
    std::size_t step_literal(std::string_view rest);
    std::size_t step_skip_line(std::string_view rest);
    std::size_t step_skip_literal(std::string_view rest);

    void complete_segment();
    Outcome tokenize(std::string_view body);
    Outcome parse_atom(std::string_view body, std::size_t& i);
    enum class Section { Matched, NoMatch, TooDeep };
    Section scan_section(std::string_view body, std::size_t& i) const;
    const char* scan_quoted(std::string_view body, std::size_t& i, std::string* out) const;
    bool add_value(Value v);
    void close_list();
    void accept_literal(const Outcome& lit, std::string_view body);
    void finish_literal();

    void fail(const char* text, std::string_view line_so_far);
    void fail_line_too_long();
    void start_skip_line(std::string_view already);
    void start_skip_literal(std::uint64_t n);
    void end_of_skipped_line();
    void emit_error();
    void fatal(const char* text);
    void reset_command();
    std::string tag_from_prefix(std::string_view line) const;

    Limits limits_;
    State state_ = State::Line;
    bool raw_ = false;
    std::optional<Event> event_;

    // Unparsed input behind a pending event.
    std::string in_;
    std::size_t in_pos_ = 0;

    // The command being read.
    bool first_segment_ = true;
    bool tag_known_ = false;
    std::string tag_;
    std::string name_;
    std::vector<std::vector<Value>> stack_;  // stack_[0]: top-level args; one more per open list
    Expect expect_ = Expect::Value;
    std::size_t values_ = 0;
    std::size_t held_ = 0;        // approximate octets held by parsed values
    std::size_t text_bytes_ = 0;  // non-literal octets so far (completed segments)
    std::uint64_t literal_bytes_ = 0;
    std::uint64_t wire_ = 0;
    std::string seg_;  // current line segment (up to CRLF or a literal)

    // Literal being read or discarded.
    std::uint64_t lit_remaining_ = 0;
    std::string lit_buf_;

    // Skipping a refused command.
    bool skip_raw_ = false;  // the skipped line is a raw line (no literal handling)
    bool skip_cr_ = false;   // the previous skipped octet was CR
    LiteralTail tail_;
    std::string err_tag_;
    const char* err_text_ = nullptr;
};

}  // namespace gb::protocol::imap
