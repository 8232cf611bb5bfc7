// RFC 5322 / MIME helpers for the emulated Graph mail API (see mime.h). Input is hostile: bounded loops,
// bounded recursion, no trust in lengths or nesting.
#include "graph/sandbox/mime.h"
#include "common/text.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>

#include "auth/crypto.h"
#include "common/ascii.h"

namespace gb::sandbox::mime {

namespace {

using ascii::lower;

constexpr std::string_view trim(std::string_view s) { return trim_space(s); }

// One line starting at pos: [pos, content_end) is the content, next is the start of the following line.
struct Line {
    std::size_t content_end;
    std::size_t next;
};

Line next_line(std::string_view s, std::size_t pos) {
    auto nl = s.find('\n', pos);
    if (nl == std::string_view::npos) return {s.size(), s.size()};
    std::size_t end = nl;
    if (end > pos && s[end - 1] == '\r') --end;
    return {end, nl + 1};
}

int days_from_civil(int y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int>(doe) - 719468;
}

void civil_from_days(std::int64_t z, int& y, unsigned& m, unsigned& d) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = static_cast<int>(yoe + era * 400) + (m <= 2);
}

constexpr std::array<const char*, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr std::array<const char*, 7> kDays = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};

std::string qp_decode(std::string_view in) {
    std::string out;
    out.reserve(in.size());
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '=') {
            out.push_back(in[i]);
            continue;
        }
        if (i + 1 < in.size() && in[i + 1] == '\n') {
            i += 1;
        } else if (i + 2 < in.size() && in[i + 1] == '\r' && in[i + 2] == '\n') {
            i += 2;
        } else if (i + 2 < in.size() && hex(in[i + 1]) >= 0 && hex(in[i + 2]) >= 0) {
            out.push_back(static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2])));
            i += 2;
        } else {
            out.push_back('=');
        }
    }
    return out;
}

// Parameter of a structured header value, e.g. boundary of a Content-Type.
std::string header_param(std::string_view value, std::string_view param) {
    std::size_t pos = 0;
    int guard = 0;
    while (pos < value.size() && ++guard < 200) {
        auto semi = value.find(';', pos);
        if (semi == std::string_view::npos) return {};
        pos = semi + 1;
        auto eq = value.find('=', pos);
        if (eq == std::string_view::npos) return {};
        auto key = trim(value.substr(pos, eq - pos));
        std::size_t v = eq + 1;
        while (v < value.size() && (value[v] == ' ' || value[v] == '\t')) ++v;
        std::string val;
        if (v < value.size() && value[v] == '"') {
            ++v;
            while (v < value.size() && value[v] != '"') {
                if (value[v] == '\\' && v + 1 < value.size()) ++v;
                val.push_back(value[v++]);
            }
            if (v < value.size()) ++v;
        } else {
            while (v < value.size() && value[v] != ';' && value[v] != ' ' && value[v] != '\t')
                val.push_back(value[v++]);
        }
        if (ascii::iequals(key, param)) return val;
        pos = v;
    }
    return {};
}

std::string media_type(std::optional<std::string_view> content_type) {
    if (!content_type) return "text/plain";
    auto v = *content_type;
    return lower(trim(v.substr(0, v.find(';'))));
}

std::string decode_body(std::string_view body, std::optional<std::string_view> cte) {
    std::string enc = cte ? lower(trim(*cte)) : std::string();
    if (enc == "base64") {
        auto d = auth::base64_decode(body);
        return d ? *d : std::string(body);
    }
    if (enc == "quoted-printable") return qp_decode(body);
    return std::string(body);
}

struct BodyScan {
    bool found_html = false, found_text = false;
    std::string html, text;
    bool has_attachments = false;
    std::size_t parts = 0;
};

