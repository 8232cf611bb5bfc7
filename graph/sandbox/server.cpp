#include "graph/sandbox/server.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>
#include <openssl/ssl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "auth/crypto.h"
#include "common/log.h"
#include "common/text.h"

namespace gb::sandbox {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

namespace {

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string iso_now() {
    std::time_t t = static_cast<std::time_t>(unix_now());
    std::tm tm{};
    gmtime_r(&t, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                       tm.tm_min, tm.tm_sec);
}

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// /{tenant}/oauth2/v2.0/token: the first "/oauth2/v2.0/token" ends the path.
bool is_token_path(std::string_view path) {
    auto pos = path.find("/oauth2/v2.0/token");
    return path.size() > 1 && pos != std::string_view::npos && path.substr(pos) == "/oauth2/v2.0/token";
}

HttpResponse graph_error(int status, std::string_view code, std::string_view message) {
    std::string id = auth::uuid_v4();
    auto r = HttpResponse::json(status, fmt::format(R"({{"error":{{"code":"{}","message":"{}","innerError":{{"request-id":"{}","date":"{}"}}}}}})",
                                                    code, message, id, iso_now()));
    r.set_header("request-id", id);
    return r;
}

}  // namespace

struct SandboxServer::Impl {
    Tenant tenant;
    SandboxOptions options;
    ServerCredentials credentials;

    asio::io_context io;
    asio::ssl::context tls{asio::ssl::context::tls_server};
    std::unique_ptr<tcp::acceptor> acceptor;
    std::vector<std::thread> threads;
    std::uint16_t port = 0;

    std::unique_ptr<Identity> identity;
    std::unique_ptr<GraphApi> graph;

    mutable std::mutex mutex;  // guards everything below
    std::deque<Fault> faults;
    std::map<std::string, int> in_flight;  // per mailbox
    int graph_latency_ms = 0;
    ServerStats stats;
    std::uint64_t messages_sent = 0;  // sendMail / .../send answered 202 (admin stats only)
    std::deque<RequestRecord> request_log;  // the last kRequestLogSize Graph requests
    std::atomic<std::int64_t> clock_offset_s{0};  // shifts the sandbox's clock (assertion time checks)

    std::optional<Fault> take_fault(Fault::Target target, std::string_view path, bool after) {
        std::lock_guard lock(mutex);
        auto now = std::chrono::steady_clock::now();
        for (auto it = faults.begin(); it != faults.end();) {
            if (it->duration_ms > 0 && now >= it->until) {  // an outage that is over
                it = faults.erase(it);
                continue;
            }
            if ((it->target == target || it->target == Fault::Target::Any) && it->after == after &&
                (it->path_suffix.empty() || ends_with(path, it->path_suffix))) {
                Fault f = *it;
                if (f.duration_ms == 0) faults.erase(it);
                ++stats.faults_injected;
                return f;
            }
            ++it;
        }
        return std::nullopt;
    }

