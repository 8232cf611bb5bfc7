#include "proxy/sync/graph_source.h"

#include <fmt/format.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <ctime>
#include <map>

#include "auth/crypto.h"
#include "common/text.h"
#include "graph/api/errors.h"
#include "graph/mail/deliverer.h"

namespace gb::sync {
namespace {

const char* kPreferImmutable = "IdType=\"ImmutableId\"";

// Everything IMAP needs from a message in one delta item: flags, dates, categories, and through MAPI
// properties the size (PidTagMessageSize) and the last verb (PidTagLastVerbExecuted -> \Answered,
// $Forwarded).
const char* kSelect = "receivedDateTime,isRead,isDraft,flag,categories";
const char* kExpand = "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08' or id eq 'Integer 0x1081')";

std::string str_member(const rapidjson::Value& o, const char* name) {
    if (!o.IsObject()) return {};
    auto it = o.FindMember(name);
    if (it == o.MemberEnd() || !it->value.IsString()) return {};
    return std::string(it->value.GetString(), it->value.GetStringLength());
}

bool bool_member(const rapidjson::Value& o, const char* name) {
    auto it = o.FindMember(name);
    return it != o.MemberEnd() && it->value.IsBool() && it->value.GetBool();
}

int days_from_civil(int y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int>(doe) - 719468;
}

RemoteMessage parse_item(const rapidjson::Value& v) {
    RemoteMessage m;
    m.graph_id = str_member(v, "id");
    if (v.HasMember("@removed")) {
        m.removed = true;
        return m;
    }
    if (bool_member(v, "isRead")) m.flags |= kSeen;
    if (bool_member(v, "isDraft")) m.flags |= kDraft;
    if (auto f = v.FindMember("flag"); f != v.MemberEnd() && f->value.IsObject() &&
                                       str_member(f->value, "flagStatus") == "flagged")
        m.flags |= kFlagged;
    if (auto c = v.FindMember("categories"); c != v.MemberEnd() && c->value.IsArray())
        for (const auto& k : c->value.GetArray())
            if (k.IsString() && k.GetStringLength() > 0 && m.keywords.size() < 100)
                m.keywords.emplace_back(k.GetString(), k.GetStringLength());
    if (auto t = parse_graph_time(str_member(v, "receivedDateTime"))) m.internal_date = *t;
    if (auto p = v.FindMember("singleValueExtendedProperties"); p != v.MemberEnd() && p->value.IsArray()) {
        for (const auto& prop : p->value.GetArray()) {
            std::string id = str_member(prop, "id"), value = str_member(prop, "value");
            std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return std::tolower(c); });
            long long n = std::atoll(value.c_str());
            if (id == "integer 0xe08" || id == "integer 0x0e08") m.size = n > 0 ? static_cast<std::uint64_t>(n) : 0;
            if (id == "integer 0x1081") {
                if (n == 102 || n == 103) m.flags |= kAnswered;
                if (n == 104) m.flags |= kForwarded;
            }
        }
    }
    return m;
}

}  // namespace

std::optional<std::int64_t> parse_graph_time(std::string_view t) {
    // YYYY-MM-DDTHH:MM:SS[.fff][Z|+hh:mm|-hh:mm]
    auto num = [&](std::size_t pos, std::size_t len) -> int {
        int v = 0;
        for (std::size_t i = pos; i < pos + len; ++i) {
            if (i >= t.size() || t[i] < '0' || t[i] > '9') return -1;
            v = v * 10 + (t[i] - '0');
        }
        return v;
    };
    if (t.size() < 19 || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != 't') || t[13] != ':' || t[16] != ':')
        return std::nullopt;
    int y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2), s = num(17, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60)
        return std::nullopt;
    std::size_t pos = 19;
    if (pos < t.size() && t[pos] == '.')
        for (++pos; pos < t.size() && t[pos] >= '0' && t[pos] <= '9'; ++pos) {
        }
    std::int64_t offset = 0;
    if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
        int oh = num(pos + 1, 2), om = num(pos + 4, 2);
        if (oh < 0 || om < 0) return std::nullopt;
        offset = (t[pos] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    }
    std::int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
    return days * 86400 + h * 3600 + mi * 60 + s - offset;
}

