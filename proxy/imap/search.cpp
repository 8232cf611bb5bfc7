// SEARCH / UID SEARCH: every RFC 3501 6.4.4 key, evaluated locally. Flags, sizes, dates and UIDs come
// from the state store; header and text keys read the message (cached body) only for messages the cheap
// keys have not already decided, so "UNSEEN SUBJECT x" downloads nothing for seen messages.
// Matching is a case-insensitive substring match (ASCII case folding, octets otherwise) on unfolded
// header values and on the decoded text of text/* parts, as RFC 3501 intends ("contains").
#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <functional>

#include "common/ascii.h"
#include "graph/mail/imap_message.h"
#include "protocol/imap/sequence_set.h"
#include "proxy/imap/selected.h"

namespace gb::imap {

namespace pi = protocol::imap;
namespace mi = mail::imap;

namespace {

using ascii::upper;

bool icontains(std::string_view hay, std::string_view needle) {
    if (needle.empty()) return true;
    auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
    });
    return it != hay.end();
}

// RFC 5322 date-time ("Tue, 14 Nov 2023 22:13:20 +0000", day name optional, seconds optional, obsolete
// zone names read as UTC) -> unix seconds.
std::optional<std::int64_t> parse_rfc5322_date(std::string_view s) {
    static const char* months[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
    std::size_t i = 0;
    auto skip_ws = [&] {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    };
    auto number = [&](int max_digits) -> std::optional<int> {
        int v = 0, n = 0;
        while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) && n < max_digits) {
            v = v * 10 + (s[i++] - '0');
            ++n;
        }
        return n ? std::optional<int>(v) : std::nullopt;
    };
    skip_ws();
    if (auto comma = s.find(','); comma != std::string_view::npos && comma < 12) i = comma + 1;
    skip_ws();
    auto day = number(2);
    skip_ws();
    if (!day || i + 3 > s.size()) return std::nullopt;
    int month = -1;
    for (int m = 0; m < 12; ++m) {
        std::string_view mon = s.substr(i, 3);
        if (std::equal(mon.begin(), mon.end(), months[m], [](char a, char b) {
                return std::tolower(static_cast<unsigned char>(a)) == b;
            }))
            month = m;
    }
    if (month < 0) return std::nullopt;
    i += 3;
    skip_ws();
    auto year = number(4);
    if (!year) return std::nullopt;
    if (*year < 50) *year += 2000;
    else if (*year < 1000) *year += 1900;
    skip_ws();
    int hh = 0, mm = 0, ss = 0;
    if (auto h = number(2)) {
        hh = *h;
        if (i < s.size() && s[i] == ':') {
            ++i;
            mm = number(2).value_or(0);
            if (i < s.size() && s[i] == ':') {
                ++i;
                ss = number(2).value_or(0);
            }
        }
    }
    skip_ws();
    int offset = 0;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
        int sign = s[i] == '-' ? -1 : 1;
        ++i;
        auto z = number(4);
        if (z) offset = sign * ((*z / 100) * 3600 + (*z % 100) * 60);
    }
    std::tm tm{};
    tm.tm_year = *year - 1900;
    tm.tm_mon = month;
    tm.tm_mday = *day;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    return static_cast<std::int64_t>(timegm(&tm)) - offset;
}

struct Key {
    enum class K {
        All, And, Or, Not, Flag, NoFlag, Keyword, NoKeyword, New, Old, Recent, Before, On, Since, SentBefore,
        SentOn, SentSince, Larger, Smaller, Uid, Seq, Header, Body, Text, ModSeq
    } k = K::All;
    std::uint32_t flag = 0;
    std::string a, b;  // Header: field name, value; Body/Text: value; Keyword: name
    std::int64_t date = 0;
    std::uint64_t n = 0;
    std::optional<pi::SequenceSet> set;
    std::vector<Key> kids;
};

constexpr int kMaxDepth = 64;

class Parser {
public:
    Parser(const std::vector<protocol::imap::Value>& args, std::size_t pos) : args_(args), pos_(pos) {}