    HttpResponse admin(const HttpRequest& req) {
        std::string_view path = req.path();
        if (path == "/sandbox/stats" && req.method == "GET") {
            ServerStats s;
            std::uint64_t sent = 0;
            {
                std::lock_guard lock(mutex);
                s = stats;
                sent = messages_sent;
            }
            s.token_requests = identity->token_requests();
            s.tokens_issued = identity->tokens_issued();
            return HttpResponse::json(
                200, fmt::format(R"({{"token_requests":{},"tokens_issued":{},"graph_requests":{},"throttled":{},"faults_injected":{},"messages_sent":{}}})",
                                 s.token_requests, s.tokens_issued, s.graph_requests, s.throttled, s.faults_injected,
                                 sent));
        }
        if (path == "/sandbox/faults" && req.method == "DELETE") {
            std::lock_guard lock(mutex);
            faults.clear();
            return HttpResponse::empty(204);
        }
        if (path == "/sandbox/faults" && req.method == "POST") {
            rapidjson::Document doc;
            doc.Parse(req.body.data(), req.body.size());
            if (doc.HasParseError() || !doc.IsObject()) return graph_error(400, "BadRequest", "body must be a JSON object");
            Fault f;
            int count = 1;
            auto str = [&](const char* k) -> std::string {
                return doc.HasMember(k) && doc[k].IsString() ? doc[k].GetString() : "";
            };
            auto num = [&](const char* k, int def) { return doc.HasMember(k) && doc[k].IsInt() ? doc[k].GetInt() : def; };
            std::string target = str("target"), kind = str("kind");
            if (target == "token") f.target = Fault::Target::Token;
            else if (target == "graph") f.target = Fault::Target::Graph;
            else if (target == "upload") f.target = Fault::Target::Upload;
            else if (target == "any" || target.empty()) f.target = Fault::Target::Any;
            else return graph_error(400, "BadRequest", "target must be token, graph, upload or any");
            if (kind == "status" || kind.empty()) f.kind = Fault::Kind::Status;
            else if (kind == "reset") f.kind = Fault::Kind::Reset;
            else if (kind == "delay") f.kind = Fault::Kind::Delay;
            else if (kind == "aadsts") f.kind = Fault::Kind::Aadsts;
            else return graph_error(400, "BadRequest", "kind must be status, reset, delay or aadsts");
            f.aadsts = doc.HasMember("code") && doc["code"].IsInt64() ? doc["code"].GetInt64() : 0;
            if (f.kind == Fault::Kind::Aadsts && (f.aadsts <= 0 || f.target != Fault::Target::Token))
                return graph_error(400, "BadRequest", "kind aadsts needs target token and a positive code");
            f.status = num("status", f.kind == Fault::Kind::Aadsts ? 400 : 503);
            f.retry_after = num("retry_after", 0);
            f.delay_ms = num("delay_ms", 0);
            count = num("count", 1);
            f.duration_ms = num("duration_ms", 0);
            f.path_suffix = str("path_suffix");
            f.after = doc.HasMember("after") && doc["after"].IsBool() && doc["after"].GetBool();
            if (f.after && (f.target != Fault::Target::Graph || (f.kind != Fault::Kind::Status && f.kind != Fault::Kind::Reset)))
                return graph_error(400, "BadRequest", "after needs target graph and kind status or reset");
            if (f.status < 400 || f.status > 599 || count < 1 || count > 100000 || f.delay_ms < 0 ||
                f.delay_ms > 600000 || f.retry_after < 0 || f.duration_ms < 0 || f.duration_ms > 3600000)
                return graph_error(400, "BadRequest",
                                   "status 400-599, count 1-100000, delay_ms 0-600000, duration_ms 0-3600000");
            if (f.duration_ms > 0 && doc.HasMember("count"))
                return graph_error(400, "BadRequest", "count and duration_ms exclude each other");
            f.until = std::chrono::steady_clock::now() + std::chrono::milliseconds(f.duration_ms);
            std::lock_guard lock(mutex);
            for (int i = 0; i < count; ++i) faults.push_back(f);
            return HttpResponse::empty(204);
        }
        if (path == "/sandbox/settings" && req.method == "POST") {
            rapidjson::Document doc;
            doc.Parse(req.body.data(), req.body.size());
            if (doc.HasParseError() || !doc.IsObject()) return graph_error(400, "BadRequest", "body must be a JSON object");
            if (doc.HasMember("graph_latency_ms") && doc["graph_latency_ms"].IsInt()) {
                std::lock_guard lock(mutex);
                graph_latency_ms = std::clamp(doc["graph_latency_ms"].GetInt(), 0, 60000);
            }
            if (doc.HasMember("clock_offset_s") && doc["clock_offset_s"].IsInt64())
                clock_offset_s = std::clamp<std::int64_t>(doc["clock_offset_s"].GetInt64(), -86400 * 365, 86400 * 365);
            return HttpResponse::empty(204);
        }
        if (path.rfind("/sandbox/apps/", 0) == 0 && req.method == "POST") {
            std::string client_id(path.substr(std::string_view("/sandbox/apps/").size()));
            rapidjson::Document doc;
            doc.Parse(req.body.data(), req.body.size());
            if (doc.HasParseError() || !doc.IsObject()) return graph_error(400, "BadRequest", "body must be a JSON object");
            bool found = false;
            identity->update_tenant([&](Tenant& t) {
                for (auto& app : t.apps) {
                    if (app.client_id != client_id) continue;
                    found = true;
                    if (doc.HasMember("enabled") && doc["enabled"].IsBool()) app.enabled = doc["enabled"].GetBool();
                    if (doc.HasMember("public_client") && doc["public_client"].IsBool())
                        app.public_client = doc["public_client"].GetBool();
                    if (doc.HasMember("roles") && doc["roles"].IsArray()) {
                        app.roles.clear();
                        for (const auto& r : doc["roles"].GetArray())
                            if (r.IsString()) app.roles.emplace_back(r.GetString());
                    }
                }
            });
            if (!found) return graph_error(404, "ResourceNotFound", "no app with that client id");
            return HttpResponse::empty(204);
        }
        // File a message as if it arrived (or was moved there in Outlook): raw MIME body.
        if (path.rfind("/sandbox/mailboxes/", 0) == 0 && req.method == "POST") {
            std::string_view rest = path.substr(std::string_view("/sandbox/mailboxes/").size());
            auto slash = rest.find('/');
            if (slash == std::string_view::npos || rest.substr(slash) != "/messages")
                return graph_error(404, "ResourceNotFound", "unknown sandbox admin route");
            std::string mailbox = percent_decode(rest.substr(0, slash), false).value_or(std::string(rest.substr(0, slash)));
            std::string folder = req.query("folder").value_or("inbox");
            bool read = req.query("read").value_or("false") == "true";
            auto r = graph->inject_message(mailbox, folder, req.body, read);
            if (r.index() == 1) return graph_error(400, "BadRequest", std::get<1>(r));
            return HttpResponse::json(201, "{\"id\":\"" + std::get<0>(r) + "\"}");
        }
        if (path == "/sandbox/requests" && req.method == "GET") {
            std::deque<RequestRecord> log;
            {
                std::lock_guard lock(mutex);
                log = request_log;
            }
            rapidjson::StringBuffer sb;
            rapidjson::Writer<rapidjson::StringBuffer> w(sb);
            w.StartObject();
            w.Key("requests");
            w.StartArray();
            for (const auto& r : log) {
                w.StartObject();
                w.Key("method");
                w.String(r.method.c_str(), static_cast<rapidjson::SizeType>(r.method.size()));
                w.Key("route");
                w.String(r.route.c_str(), static_cast<rapidjson::SizeType>(r.route.size()));
                w.Key("mailbox");
                w.String(r.mailbox.c_str(), static_cast<rapidjson::SizeType>(r.mailbox.size()));
                w.Key("status");
                w.Int(r.status);
                w.EndObject();
            }
            w.EndArray();
            w.EndObject();
            return HttpResponse::json(200, sb.GetString());
        }
        if (path == "/sandbox/requests" && req.method == "DELETE") {
            std::lock_guard lock(mutex);
            request_log.clear();
            return HttpResponse::empty(204);
        }
        if (path == "/sandbox/tokens/revoke" && req.method == "POST") {
            identity->revoke_issued_tokens();
            return HttpResponse::empty(204);
        }
        if (path == "/sandbox/delta/expire" && req.method == "POST") {
            graph->expire_delta_tokens();
            return HttpResponse::empty(204);
        }
        return graph_error(404, "ResourceNotFound", "unknown sandbox admin route");
    }