void scan_entity(std::string_view entity, int depth, BodyScan& scan) {
    if (depth > kMaxMimeDepth || ++scan.parts > kMaxParts) return;
    auto hb = parse_headers(entity);
    if (!hb) return;
    std::string type = media_type(hb->get("Content-Type"));
    std::string disposition = lower(trim(hb->get("Content-Disposition").value_or("")));
    std::string_view body = entity.substr(std::min(hb->body_offset, entity.size()));
    if (type.rfind("multipart/", 0) == 0) {
        std::string boundary = header_param(*hb->get("Content-Type"), "boundary");
        if (boundary.empty() || boundary.size() > 200) return;
        std::string delim = "--" + boundary;
        std::size_t pos = 0;
        std::optional<std::size_t> part_start;
        while (pos <= body.size()) {
            auto line = next_line(body, pos);
            std::string_view content = body.substr(pos, line.content_end - pos);
            if (content.rfind(delim, 0) == 0) {
                std::string_view rest = trim(content.substr(delim.size()));
                if (part_start) {
                    std::size_t end = pos;
                    // the CRLF before the delimiter belongs to the delimiter
                    if (end > *part_start && body[end - 1] == '\n') --end;
                    if (end > *part_start && body[end - 1] == '\r') --end;
                    scan_entity(body.substr(*part_start, end - *part_start), depth + 1, scan);
                    if (scan.parts > kMaxParts) return;
                }
                if (rest == "--") return;
                part_start = line.next;
            }
            if (line.next >= body.size()) break;
            pos = line.next;
        }
        return;
    }
    bool attachment = disposition.rfind("attachment", 0) == 0 ||
                      (type.rfind("text/", 0) != 0 && type.rfind("multipart/", 0) != 0 &&
                       type != "message/delivery-status");
    if (attachment) {
        scan.has_attachments = true;
        return;
    }
    if (type == "text/html" && !scan.found_html) {
        scan.found_html = true;
        scan.html = decode_body(body, hb->get("Content-Transfer-Encoding"));
    } else if (type == "text/plain" && !scan.found_text) {
        scan.found_text = true;
        scan.text = decode_body(body, hb->get("Content-Transfer-Encoding"));
    }
}

bool needs_quoting(std::string_view name) {
    for (unsigned char c : name)
        if (!(std::isalnum(c) || c == ' ' || c == '!' || c == '#' || c == '$' || c == '%' || c == '&' ||
              c == '\'' || c == '*' || c == '+' || c == '-' || c == '/' || c == '=' || c == '?' || c == '^' ||
              c == '_' || c == '`' || c == '{' || c == '|' || c == '}' || c == '~'))
            return true;
    return false;
}

bool is_ascii(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

std::string encode_word_if_needed(std::string_view text) {
    if (is_ascii(text)) return std::string(text);
    return "=?utf-8?B?" + auth::base64_encode(text) + "?=";
}

// Strip CR/LF so JSON-supplied values cannot inject header lines.
std::string one_line(std::string_view s) {
    std::string out;
    for (char c : s)
        if (c != '\r' && c != '\n') out.push_back(c);
    return out;
}

// "Name: w1 w2 ...\r\n" with the words of `value` (split at white space, line breaks dropped) folded
// onto continuation lines before 78 columns, so that a long References list stays within RFC 5322's
// line limit. A single word longer than that stays on its own line. "" when there is no word at all.
std::string fold_words(std::string_view name, std::string_view value) {
    std::string out(name);
    out += ":";
    std::size_t line = out.size();
    bool any = false;
    std::string text = one_line(value);
    std::size_t pos = 0;
    while (pos < text.size()) {
        if (text[pos] == ' ' || text[pos] == '\t') {
            ++pos;
            continue;
        }
        std::size_t end = text.find_first_of(" \t", pos);
        if (end == std::string::npos) end = text.size();
        std::string_view word = std::string_view(text).substr(pos, end - pos);
        if (any && line + 1 + word.size() > 78) {
            out += "\r\n";
            line = 0;
        }
        out += ' ';
        out.append(word);
        line += 1 + word.size();
        any = true;
        pos = end;
    }
    return any ? out + "\r\n" : std::string();
}

}  // namespace

