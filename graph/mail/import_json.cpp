// build_import_json(): a raw message as the JSON of a Graph message create (see import_json.h).
//
// Structure comes from imap::MessageIndex (byte ranges, bounded depth and part count); the root header
// fields from scan_headers(); GMime decodes single leaf parts (decode_leaf), RFC 2047 header text, the
// Date, and converts body charsets. Every string that reaches the JSON writer is valid UTF-8.
#include "graph/mail/import_json.h"
#include "common/text.h"

#include <gmime/gmime.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iterator>
#include <limits>

#include "auth/crypto.h"
#include "common/ascii.h"
#include "graph/mail/gmime_support.h"
#include "graph/mail/gobject_ptr.h"
#include "graph/mail/imap_message.h"
#include "graph/mail/prepare.h"

namespace gb::mail {

namespace {

using ascii::iequals;
using ascii::istarts_with;
using ascii::lower;
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr std::size_t kMaxHeaderBlock = 256 * 1024;
constexpr std::size_t kMaxHeaderFields = 1000;
constexpr int kMaxDepth = 20;
constexpr std::size_t kMaxLeaves = 500;
constexpr std::size_t kMaxEntities = 2000;  // every indexed entity, multiparts and attached messages too
constexpr std::size_t kMaxAddresses = 1000;
constexpr std::size_t kMaxName = 200;  // bytes of an attachment name

ImportError error(ImportError::Kind kind, std::string message) {
    return ImportError{kind, std::move(message)};
}

constexpr std::string_view trim(std::string_view s) { return trim_space(s); }

// CR and LF removed: the unfolded form of a header value (continuation lines start with WSP).
std::string unfold(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v)
        if (c != '\r' && c != '\n') out.push_back(c);
    return out;
}

// Valid UTF-8 without NUL: invalid sequences become U+FFFD.
std::string valid_utf8(std::string_view s) {
    std::string t;
    t.reserve(s.size());
    for (char c : s)
        if (c != '\0') t.push_back(c);
    if (g_utf8_validate(t.data(), static_cast<gssize>(t.size()), nullptr)) return t;
    GCharPtr v(g_utf8_make_valid(t.data(), static_cast<gssize>(t.size())));
    return v ? std::string(v.get()) : std::string();
}

// RFC 2047 decoded, unfolded, trimmed, UTF-8.
std::string decode_header_text(std::string_view raw) {
    std::string v = unfold(raw);
    GCharPtr d(g_mime_utils_header_decode_text(nullptr, v.c_str()));
    return std::string(trim(valid_utf8(d ? std::string_view(d.get()) : std::string_view(v))));
}

// "2026-11-29T10:00:00Z"; nullopt outside what a MAPI SystemTime holds (years 1601..9999).
std::optional<std::string> iso_utc(std::int64_t t) {
    constexpr std::int64_t kMin = -11644473600;  // 1601-01-01T00:00:00Z
    constexpr std::int64_t kMax = 253402300799;  // 9999-12-31T23:59:59Z
    if (t < kMin || t > kMax) return std::nullopt;
    std::int64_t days = t / 86400;
    std::int64_t secs = t % 86400;
    if (secs < 0) {
        secs += 86400;
        --days;
    }
    const std::chrono::year_month_day ymd{std::chrono::sys_days{std::chrono::days{days}}};
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                  static_cast<int>(secs / 3600), static_cast<int>(secs % 3600 / 60),
                  static_cast<int>(secs % 60));
    return std::string(buf);
}

std::optional<std::int64_t> parse_date(std::string_view raw) {
    std::string v = unfold(raw);
    GDateTime* dt = g_mime_utils_header_decode_date(v.c_str());
    if (!dt) return std::nullopt;
    std::int64_t t = g_date_time_to_unix(dt);
    g_date_time_unref(dt);
    return t;
}

