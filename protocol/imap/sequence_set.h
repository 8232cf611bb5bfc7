// RFC 3501 sequence-set (section 9), as used by FETCH, STORE, COPY, SEARCH and their UID forms.
//
//   sequence-set = (seq-number / seq-range) *("," (seq-number / seq-range))
//   seq-range    = seq-number ":" seq-number
//   seq-number   = nz-number / "*"        nz-number = digit-nz *DIGIT, 1 .. 4294967295
//
// Strict: no 0, no leading zeros, no empty items, no spaces, no RFC 5182 "$". Input is hostile: at most
// kMaxSequenceItems items are parsed (more -> nullopt), nothing else is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gb::protocol::imap {

inline constexpr std::size_t kMaxSequenceItems = 100000;

class SequenceSet {
  public:
    using Range = std::pair<std::uint32_t, std::uint32_t>;  // inclusive, first <= second
    // An item as written; 0 stands for "*".
    using Item = std::pair<std::uint32_t, std::uint32_t>;

    // n is in the set when "*" means star (the highest sequence number or UID in use). n == 0 never is.
    bool contains(std::uint32_t n, std::uint32_t star) const;
    // The set with "*" resolved to star, each a:b ordered, sorted and merged (overlapping or adjacent
    // ranges joined). star == 0 (empty mailbox): "*" resolves to 0 and ranges are clipped to start at 1,
    // so "*" alone gives nothing and "5:*" gives 1:5.
    std::vector<Range> ranges(std::uint32_t star) const;
    const std::vector<Item>& items() const { return items_; }
    bool uses_star() const;

  private:
    friend std::optional<SequenceSet> parse_sequence_set(std::string_view text);
    std::vector<Item> items_;
};

std::optional<SequenceSet> parse_sequence_set(std::string_view text);

// A decimal number of 1..max digits' worth (no sign, no spaces) that is <= max; nullopt otherwise (never
// throws, whatever the client sends). RFC 7162 mod-sequences: max 2^63-1; UIDs/UIDVALIDITY: 2^32-1.
std::optional<std::uint64_t> parse_number(std::string_view text, std::uint64_t max);
inline constexpr std::uint64_t kMaxModSeq = 9223372036854775807ull;

// "1:3,7,9:12" for ranges as returned by SequenceSet::ranges() (COPYUID, APPENDUID, ESEARCH output);
// a range a:a is written "a". Empty input gives "".
std::string format_ranges(const std::vector<SequenceSet::Range>& ranges);

}  // namespace gb::protocol::imap