GraphSource::GraphSource(http::GraphClient& graph, std::string graph_url, int page_size, http::Client* upload)
    : graph_(graph), graph_url_(std::move(graph_url)), page_size_(page_size), upload_(upload) {
    while (!graph_url_.empty() && graph_url_.back() == '/') graph_url_.pop_back();
}

http::GraphResult GraphSource::get(const std::string& path_or_link, bool json) {
    http::Request req;
    req.method = "GET";
    req.url = path_or_link;
    std::string prefer = kPreferImmutable;
    if (json) prefer += fmt::format(", odata.maxpagesize={}", page_size_);
    req.headers.emplace_back("Prefer", prefer);
    if (json) req.headers.emplace_back("Accept", "application/json");
    req.timeout_ms = timeout_ms_;
    return graph_.call(std::move(req));
}

SourceError GraphSource::error_of(const http::GraphResult& r) const {
    SourceError e;
    const auto& resp = r.response;
    if (r.token_error) {
        e.kind = r.token_error->transient ? SourceError::Kind::Transient : SourceError::Kind::Permanent;
        e.message = "no access token: " + r.token_error->explanation;
        return e;
    }
    if (resp.status == 0) {
        e.message = resp.error.empty() ? "transport failure" : resp.error;
        return e;
    }
    std::string code;
    if (auto g = graph::parse_graph_error(resp.body)) {
        code = g->code;
        e.message = fmt::format("HTTP {} {}: {}", resp.status, g->code, g->message);
    } else {
        e.message = fmt::format("HTTP {}", resp.status);
    }
    if (auto ra = resp.header("retry-after"))
        e.retry_after = graph::parse_retry_after(*ra, static_cast<std::int64_t>(std::time(nullptr)));
    std::string lc = code;
    std::transform(lc.begin(), lc.end(), lc.begin(), [](unsigned char c) { return std::tolower(c); });
    if (resp.status == 410 || lc == "syncstatenotfound" || lc == "resyncrequired" || lc == "syncstateinvalid" ||
        lc == "errorinvalidsyncstatedata") {
        e.kind = SourceError::Kind::SyncStateLost;
        return e;
    }
    if (resp.status == 404) {
        e.kind = SourceError::Kind::NotFound;
        return e;
    }
    switch (graph::classify(static_cast<int>(resp.status), code)) {
        case graph::FailureKind::Throttled:
            e.kind = SourceError::Kind::Throttled;
            break;
        case graph::FailureKind::Transient:
        case graph::FailureKind::Auth:
            e.kind = SourceError::Kind::Transient;
            break;
        case graph::FailureKind::Permanent:
            e.kind = SourceError::Kind::Permanent;
            break;
    }
    return e;
}

