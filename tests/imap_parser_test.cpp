// Tests for the socket-free IMAP4rev1 command reader and its helpers (protocol/imap): every script is
// fed whole, byte by byte and in random splits and must give identical events; hostile input (huge
// literals, deep nesting, garbage, NULs, over-long lines) must be refused with bounded memory.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "protocol/imap/imap_format.h"
#include "protocol/imap/imap_parser.h"
#include "protocol/imap/mutf7.h"
#include "protocol/imap/sequence_set.h"

// The largest single allocation, to prove that announced sizes are never allocated up front.
namespace {
std::atomic<std::size_t> g_largest_alloc{0};
}  // namespace

// noinline: GCC would otherwise see malloc/free through the inlined replacements and warn
// (-Wmismatched-new-delete) at every new/delete pair.
__attribute__((noinline)) void* operator new(std::size_t n) {
    std::size_t cur = g_largest_alloc.load(std::memory_order_relaxed);
    while (n > cur && !g_largest_alloc.compare_exchange_weak(cur, n, std::memory_order_relaxed)) {
    }
    if (void* p = std::malloc(n != 0 ? n : 1)) return p;
    throw std::bad_alloc();
}
__attribute__((noinline)) void* operator new[](std::size_t n) {
    return ::operator new(n);
}
__attribute__((noinline)) void operator delete(void* p) noexcept {
    std::free(p);
}
__attribute__((noinline)) void operator delete[](void* p) noexcept {
    std::free(p);
}
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
__attribute__((noinline)) void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}

using namespace gb::protocol::imap;

namespace {

std::string esc(std::string_view s) {
    std::string out;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c >= 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out.push_back(ch);
        }
    }
    return out;
}

std::string show(const Value& v) {
    switch (v.kind) {
        case Value::Kind::Atom:
            return v.text;
        case Value::Kind::Nil:
            return "NIL";
        case Value::Kind::String:
            return v.literal ? "{" + esc(v.text) + "}" : "\"" + esc(v.text) + "\"";
        case Value::Kind::List: {
            std::string out = "(";
            for (std::size_t i = 0; i < v.items.size(); ++i) out += (i ? " " : "") + show(v.items[i]);
            return out + ")";
        }
    }
    return "?";
}

std::string show(const Event& e) {
    if (const auto* c = std::get_if<Command>(&e)) {
        std::string out = "CMD " + c->tag + " " + c->name;
        for (const Value& v : c->args) out += " " + show(v);
        return out;
    }
    if (const auto* k = std::get_if<Continue>(&e)) return "+" + std::to_string(k->size);
    if (const auto* er = std::get_if<Error>(&e))
        return std::string(er->fatal ? "BYE " : "BAD ") + er->tag + " " + er->text;
    return "RAW " + esc(std::get<RawLine>(e).text);
}

// Takes every available event; switches to raw-line mode after AUTHENTICATE and IDLE, as a server does.
void take(CommandReader& r, std::vector<std::string>& out, bool raw_rule = true) {
    while (auto e = r.next()) {
        out.push_back(show(*e));
        if (const auto* c = std::get_if<Command>(&*e)) {
            if (raw_rule && (c->name == "AUTHENTICATE" || c->name == "IDLE")) r.set_raw_line_mode(true);
        }
    }
}

// Feeds input in pieces whose sizes come from sizes (cycled); 0 entries mean "the rest".
std::vector<std::string> run(std::string_view input, const std::vector<std::size_t>& sizes = {},
                             Limits limits = {}) {
    CommandReader r(limits);
    std::vector<std::string> out;
    std::size_t pos = 0, k = 0;
    while (pos < input.size()) {
        std::size_t n = sizes.empty() ? input.size() : sizes[k++ % sizes.size()];
        if (n == 0) n = input.size();
        std::string_view piece = input.substr(pos, n);
        pos += piece.size();
        r.feed(piece);
        take(r, out);
    }
    take(r, out);
    return out;
}

std::vector<std::string> run_bytewise(std::string_view input, Limits limits = {}) {
    return run(input, {1}, limits);
}

std::vector<std::string> run_random(std::string_view input, unsigned seed, Limits limits = {}) {
    std::mt19937 rng(seed);
    std::vector<std::size_t> sizes;
    std::uniform_int_distribution<std::size_t> d(1, 40);
    for (std::size_t i = 0; i < 500; ++i) sizes.push_back(d(rng));
    return run(input, sizes, limits);
}

using V = std::vector<std::string>;

// A string literal with embedded NULs, whole.
template <std::size_t N>
std::string bin(const char (&s)[N]) {
    return std::string(s, N - 1);
}

// The first Command event of input fed whole.
Command one_command(std::string_view input) {
    CommandReader r;
    r.feed(input);
    std::optional<Event> e = r.next();
    if (!e || !std::holds_alternative<Command>(*e)) {
        ADD_FAILURE() << "no command for " << esc(input) << ": " << (e ? show(*e) : "nothing");
        return {};
    }
    return std::get<Command>(std::move(*e));
}

// ---------------------------------------------------------------------------------------------------
// Basic command lines

TEST(ImapReader, SimpleCommand) {
    CommandReader r;
    r.feed("a001 noop\r\n");
    auto e = r.next();
    ASSERT_TRUE(e);
    const auto& c = std::get<Command>(*e);
    EXPECT_EQ(c.tag, "a001");
    EXPECT_EQ(c.name, "NOOP");
    EXPECT_TRUE(c.args.empty());
    EXPECT_EQ(c.wire_bytes, 11u);
    EXPECT_FALSE(r.next());
    EXPECT_TRUE(r.at_command_start());
    EXPECT_EQ(r.buffered(), 0u);
}

TEST(ImapReader, LoginWithEscapedQuotes) {
    Command c = one_command("A1 LOGIN \"us\\\"er\" \"p\\\\a\\\"ss word\"\r\n");
    EXPECT_EQ(c.name, "LOGIN");
    ASSERT_EQ(c.args.size(), 2u);
    EXPECT_TRUE(c.args[0].is_string());
    EXPECT_FALSE(c.args[0].literal);
    EXPECT_EQ(c.args[0].text, "us\"er");
    EXPECT_EQ(c.args[1].text, "p\\a\"ss word");
    EXPECT_EQ(c.args[1].astring(), "p\\a\"ss word");
}

TEST(ImapReader, QuotedStringRules) {
    EXPECT_EQ(run("a LOGIN \"x\\y\" z\r\n"), V{"BAD a Invalid escape in quoted string"});
    EXPECT_EQ(run("a LOGIN \"abc\r\n"), V{"BAD a Unterminated quoted string"});
    EXPECT_EQ(run(bin("a LOGIN \"a\0b\" c\r\n")), V{"BAD a Invalid character in quoted string"});
    EXPECT_EQ(run("a LOGIN \"\" \"tab\there\"\r\n"), V{"CMD a LOGIN \"\" \"tab\\x09here\""});
    EXPECT_EQ(run("a LOGIN \"Jos\xc3\xa9\" x\r\n"), V{"CMD a LOGIN \"Jos\\xc3\\xa9\" x"});
    Limits strict;
    strict.allow_8bit_quoted = false;
    EXPECT_EQ(run("a LOGIN \"Jos\xc3\xa9\" x\r\n", {}, strict), V{"BAD a 8-bit character in quoted string"});
    EXPECT_EQ(run("a LOGIN \"a\"\"b\"\r\n"), V{"BAD a Missing space between arguments"});
}