    HttpResponse aadsts_response(const Fault& f) const {
        std::string trace = auth::uuid_v4(), correlation = auth::uuid_v4();
        std::string ts = utc_time(unix_now());
        std::string error = f.status == 401 ? "invalid_client" : "invalid_request";
        auto r = HttpResponse::json(
            f.status,
            fmt::format(R"({{"error":"{}","error_description":"AADSTS{}: Injected by the sandbox.\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}","error_codes":[{}],"timestamp":"{}","trace_id":"{}","correlation_id":"{}","error_uri":"{}/error?code={}"}})",
                        error, f.aadsts, trace, correlation, ts, f.aadsts, ts, trace, correlation, options.login_base,
                        f.aadsts));
        r.set_header("Cache-Control", "no-store, no-cache");
        return r;
    }

    static HttpResponse fault_response(const Fault& f) {
        std::string_view code = f.status == 429 ? "TooManyRequests"
                                : f.status == 503 ? "ServiceNotAvailable"
                                : f.status == 504 ? "GatewayTimeout"
                                                  : "InjectedFault";
        std::string_view msg = f.status == 429 ? "Application is over its MailboxConcurrency limit."
                                               : "The service is temporarily unavailable (injected fault).";
        HttpResponse r = graph_error(f.status, code, msg);
        if (f.retry_after > 0) r.set_header("Retry-After", std::to_string(f.retry_after));
        return r;
    }

