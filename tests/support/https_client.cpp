#include "tests/support/https_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>

namespace gb::test {
namespace {

std::once_flag g_init;

size_t on_body(char* data, size_t size, size_t n, void* user) {
    static_cast<std::string*>(user)->append(data, size * n);
    return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
    std::string line(data, size * n);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
        std::string value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
        while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.pop_back();
        static_cast<HttpResult*>(user)->headers.emplace_back(name, value);
    }
    return size * n;
}

}  // namespace

std::string HttpResult::header(const std::string& lower_name) const {
    for (const auto& [k, v] : headers)
        if (k == lower_name) return v;
    return {};
}

HttpResult https(const HttpCall& call) {
    std::call_once(g_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    HttpResult r;
    CURL* h = curl_easy_init();
    char errbuf[CURL_ERROR_SIZE] = {};
    curl_slist* headers = nullptr;
    for (const auto& hd : call.headers) headers = curl_slist_append(headers, hd.c_str());
    curl_easy_setopt(h, CURLOPT_URL, call.url.c_str());
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, call.method.c_str());
    if (call.method != "GET" && call.method != "DELETE") {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, call.body.data());
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body.size()));
    }
    if (call.method == "HEAD") curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (!call.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, call.ca_file.c_str());
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, call.timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    CURLcode rc = curl_easy_perform(h);
    r.curl_code = static_cast<int>(rc);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    } else {
        r.error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    return r;
}

std::string form(const std::vector<std::pair<std::string, std::string>>& fields) {
    std::string out;
    CURL* h = curl_easy_init();
    for (const auto& [k, v] : fields) {
        char* ek = curl_easy_escape(h, k.c_str(), static_cast<int>(k.size()));
        char* ev = curl_easy_escape(h, v.c_str(), static_cast<int>(v.size()));
        if (!out.empty()) out += "&";
        out += std::string(ek) + "=" + ev;
        curl_free(ek);
        curl_free(ev);
    }
    curl_easy_cleanup(h);
    return out;
}

}  // namespace gb::test
