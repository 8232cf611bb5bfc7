#include "proxy/pop3/server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include <array>

#include "common/log.h"
#include "protocol/pop3/pop3_engine.h"
#include "proxy/net/listener.h"

namespace gb::pop3 {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
namespace proto = gb::protocol::pop3;

struct Pop3Server::Impl {
    ServerOptions options;
    const smtp::Policy& policy;
    MaildropProvider& provider;

    net::ServerTls tls;
    asio::thread_pool auth_pool{1};  // scrypt checks: one at a time, off the network threads
    asio::thread_pool provider_pool;
    smtp::AuthThrottle own_throttle;
    smtp::AuthThrottle& throttle;  // options.shared_throttle, or own_throttle

    std::atomic<std::uint64_t> logins{0}, auth_failures{0}, retrieved{0}, deleted{0};
    std::atomic<std::size_t> active{0};
    std::atomic<std::size_t> authenticated{0};  // sessions logged in now

    // Last: destroyed first, with the connections still running at stop(), which use the members above.
    net::Listeners listeners;

    Impl(ServerOptions o, const smtp::Policy& p, MaildropProvider& m)
        : options(std::move(o)),
          policy(p),
          provider(m),
          provider_pool(static_cast<std::size_t>(std::max(1, options.provider_threads))),
          own_throttle(options.auth_throttle),
          throttle(options.shared_throttle ? *options.shared_throttle : own_throttle) {}

};

namespace {

// Runs a blocking provider call, turning exceptions into Temporary errors.
template <typename F>
auto guarded(F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const std::exception& e) {
        return ProviderError{ProviderError::Kind::Temporary, e.what()};
    } catch (...) {
        return ProviderError{ProviderError::Kind::Temporary, "unknown exception"};
    }
}

// One POP3 connection: the coroutine owns the engine; backend callbacks run inside engine calls on the
// same strand; asynchronous answers come back through post() + the wake timer.
class Connection : public std::enable_shared_from_this<Connection>, public proto::Pop3Backend, public net::Drainable {
public:
    Connection(Pop3Server::Impl& srv, tcp::socket socket, bool implicit_tls, std::uint64_t id, std::string client_ip)
        : srv_(srv),
          executor_(socket.get_executor()),
          socket_(std::move(socket)),
          implicit_tls_(implicit_tls),
          wake_(executor_),
          deadline_(executor_) {
        // The client as the listener saw it: the socket's peer, or the one a PROXY header named (then the
        // balancer's own address must not make a remote client "loopback").
        ip_ = std::move(client_ip);
        boost::system::error_code ec;
        auto address = boost::asio::ip::make_address(ip_, ec);
        loopback_ = !ec && net::is_loopback(address);
        ctx_.conn_id = fmt::format("P{}", id);
    }

    awaitable<void> run();

    // Graceful shutdown: a session waiting for its next command gets "-ERR [SYS/TEMP] Server shutting
    // down" now (nothing deleted: no UPDATE), one being answered (a RETR streaming) after that answer.
    void drain() override {
        asio::post(executor_, [self = shared_from_this()] {
            self->draining_ = true;
            if (self->reading_ && self->quiet()) {
                self->drain_cancelled_ = true;
                boost::system::error_code ignored;
                self->lowest().cancel(ignored);
            }
        });
    }
    bool quiet() const {
        return engine_ && engine_->between_commands();
    }