TEST(ImapReader, NilAtomsAndAccessors) {
    Command c = one_command("t SELECT NIL nil \"NIL\" INBOX foo] \\Seen 1:* %/x (a)\r\n");
    ASSERT_EQ(c.args.size(), 9u);
    EXPECT_TRUE(c.args[0].is_nil());
    EXPECT_TRUE(c.args[1].is_nil());
    EXPECT_EQ(c.args[1].text, "nil");
    EXPECT_TRUE(c.args[2].is_string());
    EXPECT_EQ(c.args[0].astring(), "NIL");  // astring context: the mailbox named NIL
    EXPECT_TRUE(c.args[3].is_atom("inbox"));
    EXPECT_EQ(c.args[4].astring(), "foo]");
    EXPECT_FALSE(c.args[5].astring());  // "\" is not an ASTRING-CHAR
    EXPECT_TRUE(c.args[5].is_atom("\\seen"));
    EXPECT_FALSE(c.args[6].astring());
    EXPECT_FALSE(c.args[7].astring());
    EXPECT_EQ(c.args[7].list_mailbox(), "%/x");
    EXPECT_FALSE(c.args[8].astring());
    EXPECT_FALSE(c.args[8].list_mailbox());
}

TEST(ImapReader, TagRules) {
    EXPECT_EQ(run("+ NOOP\r\n"), V{"BAD * Invalid tag"});
    EXPECT_EQ(run("a*b NOOP\r\n"), V{"BAD * Invalid tag"});
    EXPECT_EQ(run("a\"b NOOP\r\n"), V{"BAD * Invalid tag"});
    EXPECT_EQ(run("a{1} NOOP\r\n"), V{"BAD * Invalid tag"});
    EXPECT_EQ(run("\r\n"), V{"BAD * Empty command line"});
    EXPECT_EQ(run(" NOOP\r\n"), V{"BAD * Invalid tag"});
    EXPECT_EQ(run("a\r\n"), V{"BAD a Missing command name"});
    EXPECT_EQ(run("a \r\n"), V{"BAD a Invalid command name"});
    EXPECT_EQ(run("a] NOOP\r\n"), V{"CMD a] NOOP"});
    EXPECT_EQ(run("a.b-c[1] NOOP\r\n"), V{"CMD a.b-c[1] NOOP"});
    EXPECT_EQ(run("\xff\xfe NOOP\r\n"), V{"BAD * Invalid tag"});
    EXPECT_EQ(run("a NO\\OP\r\n"), V{"BAD a Invalid command name"});
}

TEST(ImapReader, ExactlyOneSpace) {
    EXPECT_EQ(run("a  NOOP\r\n"), V{"BAD a Invalid command name"});
    EXPECT_EQ(run("a NOOP \r\n"), V{"BAD a Missing argument"});
    EXPECT_EQ(run("a SELECT  INBOX\r\n"), V{"BAD a Unexpected space"});
    EXPECT_EQ(run("a SELECT INBOX \r\n"), V{"BAD a Missing argument"});
    EXPECT_EQ(run("a STORE 1 FLAGS ( \\Seen)\r\n"), V{"BAD a Unexpected space"});
    EXPECT_EQ(run("a STORE 1 FLAGS (\\Seen )\r\n"), V{"BAD a Unexpected )"});
    EXPECT_EQ(run("a STORE 1 FLAGS (\\Seen)x\r\n"), V{"BAD a Missing space between arguments"});
    EXPECT_EQ(run("a STORE 1 FLAGS x(\\Seen)\r\n"), V{"BAD a Invalid character in atom"});
    EXPECT_EQ(run("a STORE 1 FLAGS ()\r\n"), V{"CMD a STORE 1 FLAGS ()"});
    EXPECT_EQ(run("a X (() (a))\r\n"), V{"CMD a X (() (a))"});
    EXPECT_EQ(run("a X (()(a))\r\n"), V{"BAD a Missing space between arguments"});
}

TEST(ImapReader, UnbalancedParentheses) {
    EXPECT_EQ(run("a SEARCH (FROM x\r\n"), V{"BAD a Missing )"});
    EXPECT_EQ(run("a SEARCH (\r\n"), V{"BAD a Missing )"});
    EXPECT_EQ(run("a SEARCH ((FROM x) (TO y)\r\n"), V{"BAD a Missing )"});
    EXPECT_EQ(run("a SEARCH FROM x)\r\n"), V{"BAD a Unexpected )"});
    EXPECT_EQ(run("a SEARCH (FROM x))\r\n"), V{"BAD a Unexpected )"});
    EXPECT_EQ(run("a SEARCH )\r\n"), V{"BAD a Unexpected )"});
    EXPECT_EQ(run("a X (a\r\nb NOOP\r\n"), (V{"BAD a Missing )", "CMD b NOOP"}));
}

TEST(ImapReader, InvalidAtomCharacters) {
    EXPECT_EQ(run("a X ab{c\r\n"), V{"BAD a Invalid character in atom"});
    EXPECT_EQ(run("a X ab\"c\"\r\n"), V{"BAD a Invalid character in atom"});
    EXPECT_EQ(run("a X \x01\r\n"), V{"BAD a Invalid character in atom"});
    EXPECT_EQ(run("a X caf\xc3\xa9\r\n"), V{"BAD a Invalid character in atom"});
    EXPECT_EQ(run("a X \x7f\r\n"), V{"BAD a Invalid character in atom"});
}

TEST(ImapReader, BareCrOrLfRefusesTheLine) {
    EXPECT_EQ(run("a NOOP\nb NOOP\r\nc NOOP\r\n"), (V{"BAD a Line contains a bare CR or LF", "CMD c NOOP"}));
    EXPECT_EQ(run("a NOOP\rb NOOP\r\n"), V{"BAD a Line contains a bare CR or LF"});
    EXPECT_EQ(run("a\nb NOOP\r\n"), V{"BAD * Line contains a bare CR or LF"});
    EXPECT_EQ(run("a LOGIN \"x\ny\" z\r\n"), V{"BAD a Line contains a bare CR or LF"});
}

// ---------------------------------------------------------------------------------------------------
// BODY[...] atoms

