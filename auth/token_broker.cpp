#include "auth/token_broker.h"

#include <fmt/format.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <random>

#include "auth/crypto.h"
#include "common/text.h"
#include "graph/api/errors.h"

namespace gb::auth {
namespace {

std::int64_t system_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

std::vector<std::string> token_roles(const std::string& access_token) {
    std::vector<std::string> roles;
    auto jws = parse_jws(access_token);
    if (!jws) return roles;
    rapidjson::Document d;
    d.Parse(jws->payload_json.data(), jws->payload_json.size());
    if (d.HasParseError() || !d.IsObject()) return roles;
    auto it = d.FindMember("roles");
    if (it == d.MemberEnd() || !it->value.IsArray()) return roles;
    for (const auto& r : it->value.GetArray())
        if (r.IsString()) roles.emplace_back(r.GetString(), r.GetStringLength());
    return roles;
}

std::string explain_token_error(const TokenBrokerConfig& c, long status, const std::string& error,
                                const std::vector<std::int64_t>& codes) {
    auto has = [&](std::int64_t code) { return std::find(codes.begin(), codes.end(), code) != codes.end(); };
    std::string thumb = "(none)";
    if (c.certificate) thumb = hex_upper(sha1(c.certificate->cert_der));
    if (status == 0)
        return fmt::format("cannot reach the token endpoint {} ({}): check the network, the proxy (https_proxy) "
                           "and ca_file", c.token_endpoint, error);
    if (has(700027))
        return fmt::format("the certificate with thumbprint {} is not registered on app {} or its signature does "
                           "not verify: upload its .cer under Certificates & secrets of that app registration, or "
                           "point keystore at the certificate that is registered (AADSTS700027)", thumb, c.client_id);
    if (has(700024))
        return "the client assertion is outside its valid time range: this machine's clock is probably wrong; "
               "fix the time (NTP, timedatectl) (AADSTS700024)";
    if (has(50012))
        return fmt::format("the identity platform refused the assertion's audience: it must be exactly the token "
                           "endpoint {}; check tenant_id, authority and token_endpoint (AADSTS50012)", c.token_endpoint);
    if (has(50027))
        return "the client assertion was refused as malformed (header, thumbprint or claims): try algorithm = "
               "\"RS256\" and thumbprint = \"x5t\" (AADSTS50027)";
    if (has(700021))
        return fmt::format("the assertion's issuer/subject is not client_id {}: check client_id (AADSTS700021)", c.client_id);
    if (has(700016))
        return fmt::format("application {} was not found in tenant {}: check client_id and tenant_id, and that the "
                           "app is registered in this cloud (AADSTS700016)", c.client_id, c.tenant);
    if (has(7000215))
        return fmt::format("the client secret for app {} is wrong: use the secret's Value, not its Secret ID, from "
                           "Certificates & secrets (AADSTS7000215)", c.client_id);
    if (has(7000222))
        return fmt::format("the client secret for app {} has expired: create a new one under Certificates & secrets "
                           "and update client_secret_env/client_secret_file (AADSTS7000222)", c.client_id);
    if (has(90002) || has(900023))
        return fmt::format("tenant '{}' was not found or is not a valid GUID or domain in this cloud: check tenant_id "
                           "and cloud (AADSTS{})", c.tenant, has(90002) ? 90002 : 900023);
    if (has(70011) || has(700022) || has(1002012))
        return fmt::format("the scope '{}' is invalid: client credentials need exactly one resource ending in "
                           "/.default, e.g. https://graph.microsoft.com/.default (AADSTS{})", c.scope,
                           has(1002012) ? 1002012 : has(700022) ? 700022 : 70011);
    if (has(500011))
        return fmt::format("the resource in scope '{}' does not exist in this tenant: for a national cloud set cloud "
                           "so that graph_url and scope match it (AADSTS500011)", c.scope);
    if (has(7000112))
        return fmt::format("application {} is disabled in tenant {}: enable it under Enterprise applications → "
                           "Properties (AADSTS7000112)", c.client_id, c.tenant);
    if (has(700025))
        return fmt::format("application {} is a public client and cannot use a credential: set \"Allow public client "
                           "flows\" to No (AADSTS700025)", c.client_id);
    if (has(7000218))
        return "the token request carried no credential: configure a certificate or a client secret (AADSTS7000218)";
    if (status == 429 || status >= 500)
        return fmt::format("the identity platform is unavailable (HTTP {}); retrying with backoff", status);
    std::string code = codes.empty() ? std::string() : fmt::format(" (AADSTS{})", codes.front());
    std::string what = error.empty() || error.rfind("HTTP ", 0) == 0 ? "unexpected response" : error;
    return fmt::format("the token request was refused: {}{} (HTTP {})", what, code, status);
}

TokenBroker::TokenBroker(TokenBrokerConfig config, TokenTransport transport, Clock clock, BrokerTiming timing)
    : config_(std::move(config)), transport_(std::move(transport)), clock_(std::move(clock)), timing_(timing) {
    refresher_ = std::thread([this] { refresher(); });
}

TokenBroker::~TokenBroker() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
    if (refresher_.joinable()) refresher_.join();
}

std::int64_t TokenBroker::now_ms() const { return clock_ ? clock_() : system_ms(); }

std::uint64_t TokenBroker::requests_sent() const {
    std::lock_guard lock(mutex_);
    return requests_;
}

TokenBroker::Status TokenBroker::status() const {
    std::lock_guard lock(mutex_);
    Status s;
    s.requests = requests_;
    s.failures = total_failures_;
    s.token_usable = usable(now_ms());
    if (!s.token_usable && last_failure_)
        s.last_error = last_failure_->explanation.empty() ? last_failure_->error : last_failure_->explanation;
    return s;
}

bool TokenBroker::usable(std::int64_t now) const {
    if (!token_) return false;
    std::int64_t lifetime = token_->expires_at - token_->obtained_at;
    std::int64_t safety = std::min(timing_.safety_max_s, lifetime / 4);
    return now / 1000 < token_->expires_at - safety;
}

std::string TokenBroker::build_request_body(std::int64_t now_s) const {
    std::string body = "client_id=" + url_encode(config_.client_id) + "&scope=" + url_encode(config_.scope) +
                       "&grant_type=client_credentials";
    if (config_.certificate) {
        const auto& cert = *config_.certificate;
        ClientAssertionParams p;
        p.client_id = config_.client_id;
        p.audience = config_.token_endpoint;
        p.cert_der = cert.cert_der;
        p.alg = cert.alg;
        p.thumbprint = cert.thumbprint;
        p.now = now_s;
        p.lifetime = cert.assertion_lifetime;
        p.extra_claims_json = cert.extra_claims_json;
        body += "&client_assertion_type=" + url_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        body += "&client_assertion=" + make_client_assertion(p, cert.key.get());
    } else if (config_.client_secret) {
        body += "&client_secret=" + url_encode(config_.client_secret->reveal());
    }
    return body;
}

TokenResult TokenBroker::fetch_locked(std::unique_lock<std::mutex>& lock) {
    in_flight_ = true;
    ++requests_;
    lock.unlock();
    TokenHttpResponse response;
    std::int64_t started = now_ms();
    try {
        TokenHttpRequest request;
        request.url = config_.token_endpoint;
        request.headers = {{"Content-Type", "application/x-www-form-urlencoded"}, {"Accept", "application/json"}};
        request.body = build_request_body(started / 1000);
        response = transport_(request);
        std::fill(request.body.begin(), request.body.end(), '\0');
    } catch (const std::exception& e) {
        response.status = 0;
        response.error = e.what();
    }
    std::int64_t finished = now_ms();

    TokenResult result;
    std::optional<Token> fresh;
    if (response.status == 200) {
        rapidjson::Document d;
        d.Parse(response.body.data(), response.body.size());
        if (!d.HasParseError() && d.IsObject() && d.HasMember("access_token") && d["access_token"].IsString() &&
            d.HasMember("expires_in") && (d["expires_in"].IsInt64() || d["expires_in"].IsString())) {
            std::int64_t expires_in = d["expires_in"].IsInt64() ? d["expires_in"].GetInt64()
                                                                : std::atoll(d["expires_in"].GetString());
            if (expires_in > 0) {
                Token t;
                t.access_token = d["access_token"].GetString();
                // Count the lifetime from when the request started: never believe a token lives longer.
                t.obtained_at = started / 1000;
                t.expires_at = started / 1000 + expires_in;
                t.roles = token_roles(t.access_token);
                fresh = std::move(t);
            }
        }
        if (!fresh) {
            response.status = 502;
            response.error = "malformed token response";
        }
    }

    lock.lock();
    in_flight_ = false;
    if (fresh) {
        token_ = *fresh;
        last_roles_ = fresh->roles;
        last_failure_.reset();
        failures_ = 0;
        next_attempt_ms_ = 0;
        result = *fresh;
    } else {
        TokenFailure f;
        f.status = response.status;
        if (response.status == 0) {
            f.error = response.error;
        } else if (auto e = graph::parse_token_error(response.body)) {
            f.error = e->error;
            f.codes = e->codes;
        } else {
            f.error = response.error.empty() ? fmt::format("HTTP {}", response.status) : response.error;
        }
        f.transient = response.status == 0 || response.status == 429 || response.status >= 500;
        f.explanation = explain_token_error(config_, f.status, f.error, f.codes);
        ++failures_;
        ++total_failures_;
        std::int64_t delay = std::min<std::int64_t>(timing_.backoff_max_ms,
                                                    timing_.backoff_initial_ms << std::min(failures_ - 1, 20));
        static thread_local std::mt19937_64 rng{std::random_device{}()};
        // Full jitter in [delay/2, delay]: many bridges restarting together do not retry in step.
        delay = delay / 2 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(delay / 2 + 1));
        if (response.retry_after) delay = std::max(delay, *response.retry_after * 1000);
        next_attempt_ms_ = finished + delay;
        last_failure_ = f;
        result = f;
    }
    changed_.notify_all();
    return result;
}

