// Small helpers shared by the fuzz harnesses (no libFuzzer headers: the replay build uses GCC).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace gb::fuzz {

// Reads control bytes off the front of the input; once it is exhausted every read gives 0.
class Bytes {
  public:
    Bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
    // The rest of the input, unconsumed.
    std::string_view rest() const {
        return pos_ < size_ ? std::string_view(reinterpret_cast<const char*>(data_ + pos_), size_ - pos_)
                            : std::string_view();
    }

  private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
};

// Piece sizes for splitting a stream: seed 0 = the whole input at once; otherwise a small LCG gives
// sizes 1..max_piece, deterministic for the seed.
class Splitter {
  public:
    explicit Splitter(std::uint8_t seed, std::size_t max_piece = 64) : state_(seed), max_piece_(max_piece) {}
    std::size_t next(std::size_t remaining) {
        if (state_ == 0) return remaining;
        state_ = state_ * 1103515245u + 12345u;
        std::size_t n = 1 + (state_ >> 16) % max_piece_;
        return n < remaining ? n : remaining;
    }

  private:
    std::uint32_t state_;
    std::size_t max_piece_;
};

// A property the code under test promises was broken: report and abort, so libFuzzer (and the
// replay test) count it as a crash.
[[noreturn]] inline void fail(const char* what, const std::string& detail = {}) {
    std::fprintf(stderr, "FUZZ INVARIANT BROKEN: %s\n", what);
    if (!detail.empty()) std::fprintf(stderr, "%s\n", detail.c_str());
    std::abort();
}

inline void check(bool ok, const char* what, const std::string& detail = {}) {
    if (!ok) fail(what, detail);
}

// GB_FUZZ_VERBOSE=1 in the environment: harnesses print what the code under test answered (for
// turning a finding into a unit test).
inline bool verbose() {
    static const bool on = [] {
        const char* v = std::getenv("GB_FUZZ_VERBOSE");
        return v && *v && *v != '0';
    }();
    return on;
}

// A per-process scratch directory $TMPDIR/gb-fuzz-<pid>-<name> (keystore and config loaders only read
// from paths), removed with its files at exit.
std::string scratch_dir(const char* name);
void write_file(const std::string& path, std::string_view bytes);

}  // namespace gb::fuzz