TEST(ImapReader, FetchBodySectionsAreOneAtom) {
    Command c = one_command("A2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM)]<0.2048>)\r\n");
    EXPECT_EQ(c.name, "UID");
    ASSERT_EQ(c.args.size(), 3u);
    EXPECT_TRUE(c.args[0].is_atom("FETCH"));
    EXPECT_EQ(c.args[1].text, "1:*");
    ASSERT_TRUE(c.args[2].is_list());
    ASSERT_EQ(c.args[2].items.size(), 2u);
    EXPECT_TRUE(c.args[2].items[0].is_atom("FLAGS"));
    EXPECT_TRUE(c.args[2].items[1].is_atom());
    EXPECT_EQ(c.args[2].items[1].text, "BODY.PEEK[HEADER.FIELDS (DATE FROM)]<0.2048>");

    EXPECT_EQ(run("a FETCH 1 (BODY[] BODY.PEEK[1.2.MIME] BODY[TEXT]<10.5> RFC822.SIZE)\r\n"),
              V{"CMD a FETCH 1 (BODY[] BODY.PEEK[1.2.MIME] BODY[TEXT]<10.5> RFC822.SIZE)"});
    EXPECT_EQ(run("a FETCH 1 BODY[HEADER.FIELDS.NOT (X-A \"Sub ject\" \"a]b\" c])]\r\n"),
              V{"CMD a FETCH 1 BODY[HEADER.FIELDS.NOT (X-A \"Sub ject\" \"a]b\" c])]"});
    EXPECT_EQ(run("a FETCH 1 body[]\r\n"), V{"CMD a FETCH 1 body[]"});
    EXPECT_EQ(run("a FETCH 1 BODY[1][2]\r\n"), V{"CMD a FETCH 1 BODY[1][2]"});
    // NIL is only the whole atom.
    EXPECT_EQ(run("a X NIL[]\r\n"), V{"CMD a X NIL[]"});
}

TEST(ImapReader, BrokenBodySections) {
    // Without a matching "]" on the line, "[" is an ordinary ATOM-CHAR; the FETCH layer refuses the atom.
    EXPECT_EQ(run("a FETCH 1 BODY[HEADER\r\n"), V{"CMD a FETCH 1 BODY[HEADER"});
    EXPECT_EQ(run("a FETCH 1 (BODY[HEADER.FIELDS (A B)\r\n"), V{"BAD a Missing )"});
    EXPECT_EQ(run("a FETCH 1 BODY[x)]\r\n"), V{"BAD a Unexpected )"});
    EXPECT_EQ(run("a FETCH 1 BODY[a[b]]\r\n"), V{"CMD a FETCH 1 BODY[a[b]]"});
    EXPECT_EQ(run("a FETCH 1 BODY[HEADER.FIELDS (\"a)]\r\n"), V{"BAD a Unterminated quoted string"});
    EXPECT_EQ(run("a FETCH 1 BODY[\x01]\r\n"), V{"BAD a Invalid character in atom"});
    // A literal inside a section: the "[" has no "]" on its line, the literal is read, then refused.
    EXPECT_EQ(run("a FETCH 1 BODY[HEADER.FIELDS ({4}\r\nFrom)]\r\nb NOOP\r\n"),
              (V{"+4", "BAD a Missing space between arguments", "CMD b NOOP"}));
    std::string deep = "a FETCH 1 BODY[" + std::string(40, '(') + std::string(40, ')') + "]\r\n";
    EXPECT_EQ(run(deep), V{"BAD a Lists nested too deeply"});
}

TEST(ImapReader, BracketIsAnAtomCharWithoutSection) {
    EXPECT_EQ(run("a SELECT foo[\r\n"), V{"CMD a SELECT foo["});
    EXPECT_EQ(run("a STORE 1 +FLAGS (foo[ \\Seen)\r\n"), V{"CMD a STORE 1 +FLAGS (foo[ \\Seen)"});
    EXPECT_EQ(run("a STORE 1 +FLAGS (foo[)\r\n"), V{"CMD a STORE 1 +FLAGS (foo[)"});
    EXPECT_EQ(run("a STATUS a[ (MESSAGES)\r\n"), V{"CMD a STATUS a[ (MESSAGES)"});
    EXPECT_EQ(one_command("a SELECT [x\r\n").args.at(0).astring(), "[x");
}

// ---------------------------------------------------------------------------------------------------
// Literals

TEST(ImapReader, SynchronizingLiterals) {
    CommandReader r;
    r.feed("a LOGIN {5}\r\n");
    auto e = r.next();
    ASSERT_TRUE(e);
    ASSERT_TRUE(std::holds_alternative<Continue>(*e));
    EXPECT_EQ(std::get<Continue>(*e).size, 5u);
    EXPECT_FALSE(r.next());
    EXPECT_FALSE(r.at_command_start());
    r.feed("alice {3}\r\n");
    e = r.next();
    ASSERT_TRUE(e);
    EXPECT_EQ(show(*e), "+3");
    r.feed("pw");
    EXPECT_FALSE(r.next());
    r.feed("d\r\n");
    e = r.next();
    ASSERT_TRUE(e);
    const auto& c = std::get<Command>(*e);
    EXPECT_EQ(show(*e), "CMD a LOGIN {alice} {pwd}");
    EXPECT_TRUE(c.args[0].literal);
    EXPECT_EQ(c.wire_bytes, 13u + 11u + 5u);
    EXPECT_EQ(c.args[0].astring(), "alice");
}

TEST(ImapReader, NonSynchronizingLiterals) {
    EXPECT_EQ(run("a LOGIN {5+}\r\nalice {3+}\r\npwd\r\nb NOOP\r\n"),
              (V{"CMD a LOGIN {alice} {pwd}", "CMD b NOOP"}));
    EXPECT_EQ(run("a X {0}\r\n {0+}\r\n\r\n"), (V{"+0", "CMD a X {} {}"}));
    EXPECT_EQ(run("a X ({2+}\r\nab {1}\r\nc)\r\n"), (V{"+1", "CMD a X ({ab} {c})"}));
}

TEST(ImapReader, LiteralSyntax) {
    EXPECT_EQ(run("a X {5}x\r\n"), V{"BAD a Invalid literal"});
    EXPECT_EQ(run("a X {}\r\n"), V{"BAD a Invalid literal"});
    EXPECT_EQ(run("a X {+}\r\n"), V{"BAD a Invalid literal"});
    EXPECT_EQ(run("a X {5 }\r\n"), V{"BAD a Invalid literal"});
    EXPECT_EQ(run("a X {-1}\r\n"), V{"BAD a Invalid literal"});
    EXPECT_EQ(run("a X ~{5}\r\n"), V{"BAD a Invalid character in atom"});
    EXPECT_EQ(run("a X {3+}\r\nabcd\r\n"), V{"BAD a Missing space between arguments"});
    EXPECT_EQ(run("a X {3+}\r\nabc(\r\n"), V{"BAD a Missing space between arguments"});
    EXPECT_EQ(run("a X {003}\r\nabc\r\n"), (V{"+3", "CMD a X {abc}"}));
}

TEST(ImapReader, LiteralAcrossManyFeeds) {
    std::string body;
    for (int i = 0; body.size() < 300000; ++i) body += "line " + std::to_string(i) + "\r\n";
    CommandReader r;
    r.feed("a APPEND INBOX {" + std::to_string(body.size()) + "}\r\n");
    ASSERT_EQ(show(*r.next()), "+" + std::to_string(body.size()));
    for (std::size_t pos = 0; pos < body.size(); pos += 997) {
        r.feed(std::string_view(body).substr(pos, 997));
        ASSERT_FALSE(r.next());
        EXPECT_LE(r.buffered(), body.size() + 1024);
    }
    r.feed("\r\n");
    auto e = r.next();
    ASSERT_TRUE(e);
    const auto& c = std::get<Command>(*e);
    ASSERT_EQ(c.args.size(), 2u);
    EXPECT_EQ(c.args[1].text, body);
    EXPECT_TRUE(c.args[1].literal);
}

