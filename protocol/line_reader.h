// Splits a byte stream into protocol lines (SMTP, IMAP, POP3 command lines), socket-free.
//
// Input is hostile. A line ends at CRLF only; a bare LF or bare CR inside a command line is a
// protocol error reported to the caller (the SMTP smuggling class of bugs starts with lenient line
// ends). Lines longer than the limit are reported once and skipped up to their CRLF, so memory stays
// bounded whatever the peer sends.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace gb::protocol {

class LineReader {
public:
    enum class Status {
        Line,      // a complete line (without CRLF) is in line()
        NeedMore,  // feed more bytes
        TooLong,   // the line exceeded max_line; it is being discarded up to its CRLF
        BareLf,    // a line contained a bare LF or CR; it was discarded
    };

    explicit LineReader(std::size_t max_line = 1000) : max_line_(max_line) {}

    // Appends bytes; returns how many were consumed (all of them, except when a line is complete,
    // where the rest stays with the caller to feed again after handling the line).
    std::size_t feed(std::string_view bytes, Status& status);

    const std::string& line() const { return line_; }
    // Overwrites the current line with zeros (after handling one that carried a credential).
    void wipe();
    // Bytes buffered for the current incomplete line (bounded by max_line).
    std::size_t buffered() const { return line_.size(); }
    // Part of a line has been read (the last complete line, still held, does not count).
    bool partial() const { return !complete_ && !line_.empty(); }

private:
    std::size_t max_line_;
    std::string line_;
    bool complete_ = false;
    bool discarding_ = false;  // skipping the rest of a too-long line
    bool bad_ending_ = false;  // saw a bare CR or LF in the current line
    bool pending_cr_ = false;
};

}  // namespace gb::protocol