// `<id-left@id-right>` (a trailing comment allowed), printable ASCII, at most 500 characters as
// Exchange keeps it; nullopt when missing or malformed.
std::optional<std::string> message_id(std::string_view raw) {
    std::string v = unfold(raw);
    std::string_view s = trim(v);
    if (s.empty() || s.front() != '<') return std::nullopt;
    auto gt = s.find('>');
    if (gt == std::string_view::npos) return std::nullopt;
    std::string_view rest = trim(s.substr(gt + 1));
    if (!rest.empty() && rest.front() != '(') return std::nullopt;
    std::string_view inner = s.substr(1, gt - 1);
    auto at = inner.rfind('@');
    if (gt + 1 > 500 || at == std::string_view::npos || at == 0 || at + 1 == inner.size())
        return std::nullopt;
    for (char c : inner) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 32 || u >= 127 || c == '<' || c == '>') return std::nullopt;
    }
    return std::string(s.substr(0, gt + 1));
}

bool usable_address(std::string_view a) {
    auto at = a.rfind('@');
    if (at == std::string_view::npos || at == 0 || at + 1 == a.size()) return false;
    for (char c : a) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 32 || u == 127 || c == '<' || c == '>' || c == ',' || c == ';') return false;
    }
    return true;
}

// An attachment file name: UTF-8, no control or path characters, at most kMaxName bytes.
std::string file_name(std::string_view raw) {
    std::string s = valid_utf8(raw);
    for (char& c : s) {
        auto u = static_cast<unsigned char>(c);
        if (u < 32 || u == 127 || std::string_view("\\/:*?\"<>|").find(c) != std::string_view::npos) c = '_';
    }
    std::string_view t = trim(s);
    while (!t.empty() && (t.front() == '.' || t.front() == ' ')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == '.' || t.back() == ' ')) t.remove_suffix(1);
    std::string out(t);
    if (out.size() > kMaxName) {
        std::size_t cut = kMaxName;
        while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
        out.resize(cut);
    }
    return out;
}

std::string extension(std::string_view content_type) {
    static constexpr std::pair<std::string_view, std::string_view> kExt[] = {
        {"text/plain", ".txt"},      {"text/html", ".html"},     {"text/calendar", ".ics"},
        {"image/png", ".png"},       {"image/jpeg", ".jpg"},     {"image/gif", ".gif"},
        {"application/pdf", ".pdf"}, {"message/rfc822", ".eml"}, {"text/csv", ".csv"},
    };
    for (const auto& [type, ext] : kExt)
        if (content_type == type) return std::string(ext);
    return {};
}

// UTF-8 text of a decoded text part: GMime's charset filter for a declared charset, its 8-bit
// heuristics for undeclared or mislabelled (us-ascii) 8-bit text, U+FFFD for what stays invalid.
std::string to_utf8(std::string bytes, std::string_view charset_param, std::vector<std::string>& notes) {
    const std::string cs = lower(trim(charset_param));
    const bool utf8 = cs == "utf-8" || cs == "utf8";
    if (cs.empty() || utf8 || cs == "us-ascii" || cs == "ascii") {
        if (g_utf8_validate(bytes.data(), static_cast<gssize>(bytes.size()), nullptr)) return bytes;
        if (utf8) {
            notes.push_back("invalid UTF-8 in the body replaced by U+FFFD");
            return valid_utf8(bytes);
        }
        std::erase(bytes, '\0');
        GCharPtr d(g_mime_utils_decode_8bit(nullptr, bytes.data(), bytes.size()));
        return valid_utf8(d ? std::string_view(d.get()) : std::string_view());
    }
    GMimeFilter* filter = g_mime_filter_charset_new(cs.c_str(), "UTF-8");
    if (!filter) {
        notes.push_back("unknown body charset '" + valid_utf8(cs) + "': read as UTF-8 or Latin-1");
        std::erase(bytes, '\0');
        if (g_utf8_validate(bytes.data(), static_cast<gssize>(bytes.size()), nullptr)) return bytes;
        GCharPtr d(g_mime_utils_decode_8bit(nullptr, bytes.data(), bytes.size()));
        return valid_utf8(d ? std::string_view(d.get()) : std::string_view());
    }
    GPtr<GMimeStream> mem(g_mime_stream_mem_new());
    GPtr<GMimeStream> filtered(g_mime_stream_filter_new(mem.get()));
    g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered.get()), filter);
    g_object_unref(filter);
    g_mime_stream_write(filtered.get(), bytes.data(), bytes.size());
    g_mime_stream_flush(filtered.get());
    GByteArray* arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.get()));
    if (!arr || arr->len == 0) return {};
    return valid_utf8(std::string_view(reinterpret_cast<const char*>(arr->data), arr->len));
}