std::optional<std::string_view> HeaderBlock::get(std::string_view name) const {
    for (const auto& f : fields)
        if (ascii::iequals(f.name, name)) return std::string_view(f.value);
    return std::nullopt;
}

std::optional<HeaderBlock> parse_headers(std::string_view message) {
    HeaderBlock hb;
    std::size_t pos = 0;
    bool first = true;
    while (pos < message.size()) {
        if (pos > kMaxHeaderBlock) return std::nullopt;
        auto line = next_line(message, pos);
        if (first) {
            hb.crlf = line.content_end < message.size() && line.content_end + 1 < line.next;
            first = false;
        }
        std::string_view content = message.substr(pos, line.content_end - pos);
        if (content.empty()) {
            hb.body_offset = line.next;
            for (auto& f : hb.fields) f.value = std::string(trim(f.value));
            return hb;
        }
        if ((content[0] == ' ' || content[0] == '\t') && !hb.fields.empty()) {
            auto& f = hb.fields.back();
            if (f.value.size() + content.size() > kMaxHeaderBlock) return std::nullopt;
            f.value.append(content);
            f.raw_end = line.next;
            pos = line.next;
            continue;
        }
        auto colon = content.find(':');
        std::string_view name =
            colon == std::string_view::npos ? std::string_view{} : trim(content.substr(0, colon));
        bool valid = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
            return static_cast<unsigned char>(c) > 32 && static_cast<unsigned char>(c) < 127;
        });
        if (!valid) {  // not a header line: the body starts here
            hb.body_offset = pos;
            for (auto& f : hb.fields) f.value = std::string(trim(f.value));
            return hb;
        }
        if (hb.fields.size() >= kMaxHeaderFields) return std::nullopt;
        HeaderField f;
        f.name = std::string(name);
        f.value = std::string(content.substr(colon + 1));
        f.raw_begin = pos;
        f.raw_end = line.next;
        hb.fields.push_back(std::move(f));
        pos = line.next;
    }
    hb.body_offset = message.size();
    for (auto& f : hb.fields) f.value = std::string(trim(f.value));
    return hb;
}

std::string decode_words(std::string_view value) {
    std::string out;
    std::size_t pos = 0;
    bool last_was_word = false;
    int guard = 0;
    while (pos < value.size() && ++guard < 10000) {
        auto start = value.find("=?", pos);
        if (start == std::string_view::npos) break;
        auto q1 = value.find('?', start + 2);
        auto q2 = q1 == std::string_view::npos ? q1 : value.find('?', q1 + 1);
        auto end = q2 == std::string_view::npos ? q2 : value.find("?=", q2 + 1);
        if (end == std::string_view::npos) break;
        std::string_view between = value.substr(pos, start - pos);
        bool only_ws = trim(between).empty();
        if (!(last_was_word && only_ws)) out.append(between);
        char enc = static_cast<char>(std::toupper(static_cast<unsigned char>(value[q1 + 1])));
        std::string_view text = value.substr(q2 + 1, end - q2 - 1);
        if (q2 != q1 + 2 || (enc != 'B' && enc != 'Q')) {
            out.append(value.substr(start, end + 2 - start));
            last_was_word = false;
        } else if (enc == 'B') {
            auto d = auth::base64_decode(text);
            out.append(d ? *d : std::string(text));
            last_was_word = true;
        } else {
            std::string t(text);
            std::replace(t.begin(), t.end(), '_', ' ');
            out.append(qp_decode(t));
            last_was_word = true;
        }
        pos = end + 2;
    }
    out.append(value.substr(std::min(pos, value.size())));
    return out;
}

