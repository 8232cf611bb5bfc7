#include "protocol/line_reader.h"

namespace gb::protocol {

std::size_t LineReader::feed(std::string_view bytes, Status& status) {
    if (complete_) {
        line_.clear();
        complete_ = false;
    }
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        char c = bytes[i];
        if (pending_cr_) {
            pending_cr_ = false;
            if (c == '\n') {
                bool was_discarding = discarding_, was_bad = bad_ending_;
                discarding_ = bad_ending_ = false;
                if (was_discarding) {
                    line_.clear();
                    continue;  // the TooLong status was already reported
                }
                if (was_bad) {
                    line_.clear();
                    status = Status::BareLf;
                    return i + 1;
                }
                complete_ = true;
                status = Status::Line;
                return i + 1;
            }
            bad_ending_ = true;  // CR not followed by LF
        }
        if (c == '\r') {
            pending_cr_ = true;
            continue;
        }
        if (c == '\n') {
            bad_ending_ = true;  // LF without CR
            continue;
        }
        if (discarding_) continue;
        if (line_.size() >= max_line_) {
            discarding_ = true;
            line_.clear();
            line_.shrink_to_fit();
            status = Status::TooLong;
            return i + 1;
        }
        line_.push_back(c);
    }
    status = Status::NeedMore;
    return bytes.size();
}

void LineReader::wipe() {
    volatile char* p = line_.data();
    for (std::size_t i = 0; i < line_.size(); ++i) p[i] = 0;
    line_.clear();
}

}  // namespace gb::protocol
