#include "graph/http/http_client.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <atomic>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace gb::http {
namespace {

std::once_flag g_global_init;

struct Sink {
    std::string* body;
    std::size_t limit;
    bool overflow = false;
};

size_t on_body(char* data, size_t size, size_t n, void* user) {
    auto* sink = static_cast<Sink*>(user);
    std::size_t bytes = size * n;
    if (sink->body->size() + bytes > sink->limit) {
        sink->overflow = true;
        return 0;  // aborts the transfer
    }
    sink->body->append(data, bytes);
    return bytes;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* headers = static_cast<std::vector<std::pair<std::string, std::string>>*>(user);
    std::string_view line(data, size * n);
    if (line.rfind("HTTP/", 0) == 0) headers->clear();  // a new response (after 100-continue or a redirect)
    auto colon = line.find(':');
    if (colon != std::string_view::npos && headers->size() < 200) {
        std::string name(line.substr(0, colon));
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
        while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
            value.remove_suffix(1);
        headers->emplace_back(std::move(name), std::string(value));
    }
    return size * n;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {};
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

std::optional<std::string> Response::header(std::string_view lower_name) const {
    for (const auto& [k, v] : headers)
        if (k == lower_name) return v;
    return std::nullopt;
}

struct Client::Impl {
    ClientOptions options;
    // The system bundle plus the extra CA file, parsed once. Handing curl the PEM made OpenSSL parse ~140 certificates for every new
    // connection (profiled: most of the bridge's CPU when several mailboxes deliver at once).
    X509_STORE* store = nullptr;
    CURLSH* share = nullptr;
    // Freed here, not in ~Client: a constructor that throws (a bad CA file) must not leak them.
    ~Impl() {
        if (share) curl_share_cleanup(share);
        if (store) X509_STORE_free(store);
    }
    std::mutex share_locks[CURL_LOCK_DATA_LAST];
    std::atomic<bool> aborted{false};

    // CURLOPT_XFERINFOFUNCTION: called at least once a second during a transfer; non-zero aborts it.
    static int progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
        return static_cast<Impl*>(user)->aborted.load() ? 1 : 0;
    }

    static void lock(CURL*, curl_lock_data data, curl_lock_access, void* user) {
        static_cast<Impl*>(user)->share_locks[data].lock();
    }
    static void unlock(CURL*, curl_lock_data data, void* user) {
        static_cast<Impl*>(user)->share_locks[data].unlock();
    }
    // CURLOPT_SSL_CTX_FUNCTION: trust exactly our store (shared, reference-counted).
    static CURLcode ssl_ctx(CURL*, void* ssl_ctx, void* user) {
        auto* self = static_cast<Impl*>(user);
        SSL_CTX_set1_cert_store(static_cast<SSL_CTX*>(ssl_ctx), self->store);
        return CURLE_OK;
    }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>()) {
    std::call_once(g_global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    impl_->options = std::move(options);
    std::string extra;
    if (!impl_->options.ca_file.empty()) {
        extra = read_all(impl_->options.ca_file);
        if (extra.empty()) throw std::runtime_error("cannot read CA file " + impl_->options.ca_file);
    }
    impl_->store = X509_STORE_new();
    if (!impl_->store) throw std::runtime_error("cannot create a certificate store");
    auto add_pem = [&](const std::string& pem) {
        int added = 0;
        BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
        STACK_OF(X509_INFO)* infos = bio ? PEM_X509_INFO_read_bio(bio, nullptr, nullptr, nullptr) : nullptr;
        for (int i = 0; infos && i < sk_X509_INFO_num(infos); ++i) {
            X509_INFO* info = sk_X509_INFO_value(infos, i);
            if (info->x509 && X509_STORE_add_cert(impl_->store, info->x509) == 1) ++added;
        }
        if (infos) sk_X509_INFO_pop_free(infos, X509_INFO_free);
        BIO_free(bio);
        ERR_clear_error();
        return added;
    };
    add_pem(read_all(impl_->options.system_ca_bundle));
    if (!extra.empty() && add_pem(extra) == 0)
        throw std::runtime_error("no certificate in CA file " + impl_->options.ca_file);
    impl_->share = curl_share_init();
    curl_share_setopt(impl_->share, CURLSHOPT_LOCKFUNC, &Impl::lock);
    curl_share_setopt(impl_->share, CURLSHOPT_UNLOCKFUNC, &Impl::unlock);
    curl_share_setopt(impl_->share, CURLSHOPT_USERDATA, impl_.get());
    curl_share_setopt(impl_->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(impl_->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    // The connection pool too: a request reuses a kept-alive TLS connection instead of a new TCP + TLS
    // handshake each time (measured against the sandbox: 46 ms -> well under 1 ms per small GET).
    curl_share_setopt(impl_->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
}

Client::~Client() = default;

void Client::abort_transfers() { impl_->aborted = true; }

Response Client::perform(const Request& request) {
    Response r;
    if (impl_->aborted) {
        r.error = "aborted: shutting down";
        return r;
    }
    CURL* h = curl_easy_init();
    if (!h) {
        r.error = "curl_easy_init failed";
        return r;
    }
    char errbuf[CURL_ERROR_SIZE] = {};
    curl_slist* headers = nullptr;
    for (const auto& [k, v] : request.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
    // libcurl adds "Expect: 100-continue" for large bodies; Graph does not need the round trip.
    headers = curl_slist_append(headers, "Expect:");
    Sink sink{&r.body, impl_->options.max_response_body};

    curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(h, CURLOPT_SHARE, impl_->share);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    if (request.method == "POST" || request.method == "PUT" || request.method == "PATCH") {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    // No CA file for curl to load per connection: the parsed store is installed in every SSL_CTX.
    curl_easy_setopt(h, CURLOPT_CAINFO, nullptr);
    curl_easy_setopt(h, CURLOPT_CAPATH, nullptr);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, &Impl::ssl_ctx);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, impl_.get());
    curl_easy_setopt(h, CURLOPT_MAXCONNECTS, 64L);  // keep a connection per concurrent delivery
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, request.timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, impl_->options.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r.headers);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &Impl::progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, impl_.get());
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    } else {
        r.timed_out = rc == CURLE_OPERATION_TIMEDOUT;
        r.error = sink.overflow                     ? "response body exceeds the limit"
                  : rc == CURLE_ABORTED_BY_CALLBACK ? "aborted: shutting down"
                                                    : (errbuf[0] ? errbuf : curl_easy_strerror(rc));
        r.body.clear();
        r.headers.clear();
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    return r;
}

}  // namespace gb::http
