#include "proxy/net/listener.h"

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <openssl/ssl.h>

#include <algorithm>

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
    for (std::size_t i = 0; i < acceptors_.size(); ++i)
        asio::co_spawn(io_, accept_loop(*acceptors_[i], implicit_[i]), asio::detached);
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { io_.run(); });
}

void Listeners::stop() {
    for (auto& a : acceptors_) {
        asio::post(io_, [&a] {
            boost::system::error_code ec;
            a->close(ec);
        });
    }
    io_.stop();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

asio::awaitable<void> Listeners::accept_loop(tcp::acceptor& acceptor, bool implicit) {
    for (;;) {
        boost::system::error_code ec;
        auto strand = asio::make_strand(io_);
        tcp::socket socket(strand);
        co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            if (!acceptor.is_open()) co_return;
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
        on_accept_(std::move(socket), implicit, id);
    }
}

}  // namespace gb::net
