// The IMAP write path: STORE, EXPUNGE / UID EXPUNGE / CLOSE, COPY / MOVE, APPEND, CREATE, DELETE,
// RENAME, SUBSCRIBE / UNSUBSCRIBE, and CONDSTORE's UNCHANGEDSINCE. Every change goes to Microsoft 365
// first (MailService, one Graph call per message) and reaches the client through the same diff of its
// view as changes made elsewhere (flush_updates), so a client is told exactly what Graph did: after a
// failure at message k, the responses cover messages 1..k-1 and the tagged NO names the reason.
#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "common/ascii.h"
#include "graph/mail/import_json.h"
#include "graph/mail/prepare.h"
#include "protocol/imap/imap_format.h"
#include "protocol/imap/mutf7.h"
#include "protocol/imap/sequence_set.h"
#include "proxy/imap/selected.h"

namespace gb::imap {

namespace pi = protocol::imap;

namespace {

constexpr std::size_t kMaxGraphRequest = 4'000'000;  // request body bytes Graph takes in one call

using ascii::iequals;
using ascii::upper;

// Flags of STORE and APPEND: system flags as bits, everything else a keyword. nullopt: invalid.
struct ParsedFlags {
    std::uint32_t flags = 0;
    std::vector<std::string> keywords;
};

std::optional<ParsedFlags> parse_flags(const std::vector<protocol::imap::Value>& values) {
    ParsedFlags out;
    for (const auto& v : values) {
        if (!v.is_atom() || v.text.empty()) return std::nullopt;
        std::string u = upper(v.text);
        if (u == "\\SEEN") out.flags |= sync::kSeen;
        else if (u == "\\ANSWERED") out.flags |= sync::kAnswered;
        else if (u == "\\FLAGGED") out.flags |= sync::kFlagged;
        else if (u == "\\DELETED") out.flags |= sync::kDeleted;
        else if (u == "\\DRAFT") out.flags |= sync::kDraft;
        else if (u == "$FORWARDED") out.flags |= sync::kForwarded;
        else if (u == "\\RECENT") continue;  // session flag, never stored
        else if (v.text[0] == '\\') return std::nullopt;
        else {
            for (char c : v.text) {
                auto uc = static_cast<unsigned char>(c);
                if (uc <= 0x20 || uc >= 0x7F || std::strchr("(){%*\"\\]", c)) return std::nullopt;
            }
            if (v.text.size() > 255) return std::nullopt;
            if (std::none_of(out.keywords.begin(), out.keywords.end(),
                             [&](const std::string& k) { return iequals(k, v.text); }))
                out.keywords.push_back(v.text);
        }
    }
    return out;
}

// RFC 3501 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded) -> unix seconds.
std::optional<std::int64_t> parse_date_time(std::string_view s) {
    if (s.size() == 26 && s[0] == ' ') s.remove_prefix(1);
    if (s.size() == 25 && s[1] == '-') {  // one-digit day
        static thread_local std::string padded;
        padded = "0" + std::string(s);
        s = padded;
    }
    if (s.size() != 26 || s[2] != '-' || s[6] != '-' || s[11] != ' ' || s[14] != ':' || s[17] != ':' || s[20] != ' ')
        return std::nullopt;
    auto day = parse_imap_date(s.substr(0, 11));
    if (!day) return std::nullopt;
    auto num = [&](std::size_t pos, std::size_t len) -> int {
        int v = 0;
        for (std::size_t i = pos; i < pos + len; ++i) {
            if (s[i] < '0' || s[i] > '9') return -1;
            v = v * 10 + (s[i] - '0');
        }
        return v;
    };
    int h = num(12, 2), m = num(15, 2), sec = num(18, 2), zh = num(22, 2), zm = num(24, 2);
    if (h < 0 || h > 23 || m < 0 || m > 59 || sec < 0 || sec > 60 || zh < 0 || zm < 0 || zm > 59 ||
        (s[21] != '+' && s[21] != '-'))
        return std::nullopt;
    std::int64_t offset = (zh * 3600 + zm * 60) * (s[21] == '-' ? -1 : 1);
    return *day + h * 3600 + m * 60 + sec - offset;
}

// A path segment back to an Outlook display name ('/' inside a name travels as U+2215).
std::string display_name(std::string_view segment) {
    std::string out;
    for (std::size_t i = 0; i < segment.size(); ++i) {
        if (segment.substr(i, 3) == "\xE2\x88\x95") {
            out.push_back('/');
            i += 2;
        } else {
            out.push_back(segment[i]);
        }
    }
    return out;
}

// A new mailbox name (UTF-8) in the stored form: no trailing delimiter, INBOX spelled as stored.
std::string canonical_path(std::string name) {
    while (!name.empty() && name.back() == '/') name.pop_back();
    return inbox_spelling(std::move(name));
}

}  // namespace

std::string uid_set_text(const std::vector<std::uint32_t>& v) {
    std::string out;
    for (std::size_t i = 0; i < v.size();) {
        std::size_t j = i;
        while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
        if (!out.empty()) out += ',';
        out += j == i ? std::to_string(v[i]) : fmt::format("{}:{}", v[i], v[j]);
        i = j + 1;
    }
    return out;
}

std::string Session::vanished_set(const std::optional<pi::SequenceSet>& known) const {
    const auto& msgs = selected_->messages();
    std::uint32_t top = selected_->folder.uidnext > 0 ? selected_->folder.uidnext - 1 : 0;
    if (!msgs.empty()) top = std::max(top, msgs.back().uid);
    std::vector<pi::SequenceSet::Range> known_ranges;
    if (known) known_ranges = known->ranges(top);
    else if (top > 0) known_ranges.push_back({1, top});
    // The gaps between the UIDs present, within each known range: O(messages + ranges), never per UID.
    std::vector<pi::SequenceSet::Range> gaps;
    for (auto [lo, hi] : known_ranges) {
        hi = std::min(hi, top);
        if (lo == 0 || lo > hi) continue;
        auto it = std::lower_bound(msgs.begin(), msgs.end(), lo,
                                   [](const sync::MessageRecord& m, std::uint32_t u) { return m.uid < u; });
        std::uint32_t next = lo;  // the first UID not yet accounted for
        for (; it != msgs.end() && it->uid <= hi; ++it) {
            if (it->uid > next) gaps.push_back({next, it->uid - 1});
            next = it->uid + 1;
        }
        if (next <= hi) gaps.push_back({next, hi});
    }
    return pi::format_ranges(gaps);
}

std::string Session::write_error(const sync::SourceError& e) {
    switch (e.kind) {
        case sync::SourceError::Kind::Throttled:
            return fmt::format("[UNAVAILABLE] Microsoft 365 is throttling this mailbox; try again in {} s",
                               e.retry_after.value_or(5));
        case sync::SourceError::Kind::NotFound:
            return "[NONEXISTENT] Microsoft 365 no longer has it: " + e.message;
        case sync::SourceError::Kind::Permanent:
            return "[CANNOT] Microsoft 365 refused: " + e.message;
        case sync::SourceError::Kind::SyncStateLost:
        case sync::SourceError::Kind::Transient:
            break;
    }
    return "[UNAVAILABLE] Microsoft 365 did not complete it: " + e.message;
}

std::optional<std::vector<std::size_t>> Session::resolve_indexes(const Value& v, bool uid) {
    if (!v.is_atom()) return std::nullopt;
    auto set = pi::parse_sequence_set(v.text);
    if (!set) return std::nullopt;
    const auto& msgs = selected_->messages();
    std::vector<std::size_t> out;
    if (uid) {
        // One walk over the view; the ranges are sorted. UIDs not in the view are ignored (RFC 3501 6.4.8).
        std::uint32_t star = msgs.empty() ? 0 : msgs.back().uid;
        auto ranges = set->ranges(star);
        std::size_t r = 0;
        for (std::size_t i = 0; i < msgs.size() && r < ranges.size(); ++i) {
            while (r < ranges.size() && ranges[r].second < msgs[i].uid) ++r;
            if (r < ranges.size() && msgs[i].uid >= ranges[r].first) out.push_back(i);
        }
        return out;
    }
    auto max = static_cast<std::uint32_t>(msgs.size());
    for (const auto& [a, b] : set->ranges(max)) {
        if (b > max || a == 0) return std::nullopt;
        for (std::uint32_t n = a; n <= b; ++n) out.push_back(n - 1);
    }
    return out;
}

std::optional<std::vector<std::uint32_t>> Session::resolve_set(const Value& v, bool uid) {
    auto ix = resolve_indexes(v, uid);
    if (!ix) return std::nullopt;
    std::vector<std::uint32_t> out;
    out.reserve(ix->size());
    for (auto i : *ix) out.push_back(selected_->messages()[i].uid);
    return out;
}

// ---- STORE ---------------------------------------------------------------------------------------------

void Session::cmd_store(const Command& c, bool uid, std::size_t first) {
    // STORE set [(UNCHANGEDSINCE n)] item flags
    std::size_t p = first + 1;
    if (c.args.size() < first + 3) return bad(c.tag, "STORE needs a sequence set, an item and flags");
    sync::MailService::FlagOp op;
    if (c.args[p].is_list()) {
        const auto& m = c.args[p].items;
        auto n = m.size() == 2 && m[0].is_atom("UNCHANGEDSINCE") && m[1].is_atom()
                     ? pi::parse_number(m[1].text, pi::kMaxModSeq)
                     : std::nullopt;
        if (!n) return bad(c.tag, "Invalid STORE modifier");
        op.unchanged_since = *n;
        enable_condstore();
        ++p;
    }
    if (p + 1 >= c.args.size() || !c.args[p].is_atom()) return bad(c.tag, "STORE needs an item and flags");
    std::string item = upper(c.args[p].text);
    bool silent = item.size() > 7 && item.compare(item.size() - 7, 7, ".SILENT") == 0;
    if (silent) item.resize(item.size() - 7);
    if (item == "FLAGS") op.mode = sync::MailService::FlagOp::Mode::Replace;
    else if (item == "+FLAGS") op.mode = sync::MailService::FlagOp::Mode::Add;
    else if (item == "-FLAGS") op.mode = sync::MailService::FlagOp::Mode::Remove;
    else return bad(c.tag, "STORE item must be FLAGS, +FLAGS or -FLAGS");
    std::optional<ParsedFlags> flags;
    if (c.args.size() == p + 2 && c.args[p + 1].is_list()) flags = parse_flags(c.args[p + 1].items);
    else flags = parse_flags(std::vector<Value>(c.args.begin() + static_cast<std::ptrdiff_t>(p) + 1, c.args.end()));
    if (!flags) return bad(c.tag, "Invalid flag");
    auto uids = resolve_set(c.args[first], uid);
    if (!uids) return bad(c.tag, "Invalid sequence set");
    if (selected_->read_only) return no(c.tag, "[READ-ONLY] The mailbox is open read-only (EXAMINE)");
    op.flags = flags->flags;
    op.keywords = std::move(flags->keywords);
    auto r = svc_.mail->store_flags(account_->mailbox, selected_->folder.folder_id, *uids, op);
    // Messages that failed UNCHANGEDSINCE get no FETCH (RFC 7162 3.1.3); the rest report their flags.
    std::vector<std::uint32_t> report;
    std::set_difference(uids->begin(), uids->end(), r.modified.begin(), r.modified.end(), std::back_inserter(report));
    if (r.error) report.clear();  // only what really changed (the diff) is reported
    flush_updates(false, silent ? nullptr : &report, silent ? &report : nullptr, silent);
    if (r.error) return no(c.tag, write_error(*r.error));
    if (!r.modified.empty()) {
        std::vector<std::uint32_t> ids;
        if (uid) {
            ids = r.modified;
        } else {
            const auto& msgs = selected_->messages();
            for (std::size_t i = 0; i < msgs.size(); ++i)
                if (std::binary_search(r.modified.begin(), r.modified.end(), msgs[i].uid))
                    ids.push_back(static_cast<std::uint32_t>(i + 1));
        }
        return ok(c.tag, "[MODIFIED " + uid_set_text(ids) + "] Conditional STORE failed for some messages");
    }
    ok(c.tag, uid ? "UID STORE completed" : "STORE completed");
}

// ---- EXPUNGE / CLOSE -----------------------------------------------------------------------------------

std::optional<sync::SourceError> Session::expunge_selected(const std::optional<std::vector<std::uint32_t>>& only) {
    // The \Deleted messages as stored now (a flag set by another session counts too).
    auto snap = svc_.mail->snapshot(account_->mailbox, selected_->folder.folder_id);
    std::vector<std::uint32_t> uids;
    for (const auto& m : *snap)
        if ((m.flags & sync::kDeleted) && (!only || std::binary_search(only->begin(), only->end(), m.uid)))
            uids.push_back(m.uid);
    if (uids.empty()) return std::nullopt;
    // Outside Deleted Items an expunged message goes there (what Outlook's delete does); inside it, it is
    // deleted: for good, or into Recoverable Items ([imap] trash_expunge).
    using R = sync::MailService::Removal;
    R how = selected_->folder.special_use != "\\Trash" ? R::ToTrash
            : svc_.trash_expunge_permanent             ? R::PermanentDelete
                                                       : R::Delete;
    return svc_.mail->expunge(account_->mailbox, selected_->folder.folder_id, uids, how).error;
}

void Session::cmd_expunge(const Command& c, bool uid, std::size_t first) {
    std::optional<std::vector<std::uint32_t>> only;
    if (uid) {
        if (c.args.size() != first + 1) return bad(c.tag, "UID EXPUNGE needs a UID set");
        only = resolve_set(c.args[first], true);
        if (!only) return bad(c.tag, "Invalid UID set");
    } else if (!c.args.empty()) {
        return bad(c.tag, "EXPUNGE takes no arguments");
    }
    if (selected_->read_only) return no(c.tag, "[READ-ONLY] The mailbox is open read-only (EXAMINE)");
    auto err = expunge_selected(only);
    flush_updates(true);
    if (err) return no(c.tag, write_error(*err));
    ok(c.tag, uid ? "UID EXPUNGE completed" : "EXPUNGE completed");
}

// ---- COPY / MOVE ---------------------------------------------------------------------------------------

void Session::cmd_copy(const Command& c, bool uid, std::size_t first, bool move) {
    const char* verb = move ? "MOVE" : "COPY";
    if (c.args.size() != first + 2) return bad(c.tag, fmt::format("{} needs a sequence set and a mailbox", verb));
    auto uids = resolve_set(c.args[first], uid);
    if (!uids) return bad(c.tag, "Invalid sequence set");
    auto name = c.args[first + 1].astring();
    if (!name) return bad(c.tag, "Invalid mailbox name");
    auto dest = find_folder(*name);
    if (!dest) return no(c.tag, "[TRYCREATE] No such mailbox");
    if (move && selected_->read_only) return no(c.tag, "[READ-ONLY] The mailbox is open read-only (EXAMINE)");
    if (uids->empty()) {
        flush_updates(true);
        return ok(c.tag, fmt::format("{}{} completed, nothing to do", uid ? "UID " : "", verb));
    }
    if (move && dest->folder_id == selected_->folder.folder_id)
        return no(c.tag, "[CANNOT] Source and destination are the same mailbox");
    auto r = svc_.mail->copy_messages(account_->mailbox, selected_->folder.folder_id, *uids, dest->folder_id, move);
    std::string copyuid;
    if (!r.source_uids.empty() && (move || !r.error))
        copyuid = fmt::format("[COPYUID {} {} {}] ", r.dest_uidvalidity, uid_set_text(r.source_uids), uid_set_text(r.dest_uids));
    if (move && !copyuid.empty()) untagged("OK " + copyuid + "Moved");  // before the EXPUNGEs (RFC 6851 4.3)
    flush_updates(true);
    if (r.error) return no(c.tag, write_error(*r.error));
    ok(c.tag, fmt::format("{}{}{} completed", move ? "" : copyuid, uid ? "UID " : "", verb));
}

// ---- APPEND --------------------------------------------------------------------------------------------

void Session::cmd_append(const Command& c) {
    // APPEND mailbox [(flags)] [date-time] message
    if (c.args.size() < 2 || c.args.size() > 4 || !c.args.back().is_string())
        return bad(c.tag, "APPEND needs a mailbox and a message");
    auto name = c.args[0].astring();
    if (!name) return bad(c.tag, "Invalid mailbox name");
    ParsedFlags flags;
    std::optional<std::int64_t> date;
    for (std::size_t i = 1; i + 1 < c.args.size(); ++i) {
        const auto& a = c.args[i];
        if (a.is_list() && i == 1) {
            auto f = parse_flags(a.items);
            if (!f) return bad(c.tag, "Invalid flag");
            flags = std::move(*f);
        } else if (a.is_string() && !a.literal) {
            date = parse_date_time(a.text);
            if (!date) return bad(c.tag, "Invalid date-time");
        } else {
            return bad(c.tag, "Invalid APPEND arguments");
        }
    }
    const std::string& raw = c.args.back().text;
    if (raw.empty()) return bad(c.tag, "Empty message");
    auto dest = find_folder(*name);
    if (!dest) {
        flush_updates(true);
        return no(c.tag, "[TRYCREATE] No such mailbox");
    }
    if (dest->delta_link.empty()) svc_.mail->ensure_synced(account_->mailbox, dest->folder_id);
    sync::MailService::AppendRequest req;
    req.flags = flags.flags;
    req.size = raw.size();
    req.internal_date = date ? *date : static_cast<std::int64_t>(std::time(nullptr));
    for (const auto& k : flags.keywords) (sync::is_client_keyword(k) ? req.local_keywords : req.keywords).push_back(k);
    // A message the bridge just sent over SMTP: Graph already saved it in Sent Items.
    if (dest->special_use == "\\Sent" && svc_.sent)
        if (auto id = svc_.sent->match(account_->mailbox, raw)) req.sent_message_id = *id;
    if (req.sent_message_id.empty()) {
        bool draft = (flags.flags & sync::kDraft) != 0;
        if (draft && mail::base64_size(raw.size()) <= kMaxGraphRequest) {
            // A draft keeps its exact bytes (MIME create; Graph makes every MIME import a draft).
            req.body = raw;
            req.mime = true;
        } else {
            mail::ImportOptions o;
            o.read = (flags.flags & sync::kSeen) != 0;
            o.flagged = (flags.flags & sync::kFlagged) != 0;
            if (flags.flags & sync::kForwarded) o.last_verb = 104;
            else if (flags.flags & sync::kAnswered) o.last_verb = 102;
            o.categories = req.keywords;
            o.received = date ? *date : static_cast<std::int64_t>(std::time(nullptr));
            // A draft too big for one request (a reply with a large attachment, saved by the client) is
            // created from JSON as a draft, its big attachments uploaded after; Graph takes attachments on
            // drafts only, so a non-draft must fit in one request.
            o.draft = draft;
            if (draft) o.max_inline_attachment = 1'000'000;
            auto built = mail::build_import_json(raw, o);
            if (auto* e = std::get_if<mail::ImportError>(&built)) {
                if (e->kind == mail::ImportError::Kind::TooLarge)
                    return no(c.tag, "[TOOBIG] Messages over about 2.9 MB can only be stored as drafts through "
                                     "Microsoft Graph (send it over SMTP instead, or keep it in a local folder)");
                return no(c.tag, "[CANNOT] The message cannot be stored: " + e->message);
            }
            auto& j = std::get<mail::ImportJson>(built);
            req.body = std::move(j.json);
            req.attachments = std::move(j.large);
        }
    }
    auto r = svc_.mail->append(account_->mailbox, dest->folder_id, req);
    if (auto* e = std::get_if<sync::SourceError>(&r)) {
        flush_updates(true);
        return no(c.tag, write_error(*e));
    }
    const auto& a = std::get<sync::MailService::AppendResult>(r);
    log::Logger::instance().write(log::Level::Info, "imap", &ctx_, a.existing ? "append matched a sent message" : "appended",
                                  {{"folder", dest->path}, {"uid", static_cast<std::uint64_t>(a.uid)}});
    flush_updates(true);
    if (a.uid == 0) return ok(c.tag, "APPEND completed");
    ok(c.tag, fmt::format("[APPENDUID {} {}] APPEND completed", a.uidvalidity, a.uid));
}

// ---- folders -------------------------------------------------------------------------------------------

std::variant<Session::NewPlace, std::string> Session::place_for(const std::string& path, bool create_parents) {
    if (path.empty()) return std::string("BAD Empty mailbox name");
    std::vector<std::string> segs;
    std::size_t start = 0;
    while (true) {
        auto slash = path.find('/', start);
        std::string seg = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
        if (seg.empty()) return std::string("BAD Empty level in the mailbox name");
        if (seg.size() > 255) return std::string("BAD Mailbox name too long");
        segs.push_back(seg);
        if (slash == std::string::npos) break;
        start = slash + 1;
    }
    if (segs.size() > 32) return std::string("BAD Mailbox hierarchy too deep");
    NewPlace place;
    std::string prefix;
    for (std::size_t i = 0; i + 1 < segs.size(); ++i) {
        prefix += (prefix.empty() ? "" : "/") + segs[i];
        std::optional<sync::FolderRecord> found;
        for (auto& f : folders())
            if (f.path == prefix) found = f;
        if (!found) {
            if (!create_parents) return std::string("NO [NONEXISTENT] The parent mailbox does not exist");
            if (i == 0 && iequals(segs[0], "INBOX")) return std::string("NO [CANNOT] No INBOX");
            auto r = svc_.mail->create_folder(account_->mailbox, place.parent_id, display_name(segs[i]));
            if (auto* e = std::get_if<sync::SourceError>(&r)) return "NO " + write_error(*e);
            place.parent_id = std::get<std::string>(r);
        } else {
            place.parent_id = found->folder_id;
        }
    }
    place.name = display_name(segs.back());
    return place;
}

void Session::cmd_create(const Command& c) {
    if (c.args.size() != 1) return bad(c.tag, "CREATE needs a mailbox name");
    auto name = c.args[0].astring();
    if (!name) return bad(c.tag, "Invalid mailbox name");
    auto utf8 = pi::from_mutf7(*name);
    if (!utf8) return bad(c.tag, "Invalid modified UTF-7 mailbox name");
    std::string path = canonical_path(*utf8);
    if (path == "INBOX" || find_folder(pi::to_mutf7(path))) return no(c.tag, "[ALREADYEXISTS] Mailbox already exists");
    auto place = place_for(path, true);
    if (auto* why = std::get_if<std::string>(&place)) {
        if (why->rfind("BAD ", 0) == 0) return bad(c.tag, why->substr(4));
        return no(c.tag, why->substr(3));
    }
    auto& p = std::get<NewPlace>(place);
    auto r = svc_.mail->create_folder(account_->mailbox, p.parent_id, p.name);
    if (auto* e = std::get_if<sync::SourceError>(&r)) return no(c.tag, write_error(*e));
    flush_updates(true);
    ok(c.tag, "CREATE completed");
}

void Session::cmd_delete(const Command& c) {
    if (c.args.size() != 1) return bad(c.tag, "DELETE needs a mailbox name");
    auto name = c.args[0].astring();
    if (!name) return bad(c.tag, "Invalid mailbox name");
    auto f = find_folder(*name);
    if (!f) return no(c.tag, "[NONEXISTENT] No such mailbox");
    if (f->path == "INBOX" || !f->special_use.empty())
        return no(c.tag, "[CANNOT] Microsoft 365 system folders cannot be deleted");
    for (const auto& other : folders())
        if (other.path.rfind(f->path + "/", 0) == 0)
            return no(c.tag, "[INUSE] The mailbox has subfolders; delete them first");
    if (auto e = svc_.mail->delete_folder(account_->mailbox, f->folder_id)) return no(c.tag, write_error(*e));
    if (selected_ && selected_->folder.folder_id == f->folder_id) deselect();  // it is gone
    flush_updates(true);
    ok(c.tag, "DELETE completed");
}

void Session::cmd_rename(const Command& c) {
    if (c.args.size() != 2) return bad(c.tag, "RENAME needs two mailbox names");
    auto from = c.args[0].astring();
    auto to = c.args[1].astring();
    if (!from || !to) return bad(c.tag, "Invalid mailbox name");
    auto f = find_folder(*from);
    if (!f) return no(c.tag, "[NONEXISTENT] No such mailbox");
    auto utf8 = pi::from_mutf7(*to);
    if (!utf8) return bad(c.tag, "Invalid modified UTF-7 mailbox name");
    std::string path = canonical_path(*utf8);
    if (path == "INBOX" || find_folder(pi::to_mutf7(path))) return no(c.tag, "[ALREADYEXISTS] Mailbox already exists");
    if (path.rfind(f->path + "/", 0) == 0) return no(c.tag, "[CANNOT] A mailbox cannot move into itself");
    auto place = place_for(path, true);
    if (auto* why = std::get_if<std::string>(&place)) {
        if (why->rfind("BAD ", 0) == 0) return bad(c.tag, why->substr(4));
        return no(c.tag, why->substr(3));
    }
    auto& p = std::get<NewPlace>(place);
    if (f->path == "INBOX") {
        // RFC 3501 6.3.5: renaming INBOX moves its messages to the new mailbox and leaves INBOX empty.
        auto created = svc_.mail->create_folder(account_->mailbox, p.parent_id, p.name);
        if (auto* e = std::get_if<sync::SourceError>(&created)) return no(c.tag, write_error(*e));
        // Everything INBOX has now, not just what the last poll saw.
        if (auto* mb = svc_.mail->mailbox(account_->mailbox)) {
            if (auto e = mb->sync_folder(f->folder_id)) return no(c.tag, write_error(*e));
        }
        std::vector<std::uint32_t> uids;
        for (const auto& m : *svc_.mail->snapshot(account_->mailbox, f->folder_id)) uids.push_back(m.uid);
        auto r = svc_.mail->copy_messages(account_->mailbox, f->folder_id, uids, std::get<std::string>(created), true);
        flush_updates(true);
        if (r.error) return no(c.tag, write_error(*r.error));
        return ok(c.tag, "RENAME completed");
    }
    if (auto e = svc_.mail->rename_folder(account_->mailbox, f->folder_id, p.parent_id, p.name))
        return no(c.tag, write_error(*e));
    flush_updates(true);
    ok(c.tag, "RENAME completed");
}

void Session::cmd_subscribe(const Command& c, bool subscribe) {
    if (c.args.size() != 1) return bad(c.tag, "needs a mailbox name");
    auto name = c.args[0].astring();
    if (!name) return bad(c.tag, "Invalid mailbox name");
    auto f = find_folder(*name);
    if (!f) return no(c.tag, "[NONEXISTENT] No such mailbox");
    svc_.mail->store().set_subscribed(account_->mailbox, f->folder_id, subscribe);
    flush_updates(true);
    ok(c.tag, subscribe ? "SUBSCRIBE completed" : "UNSUBSCRIBE completed");
}

}  // namespace gb::imap