    void log_request(RequestRecord record) {
        std::lock_guard lock(mutex);
        request_log.push_back(std::move(record));
        while (request_log.size() > kRequestLogSize) request_log.pop_front();
    }

    // The request log's entry for a Graph request (status still 0); nullopt for token, upload, admin.
    std::optional<RequestRecord> graph_record(const HttpRequest& req) const {
        std::string_view path = req.path();
        if (path.rfind("/v1.0/", 0) != 0 || is_token_path(path)) return std::nullopt;
        return RequestRecord{req.method, GraphApi::route_of(req), graph->mailbox_of(req), 0};
    }

    // Decides the response for one request and logs Graph requests with the status the client saw
    // (injected faults and throttling included), so tests can check exactly which calls were made.
    awaitable<HttpResponse> dispatch(HttpRequest req, bool& reset) {
        if (req.path().rfind("/sandbox/", 0) == 0) co_return admin(req);
        std::optional<RequestRecord> record = graph_record(req);
        HttpResponse response = co_await respond(std::move(req), reset);
        if (record) {
            record->status = reset ? 0 : response.status;
            log_request(std::move(*record));
        }
        co_return response;
    }

    // The response for one non-admin request. May suspend (delays); may ask to reset the connection.
    awaitable<HttpResponse> respond(HttpRequest req, bool& reset) {
        std::string_view path = req.path();
        Fault::Target target;
        bool is_token = is_token_path(path);
        if (is_token) target = Fault::Target::Token;
        else if (path.rfind("/v1.0/", 0) == 0) target = Fault::Target::Graph;
        else if (path.rfind("/upload/", 0) == 0) target = Fault::Target::Upload;
        else co_return graph_error(404, "ResourceNotFound", "no such route");

        if (auto f = take_fault(target, path, false)) {
            if (f->kind == Fault::Kind::Reset) {
                reset = true;
                co_return HttpResponse{};
            }
            if (f->kind == Fault::Kind::Aadsts) co_return aadsts_response(*f);
            if (f->kind == Fault::Kind::Delay) {
                asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(f->delay_ms));
                co_await t.async_wait(use_awaitable);
            } else {
                co_return fault_response(*f);
            }
        }

        if (target == Fault::Target::Token) {
            std::string_view segment = path.substr(1, path.find("/oauth2/v2.0/token") - 1);
            auto tenant_segment = percent_decode(segment, false).value_or(std::string(segment));
            if (tenant_segment.find('/') != std::string::npos)
                co_return graph_error(404, "ResourceNotFound", "no such route");
            co_return identity->handle_token(req, tenant_segment);
        }
        if (target == Fault::Target::Upload) co_return graph->handle_upload(req);

