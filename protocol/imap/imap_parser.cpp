// IMAP4rev1 command reader. See imap_parser.h for the grammar, the limits and the choices made.
#include "protocol/imap/imap_parser.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "common/ascii.h"
#include "protocol/imap/imap_chars.h"

namespace gb::protocol::imap {
namespace {

constexpr std::uint64_t kMaxNumber = 4294967295u;  // RFC 3501 number
constexpr std::size_t kKeepCapacity = 16 * 1024;   // buffers larger than this are released when idle

// Characters of an argument token (see the header): %x21-7E except ( ) { ".
bool is_token_char(char ch) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return false;
    return c != '(' && c != ')' && c != '{' && c != '"';
}

using ascii::iequals;
using ascii::upper;

bool valid_tag(std::string_view tag) {
    if (tag.empty()) return false;
    return std::all_of(tag.begin(), tag.end(), [](char c) { return is_astring_char(c) && c != '+'; });
}

void release_if_big(std::string& s) {
    s.clear();
    if (s.capacity() > kKeepCapacity) s.shrink_to_fit();
}

}  // namespace

bool Value::is_atom(std::string_view word) const {
    return kind == Kind::Atom && iequals(text, word);
}

std::optional<std::string_view> Value::astring() const {
    if (kind == Kind::String) return std::string_view(text);
    if (kind != Kind::Atom && kind != Kind::Nil) return std::nullopt;
    if (text.empty() || !std::all_of(text.begin(), text.end(), is_astring_char)) return std::nullopt;
    return std::string_view(text);
}

std::optional<std::string_view> Value::list_mailbox() const {
    if (kind == Kind::String) return std::string_view(text);
    if (kind != Kind::Atom && kind != Kind::Nil) return std::nullopt;
    auto ok = [](char c) { return is_astring_char(c) || c == '%' || c == '*'; };
    if (text.empty() || !std::all_of(text.begin(), text.end(), ok)) return std::nullopt;
    return std::string_view(text);
}

