#include "proxy/imap/server.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <exception>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include <array>
#include <atomic>
#include <deque>

#include "common/log.h"
#include "proxy/net/listener.h"

namespace gb::imap {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

struct ImapServer::Impl {
    ServerOptions options;
    SessionServices services;
    asio::thread_pool work;
    net::ServerTls tls;
    std::atomic<std::size_t> active{0};
    std::atomic<std::uint64_t> auth_failures{0};
    std::atomic<std::size_t> authenticated{0}, idling{0};

    // Last: destroyed first, with the connections still running at stop(), which use the members above.
    net::Listeners listeners;

    Impl(ServerOptions o, SessionServices s)
        : options(std::move(o)), services(s), work(static_cast<std::size_t>(std::max(1, options.work_threads))) {
        services.auth_failures = &auth_failures;
        services.authenticated = &authenticated;
        services.idling = &idling;
    }
};

namespace {

constexpr std::size_t kOutputHigh = 256 * 1024;  // stop producing while this much output is queued

class Connection : public std::enable_shared_from_this<Connection>, public net::Drainable {
public:
    Connection(ImapServer::Impl& srv, tcp::socket socket, bool implicit_tls, std::uint64_t id, std::string client_ip)
        : srv_(srv),
          strand_(socket.get_executor()),
          work_(asio::make_strand(srv.work)),
          socket_(std::move(socket)),
          implicit_tls_(implicit_tls),
          id_(id),
          out_signal_(strand_),
          drained_signal_(strand_),
          deadline_(strand_) {
        // The client as the listener saw it: the socket's peer, or the one a PROXY header named (then the
        // balancer's own address must not make a remote client "loopback").
        ip_ = std::move(client_ip);
        boost::system::error_code ec;
        auto address = boost::asio::ip::make_address(ip_, ec);
        loopback_ = !ec && net::is_loopback(address);
        ctx_.conn_id = fmt::format("I{}", id);
    }

    awaitable<void> run();

    // Graceful shutdown: a session between commands (or in IDLE) gets "* BYE" now; a command in
    // progress (an APPEND literal arriving, a MOVE being carried out) finishes and is answered first.
    void drain() override {
        asio::post(strand_, [self = shared_from_this()] {
            self->draining_ = true;
            self->cancel_read_for_drain();
        });
    }
    // Wakes the reader blocked for the client's next bytes so that it says goodbye. cancel() stops every
    // operation on the socket, so never while output is being written (a FETCH streaming to a slow
    // client): the writer calls this again once it has written everything.
    void cancel_read_for_drain() {
        if (!draining_ || !reading_ || drain_cancelled_ || writing_ || !outq_.empty()) return;
        drain_cancelled_ = true;
        boost::system::error_code ignored;
        lowest().cancel(ignored);
    }

private:
    awaitable<void> writer();
    void enqueue(std::string data) {
        if (data.empty() || closing_) return;
        out_bytes_ += data.size();
        outq_.push_back(std::move(data));
        out_signal_.cancel();
    }
    awaitable<void> wait_drained() {
        while (!closing_ && (!outq_.empty() || writing_)) {
            boost::system::error_code ec;
            drained_signal_.expires_at(asio::steady_timer::time_point::max());
            co_await drained_signal_.async_wait(asio::redirect_error(use_awaitable, ec));
        }
    }
    // Runs one session action on the work strand (the session's thread), then returns to the I/O strand
    // with the session's output queued to the writer. (An enum, not a lambda: GCC 12 destroys
    // non-trivial temporaries in a co_await full-expression twice.)
    enum class Action { Feed, Step, TlsStarted, Drain };
    void act(Action action) {
        // A failure below the session (the state database unreadable or full, memory) ends this connection
        // with a BYE; it must never escape into the thread pool, which would end the whole process.
        try {
            switch (action) {
                case Action::Feed:
                    session_->feed(input_);
                    input_.clear();
                    break;
                case Action::Step:
                    session_->step();
                    break;
                case Action::TlsStarted:
                    session_->tls_started();
                    break;
                case Action::Drain:
                    if (session_->quiet()) session_->shutdown();
                    break;
            }
        } catch (const std::exception& e) {
            input_.clear();
            session_->internal_error(e.what());
        }
        result_.out = session_->take_output();
        result_.delay = session_->take_delay();
        result_.close = session_->wants_close();
        result_.starttls = session_->wants_starttls();
        result_.busy = session_->busy();
    }
    awaitable<void> on_session(Action action) {
        // The work strand runs the action and then wakes this coroutine through a timer on the I/O strand
        // (co_await post(work_) would resume the coroutine on its own executor, i.e. run the blocking
        // session work on the I/O thread).
        auto done = std::make_shared<asio::steady_timer>(strand_, asio::steady_timer::time_point::max());
        auto self = shared_from_this();
        asio::post(work_, [self, action, done] {
            self->act(action);
            asio::post(self->strand_, [done] { done->cancel(); });
        });
        boost::system::error_code ec;
        co_await done->async_wait(asio::redirect_error(use_awaitable, ec));
        if (result_.delay.count() > 0) {
            asio::steady_timer t(strand_, result_.delay);
            co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
        }
        enqueue(std::move(result_.out));
        want_close_ = result_.close;
        want_starttls_ = result_.starttls;
        busy_ = result_.busy;
    }
    awaitable<std::size_t> read_some(std::array<char, 8192>& buf);
    awaitable<bool> handshake();
    tcp::socket& lowest() { return tls_ ? tls_->next_layer() : socket_; }
    void close_socket() {
        boost::system::error_code ec;
        lowest().shutdown(tcp::socket::shutdown_both, ec);
        lowest().close(ec);
    }