const imap::Param* find_param(const std::vector<imap::Param>& params, std::string_view name) {
    for (const auto& p : params)
        if (iequals(p.name, name)) return &p;
    return nullptr;
}

bool has_file_name(const imap::Part& p) {
    auto named = [](const std::vector<imap::Param>& params, std::string_view base) {
        for (const auto& q : params)
            if (iequals(q.name, base) ||
                (istarts_with(q.name, base) && q.name.size() > base.size() && q.name[base.size()] == '*'))
                return true;
        return false;
    };
    return named(p.disposition_params, "filename") || named(p.params, "name");
}

std::string strip_angle(std::string_view v) {
    v = trim(v);
    if (v.size() >= 2 && v.front() == '<' && v.back() == '>') v = v.substr(1, v.size() - 2);
    return std::string(trim(v));
}

void put(Writer& w, const char* key, std::string_view valid) {
    w.Key(key);
    w.String(valid.data(), static_cast<rapidjson::SizeType>(valid.size()));
}

// One leaf, decoded.
struct Leaf {
    std::string content_type;  // lower-case type/subtype
    std::string charset;
    std::string filename;
    std::string content_id;  // without angle brackets
    bool disposition_attachment = false;
    bool disposition_inline = false;
    std::string bytes;
};

// Which leaves become what.
struct Planned {
    int part = -1;
    bool in_related = false;
    bool calendar_alternative = false;
};

class Importer {
  public:
    Importer(std::string_view raw, const imap::MessageIndex& ix, std::vector<std::string>& notes)
        : raw_(raw),
          ix_(ix),
          notes_(notes),
          dropped_(ix.parts().size(), false),
          calendar_(ix.parts().size(), false) {}

    std::size_t count_leaves(int i) const {
        const imap::Part& p = ix_.part(i);
        if (p.kind != imap::Part::Kind::Multipart || p.children.empty()) return 1;
        std::size_t n = 0;
        for (int c : p.children) n += count_leaves(c);
        return n;
    }

    // The body leaf under part i (-1 if none); marks the parts that are left out.
    int select(int i) {
        const imap::Part& p = ix_.part(i);
        if (p.kind == imap::Part::Kind::Message) return -1;
        if (p.kind != imap::Part::Kind::Multipart) return body_candidate(i) ? i : -1;
        if (p.children.empty()) return -1;
        const std::string sub = lower(p.subtype);
        if (sub == "alternative") {
            std::vector<int> picks;
            for (int c : p.children) picks.push_back(select(c));
            int best = -1;
            for (std::size_t k = picks.size(); k-- > 0 && best < 0;)
                if (picks[k] >= 0 && iequals(ix_.part(picks[k]).subtype, "html")) best = static_cast<int>(k);
            for (std::size_t k = picks.size(); k-- > 0 && best < 0;)
                if (picks[k] >= 0) best = static_cast<int>(k);
            if (best < 0) return -1;
            const bool html = iequals(ix_.part(picks[static_cast<std::size_t>(best)]).subtype, "html");
            for (std::size_t k = 0; k < picks.size(); ++k) {
                if (static_cast<int>(k) == best) continue;
                const int c = p.children[k];
                const imap::Part& cp = ix_.part(c);
                if (cp.kind != imap::Part::Kind::Multipart && iequals(cp.type, "text") &&
                    iequals(cp.subtype, "calendar")) {
                    calendar_[static_cast<std::size_t>(c)] = true;
                    note("calendar alternative (text/calendar) kept as an attachment");
                    continue;
                }
                dropped_[static_cast<std::size_t>(c)] = true;
                if (html && picks[k] >= 0 && iequals(ix_.part(picks[k]).subtype, "plain"))
                    note("text and HTML alternatives: only HTML kept");
                else
                    note("alternative part " + valid_utf8(lower(cp.type + "/" + cp.subtype)) + " dropped");
            }
            return picks[static_cast<std::size_t>(best)];
        }
        if (sub == "related") {
            int root = p.children.front();
            if (const imap::Param* start = find_param(p.params, "start")) {
                const std::string want = strip_angle(start->value);
                for (int c : p.children)
                    if (ix_.part(c).id && strip_angle(*ix_.part(c).id) == want) root = c;
            }
            int body = -1;
            for (int c : p.children) {
                int b = select(c);
                if (c == root) body = b;
            }
            return body;
        }
        if (sub == "signed") {
            const imap::Param* proto = find_param(p.params, "protocol");
            const std::string pr = proto ? lower(proto->value) : std::string();
            if (pr.find("pkcs7") != std::string::npos)
                note(
                    "S/MIME signature invalidated: Exchange rebuilds the MIME; the signature part is "
                    "dropped");
            else if (pr.find("pgp") != std::string::npos)
                note(
                    "PGP/MIME signature invalidated: Exchange rebuilds the MIME; the signature part is "
                    "dropped");
            else
                note("signature (multipart/signed) invalidated: the signature part is dropped");
            for (std::size_t k = 1; k < p.children.size(); ++k)
                dropped_[static_cast<std::size_t>(p.children[k])] = true;
            return select(p.children.front());
        }
        if (sub == "encrypted") note("encrypted content (multipart/encrypted) kept as attachments");
        int body = -1;
        for (int c : p.children) {
            int b = select(c);
            if (body < 0) body = b;
        }
        return body;
    }