    // --- Pop3Backend ------------------------------------------------------------------------------------
    proto::Answer authenticate(const proto::Session&, const proto::AuthRequest& request) override {
        auto self = shared_from_this();
        std::string user = request.user;
        Secret password = request.password;
        std::string mechanism = request.mechanism;
        auto delay = srv_.throttle.delay_for(ip_);
        asio::post(srv_.auth_pool, [self, user = std::move(user), password = std::move(password), mechanism,
                                    delay] {
            auto account = self->srv_.policy.authenticate(user, password);
            if (account) {
                self->srv_.throttle.record_success(self->ip_);
            } else {
                self->srv_.throttle.record_failure(self->ip_);
                ++self->srv_.auth_failures;
            }
            asio::post(self->executor_, [self, account = std::move(account), user, mechanism, delay]() mutable {
                bool ok = account.has_value();
                if (ok) {
                    self->account_ = std::move(account);
                    self->logged_in_.set(self->srv_.authenticated);
                }
                log::Logger::instance().write(ok ? log::Level::Info : log::Level::Warn, "pop3", &self->ctx_,
                                              ok ? "authenticated" : "authentication failed",
                                              {{"ip", self->ip_},
                                               {"login", log::client_text(user, 100)},
                                               {"mechanism", mechanism},
                                               {"tls", self->tls_ ? "yes" : "no"}});
                self->deliver(ok ? proto::Answer::accept() : proto::Answer::refuse(), delay);
            });
        });
        return proto::Answer::pending();
    }

    proto::Answer open_maildrop(const proto::Session&) override {
        if (!account_) return proto::Answer::refuse();
        auto self = shared_from_this();
        asio::post(srv_.provider_pool, [self, account = *account_] {
            auto result = guarded([&] { return self->srv_.provider.list(account); });
            asio::post(self->executor_, [self, result = std::move(result)]() mutable {
                if (auto* e = std::get_if<ProviderError>(&result)) {
                    log::Logger::instance().write(log::Level::Warn, "pop3", &self->ctx_, "maildrop unavailable",
                                                  {{"mailbox", self->account_->mailbox},
                                                   {"error", log::client_text(e->detail)}});
                    self->account_.reset();
                    self->logged_in_.clear();
                    self->deliver(proto::Answer::refuse(), {});
                    return;
                }
                self->entries_ = std::move(std::get<0>(result));
                std::uint64_t octets = 0;
                for (const auto& m : self->entries_) octets += m.size;
                ++self->srv_.logins;
                log::Logger::instance().write(log::Level::Info, "pop3", &self->ctx_, "maildrop opened",
                                              {{"mailbox", self->account_->mailbox},
                                               {"messages", static_cast<std::uint64_t>(self->entries_.size())},
                                               {"octets", octets}});
                self->deliver(proto::Answer::accept(), {});
            });
        });
        return proto::Answer::pending();
    }

    std::vector<proto::MessageInfo> maildrop() override {
        std::vector<proto::MessageInfo> out;
        out.reserve(entries_.size());
        for (const auto& e : entries_) out.push_back(proto::MessageInfo{e.uid, e.size});
        return out;
    }

    proto::Answer retrieve(const proto::Session&, std::size_t index) override {
        if (!account_ || index >= entries_.size()) return proto::Answer::refuse();
        if (!srv_.policy.still_valid(*account_)) return changed_account();
        auto self = shared_from_this();
        asio::post(srv_.provider_pool, [self, account = *account_, entry = entries_[index], index] {
            auto result = guarded([&] { return self->srv_.provider.fetch(account, entry); });
            asio::post(self->executor_, [self, result = std::move(result), index]() mutable {
                if (auto* e = std::get_if<ProviderError>(&result)) {
                    bool gone = e->kind == ProviderError::Kind::Gone;
                    log::Logger::instance().write(log::Level::Warn, "pop3", &self->ctx_, "retrieve failed",
                                                  {{"mailbox", self->account_->mailbox},
                                                   {"message", static_cast<std::uint64_t>(index + 1)},
                                                   {"gone", gone ? "yes" : "no"},
                                                   {"error", log::client_text(e->detail)}});
                    self->deliver(gone ? proto::Answer::error("message " + std::to_string(index + 1) +
                                                              " no longer exists")
                                       : proto::Answer::refuse(),
                                  {});
                    return;
                }
                self->message_ = std::move(std::get<0>(result));
                ++self->srv_.retrieved;
                log::Logger::instance().write(log::Level::Debug, "pop3", &self->ctx_, "retrieved",
                                              {{"message", static_cast<std::uint64_t>(index + 1)},
                                               {"octets", static_cast<std::uint64_t>(self->message_.size())}});
                self->deliver(proto::Answer::accept(), {});
            });
        });
        return proto::Answer::pending();
    }

