// What the SMTP, IMAP and POP3 front ends share below their sessions: the server TLS context, the
// listening sockets (plain and implicit TLS), the accept loops with the connection cap, and the
// network threads.
//
// Invariants: accepted sockets come with their own strand of the io_context (a connection never
// changes strand); a connection over the cap gets the protocol's refusal line (if any) and is closed
// before any protocol code sees it. Nothing here reads from a client.
#pragma once

#include <utility>  // first: Asio 1.18's awaitable.hpp uses std::exchange without including it

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "proxy/config/config.h"

namespace gb::net {

using tcp = boost::asio::ip::tcp;

// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.y.z).
bool is_loopback(const boost::asio::ip::address& a);
// The address as logged and matched against policy: IPv4-mapped IPv6 as dotted IPv4.
std::string ip_text(const boost::asio::ip::address& a);

// A TLS server context: TLS 1.2 or later ("1.3": 1.3 only), the certificate chain and the private key
// (both PEM). nullptr when cert_pem is empty (TLS not configured). Throws on a bad certificate or key.
std::unique_ptr<boost::asio::ssl::context> make_server_tls(const std::string& cert_pem, const std::string& key_pem,
                                                           std::string_view min_version);

// A server's TLS context, replaceable while it serves (SIGHUP with a renewed certificate): each
// connection takes the context of the moment it starts TLS and keeps it; later ones get the new one.
class ServerTls {
public:
    void set(std::shared_ptr<boost::asio::ssl::context> ctx) {
        std::lock_guard lock(mutex_);
        ctx_ = std::move(ctx);
    }
    std::shared_ptr<boost::asio::ssl::context> get() const {
        std::lock_guard lock(mutex_);
        return ctx_;
    }
    bool available() const { return get() != nullptr; }
    // A reload: the new context, unless TLS was not configured at start (then there are no TLS
    // listeners, and STARTTLS is not offered: it stays off).
    void replace(std::shared_ptr<boost::asio::ssl::context> ctx) {
        std::lock_guard lock(mutex_);
        if (ctx_) ctx_ = std::move(ctx);
    }

private:
    mutable std::mutex mutex_;
    std::shared_ptr<boost::asio::ssl::context> ctx_;
};

// A connection that can be asked to end at its next quiet moment (graceful shutdown). drain() may be
// called from any thread; the connection posts to its own strand, says goodbye in its protocol when no
// transaction or command is in progress, and otherwise after the current one ends.
class Drainable {
public:
    virtual ~Drainable() = default;
    virtual void drain() = 0;
};

struct AcceptOptions {
    std::function<bool()> at_capacity;            // true: refuse the connection just accepted
    std::string refusal;                          // sent to a refused client before closing ("" = none)
    bool silent_refusal_on_implicit_tls = false;  // on implicit-TLS ports close without the refusal
    bool no_delay = true;                         // TCP_NODELAY on accepted sockets
    // Bound addresses whose connections start with a PROXY protocol header (v1 or v2). Such a
    // connection is closed unless it comes from `proxy_trusted` and sends a valid header within
    // `proxy_timeout`; then the protocol sees the client the header names.
    std::vector<config::ListenAddress> proxy_protocol;
    std::vector<config::Network> proxy_trusted;
    std::chrono::milliseconds proxy_timeout{5000};
};

// The listening sockets of one server and the threads running its io_context.
class Listeners {
public:
    // An accepted connection (on its own strand), whether it came in on an implicit-TLS port, its id (1,
    // 2, ... counting refused connections too) and the client's address as policy and logs must see it
    // (the socket's peer, or the client a PROXY header named). Runs on a network thread; must not block.
    using OnAccept = std::function<void(tcp::socket socket, bool implicit, std::uint64_t id, std::string client_ip)>;

    Listeners() = default;
    ~Listeners();  // stop()
    Listeners(const Listeners&) = delete;
    Listeners& operator=(const Listeners&) = delete;

