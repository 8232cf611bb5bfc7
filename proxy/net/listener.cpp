#include "proxy/net/listener.h"

#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <openssl/ssl.h>

#include <algorithm>
#include <cerrno>
#include <future>
#include <memory>

#include "common/log.h"
#include "protocol/proxy/proxy_protocol.h"

namespace gb::net {

namespace asio = boost::asio;

bool is_loopback(const asio::ip::address& a) {
    if (a.is_v4()) return a.to_v4().is_loopback();
    auto v6 = a.to_v6();
    if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).is_loopback();
    return v6.is_loopback();
}

std::string ip_text(const asio::ip::address& a) {
    if (a.is_v6() && a.to_v6().is_v4_mapped())
        return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
    return a.to_string();
}

std::unique_ptr<asio::ssl::context> make_server_tls(const std::string& cert_pem, const std::string& key_pem,
                                                    std::string_view min_version) {
    if (cert_pem.empty()) return nullptr;
    auto tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::single_dh_use);
    SSL_CTX_set_min_proto_version(tls->native_handle(), min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
    tls->use_certificate_chain(asio::buffer(cert_pem));
    tls->use_private_key(asio::buffer(key_pem), asio::ssl::context::pem);
    return tls;
}

Listeners::~Listeners() { stop(); }

void Listeners::bind(const std::vector<config::ListenAddress>& addresses, bool implicit) {
    for (const auto& a : addresses) {
        tcp::endpoint ep(asio::ip::make_address(a.host), a.port);
        auto acc = std::make_unique<tcp::acceptor>(io_);
        acc->open(ep.protocol());
        acc->set_option(asio::socket_base::reuse_address(true));
        acc->bind(ep);
        acc->listen(asio::socket_base::max_listen_connections);
        ports_.push_back(acc->local_endpoint().port());
        implicit_.push_back(implicit);
        bound_.push_back(a.to_string());
        acceptors_.push_back(std::move(acc));
    }
}

std::unique_ptr<asio::ssl::context> Listeners::open(const std::vector<config::ListenAddress>& listen,
                                                    const std::vector<config::ListenAddress>& tls_listen,
                                                    const std::string& cert_pem, const std::string& key_pem,
                                                    std::string_view min_version) {
    auto tls = make_server_tls(cert_pem, key_pem, min_version);
    bind(listen, false);
    if (tls) bind(tls_listen, true);
    return tls;
}

void Listeners::start(AcceptOptions options, OnAccept on_accept, int threads) {
    options_ = std::move(options);
    on_accept_ = std::move(on_accept);
    for (std::size_t i = 0; i < acceptors_.size(); ++i) {
        bool proxy = std::any_of(options_.proxy_protocol.begin(), options_.proxy_protocol.end(),
                                 [&](const config::ListenAddress& a) { return a.to_string() == bound_[i]; });
        accept_strands_.push_back(asio::make_strand(io_));
        asio::co_spawn(accept_strands_.back(), accept_loop(*acceptors_[i], implicit_[i], proxy), asio::detached);
    }
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { io_.run(); });
}