    std::string take_message() override { return std::move(message_); }

    // A reload (SIGHUP) removed the account or changed its password or mailbox since the login.
    proto::Answer changed_account() {
        log::Logger::instance().write(log::Level::Info, "pop3", &ctx_, "refused: the account changed",
                                      {{"login", log::client_text(account_->login)}});
        return proto::Answer::error("the account changed (configuration reloaded); please log in again");
    }

    proto::Answer commit_deletes(const proto::Session&, const std::vector<std::size_t>& indexes) override {
        if (!account_) return proto::Answer::refuse();
        if (!srv_.policy.still_valid(*account_)) return changed_account();
        std::vector<MaildropEntry> doomed;
        for (auto i : indexes)
            if (i < entries_.size()) doomed.push_back(entries_[i]);
        auto self = shared_from_this();
        asio::post(srv_.provider_pool, [self, account = *account_, doomed = std::move(doomed)] {
            std::optional<ProviderError> error;
            try {
                error = self->srv_.provider.remove(account, doomed);
            } catch (const std::exception& e) {
                error = ProviderError{ProviderError::Kind::Temporary, e.what()};
            } catch (...) {
                error = ProviderError{ProviderError::Kind::Temporary, "unknown exception"};
            }
            std::uint64_t n = doomed.size();
            asio::post(self->executor_, [self, error = std::move(error), n] {
                if (error) {
                    log::Logger::instance().write(log::Level::Error, "pop3", &self->ctx_, "delete failed",
                                                  {{"mailbox", self->account_->mailbox},
                                                   {"messages", n},
                                                   {"error", log::client_text(error->detail)}});
                    self->deliver(proto::Answer::refuse(), {});
                    return;
                }
                self->srv_.deleted += n;
                log::Logger::instance().write(log::Level::Info, "pop3", &self->ctx_, "deleted",
                                              {{"mailbox", self->account_->mailbox}, {"messages", n}});
                self->deliver(proto::Answer::accept(), {});
            });
        });
        return proto::Answer::pending();
    }

private:
    // Hands an asynchronous answer to the coroutine (on the strand), optionally after a delay.
    void deliver(proto::Answer answer, std::chrono::milliseconds delay) {
        answer_ = std::move(answer);
        answer_delay_ = delay;
        wake_.cancel();
    }

    // Cancels the socket's operations when the deadline passes (sets timed_out_).
    void arm(std::chrono::steady_clock::duration d) {
        timed_out_ = false;
        deadline_.expires_after(d);
        auto self = shared_from_this();
        deadline_.async_wait([self](boost::system::error_code e) {
            if (e) return;
            self->timed_out_ = true;
            boost::system::error_code ignored;
            self->lowest().cancel(ignored);
        });
    }