    // Binds and listens on each address (port 0 = ephemeral, reuse_address set). Throws on failure.
    void bind(const std::vector<config::ListenAddress>& addresses, bool implicit);
    // A server's usual set: the TLS context (make_server_tls), then bind(listen, false) and, when TLS is
    // configured, bind(tls_listen, true). Returns the TLS context (nullptr without TLS).
    std::unique_ptr<boost::asio::ssl::context> open(const std::vector<config::ListenAddress>& listen,
                                                    const std::vector<config::ListenAddress>& tls_listen,
                                                    const std::string& cert_pem, const std::string& key_pem,
                                                    std::string_view min_version);
    // Starts the accept loops of every bound address and max(1, threads) threads running the io_context.
    void start(AcceptOptions options, OnAccept on_accept, int threads);
    // Closes the acceptors, stops the io_context and joins its threads. Idempotent.
    void stop();
    // Graceful shutdown, first step: closes the acceptors (new clients are refused by the kernel) and
    // asks every tracked connection to drain(); connections started later are told at once. The threads
    // keep running until stop().
    void drain();
    bool draining() const { return draining_; }

    // Connections register while they run, so drain() can reach them. track() returns a key for
    // untrack(); a connection tracked after drain() began is asked to drain at once.
    std::uint64_t track(std::weak_ptr<Drainable> connection);
    void untrack(std::uint64_t key);

    // Bound ports in the order of bind() calls.
    std::vector<std::uint16_t> ports() const { return ports_; }
    std::uint64_t connections() const { return connections_; }
    std::uint64_t refused() const { return refused_; }
    std::uint64_t proxy_rejected() const { return proxy_rejected_; }  // untrusted, malformed or too slow
    std::uint64_t accept_stalls() const { return accept_stalls_; }    // accept() out of descriptors

private:
    boost::asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, bool implicit, bool proxy);
    boost::asio::awaitable<void> proxy_handshake(tcp::socket socket, bool implicit, std::uint64_t id);

    // Before io_: connections still running at stop() are destroyed with io_ and untrack themselves.
    std::mutex tracked_mutex_;
    std::map<std::uint64_t, std::weak_ptr<Drainable>> tracked_;
    std::uint64_t next_key_ = 0;
    std::atomic<bool> draining_{false};
    boost::asio::io_context io_;
    std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
    // Each accept loop runs on its own strand, and the acceptor is closed on it: an acceptor is not safe
    // to close on one thread while another starts the next accept.
    std::vector<boost::asio::strand<boost::asio::io_context::executor_type>> accept_strands_;
    std::vector<bool> implicit_;
    std::vector<std::uint16_t> ports_;
    AcceptOptions options_;
    OnAccept on_accept_;
    std::vector<std::thread> threads_;
    std::vector<std::string> bound_;  // "ip:port" as configured, per acceptor (PROXY listeners by address)
    std::atomic<std::uint64_t> connections_{0}, refused_{0}, proxy_rejected_{0}, accept_stalls_{0};
    std::atomic<std::int64_t> last_stall_log_ms_{-60000};  // steady clock; the stall warning at most once a minute
};

// One unit of a gauge held while a condition lasts (a session logged in): set() takes it once, clear() or
// the destructor gives it back. Owned by one connection (its strand).
class GaugeHold {
public:
    GaugeHold() = default;
    GaugeHold(const GaugeHold&) = delete;
    GaugeHold& operator=(const GaugeHold&) = delete;
    ~GaugeHold() { clear(); }
    void set(std::atomic<std::size_t>& gauge) {
        if (gauge_) return;
        gauge_ = &gauge;
        ++gauge;
    }
    void clear() {
        if (gauge_) --*gauge_;
        gauge_ = nullptr;
    }

private:
    std::atomic<std::size_t>* gauge_ = nullptr;
};

// Registration of a running connection with its Listeners (untracked when destroyed).
class Tracked {
public:
    Tracked(Listeners& listeners, std::weak_ptr<Drainable> connection)
        : listeners_(listeners), key_(listeners.track(std::move(connection))) {}
    ~Tracked() { listeners_.untrack(key_); }
    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;

private:
    Listeners& listeners_;
    std::uint64_t key_;
};

// For an OnAccept: std::make_shared<Connection>(server, socket, implicit, id, client_ip)->run() on the socket's
// strand (run() is a coroutine that keeps its connection alive).
template <class Connection, class Server>
void spawn(Server& server, tcp::socket socket, bool implicit, std::uint64_t id, std::string client_ip) {
    auto strand = socket.get_executor();
    auto conn = std::make_shared<Connection>(server, std::move(socket), implicit, id, std::move(client_ip));
    boost::asio::co_spawn(strand, [conn]() { return conn->run(); }, boost::asio::detached);
}

}  // namespace gb::net