SourceResult<std::vector<RemoteFolder>> GraphSource::folders(const std::string& mailbox) {
    std::string user = "/v1.0/users/" + url_encode(mailbox);
    std::vector<RemoteFolder> out;
    // Breadth-first over the tree: root children, then childFolders of folders that have children.
    std::vector<std::pair<std::string, std::string>> pending = {{"", user + "/mailFolders?$top=250"}};
    std::size_t guard = 0;
    while (!pending.empty()) {
        auto [parent, url] = pending.back();
        pending.pop_back();
        while (!url.empty()) {
            if (++guard > 10000) return SourceError{SourceError::Kind::Permanent, "folder tree too large", {}};
            auto r = get(url);
            if (r.response.status != 200) return error_of(r);
            rapidjson::Document d;
            d.Parse(r.response.body.data(), r.response.body.size());
            if (d.HasParseError() || !d.IsObject() || !d.HasMember("value") || !d["value"].IsArray())
                return SourceError{SourceError::Kind::Transient, "malformed mailFolders response", {}};
            for (const auto& f : d["value"].GetArray()) {
                if (str_member(f, "@odata.type") == "#microsoft.graph.mailSearchFolder") continue;
                RemoteFolder rf;
                rf.id = str_member(f, "id");
                rf.parent_id = parent;
                rf.name = str_member(f, "displayName");
                if (rf.id.empty()) continue;
                auto cc = f.FindMember("childFolderCount");
                if (cc != f.MemberEnd() && cc->value.IsInt() && cc->value.GetInt() > 0)
                    pending.emplace_back(rf.id, user + "/mailFolders/" + url_encode(rf.id) + "/childFolders?$top=250");
                out.push_back(std::move(rf));
            }
            std::string next = str_member(d, "@odata.nextLink");
            url.clear();
            if (!next.empty()) {
                if (next.rfind(graph_url_ + "/", 0) != 0)
                    return SourceError{SourceError::Kind::Permanent, "nextLink outside the Graph origin", {}};
                url = next.substr(graph_url_.size());
            }
        }
    }
    // Well-known folders, resolved by name (v1.0 has no wellKnownName property).
    std::map<std::string, std::string> by_id;
    for (const char* wk : {"inbox", "sentitems", "drafts", "deleteditems", "junkemail", "archive"}) {
        auto r = get(user + "/mailFolders/" + wk + "?$select=id");
        if (r.response.status == 404) continue;  // e.g. no archive folder
        if (r.response.status != 200) return error_of(r);
        rapidjson::Document d;
        d.Parse(r.response.body.data(), r.response.body.size());
        if (d.HasParseError() || !d.IsObject()) continue;
        by_id[str_member(d, "id")] = wk;
    }
    for (auto& f : out)
        if (auto it = by_id.find(f.id); it != by_id.end()) f.well_known = it->second;
    return out;
}

std::string GraphSource::initial_delta_path(const std::string& mailbox, const std::string& folder_id) const {
    return "/v1.0/users/" + url_encode(mailbox) + "/mailFolders/" + url_encode(folder_id) +
           "/messages/delta?$select=" + url_encode(kSelect, ",") + "&$expand=" + url_encode(kExpand);
}

SourceResult<DeltaPage> GraphSource::delta(const std::string& mailbox, const std::string& folder_id,
                                           const std::string& link) {
    std::string url;
    if (link.empty()) {
        url = initial_delta_path(mailbox, folder_id);
    } else {
        if (link.rfind(graph_url_ + "/", 0) != 0)
            return SourceError{SourceError::Kind::SyncStateLost, "stored delta link is not on the Graph origin", {}};
        url = link.substr(graph_url_.size());
    }
    auto r = get(url);
    if (r.response.status != 200) return error_of(r);
    return parse_delta_page(r.response.body);
}

SourceResult<DeltaPage> parse_delta_page(std::string_view body) {
    rapidjson::Document d;
    d.Parse(body.data(), body.size());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("value") || !d["value"].IsArray())
        return SourceError{SourceError::Kind::Transient, "malformed delta response", {}};
    DeltaPage page;
    for (const auto& v : d["value"].GetArray()) {
        RemoteMessage m = parse_item(v);
        if (!m.graph_id.empty()) page.items.push_back(std::move(m));
    }
    page.next_link = str_member(d, "@odata.nextLink");
    page.delta_link = str_member(d, "@odata.deltaLink");
    if (page.next_link.empty() == page.delta_link.empty())
        return SourceError{SourceError::Kind::Transient, "delta page without exactly one of nextLink/deltaLink", {}};
    return page;
}

SourceResult<std::string> GraphSource::mime(const std::string& mailbox, const std::string& graph_id) {
    auto r = get("/v1.0/users/" + url_encode(mailbox) + "/messages/" + url_encode(graph_id) + "/$value", false);
    if (r.response.status != 200) return error_of(r);
    return std::move(r.response.body);
}

namespace {

std::string json_quote(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(c);
        } else if (u < 0x20) {
            out += fmt::format("\\u{:04x}", u);
        } else {
            out.push_back(c);
        }
    }
    return out + "\"";
}

std::string id_of(const http::GraphResult& r) {
    rapidjson::Document d;
    d.Parse(r.response.body.data(), r.response.body.size());
    if (d.HasParseError() || !d.IsObject()) return {};
    return str_member(d, "id");
}

}  // namespace