    // All remaining arguments, ANDed.
    std::optional<Key> parse_all() {
        Key and_key;
        and_key.k = Key::K::And;
        while (pos_ < args_.size()) {
            auto k = parse_one(args_, pos_, 0);
            if (!k) return std::nullopt;
            and_key.kids.push_back(std::move(*k));
        }
        if (and_key.kids.empty()) return std::nullopt;
        return and_key;
    }
    std::string error;
    bool used_modseq = false;  // a MODSEQ key: the response carries (MODSEQ n) (RFC 7162 3.1.5)

private:
    static std::optional<std::string> str(const std::vector<protocol::imap::Value>& a, std::size_t& p) {
        if (p >= a.size()) return std::nullopt;
        auto s = a[p].astring();
        if (!s) return std::nullopt;
        ++p;
        return std::string(*s);
    }

    std::optional<Key> parse_one(const std::vector<protocol::imap::Value>& a, std::size_t& p, int depth) {
        if (depth > kMaxDepth || p >= a.size()) return std::nullopt;
        const auto& v = a[p++];
        Key key;
        if (v.is_list()) {
            key.k = Key::K::And;
            std::size_t q = 0;
            while (q < v.items.size()) {
                auto k = parse_one(v.items, q, depth + 1);
                if (!k) return std::nullopt;
                key.kids.push_back(std::move(*k));
            }
            if (key.kids.empty()) return std::nullopt;
            return key;
        }
        if (!v.is_atom()) return std::nullopt;
        std::string u = upper(v.text);
        auto flag = [&](Key::K kind, std::uint32_t f) {
            key.k = kind;
            key.flag = f;
            return std::optional<Key>(key);
        };
        auto date_key = [&](Key::K kind) -> std::optional<Key> {
            auto s = str(a, p);
            if (!s) return std::nullopt;
            auto d = parse_imap_date(*s);
            if (!d) return std::nullopt;
            key.k = kind;
            key.date = *d;
            return key;
        };
        auto text_key = [&](Key::K kind, std::string header) -> std::optional<Key> {
            auto s = str(a, p);
            if (!s) return std::nullopt;
            key.k = kind;
            key.a = std::move(header);
            key.b = *s;
            return key;
        };
        if (u == "ALL") return flag(Key::K::All, 0);
        if (u == "ANSWERED") return flag(Key::K::Flag, sync::kAnswered);
        if (u == "DELETED") return flag(Key::K::Flag, sync::kDeleted);
        if (u == "DRAFT") return flag(Key::K::Flag, sync::kDraft);
        if (u == "FLAGGED") return flag(Key::K::Flag, sync::kFlagged);
        if (u == "SEEN") return flag(Key::K::Flag, sync::kSeen);
        if (u == "UNANSWERED") return flag(Key::K::NoFlag, sync::kAnswered);
        if (u == "UNDELETED") return flag(Key::K::NoFlag, sync::kDeleted);
        if (u == "UNDRAFT") return flag(Key::K::NoFlag, sync::kDraft);
        if (u == "UNFLAGGED") return flag(Key::K::NoFlag, sync::kFlagged);
        if (u == "UNSEEN") return flag(Key::K::NoFlag, sync::kSeen);
        if (u == "NEW") return flag(Key::K::New, 0);
        if (u == "OLD") return flag(Key::K::Old, 0);
        if (u == "RECENT") return flag(Key::K::Recent, 0);
        if (u == "KEYWORD" || u == "UNKEYWORD") {
            auto s = str(a, p);
            if (!s) return std::nullopt;
            key.k = u == "KEYWORD" ? Key::K::Keyword : Key::K::NoKeyword;
            key.a = *s;
            return key;
        }
        if (u == "BEFORE") return date_key(Key::K::Before);
        if (u == "ON") return date_key(Key::K::On);
        if (u == "SINCE") return date_key(Key::K::Since);
        if (u == "SENTBEFORE") return date_key(Key::K::SentBefore);
        if (u == "SENTON") return date_key(Key::K::SentOn);
        if (u == "SENTSINCE") return date_key(Key::K::SentSince);
        if (u == "LARGER" || u == "SMALLER") {
            auto s = str(a, p);
            if (!s || s->empty() || s->size() > 10 || !std::all_of(s->begin(), s->end(), ::isdigit)) return std::nullopt;
            key.k = u == "LARGER" ? Key::K::Larger : Key::K::Smaller;
            key.n = std::stoull(*s);
            return key;
        }
        if (u == "FROM" || u == "TO" || u == "CC" || u == "BCC" || u == "SUBJECT") return text_key(Key::K::Header, u);
        if (u == "HEADER") {
            auto field = str(a, p);
            if (!field) return std::nullopt;
            return text_key(Key::K::Header, upper(*field));
        }
        if (u == "BODY") return text_key(Key::K::Body, "");
        if (u == "TEXT") return text_key(Key::K::Text, "");
        if (u == "NOT") {
            auto k = parse_one(a, p, depth + 1);
            if (!k) return std::nullopt;
            key.k = Key::K::Not;
            key.kids.push_back(std::move(*k));
            return key;
        }
        if (u == "OR") {
            auto k1 = parse_one(a, p, depth + 1);
            if (!k1) return std::nullopt;
            auto k2 = parse_one(a, p, depth + 1);
            if (!k2) return std::nullopt;
            key.k = Key::K::Or;
            key.kids.push_back(std::move(*k1));
            key.kids.push_back(std::move(*k2));
            return key;
        }
        if (u == "MODSEQ") {
            // MODSEQ [entry-name entry-type-req] mod-sequence-valzer; entries are all one counter here.
            if (p + 2 < a.size() && a[p].is_string() && a[p + 1].is_atom()) {
                std::string t = upper(a[p + 1].text);
                if (t != "PRIV" && t != "SHARED" && t != "ALL") return std::nullopt;
                p += 2;
            }
            if (p >= a.size() || !a[p].is_atom()) return std::nullopt;
            auto n = pi::parse_number(a[p++].text, pi::kMaxModSeq);
            if (!n) return std::nullopt;
            key.k = Key::K::ModSeq;
            key.n = *n;
            used_modseq = true;
            return key;
        }
        if (u == "UID") {
            if (p >= a.size() || !a[p].is_atom()) return std::nullopt;
            key.set = pi::parse_sequence_set(a[p++].text);
            if (!key.set) return std::nullopt;
            key.k = Key::K::Uid;
            return key;
        }
        key.set = pi::parse_sequence_set(v.text);
        if (!key.set) return std::nullopt;
        key.k = Key::K::Seq;
        return key;
    }