void Listeners::stop() {
    for (std::size_t i = 0; i < acceptors_.size() && i < accept_strands_.size(); ++i) {
        asio::post(accept_strands_[i], [a = acceptors_[i].get()] {
            boost::system::error_code ec;
            a->close(ec);
        });
    }
    io_.stop();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

void Listeners::drain() {
    if (draining_.exchange(true)) return;
    // Closing an acceptor cancels its pending accept (the loop then ends); done on the io_context, which
    // owns the acceptors, and waited for, so no connection is accepted after drain() returns.
    std::vector<std::future<void>> done;
    for (std::size_t i = 0; i < acceptors_.size() && i < accept_strands_.size(); ++i) {
        auto closed = std::make_shared<std::promise<void>>();
        done.push_back(closed->get_future());
        asio::post(accept_strands_[i], [a = acceptors_[i].get(), closed] {
            boost::system::error_code ec;
            a->close(ec);
            closed->set_value();
        });
    }
    if (!threads_.empty() && !io_.stopped())
        for (auto& f : done) f.wait_for(std::chrono::seconds(5));
    std::vector<std::shared_ptr<Drainable>> live;
    {
        std::lock_guard lock(tracked_mutex_);
        for (auto& [key, weak] : tracked_)
            if (auto c = weak.lock()) live.push_back(std::move(c));
    }
    for (auto& c : live) c->drain();
}

std::uint64_t Listeners::track(std::weak_ptr<Drainable> connection) {
    std::shared_ptr<Drainable> now;
    std::uint64_t key;
    {
        std::lock_guard lock(tracked_mutex_);
        key = ++next_key_;
        if (draining_) now = connection.lock();
        tracked_.emplace(key, std::move(connection));
    }
    if (now) now->drain();
    return key;
}

void Listeners::untrack(std::uint64_t key) {
    std::lock_guard lock(tracked_mutex_);
    tracked_.erase(key);
}

asio::awaitable<void> Listeners::accept_loop(tcp::acceptor& acceptor, bool implicit, bool proxy) {
    for (;;) {
        boost::system::error_code ec;
        auto strand = asio::make_strand(io_);
        tcp::socket socket(strand);
        co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            if (!acceptor.is_open()) co_return;
            if (ec == asio::error::no_descriptors || ec.value() == ENFILE || ec == asio::error::no_buffer_space ||
                ec == asio::error::no_memory) {
                // Out of descriptors (or kernel memory): the pending connection stays in the backlog and
                // accept() would fail again at once, a core spinning. Wait for sessions to end instead.
                ++accept_stalls_;
                std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::steady_clock::now().time_since_epoch())
                                       .count();
                std::int64_t last = last_stall_log_ms_.load();
                if (now - last > 60000 && last_stall_log_ms_.compare_exchange_strong(last, now)) {
                    log::warn("net", "cannot accept connections: out of file descriptors (raise LimitNOFILE, or "
                                     "lower the connection caps)",
                              {{"error", ec.message()}});
                }
                asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(200));
                co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            }
            continue;
        }
        std::uint64_t id = ++connections_;
        if (options_.at_capacity && options_.at_capacity()) {
            ++refused_;
            // On an implicit-TLS port a plaintext line may only be garbage to the client.
            if (!options_.refusal.empty() && !(implicit && options_.silent_refusal_on_implicit_tls))
                asio::write(socket, asio::buffer(options_.refusal), ec);
            socket.close(ec);
            continue;
        }
        // Small replies must not wait for delayed ACKs (pipelining).
        if (options_.no_delay) socket.set_option(tcp::no_delay(true), ec);
        if (proxy) {
            auto strand_of_socket = socket.get_executor();
            asio::co_spawn(strand_of_socket, proxy_handshake(std::move(socket), implicit, id), asio::detached);
            continue;
        }
        auto peer = socket.remote_endpoint(ec);
        on_accept_(std::move(socket), implicit, id, ec ? std::string() : ip_text(peer.address()));
    }
}

// The PROXY header: peeked (never reading past it: what follows may be a TLS ClientHello), checked,
// then consumed. Everything runs on the connection's strand; the deadline timer closes the socket.
asio::awaitable<void> Listeners::proxy_handshake(tcp::socket socket, bool implicit, std::uint64_t id) {
    boost::system::error_code ec;
    auto peer = socket.remote_endpoint(ec);
    std::string peer_ip = ec ? std::string() : ip_text(peer.address());
    auto reject = [&](const std::string& why) {
        ++proxy_rejected_;
        log::warn("net", "connection closed: PROXY protocol", {{"peer", peer_ip}, {"error", why}});
        boost::system::error_code ignored;
        socket.close(ignored);
    };
    if (peer_ip.empty() || std::none_of(options_.proxy_trusted.begin(), options_.proxy_trusted.end(),
                                        [&](const config::Network& n) { return n.contains(peer_ip); })) {
        reject("not from a trusted proxy (proxy_trusted)");
        co_return;
    }
    auto done = std::make_shared<bool>(false);
    asio::steady_timer deadline(socket.get_executor(), options_.proxy_timeout);
    deadline.async_wait([done, &socket](const boost::system::error_code& e) {
        if (e || *done) return;
        boost::system::error_code ignored;
        socket.cancel(ignored);
        socket.close(ignored);
    });
    std::string buf(16 + protocol::proxy::kMaxV2Length, '\0');
    protocol::proxy::Result r;
    for (;;) {
        std::size_t n = co_await socket.async_receive(asio::buffer(buf), tcp::socket::message_peek,
                                                      asio::redirect_error(asio::use_awaitable, ec));
        if (ec || n == 0) {
            *done = true;
            deadline.cancel();
            reject(ec == asio::error::operation_aborted || !socket.is_open() ? "no header in time"
                                                                            : "closed before the header");
            co_return;
        }
        r = protocol::proxy::parse(std::string_view(buf.data(), n));
        if (r.status != protocol::proxy::Status::NeedMore) break;
        // Part of a header: the rest is on its way (proxies send it in one segment; this is rare).
        asio::steady_timer pause(socket.get_executor(), std::chrono::milliseconds(20));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (!socket.is_open()) {
            reject("no header in time");
            co_return;
        }
    }
    if (r.status == protocol::proxy::Status::Invalid) {
        *done = true;
        deadline.cancel();
        reject(r.error);
        co_return;
    }
    co_await asio::async_read(socket, asio::buffer(buf.data(), r.consumed), asio::redirect_error(asio::use_awaitable, ec));
    *done = true;
    deadline.cancel();
    if (ec) {
        reject("closed during the header");
        co_return;
    }
    on_accept_(std::move(socket), implicit, id, r.header.local ? peer_ip : r.header.source);
}

}  // namespace gb::net