std::string GraphSource::user_path(const std::string& mailbox) const { return "/v1.0/users/" + url_encode(mailbox); }

http::GraphResult GraphSource::send(const std::string& method, const std::string& path, std::string body,
                                    const char* content_type) {
    http::Request req;
    req.method = method;
    req.url = path;
    req.headers.emplace_back("Prefer", kPreferImmutable);
    if (!body.empty()) req.headers.emplace_back("Content-Type", content_type);
    req.headers.emplace_back("Accept", "application/json");
    req.body = std::move(body);
    req.timeout_ms = timeout_ms_;
    return graph_.call(std::move(req));
}

SourceResult<std::string> GraphSource::move(const std::string& mailbox, const std::string& graph_id,
                                            const std::string& destination) {
    auto r = send("POST", user_path(mailbox) + "/messages/" + url_encode(graph_id) + "/move",
                  "{\"destinationId\":" + json_quote(destination) + "}");
    if (r.response.status != 201 && r.response.status != 200) return error_of(r);
    std::string id = id_of(r);
    return id.empty() ? graph_id : id;
}

SourceResult<std::string> GraphSource::copy(const std::string& mailbox, const std::string& graph_id,
                                            const std::string& destination) {
    auto r = send("POST", user_path(mailbox) + "/messages/" + url_encode(graph_id) + "/copy",
                  "{\"destinationId\":" + json_quote(destination) + "}");
    if (r.response.status != 201 && r.response.status != 200) return error_of(r);
    std::string id = id_of(r);
    if (id.empty()) return SourceError{SourceError::Kind::Transient, "copy answered without an id", {}};
    return id;
}

std::optional<SourceError> GraphSource::update(const std::string& mailbox, const std::string& graph_id,
                                               const Patch& p) {
    if (p.empty()) return std::nullopt;
    std::string body = "{";
    auto add = [&](const std::string& field) { body += (body.size() > 1 ? "," : "") + field; };
    if (p.read) add(std::string("\"isRead\":") + (*p.read ? "true" : "false"));
    if (p.flagged) add(std::string("\"flag\":{\"flagStatus\":\"") + (*p.flagged ? "flagged" : "notFlagged") + "\"}");
    if (p.categories) {
        std::string list;
        for (const auto& c : *p.categories) list += (list.empty() ? "" : ",") + json_quote(c);
        add("\"categories\":[" + list + "]");
    }
    if (p.last_verb)
        add(fmt::format("\"singleValueExtendedProperties\":[{{\"id\":\"Integer 0x1081\",\"value\":\"{}\"}}]",
                        *p.last_verb));
    body += "}";
    auto r = send("PATCH", user_path(mailbox) + "/messages/" + url_encode(graph_id), std::move(body));
    if (r.response.status == 200 || r.response.status == 204) return std::nullopt;
    return error_of(r);
}

std::optional<SourceError> GraphSource::remove(const std::string& mailbox, const std::string& graph_id,
                                               bool permanent) {
    std::string path = user_path(mailbox) + "/messages/" + url_encode(graph_id);
    auto r = permanent ? send("POST", path + "/permanentDelete", "") : send("DELETE", path, "");
    if (r.response.status == 204 || r.response.status == 200) return std::nullopt;
    return error_of(r);
}