TEST(ImapReader, AppendWithFlagsDateAndLiteral) {
    std::vector<std::string> ev =
        run("A3 APPEND \"Sent Items\" (\\Seen \\Draft $Label1) \"05-Jan-2024 10:00:00 +0100\" {11}\r\nHello "
            "World\r\n");
    EXPECT_EQ(ev, (V{"+11",
                     "CMD A3 APPEND \"Sent Items\" (\\Seen \\Draft $Label1) \"05-Jan-2024 10:00:00 +0100\" "
                     "{Hello World}"}));
    // MULTIAPPEND (RFC 3502) with LITERAL+.
    EXPECT_EQ(run("A4 APPEND INBOX {2+}\r\nhi () {3+}\r\nyou\r\n"), V{"CMD A4 APPEND INBOX {hi} () {you}"});
}

TEST(ImapReader, SearchWithNestingAndLiteralCharset) {
    EXPECT_EQ(
        run("A5 SEARCH CHARSET {5}\r\nUTF-8 OR (FROM \"x y\" (SUBJECT {4}\r\n\xc3\xa4\xc3\xb6)) NOT (SEEN) "
            "UID 1:5,7\r\n"),
        (V{"+5", "+4",
           "CMD A5 SEARCH CHARSET {UTF-8} OR (FROM \"x y\" (SUBJECT {\\xc3\\xa4\\xc3\\xb6})) NOT (SEEN) UID "
           "1:5,7"}));
}

TEST(ImapReader, RefusedLineWithSyncLiteralGetsNoContinue) {
    // The client waits for "+" that never comes; the BAD ends the command and the next line is a command.
    EXPECT_EQ(run("a X ) {5}\r\nb NOOP\r\n"), (V{"BAD a Unexpected )", "CMD b NOOP"}));
}

TEST(ImapReader, RefusedLineWithNonSyncLiteralSkipsItsBytes) {
    // The bytes of {n+} are on their way whatever we answer: they must not run as commands.
    EXPECT_EQ(run("a X ) {14+}\r\nc DELETE INBOX {3+}\r\nxyz\r\nb NOOP\r\n"),
              (V{"BAD a Unexpected )", "CMD b NOOP"}));
}

TEST(ImapReader, NulInLiteral) {
    std::string in = bin("a APPEND INBOX {5+}\r\nab\0cd {2+}\r\nxy\r\nb NOOP\r\n");
    EXPECT_EQ(run(in), (V{"BAD a NUL octet in literal", "CMD b NOOP"}));
    EXPECT_EQ(run_bytewise(in), (V{"BAD a NUL octet in literal", "CMD b NOOP"}));
    std::string sync = bin("a APPEND INBOX {3}\r\n\0bc\r\nb NOOP\r\n");
    EXPECT_EQ(run(sync), (V{"+3", "BAD a NUL octet in literal", "CMD b NOOP"}));
    std::string last = bin("a X {1}\r\n\0\r\nb NOOP\r\n");
    EXPECT_EQ(run(last), (V{"+1", "BAD a NUL octet in literal", "CMD b NOOP"}));
    // Every other octet is fine in a literal.
    std::string all;
    for (int c = 1; c < 256; ++c) all.push_back(static_cast<char>(c));
    Command c = one_command("a X {255+}\r\n" + all + "\r\n");
    ASSERT_EQ(c.args.size(), 1u);
    EXPECT_EQ(c.args[0].text, all);
}

// ---------------------------------------------------------------------------------------------------
// Limits

TEST(ImapReader, SyncLiteralTooBigGetsNoContinue) {
    EXPECT_EQ(run("a APPEND INBOX {67108865}\r\nb NOOP\r\n"),
              (V{"BAD a [TOOBIG] Literal too big", "CMD b NOOP"}));
    EXPECT_EQ(run("a APPEND INBOX {67108864}\r\n"), V{"+67108864"});
    EXPECT_EQ(run("a APPEND INBOX {99999999999999999999999999}\r\nb NOOP\r\n"),
              (V{"BAD a [TOOBIG] Literal too big", "CMD b NOOP"}));
}

TEST(ImapReader, NonSyncLiteralTooBigIsDiscarded) {
    Limits l;
    l.max_literal = 10;
    std::string in =
        "a X {20+}\r\n" + std::string(20, 'Q') + " {3+}\r\nabc foo\r\nb X {10+}\r\n0123456789\r\n";
    V want{"BAD a [TOOBIG] Literal too big", "CMD b X {0123456789}"};
    EXPECT_EQ(run(in, {}, l), want);
    EXPECT_EQ(run_bytewise(in, l), want);
    // LITERAL- style: only non-synchronizing literals are limited further.
    Limits minus;
    minus.max_nonsync_literal = 4;
    EXPECT_EQ(run("a X {5+}\r\nhello\r\nb X {5}\r\nhello\r\n", {}, minus),
              (V{"BAD a [TOOBIG] Literal too big", "+5", "CMD b X {hello}"}));
}

TEST(ImapReader, CommandSizeLimit) {
    Limits l;
    l.max_command = 100;
    EXPECT_EQ(run("a X {40}\r\n" + std::string(40, 'x') + " {60}\r\nb NOOP\r\n", {}, l),
              (V{"+40", "BAD a [TOOBIG] Command too big", "CMD b NOOP"}));
    EXPECT_EQ(
        run("a X {40+}\r\n" + std::string(40, 'x') + " {60+}\r\n" + std::string(60, 'y') + "\r\nb NOOP\r\n",
            {}, l),
        (V{"BAD a [TOOBIG] Command too big", "CMD b NOOP"}));
}

TEST(ImapReader, UnreadableNonSyncLiteralIsFatal) {
    CommandReader r;
    r.feed("a X {99999999999999999999999+}\r\nb NOOP\r\n");
    auto e = r.next();
    ASSERT_TRUE(e);
    EXPECT_EQ(show(*e), "BYE * Literal size unreadable");
    EXPECT_TRUE(std::get<Error>(*e).fatal);
    EXPECT_TRUE(r.failed());
    r.feed("c NOOP\r\n");
    EXPECT_FALSE(r.next());
    EXPECT_EQ(r.buffered(), 0u);
    // The same on a line that is refused for another reason.
    EXPECT_EQ(run("a X ) {99999999999999999999999+}\r\nb NOOP\r\n"), V{"BYE * Literal size unreadable"});
}

