#include "graph/api/errors.h"

#include <rapidjson/document.h>

#include <charconv>
#include <ctime>

namespace gb::graph {
namespace {

std::string member_string(const rapidjson::Value& obj, const char* key) {
    if (!obj.IsObject()) return {};
    auto it = obj.FindMember(key);
    if (it == obj.MemberEnd() || !it->value.IsString()) return {};
    return std::string(it->value.GetString(), it->value.GetStringLength());
}

}  // namespace

bool TokenError::has_code(std::int64_t code) const {
    for (auto c : codes)
        if (c == code) return true;
    return false;
}

std::optional<TokenError> parse_token_error(std::string_view body) {
    rapidjson::Document doc;
    doc.Parse(body.data(), body.size());
    if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
    TokenError e;
    e.error = member_string(doc, "error");
    if (e.error.empty()) return std::nullopt;
    e.description = member_string(doc, "error_description");
    e.trace_id = member_string(doc, "trace_id");
    e.correlation_id = member_string(doc, "correlation_id");
    auto it = doc.FindMember("error_codes");
    if (it != doc.MemberEnd() && it->value.IsArray()) {
        for (const auto& v : it->value.GetArray())
            if (v.IsInt64()) e.codes.push_back(v.GetInt64());
    }
    return e;
}

std::optional<GraphError> parse_graph_error(std::string_view body) {
    rapidjson::Document doc;
    doc.Parse(body.data(), body.size());
    if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
    auto it = doc.FindMember("error");
    if (it == doc.MemberEnd() || !it->value.IsObject()) return std::nullopt;
    GraphError e;
    e.code = member_string(it->value, "code");
    e.message = member_string(it->value, "message");
    auto inner = it->value.FindMember("innerError");
    if (inner != it->value.MemberEnd()) e.request_id = member_string(inner->value, "request-id");
    if (e.code.empty()) return std::nullopt;
    return e;
}

FailureKind classify(int status, std::string_view code) {
    if (status == 429) return FailureKind::Throttled;
    if (status == 401) return FailureKind::Auth;
    // The app may not act on this mailbox: admin consent missing (no roles in the token), Mail.Send not
    // granted, or an RBAC / application access policy scope that leaves the mailbox out. All are fixed by
    // an admin (and such changes take up to an hour or two to apply): keep the mail and retry, as for a
    // token failure, rather than bounce it. Send As denied (a foreign From) is about the message: final.
    if (status == 403 && (code == "ErrorAccessDenied" || code == "Authorization_RequestDenied" ||
                          code == "AccessDenied" || code == "Forbidden"))
        return FailureKind::Auth;
    if (status == 408 || status == 500 || status == 502 || status == 503 || status == 504) return FailureKind::Transient;
    if (code == "ServiceNotAvailable" || code == "serviceNotAvailable" || code == "ErrorServerBusy" ||
        code == "activityLimitReached")
        return FailureKind::Transient;
    return FailureKind::Permanent;
}

std::string internet_message_id_filter(std::string_view message_id) {
    std::string filter = "internetMessageId eq '";
    for (char c : message_id) {
        if (c == '\'') filter.push_back('\'');
        filter.push_back(c);
    }
    return filter + "'";
}

std::optional<std::int64_t> parse_retry_after(std::string_view value, std::int64_t now_unix) {
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (value.empty()) return std::nullopt;
    std::int64_t seconds = 0;
    auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec == std::errc() && ptr == value.data() + value.size()) {
        if (seconds < 0) return std::nullopt;
        return seconds;
    }
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    std::tm tm{};
    std::string text(value);
    const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end) return std::nullopt;
    std::int64_t when = timegm(&tm);
    return when > now_unix ? when - now_unix : 0;
}

}  // namespace gb::graph
