// RFC 3501 sequence-set parsing and normalisation. See sequence_set.h.
#include "protocol/imap/sequence_set.h"

#include <charconv>

#include <algorithm>

namespace gb::protocol::imap {
namespace {

// seq-number at text[i]: "*" -> 0, else an nz-number without leading zeros and <= 4294967295.
bool parse_seq_number(std::string_view text, std::size_t& i, std::uint32_t& out) {
    if (i < text.size() && text[i] == '*') {
        ++i;
        out = 0;
        return true;
    }
    if (i >= text.size() || text[i] < '1' || text[i] > '9') return false;
    std::uint64_t v = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        v = v * 10 + static_cast<std::uint64_t>(text[i] - '0');
        if (v > 4294967295u) return false;
        ++i;
    }
    out = static_cast<std::uint32_t>(v);
    return true;
}

SequenceSet::Range resolve(const SequenceSet::Item& item, std::uint32_t star) {
    std::uint32_t a = item.first == 0 ? star : item.first;
    std::uint32_t b = item.second == 0 ? star : item.second;
    if (a > b) std::swap(a, b);
    return {a, b};
}

}  // namespace

std::optional<SequenceSet> parse_sequence_set(std::string_view text) {
    SequenceSet set;
    std::size_t i = 0;
    for (;;) {
        if (set.items_.size() >= kMaxSequenceItems) return std::nullopt;
        std::uint32_t a = 0, b = 0;
        if (!parse_seq_number(text, i, a)) return std::nullopt;
        b = a;
        if (i < text.size() && text[i] == ':') {
            ++i;
            if (!parse_seq_number(text, i, b)) return std::nullopt;
        }
        set.items_.emplace_back(a, b);
        if (i == text.size()) return set;
        if (text[i] != ',') return std::nullopt;
        ++i;
    }
}

bool SequenceSet::contains(std::uint32_t n, std::uint32_t star) const {
    if (n == 0) return false;
    return std::any_of(items_.begin(), items_.end(), [&](const Item& item) {
        Range r = resolve(item, star);
        return n >= r.first && n <= r.second;
    });
}

std::vector<SequenceSet::Range> SequenceSet::ranges(std::uint32_t star) const {
    std::vector<Range> rs;
    rs.reserve(items_.size());
    for (const Item& item : items_) {
        Range r = resolve(item, star);
        if (r.second == 0) continue;  // "*" or "*:*" on an empty mailbox
        if (r.first == 0) r.first = 1;
        rs.push_back(r);
    }
    std::sort(rs.begin(), rs.end());
    std::vector<Range> out;
    for (const Range& r : rs) {
        if (!out.empty() && (out.back().second == UINT32_MAX || r.first <= out.back().second + 1)) {
            out.back().second = std::max(out.back().second, r.second);
        } else {
            out.push_back(r);
        }
    }
    return out;
}

bool SequenceSet::uses_star() const {
    return std::any_of(items_.begin(), items_.end(),
                       [](const Item& item) { return item.first == 0 || item.second == 0; });
}

std::optional<std::uint64_t> parse_number(std::string_view text, std::uint64_t max) {
    if (text.empty() || text.size() > 20) return std::nullopt;
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v > max) return std::nullopt;
    return v;
}

std::string format_ranges(const std::vector<SequenceSet::Range>& ranges) {
    std::string out;
    for (const SequenceSet::Range& r : ranges) {
        if (!out.empty()) out.push_back(',');
        out += std::to_string(r.first);
        if (r.second != r.first) {
            out.push_back(':');
            out += std::to_string(r.second);
        }
    }
    return out;
}

}  // namespace gb::protocol::imap