TEST(ImapReader, HugeLiteralsNeverAllocate) {
    constexpr std::uint64_t k2G = 2ull * 1024 * 1024 * 1024;
    {  // the allocation hook is live (so the checks below are not vacuous)
        g_largest_alloc = 0;
        auto probe = std::make_unique<char[]>(300000);
        probe[0] = 'x';
        ASSERT_GE(g_largest_alloc.load(), 300000u);
    }
    {
        g_largest_alloc = 0;
        CommandReader r;
        r.feed("a APPEND INBOX {" + std::to_string(k2G) + "}\r\n");
        auto e = r.next();
        ASSERT_TRUE(e);
        EXPECT_EQ(show(*e), "BAD a [TOOBIG] Literal too big");
        EXPECT_LT(g_largest_alloc.load(), 64u * 1024);
        EXPECT_EQ(r.buffered(), 0u);
    }
    {
        std::string chunk(1 << 20, 'z');
        g_largest_alloc = 0;
        CommandReader r;
        r.feed("a APPEND INBOX {" + std::to_string(k2G) + "+}\r\n");
        EXPECT_FALSE(r.next());
        for (std::uint64_t sent = 0; sent < k2G; sent += chunk.size()) {
            r.feed(chunk);
            ASSERT_FALSE(r.next());
            ASSERT_EQ(r.buffered(), 0u);
        }
        r.feed("\r\nb NOOP\r\n");
        EXPECT_EQ(show(*r.next()), "BAD a [TOOBIG] Literal too big");
        EXPECT_EQ(show(*r.next()), "CMD b NOOP");
        EXPECT_LT(g_largest_alloc.load(), 64u * 1024);
    }
}

TEST(ImapReader, OverLongLineThenValidCommand) {
    CommandReader r;
    std::string head = "a SEARCH TEXT ";
    r.feed(head);
    std::string chunk(4096, 'x');
    for (int i = 0; i < 256; ++i) {  // 1 MiB line
        r.feed(chunk);
        ASSERT_FALSE(r.next());
        ASSERT_LE(r.buffered(), 64u * 1024);
    }
    r.feed("\r\nb NOOP\r\n");
    EXPECT_EQ(show(*r.next()), "BAD a Line too long");
    EXPECT_EQ(show(*r.next()), "CMD b NOOP");
    EXPECT_FALSE(r.next());
}

TEST(ImapReader, LineLengthBoundary) {
    Limits l;
    l.max_line = 11;
    EXPECT_EQ(run("a X 12345\r\n", {}, l), V{"CMD a X 12345"});  // 11 octets incl. CRLF
    l.max_line = 10;
    EXPECT_EQ(run("a X 1234\r\nb X 12345\r\nc NOOP\r\n", {}, l),
              (V{"CMD a X 1234", "BAD b Line too long", "CMD c NOOP"}));
    // The limit covers all non-literal text of a command, across literals.
    l.max_line = 20;
    EXPECT_EQ(run("a X {1+}\r\nx 12345678\r\n", {}, l), V{"BAD a Line too long"});
    EXPECT_EQ(run("a X {1+}\r\nx 1234567\r\n", {}, l), V{"CMD a X {x} 1234567"});
    // No valid tag among the stored octets.
    EXPECT_EQ(run(std::string(30, 'a') + " NOOP\r\n", {}, l), V{"BAD * Line too long"});
}

TEST(ImapReader, OverLongLineEndingInNonSyncLiteral) {
    Limits l;
    l.max_line = 100;
    std::string in = "a X " + std::string(200, 'y') + " {12+}\r\nd DELETE x\r\n\r\nb NOOP\r\n";
    EXPECT_EQ(run(in, {}, l), (V{"BAD a Line too long", "CMD b NOOP"}));
    EXPECT_EQ(run_bytewise(in, l), (V{"BAD a Line too long", "CMD b NOOP"}));
    // Leading zeros do not hide the literal from the skipper.
    std::string zeros =
        "a X " + std::string(200, 'y') + " {" + std::string(300, '0') + "2+}\r\nzz\r\nb NOOP\r\n";
    EXPECT_EQ(run(zeros, {}, l), (V{"BAD a Line too long", "CMD b NOOP"}));
}

TEST(ImapReader, NestingLimit) {
    std::string ok = "a X " + std::string(32, '(') + std::string(32, ')') + "\r\n";
    ASSERT_EQ(run(ok).size(), 1u);
    EXPECT_EQ(run(ok)[0].substr(0, 8), "CMD a X ");
    std::string deep = "a X " + std::string(33, '(') + std::string(33, ')') + "\r\n";
    EXPECT_EQ(run(deep), V{"BAD a Lists nested too deeply"});
}

TEST(ImapReader, TenThousandOpenParentheses) {
    g_largest_alloc = 0;
    std::string in = "a SEARCH " + std::string(10000, '(') + "\r\nb NOOP\r\n";
    EXPECT_EQ(run(in), (V{"BAD a Lists nested too deeply", "CMD b NOOP"}));
    std::string both = "a SEARCH " + std::string(10000, '(') + "x" + std::string(10000, ')') + "\r\n";
    EXPECT_EQ(run(both), V{"BAD a Lists nested too deeply"});
    EXPECT_LT(g_largest_alloc.load(), 256u * 1024);
}

TEST(ImapReader, ValueCountLimit) {
    Limits l;
    l.max_values = 5;
    EXPECT_EQ(run("a X 1 2 3 4 5\r\n", {}, l), V{"CMD a X 1 2 3 4 5"});
    EXPECT_EQ(run("a X 1 2 3 4 5 6\r\n", {}, l), V{"BAD a Too many arguments"});
    EXPECT_EQ(run("a X (1 2 3 4)\r\n", {}, l), V{"CMD a X (1 2 3 4)"});
    EXPECT_EQ(run("a X (1 2 3 4 5)\r\n", {}, l), V{"BAD a Too many arguments"});
    EXPECT_EQ(run("a X 1 2 3 4 {1}\r\nx\r\n", {}, l), (V{"+1", "CMD a X 1 2 3 4 {x}"}));
    EXPECT_EQ(run("a X 1 2 3 4 5 {1}\r\nb NOOP\r\n", {}, l), (V{"BAD a Too many arguments", "CMD b NOOP"}));
    // Default: 100,000 values.
    Limits big;
    big.max_line = 1 << 20;
    std::string many = "a X";
    for (int i = 0; i < 100000; ++i) many += " x";
    EXPECT_EQ(run(many + "\r\n", {}, big).at(0).substr(0, 8), "CMD a X ");
    EXPECT_EQ(run(many + " x\r\n", {}, big), V{"BAD a Too many arguments"});
}

// ---------------------------------------------------------------------------------------------------
// Pipelining, raw lines, splits

TEST(ImapReader, PipelinedCommandsInOneFeed) {
    CommandReader r;
    r.feed("a NOOP\r\nb CAPABILITY\r\nc LOGIN {1+}\r\nx y\r\nd LOG");
    EXPECT_EQ(show(*r.next()), "CMD a NOOP");
    EXPECT_GT(r.buffered(), 0u);  // the rest waits, unparsed
    EXPECT_TRUE(r.at_command_start());
    EXPECT_EQ(show(*r.next()), "CMD b CAPABILITY");
    EXPECT_EQ(show(*r.next()), "CMD c LOGIN {x} y");
    EXPECT_FALSE(r.next());
    EXPECT_EQ(r.buffered(), 5u);
    r.feed("OUT\r\n");
    EXPECT_EQ(show(*r.next()), "CMD d LOGOUT");
}