void CommandReader::LiteralTail::push(char c) {
    if (c == '{') {
        s = S::Open;
        size = 0;
        overflow = nonsync = false;
        return;
    }
    switch (s) {
        case S::Open:
        case S::Digits:
            if (c >= '0' && c <= '9') {
                auto d = static_cast<std::uint64_t>(c - '0');
                if (size > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
                    overflow = true;
                else
                    size = size * 10 + d;
                s = S::Digits;
                return;
            }
            if (s == S::Digits && c == '+') {
                nonsync = true;
                s = S::Plus;
                return;
            }
            if (s == S::Digits && c == '}') {
                s = S::Closed;
                return;
            }
            break;
        case S::Plus:
            if (c == '}') {
                s = S::Closed;
                return;
            }
            break;
        case S::None:
        case S::Closed:
            break;
    }
    s = S::None;
}

CommandReader::CommandReader(Limits limits) : limits_(limits) {
    stack_.emplace_back();
}

void CommandReader::feed(std::string_view bytes) {
    if (state_ == State::Dead || bytes.empty()) return;
    if (event_ || in_pos_ < in_.size()) {
        if (in_pos_ > 0) {
            in_.erase(0, in_pos_);
            in_pos_ = 0;
        }
        in_.append(bytes);
        if (!event_) drain();
        return;
    }
    std::size_t used = process(bytes);
    if (used < bytes.size()) {
        in_.assign(bytes.substr(used));
        in_pos_ = 0;
    }
}

std::optional<Event> CommandReader::next() {
    if (!event_) drain();
    std::optional<Event> out = std::move(event_);
    event_.reset();
    return out;
}

void CommandReader::drain() {
    if (in_pos_ < in_.size()) in_pos_ += process(std::string_view(in_).substr(in_pos_));
    if (in_pos_ >= in_.size()) {
        release_if_big(in_);
        in_pos_ = 0;
    }
}

void CommandReader::set_raw_line_mode(bool on) {
    if (on && !at_command_start())
        throw std::logic_error("CommandReader::set_raw_line_mode: a command is partially read");
    raw_ = on;
}

std::size_t CommandReader::buffered() const {
    return (in_.size() - in_pos_) + seg_.size() + lit_buf_.size() + held_;
}

bool CommandReader::at_command_start() const {
    return state_ == State::Line && first_segment_ && seg_.empty();
}

std::size_t CommandReader::process(std::string_view data) {
    std::size_t pos = 0;
    while (pos < data.size() && !event_) {
        std::string_view rest = data.substr(pos);
        switch (state_) {
            case State::Line:
                pos += step_line(rest);
                break;
            case State::Literal:
                pos += step_literal(rest);
                break;
            case State::SkipLine:
                pos += step_skip_line(rest);
                break;
            case State::SkipLiteral:
                pos += step_skip_literal(rest);
                break;
            case State::Dead:
                return data.size();
        }
    }
    if (state_ == State::Dead) return data.size();
    return pos;
}

// Accumulates the current segment up to its LF. The segment (with earlier segments of the command)
// may not exceed max_line; the excess is never stored.
std::size_t CommandReader::step_line(std::string_view rest) {
    std::size_t lf = rest.find('\n');
    std::size_t take = lf == std::string_view::npos ? rest.size() : lf + 1;
    std::size_t used = text_bytes_ + seg_.size();
    std::size_t room = limits_.max_line > used ? limits_.max_line - used : 0;
    if (take > room) {
        seg_.append(rest.substr(0, room));
        fail_line_too_long();
        return room;
    }
    seg_.append(rest.substr(0, take));
    wire_ += take;
    if (lf != std::string_view::npos && seg_.size() >= 2 && seg_[seg_.size() - 2] == '\r') complete_segment();
    return take;
}

std::size_t CommandReader::step_literal(std::string_view rest) {
    std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(lit_remaining_, rest.size()));
    std::string_view chunk = rest.substr(0, take);
    const void* nul = take ? std::memchr(chunk.data(), 0, chunk.size()) : nullptr;
    if (nul != nullptr) {
        std::size_t upto = static_cast<std::size_t>(static_cast<const char*>(nul) - chunk.data()) + 1;
        lit_remaining_ -= upto;
        err_tag_ = tag_;
        err_text_ = "NUL octet in literal";
        std::uint64_t left = lit_remaining_;
        reset_command();
        start_skip_literal(left);
        return upto;
    }
    if (lit_buf_.empty() && take > 0)
        lit_buf_.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(lit_remaining_, 1u << 20)));
    lit_buf_.append(chunk);
    lit_remaining_ -= take;
    wire_ += take;
    if (lit_remaining_ == 0) finish_literal();
    return take;
}

std::size_t CommandReader::step_skip_line(std::string_view rest) {
    for (std::size_t i = 0; i < rest.size(); ++i) {
        char c = rest[i];
        if (skip_cr_) {
            skip_cr_ = false;
            if (c == '\n') {
                end_of_skipped_line();
                return i + 1;
            }
            tail_.push('\r');
        }
        if (c == '\r')
            skip_cr_ = true;
        else
            tail_.push(c);
    }
    return rest.size();
}

std::size_t CommandReader::step_skip_literal(std::string_view rest) {
    std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(lit_remaining_, rest.size()));
    lit_remaining_ -= take;
    if (lit_remaining_ == 0) start_skip_line({});
    return take;
}

// A CRLF-terminated segment is complete in seg_: a whole line, or the continuation after a literal.
void CommandReader::complete_segment() {
    std::string_view body(seg_.data(), seg_.size() - 2);
    text_bytes_ += seg_.size();
    if (raw_) {
        raw_ = false;
        if (body.find_first_of("\r\n") != std::string_view::npos) {
            event_ = Error{"*", "Line contains a bare CR or LF", false};
        } else {
            event_ = RawLine{std::string(body)};
        }
        reset_command();
        return;
    }
    if (body.find_first_of("\r\n") != std::string_view::npos) {
        if (first_segment_) {
            tag_ = tag_from_prefix(body);
            tag_known_ = !tag_.empty();
        }
        fail("Line contains a bare CR or LF", body);
        return;
    }
    Outcome out = tokenize(body);
    first_segment_ = false;
    switch (out.kind) {
        case Outcome::Kind::Complete: {
            Command cmd;
            cmd.tag = std::move(tag_);
            cmd.name = std::move(name_);
            cmd.args = std::move(stack_.front());
            cmd.wire_bytes = static_cast<std::size_t>(wire_);
            event_ = std::move(cmd);
            reset_command();
            return;
        }
        case Outcome::Kind::Literal:
            accept_literal(out, body);
            return;
        case Outcome::Kind::Error:
            fail(out.error, body);
            return;
    }
}