    const std::vector<protocol::imap::Value>& args_;
    std::size_t pos_;
};

// Three-valued evaluation: cheap keys first; keys needing the message ask `load` for it.
struct Context {
    const sync::MessageRecord& m;
    std::uint32_t seq, max_seq, max_uid;
    std::function<const std::string*()> raw;
    std::function<const mi::MessageIndex*()> index;
    bool unavailable = false;

    std::optional<std::string> header(const std::string& name) {
        const std::string* r = raw();
        if (!r) {
            unavailable = true;
            return std::nullopt;
        }
        return mi::header_field(*r, name);
    }
};

std::int64_t day_of(std::int64_t t) { return t - ((t % 86400) + 86400) % 86400; }

bool eval(const Key& k, Context& c) {
    switch (k.k) {
        case Key::K::All: return true;
        case Key::K::And:
            for (const auto& kid : k.kids)
                if (!eval(kid, c)) return false;
            return true;
        case Key::K::Or: return eval(k.kids[0], c) || eval(k.kids[1], c);
        case Key::K::Not: return !eval(k.kids[0], c);
        case Key::K::Flag: return (c.m.flags & k.flag) != 0;
        case Key::K::NoFlag: return (c.m.flags & k.flag) == 0;
        case Key::K::Keyword:
        case Key::K::NoKeyword: {
            bool has = false;
            std::string want = upper(k.a);
            if (want == "$FORWARDED") has = (c.m.flags & sync::kForwarded) != 0;
            for (const auto& kw : c.m.keywords) has = has || upper(sync::keyword_atom(kw)) == want;
            for (const auto& kw : c.m.local_keywords) has = has || upper(kw) == want;
            return k.k == Key::K::Keyword ? has : !has;
        }
        case Key::K::New: return false;  // no \Recent: NEW = RECENT UNSEEN
        case Key::K::Old: return true;
        case Key::K::Recent: return false;
        case Key::K::Before: return day_of(c.m.internal_date) < k.date;
        case Key::K::On: return day_of(c.m.internal_date) == k.date;
        case Key::K::Since: return day_of(c.m.internal_date) >= k.date;
        case Key::K::SentBefore:
        case Key::K::SentOn:
        case Key::K::SentSince: {
            auto date = c.header("DATE");
            std::int64_t sent = date ? parse_rfc5322_date(*date).value_or(c.m.internal_date) : c.m.internal_date;
            std::int64_t d = day_of(sent);
            return k.k == Key::K::SentBefore ? d < k.date : k.k == Key::K::SentOn ? d == k.date : d >= k.date;
        }
        case Key::K::ModSeq: return c.m.modseq >= k.n;
        case Key::K::Larger: return c.m.size > k.n;
        case Key::K::Smaller: return c.m.size < k.n;
        case Key::K::Uid: return k.set->contains(c.m.uid, c.max_uid);
        case Key::K::Seq: return k.set->contains(c.seq, c.max_seq);
        case Key::K::Header: {
            auto v = c.header(k.a);
            // HEADER name "" matches every message that has the field (RFC 3501).
            return v && icontains(*v, k.b);
        }
        case Key::K::Body:
        case Key::K::Text: {
            const std::string* r = c.raw();
            const mi::MessageIndex* ix = c.index();
            if (!r || !ix) {
                c.unavailable = true;
                return false;
            }
            std::string text = mi::text_for_search(*ix, *r);
            if (icontains(text, k.b)) return true;
            return k.k == Key::K::Text &&
                   icontains(std::string_view(*r).substr(0, ix->root().header_end), k.b);
        }
    }
    return false;
}

}  // namespace