TEST(ImapReader, FeedWhileEventPending) {
    CommandReader r;
    r.feed("a NOOP\r\n");
    r.feed("b NOOP\r\n");  // the first event has not been taken yet
    EXPECT_EQ(r.buffered(), 8u);
    EXPECT_EQ(show(*r.next()), "CMD a NOOP");
    EXPECT_EQ(show(*r.next()), "CMD b NOOP");
    EXPECT_FALSE(r.next());
}

TEST(ImapReader, RawLineMode) {
    CommandReader r;
    r.feed("a AUTHENTICATE PLAIN\r\nAGFsaWNlAHB3\r\nb NOOP\r\n");
    EXPECT_EQ(show(*r.next()), "CMD a AUTHENTICATE PLAIN");
    r.set_raw_line_mode(true);
    EXPECT_TRUE(r.raw_line_mode());
    EXPECT_EQ(show(*r.next()), "RAW AGFsaWNlAHB3");
    EXPECT_FALSE(r.raw_line_mode());
    EXPECT_EQ(show(*r.next()), "CMD b NOOP");

    // Anything goes in a raw line except bare CR/LF; "*" is the refusal.
    EXPECT_EQ(run("i IDLE\r\nDONE\r\nj NOOP\r\n"), (V{"CMD i IDLE", "RAW DONE", "CMD j NOOP"}));
    EXPECT_EQ(run("i IDLE\r\n\r\n"), (V{"CMD i IDLE", "RAW "}));
    EXPECT_EQ(run("i IDLE\r\n{5}\r\nj NOOP\r\n"), (V{"CMD i IDLE", "RAW {5}", "CMD j NOOP"}));
    EXPECT_EQ(run("i IDLE\r\nDO\nNE\r\nj NOOP\r\n"),
              (V{"CMD i IDLE", "BAD * Line contains a bare CR or LF", "CMD j NOOP"}));
    Limits l;
    l.max_line = 20;
    EXPECT_EQ(run("a AUTHENTICATE X\r\n" + std::string(40, 'A') + " {3+}\r\nb NOOP\r\n", {}, l),
              (V{"CMD a AUTHENTICATE X", "BAD * Line too long", "CMD b NOOP"}));

    // Cancelling, and misuse.
    CommandReader c;
    c.set_raw_line_mode(true);
    c.set_raw_line_mode(false);
    c.feed("a X {3}\r\n");
    EXPECT_EQ(show(*c.next()), "+3");
    EXPECT_THROW(c.set_raw_line_mode(true), std::logic_error);
}

// A corpus of everything above; each split of it must give the same events.
std::string corpus() {
    std::string s;
    s += "a001 CAPABILITY\r\n";
    s += "a002 LOGIN \"al\\\"ice\" {6}\r\ns3cr\"t\r\n";
    s += "a003 AUTHENTICATE PLAIN\r\nAGFsaWNlAHMzY3JldA==\r\n";
    s += "a004 SELECT \"Entw&APw-rfe\"\r\n";
    s += "a005 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM \"X ]\")]<0.2048>)\r\n";
    s += "a006 APPEND INBOX (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {12+}\r\nHello\r\nWorld\r\n";
    s += "a007 SEARCH CHARSET {5}\r\nUTF-8 OR (FROM x (TO {2+}\r\n\xc3\xa4)) NOT SEEN\r\n";
    s += "a008 STORE 1 +FLAGS (\\Deleted\r\n";
    s += "a009 X ) {10+}\r\nzzz NOOP\r\n\r\n";
    s += "a010 X ) {5}\r\n";
    s += bin("a011 APPEND INBOX {4+}\r\na\0bc\r\n");
    s += "a012 IDLE\r\nDONE\r\n";
    s += "a013 SEARCH " + std::string(50, '(') + "\r\n";
    s += "a014 X " + std::string(70000, 'L') + " {4+}\r\nQQQQ\r\n";
    s += "a015 APPEND INBOX {99999999999}\r\n";
    s += "a016 NOOP\nfoo\r\n";
    s += "\r\n";
    s += "+ NOOP\r\n";
    s += "a017 X {3}\r\nabc {0}\r\n ({1+}\r\n) NIL)\r\n";
    s += "a018 LOGOUT\r\n";
    return s;
}

TEST(ImapReader, AnySplitGivesTheSameEvents) {
    std::string in = corpus();
    V whole = run(in);
    V want{"CMD a001 CAPABILITY",
           "+6",
           "CMD a002 LOGIN \"al\"ice\" {s3cr\"t}",
           "CMD a003 AUTHENTICATE PLAIN",
           "RAW AGFsaWNlAHMzY3JldA==",
           "CMD a004 SELECT \"Entw&APw-rfe\"",
           "CMD a005 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM \"X ]\")]<0.2048>)",
           "CMD a006 APPEND INBOX (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {Hello\\x0d\\x0aWorld}",
           "+5",
           "CMD a007 SEARCH CHARSET {UTF-8} OR (FROM x (TO {\\xc3\\xa4})) NOT SEEN",
           "BAD a008 Missing )",
           "BAD a009 Unexpected )",
           "BAD a010 Unexpected )",
           "BAD a011 NUL octet in literal",
           "CMD a012 IDLE",
           "RAW DONE",
           "BAD a013 Lists nested too deeply",
           "BAD a014 Line too long",
           "BAD a015 [TOOBIG] Literal too big",
           "BAD a016 Line contains a bare CR or LF",
           "BAD * Empty command line",
           "BAD * Invalid tag",
           "+3",
           "+0",
           "CMD a017 X {abc} {} ({)} NIL)",
           "CMD a018 LOGOUT"};
    EXPECT_EQ(whole, want);
    EXPECT_EQ(run_bytewise(in), want);
    for (unsigned seed = 1; seed <= 30; ++seed) EXPECT_EQ(run_random(in, seed), want) << "seed " << seed;
    EXPECT_EQ(run(in, {2, 3, 5, 7, 11, 13, 4096}), want);
}