// Literal announced at the end of a segment: check it against the limits, then read it (sending
// Continue for {n}), or refuse it (BAD instead of "+" for {n}; discard the octets for {n+}).
void CommandReader::accept_literal(const Outcome& lit, std::string_view body) {
    if (!lit.sync && lit.unreadable) {
        fatal("Literal size unreadable");
        return;
    }
    std::uint64_t max = std::min(limits_.max_literal, kMaxNumber);
    if (!lit.sync) max = std::min(max, limits_.max_nonsync_literal);
    const char* error = nullptr;
    if (lit.unreadable || lit.size > max)
        error = "[TOOBIG] Literal too big";
    else if (values_ >= limits_.max_values)
        error = "Too many arguments";
    else if (text_bytes_ + literal_bytes_ + lit.size > limits_.max_command)
        error = "[TOOBIG] Command too big";
    if (error != nullptr) {
        fail(error, body);
        return;
    }
    ++values_;
    literal_bytes_ += lit.size;
    lit_remaining_ = lit.size;
    lit_buf_.clear();
    release_if_big(seg_);
    state_ = State::Literal;
    if (lit.sync) event_ = Continue{lit.size};
    if (lit_remaining_ == 0) finish_literal();
}

void CommandReader::finish_literal() {
    Value v;
    v.kind = Value::Kind::String;
    v.literal = true;
    v.text = std::move(lit_buf_);
    lit_buf_ = std::string();
    held_ += v.text.size() + sizeof(Value);
    stack_.back().push_back(std::move(v));  // counted in accept_literal
    expect_ = Expect::AfterValue;
    state_ = State::Line;
}

CommandReader::Outcome CommandReader::tokenize(std::string_view body) {
    auto error = [](const char* text) {
        Outcome o;
        o.kind = Outcome::Kind::Error;
        o.error = text;
        return o;
    };
    std::size_t i = 0, n = body.size();
    if (first_segment_) {
        if (body.empty()) return error("Empty command line");
        std::size_t sp = body.find(' ');
        std::string_view tag = body.substr(0, sp);
        if (!valid_tag(tag)) return error("Invalid tag");
        tag_.assign(tag);
        tag_known_ = true;
        if (sp == std::string_view::npos) return error("Missing command name");
        i = sp + 1;
        std::size_t end = body.find(' ', i);
        std::string_view name = body.substr(i, end == std::string_view::npos ? end : end - i);
        if (name.empty() || !std::all_of(name.begin(), name.end(), is_atom_char))
            return error("Invalid command name");
        name_.reserve(name.size());
        for (char c : name) name_.push_back(upper(c));
        if (end == std::string_view::npos) return Outcome{};
        i = end + 1;
        expect_ = Expect::Value;
    }
    for (;;) {
        if (expect_ == Expect::AfterValue) {
            if (i == n) {
                if (stack_.size() > 1) return error("Missing )");
                return Outcome{};
            }
            char c = body[i];
            if (c == ' ') {
                ++i;
                expect_ = Expect::Value;
            } else if (c == ')') {
                if (stack_.size() == 1) return error("Unexpected )");
                close_list();
                ++i;
            } else {
                return error("Missing space between arguments");
            }
            continue;
        }
        // Expect::Value or Expect::ListFirst
        if (i == n) return error(expect_ == Expect::ListFirst ? "Missing )" : "Missing argument");
        char c = body[i];
        if (c == ')') {
            if (expect_ != Expect::ListFirst) return error("Unexpected )");
            close_list();
            ++i;
            expect_ = Expect::AfterValue;
        } else if (c == '(') {
            if (stack_.size() > limits_.max_depth) return error("Lists nested too deeply");
            Value list;
            list.kind = Value::Kind::List;
            if (!add_value(std::move(list))) return error("Too many arguments");
            stack_.back().pop_back();  // the list is re-added, with its items, when it closes
            stack_.emplace_back();
            ++i;
            expect_ = Expect::ListFirst;
        } else if (c == '"') {
            Value v;
            v.kind = Value::Kind::String;
            if (const char* e = scan_quoted(body, i, &v.text)) return error(e);
            if (!add_value(std::move(v))) return error("Too many arguments");
            expect_ = Expect::AfterValue;
        } else if (c == '{') {
            // literal = "{" number ["+"] "}" CRLF: the spec must end the segment.
            std::size_t j = i + 1;
            LiteralTail t;
            t.push('{');
            while (j < n && body[j] >= '0' && body[j] <= '9') t.push(body[j++]);
            if (j < n && body[j] == '+') t.push(body[j++]);
            if (j < n && body[j] == '}') t.push(body[j++]);
            if (t.s != LiteralTail::S::Closed || j != n) return error("Invalid literal");
            Outcome o;
            o.kind = Outcome::Kind::Literal;
            o.size = t.size;
            o.sync = !t.nonsync;
            o.unreadable = t.overflow;
            return o;
        } else if (c == ' ') {
            return error("Unexpected space");
        } else {
            Outcome o = parse_atom(body, i);
            if (o.kind == Outcome::Kind::Error) return o;
            expect_ = Expect::AfterValue;
        }
    }
}