    // Every leaf that is not the body and not left out, in document order.
    void plan(int i, int body, bool in_related, std::vector<Planned>& out) const {
        if (dropped_[static_cast<std::size_t>(i)]) return;
        const imap::Part& p = ix_.part(i);
        // A multipart without parts (no usable boundary) is kept as an opaque attachment, not lost.
        if (p.kind == imap::Part::Kind::Multipart && !p.children.empty()) {
            const bool related = iequals(p.subtype, "related");
            for (int c : p.children) plan(c, body, related, out);
            return;
        }
        if (i == body) return;
        out.push_back(Planned{i, in_related, calendar_[static_cast<std::size_t>(i)]});
    }

    Leaf load(int i) const {
        const imap::Part& p = ix_.part(i);
        Leaf out;
        out.content_type = lower(p.type + "/" + p.subtype);
        const std::string_view body = raw_.substr(p.body_begin, p.body_end - p.body_begin);
        out.bytes = std::string(body);
        // GMime gets a rebuilt leaf: the first of each Content-* field that matters, then the body. A
        // type GMime would read as a container (a second Content-Type, a lenient parse) stays opaque.
        const std::string_view hdr = raw_.substr(0, p.header_end);
        auto block = scan_headers(hdr, p.header_begin, kMaxHeaderBlock, kMaxHeaderFields);
        if (!block) return out;
        static constexpr std::string_view kKeep[] = {"Content-Type", "Content-Transfer-Encoding",
                                                     "Content-Disposition", "Content-ID"};
        bool seen[std::size(kKeep)] = {};
        std::string entity;
        for (const auto& f : block->fields) {
            for (std::size_t k = 0; k < std::size(kKeep); ++k) {
                if (seen[k] || !iequals(f.name, kKeep[k])) continue;
                seen[k] = true;
                if (k == 0) {
                    ContentType ct = parse_content_type(f.raw_value(hdr));
                    if (ct.mime_type.starts_with("multipart/")) {
                        out.content_type = "application/octet-stream";
                        return out;
                    }
                    if (ct.mime_type.starts_with("message/")) {  // GMime would parse a message in it
                        out.content_type = ct.mime_type;
                        return out;
                    }
                    out.charset = ct.charset;
                }
                entity.append(hdr.substr(f.begin, f.end - f.begin));
                if (entity.back() != '\n') entity += "\r\n";
            }
        }
        entity += "\r\n";
        entity.append(body);
        auto d = decode_leaf(entity);
        if (!d) return out;
        if (!d->content_type.empty()) out.content_type = d->content_type;
        out.filename = std::move(d->filename);
        out.content_id = std::move(d->content_id);
        out.disposition_attachment = d->disposition_attachment;
        out.disposition_inline = d->disposition_inline;
        out.bytes = std::move(d->bytes);
        return out;
    }