    awaitable<bool> write_out(const std::string& data) {
        boost::system::error_code ec;
        arm(srv_.options.idle_timeout);  // a client that stops reading is dropped
        if (tls_) co_await asio::async_write(*tls_, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
        else co_await asio::async_write(socket_, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
        deadline_.cancel();
        co_return !ec;
    }

    // Reads with the idle timeout. Returns bytes read; 0 with timed_out_ set on timeout; 0 on error.
    awaitable<std::size_t> read_some(std::array<char, 16384>& buf) {
        boost::system::error_code ec;
        arm(srv_.options.idle_timeout);
        std::size_t n = 0;
        if (tls_) n = co_await tls_->async_read_some(asio::buffer(buf), asio::redirect_error(use_awaitable, ec));
        else n = co_await socket_.async_read_some(asio::buffer(buf), asio::redirect_error(use_awaitable, ec));
        deadline_.cancel();
        co_return ec ? 0 : n;
    }

    awaitable<bool> handshake() {
        boost::system::error_code ec;
        tls_ctx_ = srv_.tls.get();  // the certificate of this moment (a reload may replace it for later ones)
        tls_ = std::make_unique<asio::ssl::stream<tcp::socket>>(std::move(socket_), *tls_ctx_);
        arm(std::chrono::seconds(30));
        co_await tls_->async_handshake(asio::ssl::stream_base::server, asio::redirect_error(use_awaitable, ec));
        deadline_.cancel();
        if (ec)
            log::Logger::instance().write(log::Level::Debug, "pop3", &ctx_, "TLS handshake failed",
                                          {{"ip", ip_}, {"error", ec.message()}});
        co_return !ec;
    }

    tcp::socket& lowest() { return tls_ ? tls_->next_layer() : socket_; }

    Pop3Server::Impl& srv_;
    asio::any_io_executor executor_;
    tcp::socket socket_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;  // before tls_: outlives the stream
    std::unique_ptr<asio::ssl::stream<tcp::socket>> tls_;
    bool implicit_tls_;
    bool draining_ = false;         // the server is shutting down
    bool reading_ = false;          // waiting for the client's next bytes
    bool drain_cancelled_ = false;  // that read was cancelled by drain()
    std::string ip_;
    bool loopback_ = false;
    log::Context ctx_;
    asio::steady_timer wake_;
    asio::steady_timer deadline_;
    bool timed_out_ = false;
    std::optional<proto::Answer> answer_;
    std::chrono::milliseconds answer_delay_{0};

    std::unique_ptr<proto::Pop3Engine> engine_;
    std::optional<smtp::Account> account_;
    net::GaugeHold logged_in_;
    std::vector<MaildropEntry> entries_;  // the snapshot, for fetch/remove by index
    std::string message_;                 // between a fetch and take_message()
};

awaitable<void> Connection::run() {
    auto self = shared_from_this();  // the coroutine keeps its connection alive
    struct Active {
        std::atomic<std::size_t>& n;
        ~Active() { --n; }
    } active{srv_.active};
    net::Tracked tracked(srv_.listeners, weak_from_this());
    if (implicit_tls_ && !co_await handshake()) co_return;

    proto::Pop3Config cfg;
    cfg.hostname = srv_.options.hostname;
    cfg.tls_available = srv_.tls.available();
    engine_ = std::make_unique<proto::Pop3Engine>(cfg, proto::ConnectionInfo{loopback_, implicit_tls_}, *this);
    log::Logger::instance().write(log::Level::Debug, "pop3", &ctx_, "connected",
                                  {{"ip", ip_}, {"tls", implicit_tls_ ? "implicit" : "no"}});

    std::array<char, 16384> buf;
    std::string pending_input;  // bytes the engine did not take yet (it is busy answering a command)
    for (;;) {
        bool write_failed = false;
        while (engine_->has_output()) {
            if (!co_await write_out(engine_->take_output())) {
                write_failed = true;
                break;
            }
        }
        if (write_failed) {
            engine_->connection_lost();
            break;
        }
        if (engine_->wants_close()) break;
        if (engine_->wants_stls()) {
            pending_input.clear();  // anything pipelined before the handshake is discarded (RFC 2595)
            if (!co_await handshake()) {
                engine_->connection_lost();
                break;
            }
            engine_->tls_started();
            continue;
        }
        if (engine_->awaiting_backend()) {
            if (!answer_) {
                boost::system::error_code ec;
                wake_.expires_at(asio::steady_timer::time_point::max());
                co_await wake_.async_wait(asio::redirect_error(use_awaitable, ec));
                if (!answer_) continue;
            }
            if (answer_delay_.count() > 0) {
                asio::steady_timer t(executor_, answer_delay_);
                boost::system::error_code ec;
                co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
            }
            proto::Answer a = std::move(*answer_);
            answer_.reset();
            answer_delay_ = {};
            engine_->resume(std::move(a));
            continue;
        }
        if (!pending_input.empty()) {
            std::size_t used = engine_->feed(pending_input);
            pending_input.erase(0, used);
            if (used > 0 || engine_->has_output() || engine_->awaiting_backend() || engine_->wants_close() ||
                engine_->wants_stls())
                continue;
            if (pending_input.size() > 65536) {  // the engine never refuses input when idle; be safe anyway
                engine_->connection_lost();
                break;
            }
        }
        if (draining_ && pending_input.empty() && quiet()) {
            engine_->shutdown();
            continue;  // writes the -ERR and closes
        }
        reading_ = true;
        std::size_t n = co_await read_some(buf);
        reading_ = false;
        if (n == 0) {
            if (timed_out_) {
                log::Logger::instance().write(log::Level::Info, "pop3", &ctx_, "idle timeout", {{"ip", ip_}});
                engine_->timeout();
                continue;  // closes without a response (RFC 1939 autologout)
            }
            if (drain_cancelled_) {
                drain_cancelled_ = false;
                continue;  // the -ERR above
            }
            engine_->connection_lost();
            break;
        }
        std::string_view in(buf.data(), n);
        if (!pending_input.empty()) {
            pending_input.append(in);
            continue;
        }
        std::size_t used = engine_->feed(in);
        if (used < n) pending_input.append(in.substr(used));
    }
    log::Logger::instance().write(log::Level::Debug, "pop3", &ctx_, "closed", {{"ip", ip_}});
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
    lowest().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close(ec);
}

}  // namespace

Pop3Server::Pop3Server(ServerOptions options, const smtp::Policy& policy, MaildropProvider& provider)
    : impl_(std::make_unique<Impl>(std::move(options), policy, provider)) {}

Pop3Server::~Pop3Server() { stop(); }

void Pop3Server::start() {
    Impl& d = *impl_;
    const auto& o = d.options;
    d.tls.set(d.listeners.open(o.listen, o.tls_listen, o.tls_cert_pem, o.tls_key_pem, o.tls_min_version));
    net::AcceptOptions accept;
    accept.proxy_protocol = o.proxy_protocol;
    accept.proxy_trusted = o.proxy_trusted;
    accept.at_capacity = [&d] { return d.active.load() >= d.options.max_connections; };
    accept.refusal = "-ERR [SYS/TEMP] Too many connections, try again later\r\n";
    accept.silent_refusal_on_implicit_tls = true;
    auto spawn = [&d](tcp::socket socket, bool implicit, std::uint64_t id, std::string client_ip) {
        ++d.active;
        net::spawn<Connection>(d, std::move(socket), implicit, id, std::move(client_ip));
    };
    d.listeners.start(std::move(accept), spawn, o.threads);
}

void Pop3Server::drain() { impl_->listeners.drain(); }

void Pop3Server::set_tls(std::shared_ptr<asio::ssl::context> tls) {
    impl_->tls.replace(std::move(tls));
}

void Pop3Server::stop() {
    impl_->listeners.stop();
    impl_->auth_pool.join();
    impl_->provider_pool.join();
}

std::vector<std::uint16_t> Pop3Server::ports() const { return impl_->listeners.ports(); }

ServerStats Pop3Server::stats() const {
    ServerStats s;
    s.connections = impl_->listeners.connections();
    s.refused_connections = impl_->listeners.refused();
    s.logins = impl_->logins;
    s.auth_failures = impl_->auth_failures;
    s.messages_retrieved = impl_->retrieved;
    s.messages_deleted = impl_->deleted;
    s.active = impl_->active;
    s.authenticated = impl_->authenticated;
    return s;
}

}  // namespace gb::pop3