// An argument atom starting at body[i] (not SP, ")", "(", DQUOTE or "{"), with "[...]" sections.
CommandReader::Outcome CommandReader::parse_atom(std::string_view body, std::size_t& i) {
    auto error = [](const char* text) {
        Outcome o;
        o.kind = Outcome::Kind::Error;
        o.error = text;
        return o;
    };
    std::size_t start = i, n = body.size();
    while (i < n && body[i] != ' ' && body[i] != ')') {
        char c = body[i];
        if (c == '[') {
            switch (scan_section(body, i)) {
                case Section::Matched:
                    continue;
                case Section::TooDeep:
                    return error("Lists nested too deeply");
                case Section::NoMatch:
                    break;  // an ordinary ATOM-CHAR ("foo[" is a valid atom)
            }
        } else if (!is_token_char(c)) {
            return error("Invalid character in atom");
        }
        ++i;
    }
    Value v;
    v.text.assign(body.substr(start, i - start));
    v.kind = iequals(v.text, "NIL") ? Value::Kind::Nil : Value::Kind::Atom;
    if (!add_value(std::move(v))) return error("Too many arguments");
    return Outcome{};
}

// A section from the "[" at body[i] to its matching "]": SP, ATOM-CHARs, well-formed quoted strings
// and balanced parentheses inside; "]" inside parentheses and quoted strings does not close it. On a
// match i is past the "]"; otherwise i is unchanged.
CommandReader::Section CommandReader::scan_section(std::string_view body, std::size_t& i) const {
    std::size_t j = i + 1, n = body.size(), depth = 0;
    while (j < n) {
        char c = body[j];
        if (c == '"') {
            if (scan_quoted(body, j, nullptr) != nullptr) return Section::NoMatch;
        } else if (c == '(') {
            if (++depth > limits_.max_depth) return Section::TooDeep;
            ++j;
        } else if (c == ')') {
            if (depth == 0) return Section::NoMatch;
            --depth;
            ++j;
        } else if (c == ']') {
            ++j;
            if (depth == 0) {
                i = j;
                return Section::Matched;
            }
        } else if (c == '[' && depth == 0) {
            return Section::NoMatch;
        } else if (c == ' ' || c == '[' || (is_token_char(c) && c != '{')) {
            ++j;
        } else {
            return Section::NoMatch;
        }
    }
    return Section::NoMatch;
}

// quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR = TEXT-CHAR except quoted-specials, or "\" followed
// by a quoted-special. Advances i past the closing quote; returns an error text or nullptr.
const char* CommandReader::scan_quoted(std::string_view body, std::size_t& i, std::string* out) const {
    std::size_t n = body.size();
    ++i;  // opening quote
    for (;;) {
        if (i == n) return "Unterminated quoted string";
        char c = body[i];
        if (c == '"') {
            ++i;
            return nullptr;
        }
        if (c == '\\') {
            if (i + 1 == n || (body[i + 1] != '\\' && body[i + 1] != '"'))
                return "Invalid escape in quoted string";
            c = body[i + 1];
            i += 2;
        } else {
            if (c == '\0' || c == '\r' || c == '\n') return "Invalid character in quoted string";
            if (static_cast<unsigned char>(c) >= 0x80 && !limits_.allow_8bit_quoted)
                return "8-bit character in quoted string";
            ++i;
        }
        if (out != nullptr) out->push_back(c);
    }
}