// Random bytes with CRLFs: never a crash, every line one event, memory bounded.
TEST(ImapReader, BinaryGarbage) {
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> byte(0, 255);
    for (int round = 0; round < 200; ++round) {
        bool no_brace = round % 2 == 0;  // without "{" no literal can be announced
        std::string in;
        std::size_t lines = 0;
        int n = 1 + round % 40;
        for (int l = 0; l < n; ++l) {
            std::size_t len = static_cast<std::size_t>(byte(rng)) * (round % 5 == 0 ? 4 : 1);
            for (std::size_t i = 0; i < len; ++i) {
                char c = static_cast<char>(byte(rng));
                if (no_brace && c == '{') c = '}';
                in.push_back(c);
            }
            if (round % 3 == 0 && l % 2 == 0) in += " ";  // make valid-looking prefixes likelier
            in += "\r\n";
        }
        for (std::size_t p = in.find("\r\n"); p != std::string::npos; p = in.find("\r\n", p + 2)) ++lines;
        CommandReader r;
        V events;
        std::size_t pos = 0;
        while (pos < in.size()) {
            std::size_t k = 1 + static_cast<std::size_t>(byte(rng)) % 64;
            r.feed(std::string_view(in).substr(pos, k));
            pos += k;
            take(r, events, false);
            ASSERT_LE(r.buffered(), 64u * 1024 + 64);
        }
        if (no_brace) {
            EXPECT_EQ(events.size(), lines) << "round " << round;
            for (const auto& e : events) EXPECT_TRUE(e.rfind("CMD ", 0) == 0 || e.rfind("BAD ", 0) == 0) << e;
        }
        // Whatever state the garbage left, a sane client can always get back in sync or is told to go.
        r.feed("\r\nz NOOP\r\n");
        take(r, events, false);
        EXPECT_EQ(run(in, {}), run_bytewise(in)) << "round " << round;
    }
}

TEST(ImapReader, FormattedStringsParseBack) {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> byte(1, 255);
    for (int i = 0; i < 300; ++i) {
        std::string a, b;
        std::size_t la = static_cast<std::size_t>(byte(rng)) % 12,
                    lb = static_cast<std::size_t>(byte(rng)) % 1200;
        for (std::size_t k = 0; k < la; ++k)
            a.push_back(static_cast<char>(i % 2 ? byte(rng) : 0x20 + byte(rng) % 95));
        for (std::size_t k = 0; k < lb; ++k)
            b.push_back(static_cast<char>(i % 3 ? 0x20 + byte(rng) % 95 : byte(rng)));
        std::string line = "t LOGIN " + astring(a) + " " + quoted_or_literal(b) + "\r\n";
        CommandReader r;
        r.feed(line);
        std::optional<Event> e;
        while ((e = r.next()) && std::holds_alternative<Continue>(*e)) {
        }
        ASSERT_TRUE(e);
        ASSERT_TRUE(std::holds_alternative<Command>(*e)) << show(*e) << " for " << esc(line);
        const auto& c = std::get<Command>(*e);
        ASSERT_EQ(c.args.size(), 2u);
        EXPECT_EQ(c.args[0].astring(), a);
        EXPECT_EQ(c.args[1].text, b);
    }
}

// ---------------------------------------------------------------------------------------------------
// Sequence sets

std::string ranges_of(std::string_view text, std::uint32_t star) {
    auto s = parse_sequence_set(text);
    if (!s) return "invalid";
    return format_ranges(s->ranges(star));
}

TEST(SequenceSet, Valid) {
    EXPECT_EQ(ranges_of("1", 10), "1");
    EXPECT_EQ(ranges_of("2:4", 10), "2:4");
    EXPECT_EQ(ranges_of("4:2", 10), "2:4");
    EXPECT_EQ(ranges_of("*", 10), "10");
    EXPECT_EQ(ranges_of("5:*", 10), "5:10");
    EXPECT_EQ(ranges_of("5:*", 3), "3:5");  // RFC 3501: "*" is the largest number in use
    EXPECT_EQ(ranges_of("*:3", 10), "3:10");
    EXPECT_EQ(ranges_of("1,3:5,*", 10), "1,3:5,10");
    EXPECT_EQ(ranges_of("10:12,1:3,2:6,7,15", 20), "1:7,10:12,15");
    EXPECT_EQ(ranges_of("4294967295", 1), "4294967295");
    EXPECT_EQ(ranges_of("4294967295,1:4294967295,7", 1), "1:4294967295");
    EXPECT_EQ(ranges_of("1:*", 4294967295u), "1:4294967295");
    EXPECT_EQ(ranges_of("*", 0), "");
    EXPECT_EQ(ranges_of("5:*", 0), "1:5");
    EXPECT_EQ(ranges_of("3,3,3", 9), "3");
}

TEST(SequenceSet, Invalid) {
    for (const char* bad : {"",      "0",   "0:3",  "1:0",        "01",
                            "1,",    ",1",  "1,,2", "1:",         ":1",
                            "a",     "1 2", " 1",   "4294967296", "99999999999999999999",
                            "1:2:3", "*:",  "$",    "-1",         "1.5",
                            "**",    "1:*x"}) {
        EXPECT_FALSE(parse_sequence_set(bad)) << bad;
    }
}

TEST(SequenceSet, Contains) {
    auto s = parse_sequence_set("1,3:5,*");
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->uses_star());
    EXPECT_TRUE(s->contains(1, 10));
    EXPECT_FALSE(s->contains(2, 10));
    EXPECT_TRUE(s->contains(4, 10));
    EXPECT_TRUE(s->contains(10, 10));
    EXPECT_FALSE(s->contains(9, 10));
    EXPECT_FALSE(s->contains(0, 10));
    auto r = parse_sequence_set("7:*");
    EXPECT_TRUE(r->contains(5, 5));  // 5:7 when the largest is 5
    EXPECT_TRUE(r->contains(6, 5));
    EXPECT_FALSE(r->contains(8, 5));
    EXPECT_FALSE(parse_sequence_set("2:4")->uses_star());
}

TEST(SequenceSet, ItemLimit) {
    std::string s = "1";
    for (std::size_t i = 1; i < kMaxSequenceItems; ++i) s += ",1";
    auto ok = parse_sequence_set(s);
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->items().size(), kMaxSequenceItems);
    EXPECT_EQ(format_ranges(ok->ranges(5)), "1");
    EXPECT_FALSE(parse_sequence_set(s + ",2"));
}

// ---------------------------------------------------------------------------------------------------
// Modified UTF-7

TEST(MUtf7, KnownEncodings) {
    EXPECT_EQ(to_mutf7("INBOX"), "INBOX");
    EXPECT_EQ(to_mutf7("Entw\xc3\xbcrfe"), "Entw&APw-rfe");
    EXPECT_EQ(to_mutf7("\xe5\x8f\xb0\xe5\x8c\x97"), "&U,BTFw-");
    EXPECT_EQ(to_mutf7("&"), "&-");
    EXPECT_EQ(to_mutf7("a&b"), "a&-b");
    EXPECT_EQ(to_mutf7("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"),
              "~peter/mail/&U,BTFw-/&ZeVnLIqe-");         // RFC 3501 5.1.3
    EXPECT_EQ(to_mutf7("\xf0\x9f\x98\x80"), "&2D3eAA-");  // U+1F600, a surrogate pair
    EXPECT_EQ(to_mutf7("\xc3\xa4\xc3\xa4"), "&AOQA5A-");
    EXPECT_EQ(to_mutf7("a\tb"), "a&AAk-b");
    EXPECT_EQ(to_mutf7(""), "");
}