std::optional<std::vector<Address>> parse_address_list(std::string_view value) {
    std::vector<Address> out;
    std::string phrase, raw, comment, angle;
    bool has_angle = false;
    bool in_group = false;
    auto finish = [&]() -> bool {
        std::string addr;
        std::string name;
        if (has_angle) {
            addr = std::string(trim(angle));
            name = std::string(trim(phrase));
        } else {
            for (char c : raw)
                if (c != ' ' && c != '\t') addr.push_back(c);
            name = std::string(trim(comment));
        }
        if (addr.find('@') != std::string::npos) {
            if (out.size() >= kMaxAddresses) return false;
            out.push_back(Address{decode_words(name), addr});
        }
        phrase.clear();
        raw.clear();
        comment.clear();
        angle.clear();
        has_angle = false;
        return true;
    };
    std::size_t i = 0;
    while (i < value.size()) {
        char c = value[i];
        if (c == '"') {
            std::string q;
            ++i;
            while (i < value.size() && value[i] != '"') {
                if (value[i] == '\\' && i + 1 < value.size()) ++i;
                q.push_back(value[i++]);
            }
            ++i;  // closing quote (or past the end)
            if (!phrase.empty() && phrase.back() != ' ') phrase.push_back(' ');
            phrase += q;
            raw += "\"" + q + "\"";
            continue;
        }
        if (c == '(') {
            int depth = 0;
            std::string text;
            while (i < value.size()) {
                char d = value[i];
                if (d == '\\' && i + 1 < value.size()) {
                    text.push_back(value[i + 1]);
                    i += 2;
                    continue;
                }
                if (d == '(') {
                    if (++depth > 20) return std::nullopt;
                    if (depth > 1) text.push_back(d);
                } else if (d == ')') {
                    if (--depth == 0) {
                        ++i;
                        break;
                    }
                    text.push_back(d);
                } else {
                    text.push_back(d);
                }
                ++i;
            }
            if (comment.empty()) comment = text;
            continue;
        }
        if (c == '<') {
            auto close = value.find('>', i + 1);
            if (close == std::string_view::npos) close = value.size();
            angle = std::string(value.substr(i + 1, close - i - 1));
            has_angle = true;
            i = close + 1;
            continue;
        }
        if (c == ',') {
            if (!finish()) return std::nullopt;
            ++i;
            continue;
        }
        if (c == ':' && !in_group && !has_angle) {
            // group display name: discard it
            phrase.clear();
            raw.clear();
            comment.clear();
            in_group = true;
            ++i;
            continue;
        }
        if (c == ';') {
            if (!finish()) return std::nullopt;
            in_group = false;
            ++i;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (!phrase.empty() && phrase.back() != ' ') phrase.push_back(' ');
            ++i;
            continue;
        }
        phrase.push_back(c);
        raw.push_back(c);
        ++i;
    }
    if (!finish()) return std::nullopt;
    return out;
}

std::optional<Summary> summarize(std::string_view message) {
    auto hb = parse_headers(message);
    if (!hb) return std::nullopt;
    Summary s;
    auto one = [&](std::string_view name) -> std::optional<std::optional<Address>> {
        auto v = hb->get(name);
        if (!v) return std::optional<Address>{};
        auto list = parse_address_list(*v);
        if (!list) return std::nullopt;
        if (list->empty()) return std::optional<Address>{};
        return std::optional<Address>{list->front()};
    };
    auto many = [&](std::string_view name, std::vector<Address>& into) -> bool {
        for (const auto& f : hb->fields) {
            if (!ascii::iequals(f.name, name)) continue;
            auto list = parse_address_list(f.value);
            if (!list) return false;
            if (into.size() + list->size() > kMaxAddresses) return false;
            into.insert(into.end(), list->begin(), list->end());
        }
        return true;
    };
    auto from = one("From");
    auto sender = one("Sender");
    if (!from || !sender) return std::nullopt;
    s.from = *from;
    s.sender = *sender;
    if (!many("To", s.to) || !many("Cc", s.cc) || !many("Bcc", s.bcc)) return std::nullopt;
    s.subject = decode_words(hb->get("Subject").value_or(""));
    s.message_id = std::string(hb->get("Message-ID").value_or(""));
    s.in_reply_to = std::string(hb->get("In-Reply-To").value_or(""));
    if (auto d = hb->get("Date")) s.date = parse_rfc5322_date(*d);
    BodyScan scan;
    scan_entity(message, 0, scan);
    s.has_attachments = scan.has_attachments;
    if (scan.found_html) {
        s.body_type = "html";
        s.body = std::move(scan.html);
    } else {
        s.body_type = "text";
        s.body = std::move(scan.text);
    }
    return s;
}