bool CommandReader::add_value(Value v) {
    if (values_ >= limits_.max_values) return false;
    ++values_;
    held_ += v.text.size() + sizeof(Value);
    stack_.back().push_back(std::move(v));
    return true;
}

void CommandReader::close_list() {
    Value list;
    list.kind = Value::Kind::List;
    list.items = std::move(stack_.back());
    stack_.pop_back();
    stack_.back().push_back(std::move(list));
}

// The command is refused: drop what was parsed, then skip the rest of it. line_so_far is the refused
// segment (complete, without CRLF): a {n+} at its end means n octets follow that must be discarded.
void CommandReader::fail(const char* text, std::string_view line_so_far) {
    err_tag_ = tag_known_ ? tag_ : "*";
    err_text_ = text;
    LiteralTail t;
    for (char c : line_so_far) t.push(c);
    reset_command();
    if (t.s == LiteralTail::S::Closed && t.nonsync) {
        if (t.overflow) {
            fatal("Literal size unreadable");
            return;
        }
        start_skip_literal(t.size);
        return;
    }
    emit_error();
}

// The segment outgrew max_line: what was stored (at most max_line octets) gives the tag; the rest of
// the line streams through the skipper.
void CommandReader::fail_line_too_long() {
    bool raw = raw_;
    err_tag_ = raw ? "*" : first_segment_ ? tag_from_prefix(seg_) : tag_;
    if (err_tag_.empty()) err_tag_ = "*";
    err_text_ = "Line too long";
    std::string seen = std::move(seg_);
    reset_command();
    start_skip_line(seen);
    skip_raw_ = raw;
}

void CommandReader::start_skip_line(std::string_view already) {
    state_ = State::SkipLine;
    skip_raw_ = false;
    skip_cr_ = false;
    tail_ = LiteralTail{};
    for (char c : already) {  // never contains CRLF (else the line would have completed)
        if (skip_cr_) {
            skip_cr_ = false;
            tail_.push('\r');
        }
        if (c == '\r')
            skip_cr_ = true;
        else
            tail_.push(c);
    }
}

void CommandReader::start_skip_literal(std::uint64_t n) {
    state_ = State::SkipLiteral;
    lit_remaining_ = n;
    if (n == 0) start_skip_line({});
}

void CommandReader::end_of_skipped_line() {
    if (skip_raw_) {
        raw_ = false;
        skip_raw_ = false;
        emit_error();
        return;
    }
    if (tail_.s == LiteralTail::S::Closed && tail_.nonsync) {
        if (tail_.overflow) {
            fatal("Literal size unreadable");
            return;
        }
        start_skip_literal(tail_.size);
        return;
    }
    emit_error();
}

void CommandReader::emit_error() {
    event_ = Error{std::move(err_tag_), err_text_ ? err_text_ : "Syntax error", false};
    err_tag_.clear();
    err_text_ = nullptr;
    state_ = State::Line;
    tail_ = LiteralTail{};
}

void CommandReader::fatal(const char* text) {
    event_ = Error{"*", text, true};
    reset_command();
    state_ = State::Dead;  // process() now swallows everything; drain() releases the buffer
    raw_ = false;
}

void CommandReader::reset_command() {
    first_segment_ = true;
    tag_known_ = false;
    tag_.clear();
    name_.clear();
    stack_.clear();
    stack_.emplace_back();
    expect_ = Expect::Value;
    values_ = 0;
    held_ = 0;
    text_bytes_ = 0;
    literal_bytes_ = 0;
    wire_ = 0;
    release_if_big(seg_);
    release_if_big(lit_buf_);
    lit_remaining_ = 0;
    state_ = State::Line;
}

// The tag of a line that is refused before it could be tokenized: the text before the first SP when
// it is a valid tag, else "*".
std::string CommandReader::tag_from_prefix(std::string_view line) const {
    std::size_t sp = line.find(' ');
    if (sp == std::string_view::npos) return "*";
    std::string_view tag = line.substr(0, sp);
    return valid_tag(tag) ? std::string(tag) : "*";
}

}  // namespace gb::protocol::imap