        // Graph: authenticate, then throttle per mailbox like Outlook (concurrency limit).
        {
            std::lock_guard lock(mutex);
            ++stats.graph_requests;
        }
        auto verdict = identity->validate_bearer(req.header("Authorization"));
        if (auto* rejected = std::get_if<TokenRejection>(&verdict)) {
            HttpResponse r = graph_error(401, "InvalidAuthenticationToken", rejected->message);
            r.set_header("WWW-Authenticate", "Bearer realm=\"\", authorization_uri=\"" + options.login_base +
                                                 "/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"");
            co_return r;
        }
        const AccessToken& token = std::get<AccessToken>(verdict);
        std::string mailbox = graph->mailbox_of(req);
        int latency = 0;
        {
            std::lock_guard lock(mutex);
            if (!mailbox.empty()) {
                int& n = in_flight[mailbox];
                if (n >= options.mailbox_concurrency) {
                    ++stats.throttled;
                    HttpResponse r = graph_error(429, "ApplicationThrottled",
                                                 "Application is over its MailboxConcurrency limit.");
                    r.set_header("Retry-After", std::to_string(options.throttle_retry_after));
                    co_return r;
                }
                ++n;
            }
            latency = graph_latency_ms;
        }
        struct Release {
            Impl* self;
            std::string mailbox;
            ~Release() {
                if (mailbox.empty()) return;
                std::lock_guard lock(self->mutex);
                if (--self->in_flight[mailbox] == 0) self->in_flight.erase(mailbox);
            }
        } release{this, mailbox};
        if (latency > 0) {
            asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(latency));
            co_await t.async_wait(use_awaitable);
        }
        HttpResponse response = graph->handle(req, token);
        if (auto f = take_fault(target, path, true)) {  // done, but the client never hears so
            if (f->kind == Fault::Kind::Reset) {
                reset = true;
                co_return HttpResponse{};
            }
            co_return fault_response(*f);
        }
        if (response.status == 202 && req.method == "POST" &&
            (ends_with(path, "/sendMail") || ends_with(path, "/send"))) {
            std::lock_guard lock(mutex);
            ++messages_sent;
        }
        co_return response;
    }

    awaitable<void> session(tcp::socket socket) {
        beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), tls);
        beast::error_code ec;
        beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(30));
        co_await stream.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(use_awaitable, ec));
        if (ec) co_return;
        beast::flat_buffer buffer;
        for (;;) {
            http::request_parser<http::string_body> parser;
            parser.header_limit(16 * 1024);
            // Upload chunks may be up to 4 MiB; everything else up to the Graph request cap.
            parser.body_limit(options.max_request_body);
            beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(30));
            co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
            if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
                break;
            HttpResponse response;
            bool keep_alive = true;
            bool reset = false;
            if (ec == http::error::body_limit) {
                response = graph_error(413, "RequestEntityTooLarge",
                                       "The maximum request length supported is 4MB.");
                response.close = true;
                HttpRequest head;  // the header was read in full; the body was not
                head.method = std::string(parser.get().method_string());
                head.target = std::string(parser.get().target());
                if (auto record = graph_record(head)) {
                    record->status = 413;
                    log_request(std::move(*record));
                }
            } else if (ec) {
                break;
            } else {
                auto& msg = parser.get();
                HttpRequest req;
                req.method = std::string(msg.method_string());
                req.target = std::string(msg.target());
                for (const auto& field : msg) req.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
                req.body = std::move(msg.body());
                keep_alive = msg.keep_alive();
                beast::get_lowest_layer(stream).expires_never();
                try {
                    response = co_await dispatch(std::move(req), reset);
                } catch (const std::exception& e) {
                    log::error("sandbox", "handler failed", {{"error", e.what()}});
                    response = graph_error(500, "InternalServerError", "sandbox handler failed");
                }
            }
            if (reset) {
                // Abort like a dropped connection: RST, no TLS close_notify.
                auto& sock = beast::get_lowest_layer(stream).socket();
                sock.set_option(asio::socket_base::linger(true, 0), ec);
                sock.close(ec);
                co_return;
            }
            http::response<http::string_body> res{static_cast<http::status>(response.status), 11};
            res.set(http::field::server, "graphbridge-sandbox");
            for (const auto& [k, v] : response.headers) res.set(k, v);
            res.body() = std::move(response.body);
            res.keep_alive(keep_alive && !response.close);
            res.prepare_payload();
            beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(30));
            co_await http::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
            if (ec || !res.keep_alive()) break;
        }
        // A TLS close_notify only after a clean end. After a timeout or another error the stream is
        // done for: Beast's basic_stream asserts (debug builds) when used again after its timer fired,
        // and a peer that timed out or vanished will not answer a close_notify anyway.
        bool clean = !ec || ec == http::error::end_of_stream || ec == asio::error::eof;
        if (clean) {
            beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
            co_await stream.async_shutdown(asio::redirect_error(use_awaitable, ec));
        }
        beast::get_lowest_layer(stream).close();
    }

    awaitable<void> accept_loop() {
        for (;;) {
            beast::error_code ec;
            tcp::socket socket = co_await acceptor->async_accept(asio::redirect_error(use_awaitable, ec));
            if (ec) {
                if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
                continue;
            }
            socket.set_option(tcp::no_delay(true), ec);  // no 40 ms delayed-ACK stalls on small responses
            asio::co_spawn(io, session(std::move(socket)), asio::detached);
        }
    }
};