std::string remove_header(std::string_view message, std::string_view name) {
    auto hb = parse_headers(message);
    if (!hb) return std::string(message);
    std::string out;
    out.reserve(message.size());
    std::size_t pos = 0;
    for (const auto& f : hb->fields) {
        if (!ascii::iequals(f.name, name)) continue;
        out.append(message.substr(pos, f.raw_begin - pos));
        pos = f.raw_end;
    }
    out.append(message.substr(pos));
    return out;
}

std::string replace_header(std::string_view message, std::string_view name, std::string_view value) {
    auto hb = parse_headers(message);
    if (!hb) return std::string(message);
    std::string eol = hb->crlf ? "\r\n" : "\n";
    std::string line = std::string(name) + ": " + one_line(value) + eol;
    for (const auto& f : hb->fields) {
        if (!ascii::iequals(f.name, name)) continue;
        std::string out(message.substr(0, f.raw_begin));
        out += line;
        out.append(message.substr(f.raw_end));
        return out;
    }
    std::size_t at = hb->fields.empty() ? 0 : hb->fields.back().raw_end;
    std::string out(message.substr(0, at));
    out += line;
    out.append(message.substr(at));
    return out;
}

std::string format_address(const Address& a) {
    std::string addr = one_line(a.address);
    if (a.name.empty()) return addr;
    std::string name = one_line(a.name);
    if (!is_ascii(name)) return encode_word_if_needed(name) + " <" + addr + ">";
    if (!needs_quoting(name)) return name + " <" + addr + ">";
    std::string q = "\"";
    for (char c : name) {
        if (c == '"' || c == '\\') q.push_back('\\');
        q.push_back(c);
    }
    return q + "\" <" + addr + ">";
}

std::string base64_lines(std::string_view bytes) {
    std::string b64 = auth::base64_encode(bytes);
    std::string out;
    out.reserve(b64.size() + b64.size() / 76 * 2 + 2);
    for (std::size_t i = 0; i < b64.size(); i += 76) {
        out.append(b64, i, 76);
        out += "\r\n";
    }
    return out;
}

std::string build_message(const BuildFields& f) {
    std::string m;
    auto list = [](const std::vector<Address>& v) {
        std::string s;
        for (const auto& a : v) {
            if (!s.empty()) s += ", ";
            s += format_address(a);
        }
        return s;
    };
    if (f.from) m += "From: " + format_address(*f.from) + "\r\n";
    if (!f.to.empty()) m += "To: " + list(f.to) + "\r\n";
    if (!f.cc.empty()) m += "Cc: " + list(f.cc) + "\r\n";
    if (!f.bcc.empty()) m += "Bcc: " + list(f.bcc) + "\r\n";
    m += "Subject: " + encode_word_if_needed(one_line(f.subject)) + "\r\n";
    m += "Date: " + format_rfc5322_date(f.date) + "\r\n";
    if (!f.message_id.empty()) m += "Message-ID: " + one_line(f.message_id) + "\r\n";
    if (!f.in_reply_to.empty()) m += fold_words("In-Reply-To", f.in_reply_to);
    if (!f.references.empty()) m += fold_words("References", f.references);
    for (const auto& [k, v] : f.extra_headers) m += one_line(k) + ": " + one_line(v) + "\r\n";
    m += "MIME-Version: 1.0\r\n";
    m += f.body_type == "html" ? "Content-Type: text/html; charset=\"utf-8\"\r\n"
                               : "Content-Type: text/plain; charset=\"utf-8\"\r\n";
    m += "Content-Transfer-Encoding: base64\r\n\r\n";
    m += base64_lines(f.body);
    return m;
}

