// Fuzz target: the IMAP command reader (protocol/imap CommandReader) and the argument helpers a server
// applies to what it returns (astring, list-mailbox, sequence sets, modified UTF-7, formatting).
//
// Input: [flags] [split seed] client bytes...
//   flags bit 0 raw-line mode after AUTHENTICATE / IDLE (as the server does), bit 1 also after every
//         command whose tag starts with 'R', bit 2 small limits, bit 3 no 8-bit quoted strings
// The bytes are fed once whole and once in pieces (sizes from the seed); the reader promises the same
// events for any split, so a difference aborts.
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "protocol/imap/imap_format.h"
#include "protocol/imap/imap_parser.h"
#include "protocol/imap/mutf7.h"
#include "protocol/imap/sequence_set.h"

using namespace gb::protocol::imap;

namespace {

void describe(const Value& v, std::string& out, int depth) {
    switch (v.kind) {
        case Value::Kind::Atom: out += "A[" + v.text + "]"; break;
        case Value::Kind::String: out += (v.literal ? "L[" : "S[") + v.text + "]"; break;
        case Value::Kind::Nil: out += "NIL"; break;
        case Value::Kind::List:
            out += "(";
            for (const auto& i : v.items) describe(i, out, depth + 1);
            out += ")";
            break;
    }
}

// What a server does with arguments: every accessor and parser on every value.
void exercise(const Value& v, int depth) {
    if (depth > 64) return;
    (void)v.is_atom("FLAGS");
    if (auto a = v.astring()) {
        std::string s(*a);
        (void)astring(s);
        if (auto u = from_mutf7(s)) {
            std::string back = to_mutf7(*u);
            (void)from_mutf7(back);
        }
        (void)to_mutf7(s);
        (void)is_valid_flag(s);
        (void)quoted_or_literal(s);
        (void)nstring(std::optional<std::string_view>(s));
    }
    (void)v.list_mailbox();
    if (v.is_atom()) {
        if (auto set = parse_sequence_set(v.text)) {
            (void)set->uses_star();
            for (std::uint32_t star : {0u, 1u, 7u, 4294967295u}) {
                auto r = set->ranges(star);
                (void)format_ranges(r);
                (void)set->contains(3, star);
            }
        }
        (void)parse_number(v.text, 4294967295ull);
        (void)parse_number(v.text, kMaxModSeq);
    }
    for (const auto& i : v.items) exercise(i, depth + 1);
}

std::vector<std::string> run(std::string_view input, std::uint8_t flags, std::uint8_t seed) {
    Limits limits;
    if (flags & 4) {
        limits.max_line = 64;
        limits.max_literal = 100;
        limits.max_nonsync_literal = 20;
        limits.max_command = 200;
        limits.max_depth = 4;
        limits.max_values = 12;
    }
    limits.allow_8bit_quoted = !(flags & 8);
    CommandReader r(limits);
    gb::fuzz::Splitter split(seed, 50);
    std::vector<std::string> events;

    auto take = [&] {
        while (auto e = r.next()) {
            if (const auto* c = std::get_if<Command>(&*e)) {
                std::string d = "CMD " + c->tag + " " + c->name;
                for (const auto& a : c->args) {
                    d += " ";
                    describe(a, d, 0);
                    exercise(a, 0);
                }
                events.push_back(std::move(d));
                bool raw = ((flags & 1) && (c->name == "AUTHENTICATE" || c->name == "IDLE")) ||
                           ((flags & 2) && !c->tag.empty() && c->tag[0] == 'R');
                if (raw && r.at_command_start()) r.set_raw_line_mode(true);
            } else if (const auto* k = std::get_if<Continue>(&*e)) {
                events.push_back("+" + std::to_string(k->size));
            } else if (const auto* er = std::get_if<Error>(&*e)) {
                events.push_back(std::string(er->fatal ? "BYE " : "BAD ") + er->tag + " " + er->text);
            } else {
                events.push_back("RAW " + std::get<RawLine>(*e).text);
            }
        }
    };

    std::size_t pos = 0;
    while (pos < input.size()) {
        std::string_view piece = input.substr(pos, split.next(input.size() - pos));
        pos += piece.size();
        r.feed(piece);
        take();
        // The documented bound (plus at most one piece fed while an event was waiting).
        gb::fuzz::check(r.buffered() <= limits.max_command + limits.max_values * sizeof(Value) + piece.size() + 2,
                        "imap: buffered() over its bound", std::to_string(r.buffered()));
    }
    take();
    events.push_back(r.failed() ? "[DEAD]" : r.at_command_start() ? "[START]" : "[MID]");
    return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    gb::fuzz::Bytes in(data, size);
    std::uint8_t flags = in.byte();
    std::uint8_t seed = in.byte();
    std::string_view input = in.rest();
    if (input.size() > 64 * 1024) return 0;
    auto whole = run(input, flags, 0);
    auto split = run(input, flags, seed == 0 ? 1 : seed);
    if (gb::fuzz::verbose())
        for (const auto& e : whole) std::fprintf(stderr, "%s\n", e.c_str());
    if (whole != split) {
        std::string d = "--- whole:\n";
        for (const auto& e : whole) d += e + "\n";
        d += "--- split:\n";
        for (const auto& e : split) d += e + "\n";
        gb::fuzz::fail("imap: events differ between whole and split input", d);
    }
    return 0;
}
