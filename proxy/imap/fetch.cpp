// FETCH / UID FETCH: attribute parsing, and the response built message by message as a job, so a
// FETCH 1:* BODY[] over a large folder streams with bounded memory (Session::step()).
#include <fmt/format.h>

#include <algorithm>

#include "common/ascii.h"
#include "graph/mail/imap_message.h"
#include "protocol/imap/imap_format.h"
#include "protocol/imap/sequence_set.h"
#include "proxy/imap/selected.h"

namespace gb::imap {

namespace pi = protocol::imap;
namespace mi = mail::imap;

std::string flag_list(const sync::MessageRecord& m) {
    std::string out;
    auto add = [&](std::string_view f) {
        if (!out.empty()) out += ' ';
        out.append(f);
    };
    if (m.flags & sync::kSeen) add("\\Seen");
    if (m.flags & sync::kAnswered) add("\\Answered");
    if (m.flags & sync::kFlagged) add("\\Flagged");
    if (m.flags & sync::kDeleted) add("\\Deleted");
    if (m.flags & sync::kDraft) add("\\Draft");
    if (m.flags & sync::kForwarded) add("$Forwarded");
    // Outlook categories may contain spaces and other non-atom characters: shown with '_' instead (a STORE
    // naming that form means the category).
    for (const auto& k : m.keywords)
        if (auto atom = sync::keyword_atom(k); !atom.empty()) add(atom);
    for (const auto& k : m.local_keywords) add(k);
    return out;
}

namespace {

using Item = Session::FetchItem;

using ascii::upper;

// One FETCH attribute atom -> item; nullopt when invalid.
std::optional<Item> parse_item(const std::string& text) {
    std::string u = upper(text);
    auto simple = [](Item::Kind k, std::string label) { return Item{k, std::move(label), std::nullopt, true, std::nullopt}; };
    if (u == "FLAGS") return simple(Item::Kind::Flags, "FLAGS");
    if (u == "INTERNALDATE") return simple(Item::Kind::InternalDate, "INTERNALDATE");
    if (u == "RFC822.SIZE") return simple(Item::Kind::Size, "RFC822.SIZE");
    if (u == "ENVELOPE") return simple(Item::Kind::Envelope, "ENVELOPE");
    if (u == "BODYSTRUCTURE") return simple(Item::Kind::BodyStructure, "BODYSTRUCTURE");
    if (u == "BODY") return simple(Item::Kind::Body, "BODY");
    if (u == "UID") return simple(Item::Kind::Uid, "UID");
    if (u == "MODSEQ") return simple(Item::Kind::ModSeq, "MODSEQ");
    if (u == "RFC822" || u == "RFC822.HEADER" || u == "RFC822.TEXT") {
        auto sec = mi::parse_section(u == "RFC822" ? "" : u == "RFC822.HEADER" ? "HEADER" : "TEXT");
        if (!sec) return std::nullopt;
        return Item{Item::Kind::Section, u, *sec, u == "RFC822.HEADER", std::nullopt};
    }
    bool peek = u.rfind("BODY.PEEK[", 0) == 0;
    if (!peek && u.rfind("BODY[", 0) != 0) return std::nullopt;
    std::size_t open = text.find('[');
    std::size_t close = text.rfind(']');
    if (close == std::string::npos || close < open) return std::nullopt;
    auto sec = mi::parse_section(std::string_view(text).substr(open + 1, close - open - 1));
    if (!sec) return std::nullopt;
    Item it{Item::Kind::Section, mi::section_label(*sec), *sec, peek, std::nullopt};
    std::string_view rest = std::string_view(text).substr(close + 1);
    if (!rest.empty()) {
        // <origin.count>
        if (rest.size() < 5 || rest.front() != '<' || rest.back() != '>') return std::nullopt;
        auto dot = rest.find('.');
        if (dot == std::string_view::npos) return std::nullopt;
        std::uint64_t origin = 0, count = 0;
        auto digits = [](std::string_view s, std::uint64_t& v) {
            if (s.empty() || s.size() > 10) return false;
            for (char c : s) {
                if (c < '0' || c > '9') return false;
                v = v * 10 + static_cast<std::uint64_t>(c - '0');
            }
            return v <= 0xFFFFFFFFull;
        };
        if (!digits(rest.substr(1, dot - 1), origin) || !digits(rest.substr(dot + 1, rest.size() - dot - 2), count) ||
            count == 0)
            return std::nullopt;
        it.partial = std::make_pair(origin, count);
    }
    return it;
}

}  // namespace

std::optional<std::vector<Session::FetchItem>> Session::parse_fetch_items(const Value& v) {
    std::vector<FetchItem> items;
    auto add_macro = [&](std::initializer_list<const char*> names) {
        for (const char* n : names) items.push_back(*parse_item(n));
    };
    if (v.is_atom("ALL")) {
        add_macro({"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"});
    } else if (v.is_atom("FAST")) {
        add_macro({"FLAGS", "INTERNALDATE", "RFC822.SIZE"});
    } else if (v.is_atom("FULL")) {
        add_macro({"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"});
    } else if (v.is_atom()) {
        auto it = parse_item(v.text);
        if (!it) return std::nullopt;
        items.push_back(std::move(*it));
    } else if (v.is_list() && !v.items.empty() && v.items.size() <= 100) {
        for (const auto& a : v.items) {
            if (!a.is_atom()) return std::nullopt;
            auto it = parse_item(a.text);
            if (!it) return std::nullopt;
            items.push_back(std::move(*it));
        }
    } else {
        return std::nullopt;
    }
    return items;
}

void Session::cmd_fetch(const Command& c, bool uid, std::size_t first) {
    // FETCH set items [(CHANGEDSINCE n)]   (RFC 7162 3.1.4)
    if ((c.args.size() != first + 2 && c.args.size() != first + 3) || !c.args[first].is_atom())
        return bad(c.tag, "FETCH needs a sequence set and items");
    if (!pi::parse_sequence_set(c.args[first].text)) return bad(c.tag, "Invalid sequence set");
    auto items = parse_fetch_items(c.args[first + 1]);
    if (!items) return bad(c.tag, "Invalid FETCH items");
    std::optional<std::uint64_t> changed_since;
    bool vanished = false;
    if (c.args.size() == first + 3) {
        // (CHANGEDSINCE n [VANISHED])   (RFC 7162 3.1.4, 3.2.6)
        const auto& m = c.args[first + 2];
        bool valid = m.is_list() && (m.items.size() == 2 || m.items.size() == 3) && m.items[0].is_atom("CHANGEDSINCE") &&
                     m.items[1].is_atom() && pi::parse_number(m.items[1].text, pi::kMaxModSeq);
        if (valid && m.items.size() == 3) {
            valid = m.items[2].is_atom("VANISHED") && uid && qresync_;
            vanished = valid;
        }
        if (!valid) return bad(c.tag, "Invalid FETCH modifier");
        changed_since = *pi::parse_number(m.items[1].text, pi::kMaxModSeq);
    }
    bool wants_modseq = changed_since.has_value();
    bool sets_seen = false;
    for (const auto& it : *items) {
        wants_modseq = wants_modseq || it.kind == FetchItem::Kind::ModSeq;
        sets_seen = sets_seen || (it.kind == FetchItem::Kind::Section && !it.peek);
    }
    if (wants_modseq) enable_condstore();
    // BODY[...] (not PEEK) sets \Seen in a read-write mailbox (RFC 3501 6.4.5): stored first (one PATCH
    // per unseen message); each such message's FETCH response then carries its new FLAGS (what Microsoft
    // 365 has), in the same response as the body, as clients such as curl expect.
    std::vector<std::uint32_t> seen_now;
    sync::MailService::Snapshot latest;
    if (sets_seen && !selected_->read_only) {
        if (auto uids = resolve_set(c.args[first], uid)) {
            for (const auto& m : selected_->messages())
                if (!(m.flags & sync::kSeen) && std::binary_search(uids->begin(), uids->end(), m.uid))
                    seen_now.push_back(m.uid);
            if (!seen_now.empty()) {
                sync::MailService::FlagOp op;
                op.flags = sync::kSeen;
                auto r = svc_.mail->store_flags(account_->mailbox, selected_->folder.folder_id, seen_now, op);
                if (r.error)
                    log::Logger::instance().write(log::Level::Warn, "imap", &ctx_, "could not set \\Seen",
                                                  {{"error", r.error->message}});
                latest = svc_.mail->snapshot(account_->mailbox, selected_->folder.folder_id);
            }
        }
    }
    const auto& msgs = selected_->messages();
    auto job = std::make_unique<FetchJob>();
    job->tag = c.tag;
    job->uid = uid;
    job->modseq = wants_modseq;
    job->seen_now = std::move(seen_now);
    job->latest = std::move(latest);
    job->items = std::move(*items);
    auto indexes = resolve_indexes(c.args[first], uid);
    if (!indexes) return bad(c.tag, "Sequence number out of range");
    job->indexes = std::move(*indexes);
    if (vanished) {
        // The UIDs of the set that are gone (a superset of those expunged since CHANGEDSINCE: allowed).
        auto gone = vanished_set(pi::parse_sequence_set(c.args[first].text));
        if (!gone.empty()) untagged("VANISHED (EARLIER) " + gone);
    }
    if (changed_since) {
        auto& ix = job->indexes;
        ix.erase(std::remove_if(ix.begin(), ix.end(), [&](std::size_t i) { return msgs[i].modseq <= *changed_since; }),
                 ix.end());
    }
    job_ = std::move(job);
    step();
}

// Builds the responses for up to a few messages or ~1 MiB of output, then returns; the server calls
// step() again once the output is written.
void Session::run_fetch() {
    auto& job = *job_;
    const auto& msgs = selected_->messages();
    std::size_t produced = 0;
    while (job.next < job.indexes.size() && produced < 1024 * 1024) {
        std::size_t idx = job.indexes[job.next++];
        const sync::MessageRecord& m = msgs[idx];
        // A message this FETCH marked \Seen: its flags (and modseq) as stored now.
        const sync::MessageRecord* now = &m;
        bool marked = std::binary_search(job.seen_now.begin(), job.seen_now.end(), m.uid);
        if (marked && job.latest) {
            auto it = std::lower_bound(job.latest->begin(), job.latest->end(), m.uid,
                                       [](const sync::MessageRecord& r, std::uint32_t u) { return r.uid < u; });
            if (it != job.latest->end() && it->uid == m.uid) now = &*it;
        }
        MessageData data(*this, m);
        std::string line = fmt::format("* {} FETCH (", idx + 1);
        bool first = true;
        auto sep = [&] {
            if (!first) line += ' ';
            first = false;
        };
        bool has_uid = false, has_modseq = false, has_flags = false;
        for (const auto& it : job.items) {
            has_uid = has_uid || it.kind == FetchItem::Kind::Uid;
            has_modseq = has_modseq || it.kind == FetchItem::Kind::ModSeq;
            has_flags = has_flags || it.kind == FetchItem::Kind::Flags;
        }
        if (job.uid && !has_uid) {
            sep();
            line += "UID " + std::to_string(m.uid);
        }
        if ((job.modseq || (marked && condstore_)) && !has_modseq) {
            sep();
            line += "MODSEQ (" + std::to_string(now->modseq) + ")";
        }
        bool failed = false;
        for (const auto& it : job.items) {
            switch (it.kind) {
                case FetchItem::Kind::Uid:
                    sep();
                    line += "UID " + std::to_string(m.uid);
                    break;
                case FetchItem::Kind::ModSeq:
                    sep();
                    line += "MODSEQ (" + std::to_string(now->modseq) + ")";
                    break;
                case FetchItem::Kind::Flags:
                    sep();
                    line += "FLAGS (" + flag_list(*now) + ")";
                    break;
                case FetchItem::Kind::InternalDate:
                    sep();
                    line += "INTERNALDATE \"" + imap_date_time(m.internal_date) + "\"";
                    break;
                case FetchItem::Kind::Size: {
                    auto d = data.cached_derived();  // never a download just for the size
                    sep();
                    line += "RFC822.SIZE " + std::to_string(d ? d->exact_size : m.size);
                    break;
                }
                case FetchItem::Kind::Envelope:
                case FetchItem::Kind::BodyStructure:
                case FetchItem::Kind::Body: {
                    auto d = data.derived();
                    if (!d) {
                        failed = true;
                        break;
                    }
                    sep();
                    line += it.label + " " +
                            (it.kind == FetchItem::Kind::Envelope        ? d->envelope
                             : it.kind == FetchItem::Kind::BodyStructure ? d->bodystructure
                                                                         : d->body);
                    break;
                }
                case FetchItem::Kind::Section: {
                    const std::string* raw = data.raw();
                    const mi::MessageIndex* index = data.index();
                    if (!raw || !index) {
                        failed = true;
                        break;
                    }
                    data.derived();  // the exact size and FETCH data, now that the bytes are here
                    std::string bytes = mi::section_bytes(*index, *raw, *it.section);
                    std::string label = it.label;
                    if (it.partial) {
                        bytes = mi::partial(bytes, it.partial->first, it.partial->second);
                        label = mi::section_label(*it.section, it.partial->first);
                    }
                    sep();
                    line += label + " {" + std::to_string(bytes.size()) + "}\r\n";
                    line += bytes;
                    break;
                }
            }
            if (failed) break;
        }
        if (failed) {
            // The message cannot be read from Graph now (RFC 3501 allows NO for a partial failure).
            job.failed = true;
            continue;
        }
        if (marked && !has_flags) line += " FLAGS (" + flag_list(*now) + ")";
        line += ")\r\n";
        produced += line.size();
        out(line);
    }
    if (job.next >= job.indexes.size()) {
        std::string tag = job.tag;
        bool failed = job.failed, uid = job.uid;
        auto told = std::move(job.seen_now);  // their new FLAGS went out with the FETCH
        job_.reset();
        flush_updates(uid, nullptr, &told);  // no EXPUNGE after FETCH (RFC 3501 7.4.1); UID FETCH may
        if (failed) no(tag, "[UNAVAILABLE] Some messages could not be read from Microsoft 365; try again");
        else ok(tag, uid ? "UID FETCH completed" : "FETCH completed");
    }
}

// ---- lazily loaded message data ------------------------------------------------------------------

Session::MessageData::MessageData(Session& s, const sync::MessageRecord& m) : s_(s), m_(m) {}

const std::string* Session::MessageData::raw() {
    if (raw_) return &*raw_;
    if (failed_) return nullptr;
    auto r = s_.svc_.mail->body(s_.account_->mailbox, m_.graph_id);
    if (r.index() != 0) {
        failed_ = true;
        log::Logger::instance().write(log::Level::Warn, "imap", &s_.ctx_, "message unavailable",
                                      {{"uid", static_cast<std::uint64_t>(m_.uid)},
                                       {"error", std::get<sync::SourceError>(r).message}});
        return nullptr;
    }
    raw_ = std::move(std::get<std::string>(r));
    return &*raw_;
}

const mi::MessageIndex* Session::MessageData::index() {
    if (index_) return &*index_;
    const std::string* r = raw();
    if (!r) return nullptr;
    index_ = mi::MessageIndex::build(*r);
    return &*index_;
}

std::optional<sync::StateStore::Derived> Session::MessageData::cached_derived() {
    if (derived_) return derived_;
    if (auto d = s_.svc_.mail->store().derived(s_.account_->mailbox, m_.graph_id)) return derived_ = d;
    return std::nullopt;
}

std::optional<sync::StateStore::Derived> Session::MessageData::derived() {
    if (auto d = cached_derived()) return d;
    auto& store = s_.svc_.mail->store();
    const std::string* r = raw();
    const mi::MessageIndex* ix = index();
    if (!r || !ix) return std::nullopt;
    sync::StateStore::Derived d;
    d.exact_size = r->size();
    d.envelope = mi::envelope(*ix, *r);
    d.bodystructure = mi::bodystructure(*ix, *r, true);
    d.body = mi::bodystructure(*ix, *r, false);
    store.put_derived(s_.account_->mailbox, m_.graph_id, d);
    return derived_ = d;
}

}  // namespace gb::imap