std::string add_attachments(std::string_view message, const std::vector<Attachment>& attachments) {
    if (attachments.empty()) return std::string(message);
    auto hb = parse_headers(message);
    if (!hb) return std::string(message);
    std::string outer, inner;
    bool has_mime_version = false;
    for (const auto& f : hb->fields) {
        std::string_view raw = message.substr(f.raw_begin, f.raw_end - f.raw_begin);
        std::string lname = lower(f.name);
        if (lname.rfind("content-", 0) == 0) {
            inner.append(raw);
        } else {
            if (lname == "mime-version") has_mime_version = true;
            outer.append(raw);
        }
        // normalise a last line without terminator
        std::string& dst = lname.rfind("content-", 0) == 0 ? inner : outer;
        if (dst.empty() || dst.back() != '\n') dst += "\r\n";
    }
    if (inner.empty()) inner = "Content-Type: text/plain; charset=\"us-ascii\"\r\n";
    std::string boundary = "----=_Part_" + auth::hex_lower(auth::random_bytes(12));
    std::string m = outer;
    if (!has_mime_version) m += "MIME-Version: 1.0\r\n";
    m += "Content-Type: multipart/mixed; boundary=\"" + boundary + "\"\r\n\r\n";
    m += "--" + boundary + "\r\n" + inner + "\r\n";
    m.append(message.substr(std::min(hb->body_offset, message.size())));
    if (m.back() != '\n') m += "\r\n";
    for (const auto& a : attachments) {
        std::string name = one_line(a.name);
        std::string qname;
        for (char c : name) {
            if (c == '"' || c == '\\') qname.push_back('\\');
            qname.push_back(c);
        }
        if (!is_ascii(name)) qname = encode_word_if_needed(name);
        m += "--" + boundary + "\r\n";
        m += "Content-Type: " +
             one_line(a.content_type.empty() ? "application/octet-stream" : a.content_type) + "; name=\"" +
             qname + "\"\r\n";
        m += std::string("Content-Disposition: ") + (a.is_inline ? "inline" : "attachment") +
             "; filename=\"" + qname + "\"\r\n";
        if (!a.content_id.empty()) m += "Content-ID: <" + one_line(a.content_id) + ">\r\n";
        m += "Content-Transfer-Encoding: base64\r\n\r\n";
        m += base64_lines(a.bytes);
    }
    m += "--" + boundary + "--\r\n";
    return m;
}

std::string format_rfc5322_date(std::int64_t t) {
    std::int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
    std::int64_t secs = t - days * 86400;
    int y;
    unsigned m, d;
    civil_from_days(days, y, m, d);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02u %s %04d %02d:%02d:%02d +0000", kDays[((days % 7) + 7) % 7], d,
                  kMonths[m - 1], y, static_cast<int>(secs / 3600), static_cast<int>(secs / 60 % 60),
                  static_cast<int>(secs % 60));
    return buf;
}

std::string format_iso(std::int64_t t) {
    std::int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
    std::int64_t secs = t - days * 86400;
    int y;
    unsigned m, d;
    civil_from_days(days, y, m, d);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", y, m, d, static_cast<int>(secs / 3600),
                  static_cast<int>(secs / 60 % 60), static_cast<int>(secs % 60));
    return buf;
}