    ImapServer::Impl& srv_;
    asio::any_io_executor strand_;
    asio::strand<asio::thread_pool::executor_type> work_;
    tcp::socket socket_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;  // before tls_: outlives the stream
    std::unique_ptr<asio::ssl::stream<tcp::socket>> tls_;
    bool implicit_tls_;
    bool draining_ = false;         // the server is shutting down
    bool reading_ = false;          // waiting for the client's next bytes
    bool drain_cancelled_ = false;  // that read was cancelled by drain()
    std::uint64_t id_;
    std::string ip_;
    bool loopback_ = false;
    log::Context ctx_;
    std::unique_ptr<Session> session_;
    std::string input_;  // bytes for the next Action::Feed
    struct Result {  // written on the work strand, read on the I/O strand after the wake-up
        std::string out;
        std::chrono::milliseconds delay{0};
        bool close = false, starttls = false, busy = false;
    } result_;

    std::deque<std::string> outq_;
    std::size_t out_bytes_ = 0;
    bool writing_ = false;
    bool closing_ = false;
    bool writer_done_ = false;
    asio::steady_timer out_signal_, drained_signal_, deadline_;
    bool timed_out_ = false;
    bool want_close_ = false, want_starttls_ = false, busy_ = false;
};

awaitable<void> Connection::writer() {
    auto self = shared_from_this();
    while (true) {
        while (outq_.empty() && !closing_) {
            boost::system::error_code ec;
            out_signal_.expires_at(asio::steady_timer::time_point::max());
            co_await out_signal_.async_wait(asio::redirect_error(use_awaitable, ec));
        }
        if (outq_.empty()) break;  // closing and nothing left
        // Everything queued goes out in one write (a response and its tagged line in one segment).
        std::string data = std::move(outq_.front());
        outq_.pop_front();
        while (!outq_.empty() && data.size() < 256 * 1024) {
            data += outq_.front();
            outq_.pop_front();
        }
        writing_ = true;
        boost::system::error_code ec;
        if (tls_) co_await asio::async_write(*tls_, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
        else co_await asio::async_write(socket_, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
        writing_ = false;
        out_bytes_ -= data.size();
        if (ec) {
            closing_ = true;
            outq_.clear();
            out_bytes_ = 0;
            close_socket();
        }
        if (outq_.empty()) {
            drained_signal_.cancel();
            cancel_read_for_drain();  // draining and the reader waits: it may say goodbye now
        }
    }
    writer_done_ = true;
    drained_signal_.cancel();
}

awaitable<std::size_t> Connection::read_some(std::array<char, 8192>& buf) {
    boost::system::error_code ec;
    timed_out_ = false;
    deadline_.expires_after(srv_.options.idle_timeout);
    auto self = shared_from_this();
    deadline_.async_wait([self](boost::system::error_code e) {
        if (e) return;
        self->timed_out_ = true;
        boost::system::error_code ignored;
        self->lowest().cancel(ignored);
    });
    std::size_t n = 0;
    if (tls_) n = co_await tls_->async_read_some(asio::buffer(buf), asio::redirect_error(use_awaitable, ec));
    else n = co_await socket_.async_read_some(asio::buffer(buf), asio::redirect_error(use_awaitable, ec));
    deadline_.cancel();
    co_return ec ? 0 : n;
}

awaitable<bool> Connection::handshake() {
    boost::system::error_code ec;
    tls_ctx_ = srv_.tls.get();  // the certificate of this moment (a reload may replace it for later ones)
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket>>(std::move(socket_), *tls_ctx_);
    deadline_.expires_after(std::chrono::seconds(30));
    auto self = shared_from_this();
    deadline_.async_wait([self](boost::system::error_code e) {
        if (e) return;
        boost::system::error_code ignored;
        self->lowest().cancel(ignored);
    });
    co_await tls_->async_handshake(asio::ssl::stream_base::server, asio::redirect_error(use_awaitable, ec));
    deadline_.cancel();
    co_return !ec;
}

awaitable<void> Connection::run() {
    auto self = shared_from_this();
    struct Active {
        std::atomic<std::size_t>& n;
        ~Active() { --n; }
    } active{srv_.active};
    net::Tracked tracked(srv_.listeners, weak_from_this());
    if (implicit_tls_ && !co_await handshake()) {
        close_socket();
        co_return;
    }
    SessionConfig cfg;
    cfg.hostname = srv_.options.hostname;
    cfg.loopback = loopback_;
    cfg.tls_available = srv_.tls.available();
    cfg.tls_active = implicit_tls_;
    cfg.client_ip = ip_;
    cfg.conn_id = id_;
    session_ = std::make_unique<Session>(srv_.services, cfg);
    std::weak_ptr<Connection> weak = self;
    session_->set_wake([weak] {
        auto c = weak.lock();
        if (!c) return;
        // Weak inside the handler too: one left queued on the work pool after stop() must not keep the
        // connection alive past the io_context it belongs to.
        asio::post(c->work_, [weak] {
            auto conn = weak.lock();
            if (!conn || !conn->session_) return;
            conn->session_->deliver_updates();
            std::string out = conn->session_->take_output();
            if (!out.empty())
                asio::post(conn->strand_, [conn, out = std::move(out)]() mutable { conn->enqueue(std::move(out)); });
        });
    });
    enqueue(session_->take_output());  // the greeting
    asio::co_spawn(strand_, writer(), asio::detached);
    log::Logger::instance().write(log::Level::Debug, "imap", &ctx_, "connected",
                                  {{"ip", ip_}, {"tls", implicit_tls_ ? "implicit" : "no"}});

    std::array<char, 8192> buf;
    while (!closing_) {
        if (want_close_) break;
        if (want_starttls_) {
            co_await wait_drained();
            if (closing_ || !co_await handshake()) break;
            co_await on_session(Action::TlsStarted);
            continue;
        }
        if (busy_ || out_bytes_ > kOutputHigh) {
            co_await wait_drained();
            if (busy_) co_await on_session(Action::Step);
            continue;
        }
        if (draining_) {
            co_await on_session(Action::Drain);
            if (want_close_) break;
        }
        reading_ = true;
        std::size_t n = co_await read_some(buf);
        reading_ = false;
        if (n == 0) {
            if (drain_cancelled_ && !timed_out_) {
                drain_cancelled_ = false;
                continue;  // the BYE above, or the command in progress goes on
            }
            if (timed_out_) enqueue("* BYE Autologout; idle for too long\r\n");
            break;
        }
        input_.assign(buf.data(), n);
        co_await on_session(Action::Feed);
    }
    co_await wait_drained();
    closing_ = true;
    out_signal_.cancel();
    boost::system::error_code ec;
    if (tls_) {
        deadline_.expires_after(std::chrono::seconds(2));
        deadline_.async_wait([self](boost::system::error_code e) {
            if (e) return;
            boost::system::error_code ignored;
            self->lowest().cancel(ignored);
        });
        co_await tls_->async_shutdown(asio::redirect_error(use_awaitable, ec));
        deadline_.cancel();
    }
    close_socket();
    // The session ends on its own strand (a notification may be running there).
    asio::post(work_, [self] {
        self->session_->set_wake(nullptr);
        self->session_.reset();
    });
}

}  // namespace

ImapServer::ImapServer(ServerOptions options, SessionServices services)
    : impl_(std::make_unique<Impl>(std::move(options), services)) {}

ImapServer::~ImapServer() { stop(); }

void ImapServer::start() {
    Impl& d = *impl_;
    const auto& o = d.options;
    d.tls.set(d.listeners.open(o.listen, o.tls_listen, o.tls_cert_pem, o.tls_key_pem, o.tls_min_version));
    net::AcceptOptions accept;
    accept.proxy_protocol = o.proxy_protocol;
    accept.proxy_trusted = o.proxy_trusted;
    accept.at_capacity = [&d] { return d.active.load() >= d.options.max_connections; };
    accept.refusal = "* BYE Too many connections, try again later\r\n";
    auto spawn = [&d](tcp::socket socket, bool implicit, std::uint64_t id, std::string client_ip) {
        ++d.active;
        net::spawn<Connection>(d, std::move(socket), implicit, id, std::move(client_ip));
    };
    d.listeners.start(std::move(accept), spawn, o.io_threads);
}

void ImapServer::drain() { impl_->listeners.drain(); }

void ImapServer::set_tls(std::shared_ptr<asio::ssl::context> tls) {
    impl_->tls.replace(std::move(tls));
}

void ImapServer::stop() {
    impl_->listeners.stop();
    impl_->work.join();
}

std::vector<std::uint16_t> ImapServer::ports() const { return impl_->listeners.ports(); }

ServerStats ImapServer::stats() const {
    ServerStats s;
    s.connections = impl_->listeners.connections();
    s.refused = impl_->listeners.refused();
    s.active = impl_->active;
    s.auth_failures = impl_->auth_failures;
    s.authenticated = impl_->authenticated;
    s.idling = impl_->idling;
    return s;
}

}  // namespace gb::imap
