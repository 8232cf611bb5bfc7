// prepare(): envelope reconciliation, printer quirks, From policy and the Large split (see prepare.h).
//
// The MIME structure is located by a bounded boundary scanner of our own (byte ranges are what the
// splice needs); GMime parses what is inside those ranges: address lists, Content-Type parameters and,
// for detached attachments, the part itself (transfer encoding, RFC 2231 file names). The scanner runs
// on every message, so nesting depth and part count are checked before GMime sees any byte.
#include "graph/mail/prepare.h"

#include "common/text.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include "auth/crypto.h"
#include "common/ascii.h"

namespace gb::mail {

namespace {

using ascii::lower;

constexpr std::string_view trim(std::string_view s) { return trim_space(s); }

using ascii::iequals;

PrepareError error(PrepareErrorKind kind, std::string message) {
    PrepareError e;
    e.kind = kind;
    e.message = std::move(message);
    switch (kind) {
        case PrepareErrorKind::Malformed:
            e.smtp_code = 554;
            e.enhanced = "5.6.0";
            break;
        case PrepareErrorKind::TooComplex:
            e.smtp_code = 554;
            e.enhanced = "5.6.0";
            break;
        case PrepareErrorKind::TooLarge:
            e.smtp_code = 552;
            e.enhanced = "5.3.4";
            break;
        case PrepareErrorKind::FromRejected:
            e.smtp_code = 550;
            e.enhanced = "5.7.1";
            break;
        case PrepareErrorKind::NoRecipients:
            e.smtp_code = 554;
            e.enhanced = "5.5.1";
            break;
    }
    return e;
}

Prepared failed(PrepareErrorKind kind, std::string message) {
    Prepared p;
    p.error = error(kind, std::move(message));
    return p;
}

// ---- MIME structure ---------------------------------------------------------------------------------

struct Node {
    std::size_t delim_begin = 0;  // where the removable range starts (the line end before "--boundary")
    std::size_t begin = 0;        // first header byte
    std::size_t body = 0;
    std::size_t end = 0;  // exclusive; the line end before the next delimiter is not included
    ContentType ct;
    std::string disposition;  // lower-case value of Content-Disposition up to ';'
    int parent = -1;
    std::vector<int> kids;
    bool multipart = false;
};

struct Tree {
    std::vector<Node> nodes;
    std::optional<PrepareError> error;
};

void scan_node(std::string_view msg, Tree& tree, int index, int depth, const PreparePolicy& policy) {
    if (tree.error) return;
    if (depth > policy.max_depth) {
        tree.error = error(PrepareErrorKind::TooComplex,
                           "MIME nesting deeper than " + std::to_string(policy.max_depth) + " levels");
        return;
    }
    Node& n0 = tree.nodes[static_cast<std::size_t>(index)];
    auto block =
        scan_headers(msg.substr(0, n0.end), n0.begin, policy.max_header_block, policy.max_header_fields);
    if (!block) {
        tree.error = error(PrepareErrorKind::TooComplex, "a MIME part header block exceeds the limits");
        return;
    }
    std::string_view body_view;
    {
        Node& n = tree.nodes[static_cast<std::size_t>(index)];
        n.body = block->body;
        for (const auto& f : block->fields) {
            if (iequals(f.name, "Content-Type")) n.ct = parse_content_type(f.raw_value(msg));
            if (iequals(f.name, "Content-Disposition")) {
                auto v = trim(f.raw_value(msg));
                n.disposition = lower(trim(v.substr(0, v.find(';'))));
            }
        }
        n.multipart = n.ct.mime_type.starts_with("multipart/") && !n.ct.boundary.empty();
        if (!n.multipart) return;
        if (n.ct.boundary.size() > 200) {
            tree.error = error(PrepareErrorKind::Malformed, "a MIME boundary is longer than 200 characters");
            return;
        }
    }
    const std::string delim = "--" + tree.nodes[static_cast<std::size_t>(index)].ct.boundary;
    const std::size_t body = tree.nodes[static_cast<std::size_t>(index)].body;
    const std::size_t end = tree.nodes[static_cast<std::size_t>(index)].end;
    struct Delim {
        std::size_t pre, line_end;
        bool close;
    };
    std::vector<Delim> delims;
    std::size_t pos = body;
    while (pos < end) {
        std::size_t p = msg.substr(0, end).find(delim, pos);
        if (p == std::string_view::npos) break;
        pos = p + delim.size();
        if (p != body && msg[p - 1] != '\n') continue;
        std::size_t after = p + delim.size();
        bool close = msg.substr(after, 2) == "--" && after + 2 <= end;
        std::size_t q = close ? after + 2 : after;
        while (q < end && (msg[q] == ' ' || msg[q] == '\t')) ++q;
        if (q < end && msg[q] != '\r' && msg[q] != '\n') continue;
        std::size_t nl = msg.substr(0, end).find('\n', q);
        std::size_t line_end = nl == std::string_view::npos ? end : nl + 1;
        std::size_t pre = p;
        if (p > body && msg[p - 1] == '\n') {
            pre = p - 1;
            if (pre > body && msg[pre - 1] == '\r') --pre;
        }
        delims.push_back({pre, line_end, close});
        if (delims.size() > policy.max_parts + 1) break;
        if (close) break;
        pos = line_end;
    }
    for (std::size_t i = 0; i < delims.size(); ++i) {
        if (delims[i].close) break;
        if (tree.nodes.size() >= policy.max_parts) {
            tree.error = error(PrepareErrorKind::TooComplex,
                               "more than " + std::to_string(policy.max_parts) + " MIME parts");
            return;
        }
        Node child;
        child.delim_begin = delims[i].pre;
        child.begin = delims[i].line_end;
        child.end = i + 1 < delims.size() ? delims[i + 1].pre : end;
        if (child.end < child.begin) child.end = child.begin;
        child.parent = index;
        tree.nodes.push_back(std::move(child));
        int ci = static_cast<int>(tree.nodes.size() - 1);
        tree.nodes[static_cast<std::size_t>(index)].kids.push_back(ci);
        scan_node(msg, tree, ci, depth + 1, policy);
        if (tree.error) return;
    }
}

Tree scan_tree(std::string_view msg, const PreparePolicy& policy) {
    Tree t;
    Node root;
    root.end = msg.size();
    t.nodes.push_back(root);
    scan_node(msg, t, 0, 0, policy);
    return t;
}

// A text part that is the message body, not an attachment.
bool is_body_text(const Node& n) {
    return (n.ct.mime_type == "text/plain" || n.ct.mime_type == "text/html") && n.disposition != "attachment";
}

// `phrase-with-@ <addr>` where the phrase is not quoted: {phrase, addr}; nullopt for anything else.
std::optional<Address> unquoted_at_phrase(std::string_view value) {
    std::string v;
    for (char c : value)
        if (c != '\r' && c != '\n') v.push_back(c);
    auto lt = v.find('<');
    auto gt = v.find('>', lt == std::string::npos ? 0 : lt);
    if (lt == std::string::npos || gt == std::string::npos || v.find('<', lt + 1) != std::string::npos)
        return std::nullopt;
    std::string_view phrase = trim(std::string_view(v).substr(0, lt));
    std::string_view addr = trim(std::string_view(v).substr(lt + 1, gt - lt - 1));
    if (!trim(std::string_view(v).substr(gt + 1)).empty()) return std::nullopt;
    if (phrase.empty() || phrase.front() == '"' || phrase.find('@') == std::string_view::npos)
        return std::nullopt;
    if (phrase.find_first_of("\",;:()") != std::string_view::npos) return std::nullopt;
    if (addr.find('@') == std::string_view::npos || addr.find_first_of(" \t\",") != std::string_view::npos)
        return std::nullopt;
    return Address{std::string(phrase), std::string(addr)};
}

// ---- header rewriting -------------------------------------------------------------------------------

struct HeaderEdits {
    std::map<std::size_t, std::optional<std::string>>
        replace;                      // field index -> new field text (nullopt = drop)
    std::vector<std::string> append;  // new fields (without line end)
};

std::string fold_list(std::string_view name, const std::vector<std::string>& items, std::string_view prefix,
                      const std::string& eol) {
    std::string out = std::string(name) + ":";
    std::size_t line = out.size();
    bool first = true;
    auto add = [&](std::string_view item, bool comma) {
        std::string piece = std::string(comma ? "," : "");
        if (line + piece.size() + 1 + item.size() > 76 && line > name.size() + 1) {
            out += piece + eol + " ";
            line = 1;
        } else {
            out += piece + " ";
            line += piece.size() + 1;
        }
        out += item;
        line += item.size();
    };
    if (!prefix.empty()) {
        out += " ";
        out += prefix;
        line += 1 + prefix.size();
        first = false;
    }
    for (const auto& it : items) {
        add(it, !first);
        first = false;
    }
    return out;
}

std::string render(std::string_view raw, const HeaderBlock& block, const HeaderEdits& edits,
                   const std::string& eol, bool replace_body, std::string_view new_body) {
    std::string out;
    out.reserve(raw.size() + 1024);
    for (std::size_t i = 0; i < block.fields.size(); ++i) {
        const auto& f = block.fields[i];
        auto it = edits.replace.find(i);
        if (it != edits.replace.end()) {
            if (it->second) out += *it->second + eol;
            continue;
        }
        out.append(raw.substr(f.begin, f.end - f.begin));
        if (out.empty() || out.back() != '\n') out += eol;
    }
    for (const auto& a : edits.append) out += a + eol;
    if (replace_body) {
        out += eol;
        out.append(new_body);
        return out;
    }
    if (block.body == block.fields_end) out += eol;  // no empty line separated headers from body
    out.append(raw.substr(block.fields_end));
    return out;
}

}  // namespace

std::string_view HeaderField::raw_value(std::string_view message) const {
    std::string_view f = message.substr(begin, end - begin);
    auto colon = f.find(':');
    if (colon == std::string_view::npos) return {};
    f.remove_prefix(colon + 1);
    while (!f.empty() && (f.back() == '\n' || f.back() == '\r')) f.remove_suffix(1);
    return f;
}

std::optional<HeaderBlock> scan_headers(std::string_view message, std::size_t offset, std::size_t max_bytes,
                                        std::size_t max_fields) {
    HeaderBlock b;
    const std::size_t size = message.size();
    auto first_nl = message.substr(offset, std::min(size - std::min(size, offset), max_bytes)).find('\n');
    b.crlf = first_nl == std::string_view::npos || (first_nl > 0 && message[offset + first_nl - 1] == '\r');
    std::size_t pos = offset;
    const std::size_t window_end = std::min(size, offset + max_bytes + 2);
    const std::string_view window = message.substr(0, window_end);
    while (true) {
        if (pos >= size) {
            b.fields_end = b.body = size;
            break;
        }
        std::size_t nl = window.find('\n', pos);
        if (nl == std::string_view::npos && window_end < size) return std::nullopt;
        std::size_t line_end = nl == std::string_view::npos ? size : nl + 1;
        if (line_end - offset > max_bytes) return std::nullopt;
        std::size_t content_end =
            nl == std::string_view::npos ? size : (nl > pos && message[nl - 1] == '\r' ? nl - 1 : nl);
        std::string_view line = message.substr(pos, content_end - pos);
        if (line.empty()) {
            b.fields_end = pos;
            b.body = line_end;
            break;
        }
        if (line[0] == ' ' || line[0] == '\t') {
            if (b.fields.empty()) {
                b.fields_end = b.body = pos;
                break;
            }
            b.fields.back().end = line_end;
            pos = line_end;
            continue;
        }
        auto colon = line.find(':');
        std::string_view name = colon == std::string_view::npos ? std::string_view{} : line.substr(0, colon);
        while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
        bool valid = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
            return static_cast<unsigned char>(c) > 32 && static_cast<unsigned char>(c) < 127;
        });
        if (!valid) {
            b.fields_end = b.body = pos;
            break;
        }
        if (b.fields.size() >= max_fields) return std::nullopt;
        b.fields.push_back(HeaderField{name, pos, line_end});
        pos = line_end;
    }
    return b;
}