SandboxServer::SandboxServer(Tenant tenant, SandboxOptions options, ServerCredentials credentials)
    : impl_(std::make_unique<Impl>()) {
    impl_->tenant = std::move(tenant);
    impl_->options = std::move(options);
    impl_->credentials = std::move(credentials);
}

SandboxServer::~SandboxServer() { stop(); }

void SandboxServer::start(const std::string& bind_address, std::uint16_t port, int threads) {
    Impl& d = *impl_;
    d.tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::single_dh_use);
    SSL_CTX_set_min_proto_version(d.tls.native_handle(), TLS1_2_VERSION);
    d.tls.use_certificate_chain(asio::buffer(d.credentials.cert_chain_pem));
    d.tls.use_private_key(asio::buffer(d.credentials.key_pem), asio::ssl::context::pem);

    tcp::endpoint ep(asio::ip::make_address(bind_address), port);
    d.acceptor = std::make_unique<tcp::acceptor>(d.io);
    d.acceptor->open(ep.protocol());
    d.acceptor->set_option(asio::socket_base::reuse_address(true));
    d.acceptor->bind(ep);
    d.acceptor->listen(asio::socket_base::max_listen_connections);
    d.port = d.acceptor->local_endpoint().port();

    std::string host = ep.address().is_v6() ? "[" + bind_address + "]" : bind_address;
    std::string base = fmt::format("https://{}:{}", host, d.port);
    if (d.options.login_base.empty()) d.options.login_base = base;
    if (d.options.graph_base.empty()) d.options.graph_base = base;
    Clock clock = [&d] { return unix_now() + d.clock_offset_s.load(); };
    d.identity = std::make_unique<Identity>(d.tenant, d.options, d.credentials.token_signing_key_pem, clock);
    d.graph = std::make_unique<GraphApi>(d.tenant, d.options, clock);

    asio::co_spawn(d.io, d.accept_loop(), asio::detached);
    for (int i = 0; i < std::max(1, threads); ++i) d.threads.emplace_back([&d] { d.io.run(); });
}

void SandboxServer::stop() {
    Impl& d = *impl_;
    if (d.acceptor) {
        asio::post(d.io, [&d] {
            beast::error_code ec;
            d.acceptor->close(ec);
        });
    }
    d.io.stop();
    for (auto& t : d.threads)
        if (t.joinable()) t.join();
    d.threads.clear();
}

std::uint16_t SandboxServer::port() const { return impl_->port; }
const SandboxOptions& SandboxServer::options() const { return impl_->options; }
Identity& SandboxServer::identity() { return *impl_->identity; }
GraphApi& SandboxServer::graph() { return *impl_->graph; }

void SandboxServer::inject(Fault fault, int count) {
    std::lock_guard lock(impl_->mutex);
    for (int i = 0; i < count; ++i) impl_->faults.push_back(fault);
}

void SandboxServer::clear_faults() {
    std::lock_guard lock(impl_->mutex);
    impl_->faults.clear();
}

void SandboxServer::set_graph_latency_ms(int ms) {
    std::lock_guard lock(impl_->mutex);
    impl_->graph_latency_ms = ms;
}

std::vector<RequestRecord> SandboxServer::requests() const {
    std::lock_guard lock(impl_->mutex);
    return {impl_->request_log.begin(), impl_->request_log.end()};
}

void SandboxServer::clear_requests() {
    std::lock_guard lock(impl_->mutex);
    impl_->request_log.clear();
}

ServerStats SandboxServer::stats() const {
    ServerStats s;
    {
        std::lock_guard lock(impl_->mutex);
        s = impl_->stats;
    }
    if (impl_->identity) {
        s.token_requests = impl_->identity->token_requests();
        s.tokens_issued = impl_->identity->tokens_issued();
    }
    return s;
}

}  // namespace gb::sandbox
