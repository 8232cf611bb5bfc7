#include "proxy/admin/admin_server.h"

#include <utility>  // first: Asio 1.18's awaitable.hpp uses std::exchange without including it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <thread>

#include "common/log.h"

namespace gb::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

constexpr int kMaxConnections = 64;

struct AdminServer::Impl {
    config::ListenAddress listen;
    const metrics::Registry& registry;
    std::vector<ReadinessCheck> checks;
    asio::io_context io{1};
    std::unique_ptr<tcp::acceptor> acceptor;
    std::thread thread;
    std::atomic<int> active{0};
    std::uint16_t port = 0;

    Impl(config::ListenAddress l, const metrics::Registry& r, std::vector<ReadinessCheck> c)
        : listen(std::move(l)), registry(r), checks(std::move(c)) {}

    awaitable<void> session(tcp::socket socket, const AdminServer& owner) {
        beast::tcp_stream stream(std::move(socket));
        beast::flat_buffer buffer;
        for (;;) {
            http::request_parser<http::empty_body> parser;
            parser.header_limit(8 * 1024);
            parser.body_limit(0);
            beast::error_code ec;
            stream.expires_after(std::chrono::seconds(10));
            co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
            if (ec) break;  // closed, timed out, or a request we do not take (too big, has a body)
            auto& req = parser.get();
            Answer a = owner.answer(std::string(req.method_string()), std::string(req.target()));
            http::response<http::string_body> res{static_cast<http::status>(a.status), req.version()};
            res.set(http::field::server, "graphbridge");
            res.set(http::field::content_type, a.content_type);
            res.set(http::field::cache_control, "no-store");
            res.keep_alive(req.keep_alive());
            if (req.method() == http::verb::head) {
                res.content_length(a.body.size());
            } else {
                res.body() = std::move(a.body);
                res.prepare_payload();
            }
            stream.expires_after(std::chrono::seconds(10));
            co_await http::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
            if (ec || !res.keep_alive()) break;
        }
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        --active;
    }

    awaitable<void> accept_loop(const AdminServer& owner) {
        for (;;) {
            beast::error_code ec;
            tcp::socket socket(io);
            co_await acceptor->async_accept(socket, asio::redirect_error(use_awaitable, ec));
            if (ec) {
                if (!acceptor->is_open()) co_return;
                continue;
            }
            if (active.load() >= kMaxConnections) {
                socket.close(ec);
                continue;
            }
            ++active;
            asio::co_spawn(io, session(std::move(socket), owner), asio::detached);
        }
    }
};

AdminServer::AdminServer(config::ListenAddress listen, const metrics::Registry& registry,
                         std::vector<ReadinessCheck> checks)
    : impl_(std::make_unique<Impl>(std::move(listen), registry, std::move(checks))) {}

AdminServer::~AdminServer() { stop(); }

void AdminServer::start() {
    Impl& d = *impl_;
    tcp::endpoint ep(asio::ip::make_address(d.listen.host), d.listen.port);
    d.acceptor = std::make_unique<tcp::acceptor>(d.io);
    d.acceptor->open(ep.protocol());
    d.acceptor->set_option(asio::socket_base::reuse_address(true));
    d.acceptor->bind(ep);
    d.acceptor->listen();
    d.port = d.acceptor->local_endpoint().port();
    asio::co_spawn(d.io, d.accept_loop(*this), asio::detached);
    d.thread = std::thread([&d] { d.io.run(); });
}

void AdminServer::stop() {
    Impl& d = *impl_;
    if (!d.thread.joinable()) return;
    asio::post(d.io, [&d] {
        beast::error_code ec;
        d.acceptor->close(ec);
    });
    d.io.stop();
    d.thread.join();
}

std::uint16_t AdminServer::port() const { return impl_->port; }

AdminServer::Answer AdminServer::answer(const std::string& method, const std::string& target) const {
    std::string path = target.substr(0, target.find('?'));
    Answer a;
    a.content_type = "text/plain; charset=utf-8";
    if (path != "/metrics" && path != "/healthz" && path != "/readyz") {
        a.status = 404;
        a.body = "not found: try /metrics, /healthz or /readyz\n";
        return a;
    }
    if (method != "GET" && method != "HEAD") {
        a.status = 405;
        a.body = "only GET and HEAD\n";
        return a;
    }
    if (path == "/metrics") {
        a.content_type = "text/plain; version=0.0.4; charset=utf-8";
        a.body = impl_->registry.render();
    } else if (path == "/healthz") {
        a.body = "ok\n";
    } else {
        std::string failures;
        for (const auto& c : impl_->checks) {
            std::string why;
            try {
                why = c.failure();
            } catch (const std::exception& e) {
                why = e.what();
            }
            if (!why.empty()) failures += c.name + ": " + why + "\n";
        }
        a.status = failures.empty() ? 200 : 503;
        a.body = failures.empty() ? "ready\n" : failures;
    }
    return a;
}

}  // namespace gb::admin