TEST(MUtf7, RoundTrips) {
    for (const std::string& s : std::vector<std::string>{
             "INBOX", "Entw\xc3\xbcrfe", "\xe5\x8f\xb0\xe5\x8c\x97", "&", "&-", "&&x&",
             "Gel\xc3\xb6scht &"
             " Elemente",
             "\xf0\x9f\x98\x80\xc3\xa4z\xf4\x8f\xbf\xbf", "Re: [x] ~ \\ \" %*", "\x7f\x01"}) {
        std::string enc = to_mutf7(s);
        auto dec = from_mutf7(enc);
        ASSERT_TRUE(dec) << enc;
        EXPECT_EQ(*dec, s) << enc;
    }
    EXPECT_EQ(from_mutf7("&-"), "&");
    EXPECT_EQ(from_mutf7("&AOQ-&-"), "\xc3\xa4&");
    EXPECT_EQ(from_mutf7("&-&AOQ-"), "&\xc3\xa4");
    EXPECT_EQ(from_mutf7("&AOQ-a&AOQ-"),
              "\xc3\xa4"
              "a\xc3\xa4");
    // Random well-formed UTF-8 round-trips exactly.
    std::mt19937 rng(99);
    std::uniform_int_distribution<std::uint32_t> cp(1, 0x10ffff);
    for (int i = 0; i < 500; ++i) {
        std::string s;
        for (int k = 0; k < 8; ++k) {
            std::uint32_t c = (k % 3 == 0) ? 0x20 + cp(rng) % 95 : cp(rng);
            if (c >= 0xd800 && c <= 0xdfff) c = 0xe000;
            if (c < 0x80) {
                s.push_back(static_cast<char>(c));
            } else if (c < 0x800) {
                s.push_back(static_cast<char>(0xc0 | (c >> 6)));
                s.push_back(static_cast<char>(0x80 | (c & 0x3f)));
            } else if (c < 0x10000) {
                s.push_back(static_cast<char>(0xe0 | (c >> 12)));
                s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
                s.push_back(static_cast<char>(0x80 | (c & 0x3f)));
            } else {
                s.push_back(static_cast<char>(0xf0 | (c >> 18)));
                s.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3f)));
                s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
                s.push_back(static_cast<char>(0x80 | (c & 0x3f)));
            }
        }
        std::string enc = to_mutf7(s);
        EXPECT_EQ(from_mutf7(enc), s) << enc;
        EXPECT_EQ(to_mutf7(*from_mutf7(enc)), enc);
    }
}

TEST(MUtf7, RejectsInvalid) {
    for (const std::string& bad : std::vector<std::string>{
             "&",                // nothing after "&"
             "&AOQ",             // unterminated
             "&AOQ-&AOQ-",       // two adjacent shift sequences (non-canonical)
             "&AOQA-",           // 8 leftover bits: non-shortest
             "&AOR-",            // non-zero leftover bits
             "&AA-",             // no complete UTF-16 unit
             "&AGE-",            // "a" in base64
             "&ACY-",            // "&" in base64
             "&ACA-",            // SP in base64
             "&2D0-",            // lone high surrogate
             "&3gA-",            // lone low surrogate
             "&3gDYPQ-",         // low then high
             "&2D3YPQ-",         // high then high
             "&AAA-",            // U+0000
             "&AO!-",            // not modified base64
             "&AO/-",            // "/" is not in the modified alphabet
             "&AO=-",            // no padding
             "Entw\xc3\xbcrfe",  // raw 8-bit
             "a\tb",             // raw control
             std::string("a\0b", 3),
         }) {
        EXPECT_FALSE(from_mutf7(bad)) << esc(bad);
    }
}

TEST(MUtf7, InvalidUtf8IsReplaced) {
    const std::string fffd = "\xef\xbf\xbd";
    EXPECT_EQ(from_mutf7(to_mutf7("a\xff"
                                  "b")),
              "a" + fffd + "b");
    EXPECT_EQ(from_mutf7(to_mutf7("a\xc3")), "a" + fffd);
    EXPECT_EQ(from_mutf7(to_mutf7("\xc0\xaf")), fffd + fffd);                        // overlong "/"
    EXPECT_EQ(from_mutf7(to_mutf7("\xed\xa0\x80")), fffd + fffd + fffd);             // encoded surrogate
    EXPECT_EQ(from_mutf7(to_mutf7("\xf4\x90\x80\x80")), fffd + fffd + fffd + fffd);  // > U+10FFFF
    EXPECT_EQ(from_mutf7(to_mutf7("\xe5\x8f"
                                  "x")),
              fffd + "x");  // truncated, maximal subpart
}

// ---------------------------------------------------------------------------------------------------
// Response formatting

TEST(ImapFormat, Strings) {
    EXPECT_EQ(quoted_or_literal("hello world"), "\"hello world\"");
    EXPECT_EQ(quoted_or_literal(""), "\"\"");
    EXPECT_EQ(quoted_or_literal("a\"b\\c"), "\"a\\\"b\\\\c\"");
    EXPECT_EQ(quoted_or_literal("a\r\nb"), "{4}\r\na\r\nb");
    EXPECT_EQ(quoted_or_literal("tab\t"), "{4}\r\ntab\t");
    EXPECT_EQ(quoted_or_literal("\xc3\xa4"), "{2}\r\n\xc3\xa4");
    EXPECT_EQ(quoted_or_literal(std::string("a\0b", 3)),
              "{3}\r\na\x80"
              "b");
    EXPECT_EQ(quoted_or_literal(std::string(kMaxQuoted, 'x')), "\"" + std::string(kMaxQuoted, 'x') + "\"");
    EXPECT_EQ(quoted_or_literal(std::string(kMaxQuoted + 1, 'x')).substr(0, 8), "{1025}\r\n");
    EXPECT_EQ(nstring(std::nullopt), "NIL");
    EXPECT_EQ(nstring("NIL"), "\"NIL\"");
    EXPECT_EQ(nstring(""), "\"\"");
    EXPECT_EQ(astring("INBOX"), "INBOX");
    EXPECT_EQ(astring("foo]"), "foo]");
    EXPECT_EQ(astring("Sent Items"), "\"Sent Items\"");
    EXPECT_EQ(astring(""), "\"\"");
    EXPECT_EQ(astring("nil"), "\"nil\"");
    EXPECT_EQ(astring("a%"), "\"a%\"");
    EXPECT_EQ(astring("a*"), "\"a*\"");
    EXPECT_EQ(astring("a(b"), "\"a(b\"");
    EXPECT_EQ(astring("x\\y"), "\"x\\\\y\"");
    EXPECT_EQ(astring("a{1}"), "\"a{1}\"");
    EXPECT_EQ(astring("[Gmail]/Sent"), "\"[Gmail]/Sent\"");
}

TEST(ImapFormat, Flags) {
    EXPECT_EQ(format_flags({}), "()");
    EXPECT_EQ(format_flags({"\\Seen", "$Forwarded", "bad flag", "\\*", "", "\\", "x\"y", "\\Draft"}),
              "(\\Seen $Forwarded \\* \\Draft)");
    EXPECT_TRUE(is_valid_flag("\\Answered"));
    EXPECT_TRUE(is_valid_flag("NonJunk"));
    EXPECT_FALSE(is_valid_flag("a]"));
    EXPECT_FALSE(is_valid_flag("\\\\Seen"));
    EXPECT_FALSE(is_valid_flag("*"));
}

}  // namespace