namespace {
bool read_int(std::string_view s, std::size_t& pos, std::size_t min_digits, std::size_t max_digits,
              int& out) {
    std::size_t start = pos;
    out = 0;
    while (pos < s.size() && pos - start < max_digits && std::isdigit(static_cast<unsigned char>(s[pos])))
        out = out * 10 + (s[pos++] - '0');
    return pos - start >= min_digits;
}
void skip_ws(std::string_view s, std::size_t& pos) {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t')) ++pos;
}
}  // namespace

std::optional<std::int64_t> parse_rfc5322_date(std::string_view text) {
    std::string_view s = trim(text);
    std::size_t pos = 0;
    auto comma = s.find(',');
    if (comma != std::string_view::npos && comma < 10) pos = comma + 1;
    skip_ws(s, pos);
    int day, year, hh, mm, ss = 0;
    if (!read_int(s, pos, 1, 2, day)) return std::nullopt;
    skip_ws(s, pos);
    if (pos + 3 > s.size()) return std::nullopt;
    std::string_view mon = s.substr(pos, 3);
    int month = 0;
    for (int i = 0; i < 12; ++i)
        if (ascii::iequals(mon, kMonths[static_cast<std::size_t>(i)])) month = i + 1;
    if (month == 0) return std::nullopt;
    pos += 3;
    skip_ws(s, pos);
    if (!read_int(s, pos, 2, 4, year)) return std::nullopt;
    if (year < 50)
        year += 2000;
    else if (year < 1000)
        year += 1900;
    skip_ws(s, pos);
    if (!read_int(s, pos, 1, 2, hh) || pos >= s.size() || s[pos++] != ':' || !read_int(s, pos, 2, 2, mm))
        return std::nullopt;
    if (pos < s.size() && s[pos] == ':') {
        ++pos;
        if (!read_int(s, pos, 2, 2, ss)) return std::nullopt;
    }
    skip_ws(s, pos);
    int offset = 0;
    if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
        int sign = s[pos] == '-' ? -1 : 1;
        ++pos;
        int z;
        if (!read_int(s, pos, 4, 4, z)) return std::nullopt;
        offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    }
    if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) return std::nullopt;
    std::int64_t days = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
    return days * 86400 + hh * 3600 + mm * 60 + ss - offset;
}

std::optional<std::int64_t> parse_iso(std::string_view text) {
    std::string_view s = trim(text);
    std::size_t pos = 0;
    int y, mo, d, hh = 0, mm = 0, ss = 0;
    if (!read_int(s, pos, 4, 4, y) || pos >= s.size() || s[pos++] != '-' || !read_int(s, pos, 2, 2, mo) ||
        pos >= s.size() || s[pos++] != '-' || !read_int(s, pos, 2, 2, d))
        return std::nullopt;
    if (pos < s.size() && (s[pos] == 'T' || s[pos] == 't' || s[pos] == ' ')) {
        ++pos;
        if (!read_int(s, pos, 2, 2, hh) || pos >= s.size() || s[pos++] != ':' || !read_int(s, pos, 2, 2, mm))
            return std::nullopt;
        if (pos < s.size() && s[pos] == ':') {
            ++pos;
            if (!read_int(s, pos, 2, 2, ss)) return std::nullopt;
        }
        if (pos < s.size() && s[pos] == '.') {
            ++pos;
            while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) ++pos;
        }
    }
    int offset = 0;
    if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
        ++pos;
    } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
        int sign = s[pos] == '-' ? -1 : 1;
        ++pos;
        int oh, om = 0;
        if (!read_int(s, pos, 2, 2, oh)) return std::nullopt;
        if (pos < s.size() && s[pos] == ':') ++pos;
        read_int(s, pos, 0, 2, om);
        offset = sign * (oh * 3600 + om * 60);
    }
    if (pos != s.size() || mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60)
        return std::nullopt;
    std::int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
    return days * 86400 + hh * 3600 + mm * 60 + ss - offset;
}

}  // namespace gb::sandbox::mime