    // The bytes of an attached message (base64 undone if someone encoded it) and its Subject.
    std::pair<std::string, std::string> load_message(int i) const {
        const imap::Part& p = ix_.part(i);
        std::string bytes(raw_.substr(p.body_begin, p.body_end - p.body_begin));
        if (p.encoding && iequals(*p.encoding, "base64"))
            if (auto d = auth::base64_decode(bytes)) bytes = std::move(*d);
        std::string subject;
        if (auto b = scan_headers(bytes, 0, kMaxHeaderBlock, kMaxHeaderFields))
            for (const auto& f : b->fields)
                if (iequals(f.name, "Subject")) {
                    subject = decode_header_text(f.raw_value(bytes));
                    break;
                }
        return {std::move(bytes), std::move(subject)};
    }

    void note(std::string n) {
        if (std::find(notes_.begin(), notes_.end(), n) == notes_.end()) notes_.push_back(std::move(n));
    }

  private:
    bool body_candidate(int i) const {
        const imap::Part& p = ix_.part(i);
        if (!iequals(p.type, "text") || !(iequals(p.subtype, "plain") || iequals(p.subtype, "html")))
            return false;
        if (p.disposition && iequals(*p.disposition, "attachment")) return false;
        return i == 0 || !has_file_name(p);
    }

    std::string_view raw_;
    const imap::MessageIndex& ix_;
    std::vector<std::string>& notes_;
    std::vector<bool> dropped_;
    std::vector<bool> calendar_;
};

bool standard_header(std::string_view name) {
    static constexpr std::string_view kStandard[] = {
        "From", "Sender",     "To",          "Cc",         "Bcc",        "Reply-To",   "Subject",
        "Date", "Message-ID", "In-Reply-To", "References", "Importance", "X-Priority", "MIME-Version"};
    if (istarts_with(name, "Content-")) return true;
    return std::any_of(std::begin(kStandard), std::end(kStandard),
                       [&](std::string_view s) { return iequals(s, name); });
}

}  // namespace