SourceResult<RemoteMessage> GraphSource::create(const std::string& mailbox, const std::string& folder_id,
                                                const std::string& body, bool mime,
                                                const std::vector<mail::Attachment>& attachments) {
    if (!attachments.empty() && !upload_)
        return SourceError{SourceError::Kind::Permanent, "attachments too big for one request cannot be uploaded", {}};
    auto r = send("POST", user_path(mailbox) + "/mailFolders/" + url_encode(folder_id) + "/messages",
                  mime ? auth::base64_encode(body) : body, mime ? "text/plain" : "application/json");
    if (r.response.status != 201 && r.response.status != 200) return error_of(r);
    rapidjson::Document d;
    d.Parse(r.response.body.data(), r.response.body.size());
    if (d.HasParseError() || !d.IsObject())
        return SourceError{SourceError::Kind::Transient, "malformed create response", {}};
    RemoteMessage m = parse_item(d);
    if (m.graph_id.empty()) return SourceError{SourceError::Kind::Transient, "create answered without an id", {}};
    if (attachments.empty()) return m;
    // The big attachments: a POST or an upload session each (the deliverer's code). A failure deletes the
    // half-made message, so the client's retry does not leave a copy without its attachments behind.
    const std::string path = user_path(mailbox) + "/messages/" + url_encode(m.graph_id);
    mail::GraphCall call = [this](http::Request req) {
        req.headers.emplace_back("Prefer", kPreferImmutable);
        req.timeout_ms = timeout_ms_;
        return graph_.call(std::move(req));
    };
    std::vector<std::string> ids;
    mail::DeliveryOptions options;
    options.timeout_ms = timeout_ms_;
    for (const auto& a : attachments) {
        if (auto failed = mail::attach_file(call, *upload_, path, a, options, ids)) {
            send("DELETE", path, "");
            SourceError e;
            e.kind = failed->outcome == mail::Outcome::Permanent ? SourceError::Kind::Permanent
                     : failed->http_status == 429                ? SourceError::Kind::Throttled
                                                                 : SourceError::Kind::Transient;
            e.message = failed->detail;
            e.retry_after = failed->retry_after;
            return e;
        }
    }
    return m;
}

SourceResult<std::string> GraphSource::find_by_message_id(const std::string& mailbox, const std::string& folder_id,
                                                          const std::string& message_id) {
    auto r = get(user_path(mailbox) + "/mailFolders/" + url_encode(folder_id) + "/messages?$select=id&$top=2&$filter=" +
                 url_encode(graph::internet_message_id_filter(message_id)));
    if (r.response.status != 200) return error_of(r);
    rapidjson::Document d;
    d.Parse(r.response.body.data(), r.response.body.size());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("value") || !d["value"].IsArray())
        return SourceError{SourceError::Kind::Transient, "malformed messages response", {}};
    for (const auto& v : d["value"].GetArray())
        if (auto id = str_member(v, "id"); !id.empty()) return id;
    return SourceError{SourceError::Kind::NotFound, "no message with that Message-ID", {}};
}

SourceResult<RemoteFolder> GraphSource::create_folder(const std::string& mailbox, const std::string& parent_id,
                                                      const std::string& name) {
    std::string path = parent_id.empty() ? user_path(mailbox) + "/mailFolders"
                                         : user_path(mailbox) + "/mailFolders/" + url_encode(parent_id) + "/childFolders";
    auto r = send("POST", path, "{\"displayName\":" + json_quote(name) + "}");
    if (r.response.status != 201 && r.response.status != 200) return error_of(r);
    RemoteFolder f;
    f.id = id_of(r);
    f.parent_id = parent_id;
    f.name = name;
    if (f.id.empty()) return SourceError{SourceError::Kind::Transient, "folder create answered without an id", {}};
    return f;
}

std::optional<SourceError> GraphSource::rename_folder(const std::string& mailbox, const std::string& folder_id,
                                                      const std::string& name) {
    auto r = send("PATCH", user_path(mailbox) + "/mailFolders/" + url_encode(folder_id),
                  "{\"displayName\":" + json_quote(name) + "}");
    if (r.response.status == 200 || r.response.status == 204) return std::nullopt;
    return error_of(r);
}

std::optional<SourceError> GraphSource::move_folder(const std::string& mailbox, const std::string& folder_id,
                                                    const std::string& parent_id) {
    auto r = send("POST", user_path(mailbox) + "/mailFolders/" + url_encode(folder_id) + "/move",
                  "{\"destinationId\":" + json_quote(parent_id.empty() ? "msgfolderroot" : parent_id) + "}");
    if (r.response.status == 200 || r.response.status == 201) return std::nullopt;
    return error_of(r);
}

std::optional<SourceError> GraphSource::delete_folder(const std::string& mailbox, const std::string& folder_id) {
    auto r = send("DELETE", user_path(mailbox) + "/mailFolders/" + url_encode(folder_id), "");
    if (r.response.status == 204 || r.response.status == 200) return std::nullopt;
    return error_of(r);
}

}  // namespace gb::sync