void Session::cmd_search(const Command& c, bool uid, std::size_t first) {
    std::size_t p = first;
    if (p < c.args.size() && c.args[p].is_atom("CHARSET")) {
        if (p + 1 >= c.args.size()) return bad(c.tag, "CHARSET needs a name");
        auto cs = c.args[p + 1].astring();
        std::string u = cs ? upper(*cs) : "";
        if (u != "UTF-8" && u != "US-ASCII") return no(c.tag, "[BADCHARSET (US-ASCII UTF-8)] Unsupported charset");
        p += 2;
    }
    Parser parser(c.args, p);
    auto key = parser.parse_all();
    if (!key) return bad(c.tag, "Invalid search criteria");
    const auto& msgs = selected_->messages();
    std::uint32_t max_uid = msgs.empty() ? 0 : msgs.back().uid;
    if (parser.used_modseq) enable_condstore();
    std::string hits;
    std::uint64_t highest = 0;
    bool unavailable = false;
    for (std::size_t i = 0; i < msgs.size(); ++i) {
        MessageData data(*this, msgs[i]);
        Context ctx{msgs[i], static_cast<std::uint32_t>(i + 1), static_cast<std::uint32_t>(msgs.size()), max_uid,
                    [&] { return data.raw(); }, [&] { return data.index(); }};
        if (eval(*key, ctx)) {
            hits += " " + std::to_string(uid ? msgs[i].uid : i + 1);
            highest = std::max(highest, msgs[i].modseq);
        }
        unavailable = unavailable || ctx.unavailable;
    }
    if (parser.used_modseq && !hits.empty()) hits += " (MODSEQ " + std::to_string(highest) + ")";
    untagged("SEARCH" + hits);
    flush_updates(uid);  // no EXPUNGE after SEARCH (RFC 3501 7.4.1)
    if (unavailable) return no(c.tag, "[UNAVAILABLE] Some messages could not be read from Microsoft 365; try again");
    ok(c.tag, uid ? "UID SEARCH completed" : "SEARCH completed");
}

}  // namespace gb::imap
