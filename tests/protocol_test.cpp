#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "protocol/line_reader.h"

using gb::protocol::LineReader;
using Status = LineReader::Status;

namespace {

// Feeds input in the given chunk sizes; returns the sequence of events ("L:text", "TooLong", "BareLf").
std::vector<std::string> run(std::string_view input, const std::vector<std::size_t>& chunks, std::size_t max = 20) {
    LineReader r(max);
    std::vector<std::string> events;
    std::size_t pos = 0, chunk = 0;
    while (pos < input.size()) {
        std::size_t n = chunks.empty() ? input.size() : chunks[chunk++ % chunks.size()];
        std::string_view piece = input.substr(pos, n);
        pos += piece.size();
        while (!piece.empty()) {
            Status st;
            std::size_t used = r.feed(piece, st);
            piece.remove_prefix(used);
            if (st == Status::Line) events.push_back("L:" + r.line());
            else if (st == Status::TooLong) events.push_back("TooLong");
            else if (st == Status::BareLf) events.push_back("BareLf");
        }
    }
    return events;
}

}  // namespace

TEST(LineReader, SameEventsWholeByteByByteAndRandomSplits) {
    std::string input = "EHLO a\r\nMAIL FROM:<x@y.z>\r\n" + std::string(50, 'A') + "\r\nNOOP\r\nbad\nline\r\nX\rY\r\nQUIT\r\n";
    std::vector<std::string> expected = {"L:EHLO a", "L:MAIL FROM:<x@y.z>", "TooLong", "L:NOOP", "BareLf", "BareLf",
                                         "L:QUIT"};
    EXPECT_EQ(run(input, {}), expected);
    EXPECT_EQ(run(input, {1}), expected);
    std::mt19937 rng(42);
    for (int round = 0; round < 200; ++round) {
        std::vector<std::size_t> chunks;
        for (int i = 0; i < 16; ++i) chunks.push_back(1 + rng() % 9);
        ASSERT_EQ(run(input, chunks), expected) << "round " << round;
    }
}

TEST(LineReader, MemoryStaysBoundedOnEndlessLine) {
    LineReader r(100);
    std::string junk(4096, 'x');
    Status st;
    int too_long = 0;
    for (int i = 0; i < 1000; ++i) {
        std::string_view piece = junk;
        while (!piece.empty()) {
            piece.remove_prefix(r.feed(piece, st));
            if (st == Status::TooLong) ++too_long;
            ASSERT_LE(r.buffered(), 100u);
        }
    }
    EXPECT_EQ(too_long, 1);
    // The end of the discarded line is silent; the next line comes through.
    r.feed("\r\nNEXT\r\n", st);
    ASSERT_EQ(st, Status::Line);
    EXPECT_EQ(r.line(), "NEXT");
}

TEST(LineReader, WipeZeroesTheLineInPlace) {
    LineReader r(100);
    Status st = Status::NeedMore;
    r.feed("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", st);
    ASSERT_EQ(st, Status::Line);
    const char* data = r.line().data();
    std::size_t n = r.line().size();
    r.wipe();
    EXPECT_TRUE(r.line().empty());
    for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(data[i], '\0') << i;  // same buffer, overwritten
}
