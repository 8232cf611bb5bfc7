// The sandbox's socket-free request/response types.
//
// The HTTPS front end (server.cpp) parses a request with Beast, turns it into an HttpRequest and hands it
// to a handler (identity, Graph, upload, admin); handlers are pure functions of the request and the
// tenant state, so they are unit-tested without sockets.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gb::sandbox {

struct HttpRequest {
    std::string method;  // "GET", "POST", ...
    std::string target;  // as sent: path plus query, still percent-encoded
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    // Case-insensitive header lookup (first match).
    std::optional<std::string_view> header(std::string_view name) const;
    // Path part of target (before '?'), still percent-encoded.
    std::string_view path() const;
    // Decoded query parameter (first match), e.g. "$top".
    std::optional<std::string> query(std::string_view name) const;
};

struct HttpResponse {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    bool close = false;  // close the connection after this response

    HttpResponse& set_header(std::string name, std::string value);
    std::optional<std::string_view> header(std::string_view name) const;

    static HttpResponse json(int status, std::string body);
    static HttpResponse empty(int status);
};

// Percent-decoding for paths and x-www-form-urlencoded bodies ('+' is a space only when form=true).
// Returns nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view in, bool form);
// Parse an application/x-www-form-urlencoded body; nullopt if malformed. Repeated keys are kept.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_form(std::string_view body);
std::string percent_encode(std::string_view in);

bool iequals(std::string_view a, std::string_view b);

}  // namespace gb::sandbox
