// Small text helpers shared by the CLI, the token broker, the sandbox and the mail readers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gb {

// RFC 3986 percent-encoding of everything but unreserved characters (ALPHA DIGIT - . _ ~), plus the
// characters in `keep` (e.g. "@" for a mailbox in a URL path). Also right for form field values.
std::string url_encode(std::string_view in, std::string_view keep = {});

// "2026-11-29 05:03:50Z" (UTC) from unix seconds.
std::string utc_time(std::int64_t unix_seconds);

// "Sun, 29 Nov 2026 05:03:50 +0000" (RFC 5322 date-time, UTC) from unix seconds.
std::string rfc5322_date(std::int64_t unix_seconds);

// `s` without leading and trailing SP, HTAB, CR and LF (a header value, a folded line).
constexpr std::string_view trim_space(std::string_view s) {
    auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && ws(s.front())) s.remove_prefix(1);
    while (!s.empty() && ws(s.back())) s.remove_suffix(1);
    return s;
}

// Bare LF and bare CR become CRLF; CRLF is kept.
std::string normalize_crlf(std::string_view raw);

}  // namespace gb