std::variant<ImportJson, ImportError> build_import_json(std::string_view mime, const ImportOptions& o) {
    using Kind = ImportError::Kind;
    // Bodies shrink at most ~4x on the way to JSON only through parts that are left out: past that the
    // message cannot be worth decoding.
    if (o.max_inline_attachment == static_cast<std::size_t>(-1) &&
        o.max_json <= (std::numeric_limits<std::size_t>::max() - 65536) / 4 && mime.size() > o.max_json * 4 + 65536)
        return error(Kind::TooLarge, "the message (" + std::to_string(mime.size()) +
                                         " bytes) is far over the JSON limit of " +
                                         std::to_string(o.max_json) + " bytes");
    auto block = scan_headers(mime, 0, kMaxHeaderBlock, kMaxHeaderFields);
    if (!block) return error(Kind::Malformed, "the header block exceeds 256 KiB or 1000 fields");
    if (block->fields.empty()) return error(Kind::Malformed, "the message has no header block");
    const auto ix = imap::MessageIndex::build(mime, imap::Limits{kMaxDepth, kMaxEntities, 10000});
    if (ix.truncated())
        return error(Kind::Malformed, "MIME nesting deeper than " + std::to_string(kMaxDepth) +
                                          " levels or more than " + std::to_string(kMaxEntities) +
                                          " MIME entities");
    ensure_gmime();

    ImportJson out;
    Importer imp(mime, ix, out.notes);
    if (imp.count_leaves(0) > kMaxLeaves)
        return error(Kind::Malformed, "more than " + std::to_string(kMaxLeaves) + " MIME leaf parts");

    // Root header fields.
    auto first = [&](std::string_view name) -> std::optional<std::string_view> {
        for (const auto& f : block->fields)
            if (iequals(f.name, name)) return f.raw_value(mime);
        return std::nullopt;
    };
    auto addresses = [&](std::string_view name) {
        std::vector<Address> list;
        for (const auto& f : block->fields) {
            if (!iequals(f.name, name)) continue;
            auto parsed = parse_address_list(f.raw_value(mime), kMaxAddresses);
            if (!parsed || list.size() + parsed->size() > kMaxAddresses) {
                imp.note("the " + std::string(name) + " field lists more than " +
                         std::to_string(kMaxAddresses) + " addresses: dropped");
                return std::vector<Address>{};
            }
            for (auto& a : *parsed)
                if (usable_address(a.address))
                    list.push_back(Address{valid_utf8(a.name), valid_utf8(a.address)});
        }
        return list;
    };
    {
        std::vector<std::string> other;
        std::size_t count = 0;
        for (const auto& f : block->fields) {
            if (standard_header(f.name)) continue;
            ++count;
            std::string n = valid_utf8(f.name);
            if (other.size() < 5 &&
                std::none_of(other.begin(), other.end(), [&](const std::string& s) { return iequals(s, n); }))
                other.push_back(n);
        }
        if (count) {
            std::string n = "headers other than the standard ones are not kept:";
            for (std::size_t k = 0; k < other.size(); ++k) n += (k ? ", " : " ") + other[k];
            if (count > other.size()) n += ", ...";
            imp.note(std::move(n));
        }
    }

    rapidjson::StringBuffer sb;
    Writer w(sb);
    auto write_list = [&](const char* key, const std::vector<Address>& list) {
        if (list.empty()) return;
        w.Key(key);
        w.StartArray();
        for (const auto& a : list) {
            w.StartObject();
            w.Key("emailAddress");
            w.StartObject();
            if (!a.name.empty()) put(w, "name", a.name);
            put(w, "address", a.address);
            w.EndObject();
            w.EndObject();
        }
        w.EndArray();
    };
    auto write_one = [&](const char* key, std::vector<Address> list, std::string_view field) {
        if (list.empty()) return;
        w.Key(key);
        w.StartObject();
        w.Key("emailAddress");
        w.StartObject();
        if (!list.front().name.empty()) put(w, "name", list.front().name);
        put(w, "address", list.front().address);
        w.EndObject();
        w.EndObject();
        if (list.size() > 1) imp.note(std::string(field) + " lists several mailboxes: only the first kept");
    };

    w.StartObject();
    if (auto s = first("Subject")) put(w, "subject", decode_header_text(*s));

    std::optional<std::string> importance;
    if (auto v = first("Importance")) {
        std::string s = lower(trim(unfold(*v)));
        if (s == "low" || s == "normal" || s == "high") importance = s;
    }
    if (!importance)
        if (auto v = first("X-Priority")) {
            std::string s(trim(unfold(*v)));
            if (!s.empty() && s[0] >= '1' && s[0] <= '5')
                importance = s[0] <= '2' ? "high" : s[0] == '3' ? "normal" : "low";
        }
    if (importance) put(w, "importance", *importance);

    write_one("from", addresses("From"), "From");
    write_one("sender", addresses("Sender"), "Sender");
    write_list("toRecipients", addresses("To"));
    write_list("ccRecipients", addresses("Cc"));
    write_list("bccRecipients", addresses("Bcc"));
    write_list("replyTo", addresses("Reply-To"));

    if (auto v = first("Message-ID")) {
        if (auto id = message_id(*v))
            put(w, "internetMessageId", *id);
        else
            imp.note("the Message-ID is malformed: not kept");
    }

    // Body, then what else becomes attachments.
    const int body = imp.select(0);
    if (body >= 0) {
        Leaf leaf = imp.load(body);
        const bool html = leaf.content_type == "text/html";
        std::string text = to_utf8(std::move(leaf.bytes), leaf.charset, out.notes);
        if (sb.GetSize() + text.size() > o.max_json)
            return error(Kind::TooLarge,
                         "the body alone exceeds the JSON limit of " + std::to_string(o.max_json) + " bytes");
        w.Key("body");
        w.StartObject();
        put(w, "contentType", html ? "html" : "text");
        put(w, "content", text);
        w.EndObject();
    }

    if (o.flagged) {
        w.Key("flag");
        w.StartObject();
        put(w, "flagStatus", "flagged");
        w.EndObject();
    }
    {
        std::vector<std::string> cats;
        for (const auto& c : o.categories) {
            std::string v(trim(valid_utf8(c)));
            if (!v.empty() && std::find(cats.begin(), cats.end(), v) == cats.end()) cats.push_back(v);
        }
        if (!cats.empty()) {
            w.Key("categories");
            w.StartArray();
            for (const auto& c : cats) w.String(c.data(), static_cast<rapidjson::SizeType>(c.size()));
            w.EndArray();
        }
    }

    w.Key("singleValueExtendedProperties");
    w.StartArray();
    auto prop = [&](std::string_view id, std::string_view value) {
        w.StartObject();
        put(w, "id", id);
        put(w, "value", value);
        w.EndObject();
    };
    prop("Integer 0x0E07", std::to_string((o.read ? 1 : 0) | (o.draft ? 8 : 0)));
    if (auto v = first("Date")) {
        auto t = parse_date(*v);
        auto iso = t ? iso_utc(*t) : std::nullopt;
        if (iso)
            prop("SystemTime 0x0039", *iso);
        else
            imp.note("the Date cannot be parsed: no sent time");
    }
    if (o.received) {
        if (auto iso = iso_utc(*o.received))
            prop("SystemTime 0x0E06", *iso);
        else
            imp.note("the internal date is out of range: no received time");
    }
    if (auto v = first("In-Reply-To")) {
        std::string s(trim(valid_utf8(unfold(*v))));
        if (!s.empty()) prop("String 0x1042", s);
    }
    if (auto v = first("References")) {
        std::string s(trim(valid_utf8(unfold(*v))));
        if (!s.empty()) prop("String 0x1039", s);
    }
    if (o.last_verb) prop("Integer 0x1081", std::to_string(*o.last_verb));
    w.EndArray();

    std::vector<Planned> planned;
    imp.plan(0, body, false, planned);
    bool started = false;
    std::size_t counter = 0;
    for (const auto& pl : planned) {
        const imap::Part& part = ix.part(pl.part);
        std::string name, content_type, content_id, bytes;
        bool is_inline = false;
        ++counter;
        if (part.kind == imap::Part::Kind::Message) {
            auto [b, subject] = imp.load_message(pl.part);
            bytes = std::move(b);
            name = file_name(subject);
            if (name.empty()) name = "message-" + std::to_string(counter);
            name += ".eml";
            content_type = "message/rfc822";
        } else {
            Leaf leaf = imp.load(pl.part);
            if (leaf.bytes.empty() && leaf.filename.empty()) continue;
            name = file_name(leaf.filename);
            if (name.empty()) {
                name = pl.calendar_alternative
                           ? "invite.ics"
                           : "attachment-" + std::to_string(counter) + extension(leaf.content_type);
                if (leaf.content_type == "text/plain" || leaf.content_type == "text/html")
                    imp.note("a text part besides the body kept as the attachment " + name);
            }
            content_type =
                valid_utf8(leaf.content_type.empty() ? "application/octet-stream" : leaf.content_type);
            content_id = valid_utf8(leaf.content_id);
            is_inline = !content_id.empty() && !leaf.disposition_attachment &&
                        (pl.in_related || leaf.disposition_inline);
            if (leaf.content_type == "application/pkcs7-mime" ||
                leaf.content_type == "application/x-pkcs7-mime")
                imp.note("S/MIME encrypted or opaque-signed content kept as an attachment");
            bytes = std::move(leaf.bytes);
        }
        if (bytes.size() > o.max_inline_attachment) {
            out.large.push_back(Attachment{name, content_type, content_id, is_inline, std::move(bytes)});
            continue;
        }
        if (sb.GetSize() + base64_size(bytes.size()) + name.size() + 256 > o.max_json)
            return error(Kind::TooLarge,
                         "the attachments exceed the JSON limit of " + std::to_string(o.max_json) + " bytes");
        if (!started) {
            w.Key("attachments");
            w.StartArray();
            started = true;
        }
        w.StartObject();
        put(w, "@odata.type", "#microsoft.graph.fileAttachment");
        put(w, "name", name);
        put(w, "contentType", content_type);
        put(w, "contentBytes", auth::base64_encode(bytes));
        w.Key("isInline");
        w.Bool(is_inline);
        if (!content_id.empty()) put(w, "contentId", content_id);
        w.EndObject();
    }
    if (started) w.EndArray();
    w.EndObject();
    if (sb.GetSize() > o.max_json)
        return error(Kind::TooLarge, "the JSON (" + std::to_string(sb.GetSize()) +
                                         " bytes) exceeds the limit of " + std::to_string(o.max_json) +
                                         " bytes");
    out.json.assign(sb.GetString(), sb.GetSize());
    return out;
}

}  // namespace gb::mail