TokenResult TokenBroker::get() {
    std::unique_lock lock(mutex_);
    for (;;) {
        std::int64_t now = now_ms();
        if (usable(now)) {
            std::int64_t lifetime = token_->expires_at - token_->obtained_at;
            std::int64_t lead = std::min(timing_.refresh_lead_max_s, lifetime / 2);
            if (now / 1000 >= token_->expires_at - lead) changed_.notify_all();  // wake the refresher
            return *token_;
        }
        if (in_flight_) {
            changed_.wait(lock);
            continue;
        }
        if (last_failure_ && now < next_attempt_ms_) return *last_failure_;
        return fetch_locked(lock);
    }
}

TokenResult TokenBroker::refresh_after_rejection(const std::string& rejected) {
    std::unique_lock lock(mutex_);
    while (in_flight_) changed_.wait(lock);
    if (token_ && token_->access_token != rejected && usable(now_ms())) return *token_;
    if (token_ && token_->access_token == rejected) token_.reset();
    if (last_failure_ && now_ms() < next_attempt_ms_) return *last_failure_;
    return fetch_locked(lock);
}

std::optional<std::vector<std::string>> TokenBroker::known_roles() const {
    std::lock_guard lock(mutex_);
    return last_roles_;
}

void TokenBroker::refresher() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        changed_.wait_for(lock, std::chrono::milliseconds(500));
        if (stopping_ || in_flight_ || !token_) continue;
        std::int64_t now = now_ms();
        std::int64_t lifetime = token_->expires_at - token_->obtained_at;
        std::int64_t lead = std::min(timing_.refresh_lead_max_s, lifetime / 2);
        if (now / 1000 < token_->expires_at - lead || now < next_attempt_ms_) continue;
        fetch_locked(lock);
    }
}

}  // namespace gb::auth
