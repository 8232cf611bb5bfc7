// A small blocking HTTPS client on libcurl for integration tests: real TLS, CA verification.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace gb::test {

struct HttpResult {
    long status = 0;        // 0 when the transfer failed
    int curl_code = 0;      // CURLcode
    std::string error;      // curl's message on failure
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    std::string header(const std::string& lower_name) const;
};

struct HttpCall {
    std::string method = "GET";
    std::string url;
    std::vector<std::string> headers;  // "Name: value"
    std::string body;
    std::string ca_file;               // trust anchor (the sandbox CA)
    long timeout_ms = 30000;
};

HttpResult https(const HttpCall& call);

// application/x-www-form-urlencoded body from pairs.
std::string form(const std::vector<std::pair<std::string, std::string>>& fields);

}  // namespace gb::test
