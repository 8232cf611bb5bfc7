// Graph and identity-platform error bodies, parsed into values the bridge can branch on.
//
// Branch on `error` / `error_codes` / `error.code`, never on description text (GRAPH-FACTS A.3, C.1).
// Input is a remote service's response body: parsing never throws and tolerates any JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gb::graph {

// Token endpoint error: {"error","error_description","error_codes":[...],"trace_id","correlation_id"}.
struct TokenError {
    std::string error;        // "invalid_client", ...
    std::string description;  // error_description (may contain trace ids; not for branching)
    std::vector<std::int64_t> codes;  // AADSTS codes
    std::string trace_id;
    std::string correlation_id;
    bool has_code(std::int64_t code) const;
};
std::optional<TokenError> parse_token_error(std::string_view body);

// Graph error: {"error":{"code","message","innerError":{"request-id","date"}}}.
struct GraphError {
    std::string code;
    std::string message;
    std::string request_id;
};
std::optional<GraphError> parse_graph_error(std::string_view body);

// What the bridge does with a failed Graph or token response.
enum class FailureKind { Throttled, Transient, Auth, Permanent };
FailureKind classify(int http_status, std::string_view graph_code);

// The OData $filter selecting messages by Message-ID: internetMessageId eq '<id>' (a quote in the id
// doubled, as OData string literals want). Not URL-encoded.
std::string internet_message_id_filter(std::string_view message_id);

// Retry-After (RFC 9110: delay-seconds or an HTTP-date); nullopt if absent or unparsable.
// Only the delay-seconds form is used by Graph; dates are converted against now_unix.
std::optional<std::int64_t> parse_retry_after(std::string_view value, std::int64_t now_unix);

}  // namespace gb::graph