Prepared prepare(const std::string& raw_mime, const Envelope& env, const PreparePolicy& policy) {
    const std::string_view raw(raw_mime);
    const std::string mailbox = lower(trim(env.mailbox));
    auto at = mailbox.rfind('@');
    if (mailbox.empty() || at == std::string::npos || at == 0 || at + 1 == mailbox.size())
        return failed(PrepareErrorKind::Malformed,
                      "the sending mailbox '" + env.mailbox + "' is not an address");
    const std::string domain = mailbox.substr(at + 1);

    // Envelope recipients, deduplicated case-insensitively, order kept.
    std::vector<std::string> rcpts;
    std::set<std::string> rcpt_set;
    for (const auto& r : env.recipients) {
        std::string a = lower(trim(r));
        if (a.size() > 2 && a.front() == '<' && a.back() == '>') a = a.substr(1, a.size() - 2);
        if (a.empty() || !(a.find('@') != std::string::npos)) continue;
        if (rcpt_set.insert(a).second) rcpts.push_back(a);
    }
    if (rcpts.empty()) return failed(PrepareErrorKind::NoRecipients, "the envelope has no valid recipient");
    if (rcpts.size() > policy.max_recipients)
        return failed(PrepareErrorKind::TooComplex,
                      "more than " + std::to_string(policy.max_recipients) + " recipients in one message");

    auto block = scan_headers(raw, 0, policy.max_header_block, policy.max_header_fields);
    if (!block) return failed(PrepareErrorKind::TooComplex, "the header block exceeds the limits");
    Tree tree = scan_tree(raw, policy);
    if (tree.error) {
        Prepared p;
        p.error = tree.error;
        return p;
    }

    Prepared out;
    out.mailbox = mailbox;
    const std::string eol = block->crlf ? "\r\n" : "\n";
    HeaderEdits edits;
    auto value_of = [&](std::size_t i) { return block->fields[i].raw_value(raw); };
    auto find_all = [&](std::string_view name) {
        std::vector<std::size_t> v;
        for (std::size_t i = 0; i < block->fields.size(); ++i)
            if (iequals(block->fields[i].name, name)) v.push_back(i);
        return v;
    };
    const std::size_t addr_cap = std::max<std::size_t>(policy.max_recipients * 2, 1000);

    // ---- From --------------------------------------------------------------------------------------
    auto from_fields = find_all("From");
    std::optional<Address> from;
    std::optional<std::vector<Address>> list_of_from;  // every address of the (first) From field
    if (from_fields.empty()) {
        edits.append.push_back("From: " + format_address({"", mailbox}));
        out.notes.push_back("added From: <" + mailbox + ">");
    } else {
        for (std::size_t k = 1; k < from_fields.size(); ++k) edits.replace[from_fields[k]] = std::nullopt;
        if (from_fields.size() > 1) out.notes.push_back("dropped duplicate From fields");
        auto list = parse_address_list(value_of(from_fields[0]), addr_cap);
        if (!list) return failed(PrepareErrorKind::TooComplex, "the From field lists too many addresses");
        // `From: printer@x <printer@x>` / `From: Scanner @ floor 3 <x@y>`: an unquoted @ in the phrase makes
        // the phrase parse as an address. Take the angle-bracketed address and the phrase as its name.
        if (auto quirk = unquoted_at_phrase(value_of(from_fields[0]))) list = std::vector<Address>{*quirk};
        if (list->empty()) {
            edits.replace[from_fields[0]] = "From: " + format_address({"", mailbox});
            out.notes.push_back("replaced an unparsable From with <" + mailbox + ">");
        } else {
            from = list->front();
            list_of_from = std::move(*list);
        }
    }
    if (from) {
        // `From: mailbox, ceo@x` (RFC 5322 allows several authors): every address counts, not just the first,
        // or the recipient would see a second author the account may not send as.
        const std::vector<Address>& authors = *list_of_from;
        auto stranger = std::find_if(authors.begin(), authors.end(),
                                     [&](const Address& a) { return lower(a.address) != mailbox; });
        bool foreign = stranger != authors.end();
        if (foreign && policy.from_policy == FromPolicy::Reject)
            return failed(PrepareErrorKind::FromRejected,
                          "From <" + stranger->address + "> is not the sending mailbox <" + mailbox + ">");
        if (foreign && policy.from_policy == FromPolicy::Rewrite) {
            bool drop_name = from->name.find('@') != std::string::npos || authors.size() > 1;
            std::string name = drop_name ? std::string() : from->name;
            edits.replace[from_fields[0]] = "From: " + format_address({name, mailbox});
            if (find_all("Reply-To").empty())
                edits.append.push_back("Reply-To:" + std::string(value_of(from_fields[0])));
            out.notes.push_back("rewrote From <" + stranger->address + "> to <" + mailbox + ">");
        } else if ((from->name.find('@') != std::string::npos)) {
            // `From: printer@x <printer@x>`: an unquoted @ in the phrase (Graph: ErrorSendAsDenied).
            std::string name = from->name;
            bool address_like = !(name.find(' ') != std::string::npos) || iequals(trim(name), from->address);
            edits.replace[from_fields[0]] =
                "From: " + format_address({address_like ? std::string() : name, from->address});
            out.notes.push_back(address_like ? "dropped an address-like From display name"
                                             : "quoted a From display name containing @");
        }
    }

    // ---- Sender ------------------------------------------------------------------------------------
    for (auto i : find_all("Sender")) {
        auto list = parse_address_list(value_of(i), addr_cap);
        if (!list || list->empty()) {
            edits.replace[i] = std::nullopt;
            continue;
        }
        // Sender names one mailbox; a list is judged by every address in it, like From.
        auto stranger = std::find_if(list->begin(), list->end(),
                                     [&](const Address& a) { return lower(a.address) != mailbox; });
        if (stranger == list->end()) continue;
        if (policy.from_policy == FromPolicy::Reject)
            return failed(PrepareErrorKind::FromRejected,
                          "Sender <" + stranger->address + "> is not the sending mailbox <" + mailbox + ">");
        if (policy.from_policy == FromPolicy::Rewrite) {
            edits.replace[i] = std::nullopt;
            out.notes.push_back("dropped Sender <" + stranger->address + ">");
        }
    }

    // ---- recipients --------------------------------------------------------------------------------
    std::vector<Address> hdr_to, hdr_cc, hdr_bcc;
    std::optional<std::size_t> bcc_field;
    for (auto [name, dest] :
         {std::pair<const char*, std::vector<Address>*>{"To", &hdr_to}, {"Cc", &hdr_cc}, {"Bcc", &hdr_bcc}}) {
        for (auto i : find_all(name)) {
            auto list = parse_address_list(value_of(i), addr_cap);
            if (!list)
                return failed(PrepareErrorKind::TooComplex,
                              std::string("the ") + name + " field lists too many addresses");
            if (dest->size() + list->size() > addr_cap)
                return failed(PrepareErrorKind::TooComplex, "the headers list too many recipients");
            if (list->empty()) {
                // `To: Undisclosed recipients:;`, an empty or unparsable field: Graph answers
                // ErrorInvalidRecipients. Dropped; the envelope recipients arrive as Bcc.
                edits.replace[i] = std::nullopt;
                out.notes.push_back(std::string("dropped a ") + name + " field without any address");
                continue;
            }
            if (dest == &hdr_bcc && !bcc_field) bcc_field = i;
            dest->insert(dest->end(), list->begin(), list->end());
        }
    }
    std::set<std::string> in_headers;
    for (const auto* l : {&hdr_to, &hdr_cc, &hdr_bcc})
        for (const auto& a : *l) in_headers.insert(lower(a.address));
    std::vector<std::string> missing;
    for (const auto& r : rcpts)
        if (!in_headers.contains(r)) missing.push_back(r);
    bool extra = std::any_of(in_headers.begin(), in_headers.end(),
                             [&](const std::string& a) { return !rcpt_set.contains(a); });
    if (!missing.empty()) {
        if (bcc_field) {
            std::string existing(trim(value_of(*bcc_field)));
            edits.replace[*bcc_field] = fold_list("Bcc", missing, existing, eol);
        } else {
            edits.append.push_back(fold_list("Bcc", missing, {}, eol));
        }
        out.notes.push_back("added " + std::to_string(missing.size()) + " envelope recipient(s) as Bcc");
    }
    // Exactly the envelope, for the PATCH of the draft path.
    std::set<std::string> placed;
    for (const auto& a : hdr_to)
        if (rcpt_set.contains(lower(a.address)) && placed.insert(lower(a.address)).second)
            out.to.push_back(a);
    for (const auto& a : hdr_cc)
        if (rcpt_set.contains(lower(a.address)) && placed.insert(lower(a.address)).second)
            out.cc.push_back(a);
    for (const auto& r : rcpts) {
        if (placed.contains(r)) continue;
        Address a{"", r};
        for (const auto& b : hdr_bcc)
            if (lower(b.address) == r) a.name = b.name;
        out.bcc.push_back(a);
    }
    out.patch_recipients = extra;
    if (extra) out.notes.push_back("the headers name recipients outside the envelope: exact-recipients path");

    // ---- Date, Message-ID --------------------------------------------------------------------------
    if (find_all("Date").empty()) {
        std::int64_t now = policy.now ? policy.now : static_cast<std::int64_t>(std::time(nullptr));
        edits.append.push_back("Date: " + rfc5322_date(now));
        out.notes.push_back("added Date");
    }
    if (auto ids = find_all("Message-ID"); ids.empty()) {
        std::string unique = policy.message_id_seed.empty()
                                 ? auth::hex_lower(auth::random_bytes(16))
                                 : auth::hex_lower(auth::sha256(policy.message_id_seed).substr(0, 16));
        out.message_id = "<" + unique + "@" + domain + ">";
        out.message_id_made = !policy.message_id_seed.empty();
        edits.append.push_back("Message-ID: " + out.message_id);
        out.notes.push_back("added Message-ID");
    } else {
        // Trimmed (a fold before it included); only a plain <left@right> is usable for a lookup.
        std::string v(trim(value_of(ids.front())));
        bool plain = v.size() > 2 && v.size() <= 500 && v.front() == '<' && v.back() == '>' &&
                     std::all_of(v.begin(), v.end(), [](char c) { return c > ' ' && c < 127; });
        if (plain) out.message_id = v;
    }

    out.mime = render(raw, *block, edits, eol, false, {});
    out.mode = extra ? Mode::ExactRecipients : Mode::Mime;
    if (base64_size(out.mime.size()) <= policy.max_request_body) return out;

    // ---- Large: cut the biggest attachment leaves out -----------------------------------------------
    std::vector<int> candidates;
    for (std::size_t i = 0; i < tree.nodes.size(); ++i) {
        const Node& n = tree.nodes[i];
        if (n.multipart || is_body_text(n)) continue;
        if (n.end - n.begin < policy.min_detach) continue;
        candidates.push_back(static_cast<int>(i));
    }
    std::sort(candidates.begin(), candidates.end(), [&](int a, int b) {
        const Node& x = tree.nodes[static_cast<std::size_t>(a)];
        const Node& y = tree.nodes[static_cast<std::size_t>(b)];
        return x.end - x.begin > y.end - y.begin;
    });
    const std::size_t header_growth = out.mime.size() - raw.size();  // may wrap; only used in sums below
    std::size_t size = raw.size();
    std::vector<int> chosen;
    for (int c : candidates) {
        if (base64_size(size + header_growth + 256) <= policy.max_request_body) break;
        const Node& n = tree.nodes[static_cast<std::size_t>(c)];
        size -= (n.parent < 0 ? n.end - n.body : n.end - n.delim_begin);
        chosen.push_back(c);
    }
    if (chosen.empty() || base64_size(size + header_growth + 256) > policy.max_request_body)
        return failed(PrepareErrorKind::TooLarge,
                      "the message is too large for Graph even without its attachments");

    // Decode the chosen parts (GMime), in document order.
    std::sort(chosen.begin(), chosen.end(), [&](int a, int b) {
        return tree.nodes[static_cast<std::size_t>(a)].begin < tree.nodes[static_cast<std::size_t>(b)].begin;
    });
    bool root_detached = false;
    struct Cut {
        std::size_t from, to;
        std::string with;
    };
    std::vector<Cut> cuts;
    std::map<int, int> removed_per_parent;
    for (int c : chosen) removed_per_parent[tree.nodes[static_cast<std::size_t>(c)].parent]++;
    std::map<int, int> seen_per_parent;
    int counter = 0;
    for (int c : chosen) {
        const Node& n = tree.nodes[static_cast<std::size_t>(c)];
        Attachment a;
        auto decoded = decode_leaf(raw.substr(n.begin, n.end - n.begin));
        if (decoded) {
            a.name = decoded->filename;
            a.content_type = decoded->content_type;
            a.content_id = decoded->content_id;
            a.is_inline =
                decoded->disposition_inline || (!decoded->disposition_attachment && !a.content_id.empty());
            a.bytes = std::move(decoded->bytes);
        } else {
            a.content_type = n.ct.mime_type;
            a.bytes = std::string(raw.substr(n.body, n.end - n.body));
        }
        ++counter;
        if (a.name.empty())
            a.name = n.ct.mime_type == "message/rfc822" ? "message-" + std::to_string(counter) + ".eml"
                                                        : "attachment-" + std::to_string(counter);
        if (a.content_type.empty()) a.content_type = "application/octet-stream";
        out.notes.push_back("detached '" + a.name + "' (" + std::to_string(a.bytes.size()) +
                            " bytes) for upload");
        out.attachments.push_back(std::move(a));
        if (n.parent < 0) {
            root_detached = true;
            continue;
        }
        const Node& parent = tree.nodes[static_cast<std::size_t>(n.parent)];
        int seen = ++seen_per_parent[n.parent];
        if (seen == removed_per_parent[n.parent] &&
            removed_per_parent[n.parent] == static_cast<int>(parent.kids.size())) {
            // Every part of this multipart leaves: keep an empty text part so it stays well-formed.
            cuts.push_back({n.begin, n.end, "Content-Type: text/plain; charset=us-ascii" + eol + eol});
        } else {
            cuts.push_back({n.delim_begin, n.end, {}});
        }
    }
    if (root_detached) {
        for (std::size_t i = 0; i < block->fields.size(); ++i) {
            auto name = block->fields[i].name;
            if (iequals(name, "Content-Type") || iequals(name, "Content-Transfer-Encoding") ||
                iequals(name, "Content-Disposition") || iequals(name, "Content-ID") ||
                iequals(name, "Content-Description"))
                edits.replace[i] = std::nullopt;
        }
        edits.append.push_back("Content-Type: text/plain; charset=us-ascii");
        out.mime = render(raw, *block, edits, eol, true, {});
    } else {
        std::string body;
        body.reserve(size);
        std::size_t pos = block->fields_end;
        for (const auto& c : cuts) {
            body.append(raw.substr(pos, c.from - pos));
            body += c.with;
            pos = c.to;
        }
        body.append(raw.substr(pos));
        std::string headers = render(raw.substr(0, block->fields_end), *block, edits, eol, true, {});
        // render() with replace_body appends one line end for the separator; the original separator is
        // part of `body` (it starts at fields_end), so drop ours.
        headers.resize(headers.size() - eol.size());
        if (block->body == block->fields_end) headers += eol;
        out.mime = headers + body;
    }
    if (base64_size(out.mime.size()) > policy.max_request_body)
        return failed(PrepareErrorKind::TooLarge,
                      "the message is too large for Graph even without its attachments");
    out.mode = Mode::Large;
    return out;
}

}  // namespace gb::mail
