#include "proxy/smtp/server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include <array>
#include <mutex>

#include "common/log.h"
#include "protocol/smtp/smtp_engine.h"
#include "proxy/net/listener.h"

namespace gb::smtp {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
namespace proto = gb::protocol::smtp;

struct SmtpServer::Impl {
    ServerOptions options;
    const Policy& policy;
    MessageSink& sink;

    net::ServerTls tls;
    asio::thread_pool auth_pool{1};  // scrypt checks: one at a time, off the network threads
    AuthThrottle own_throttle;
    AuthThrottle& throttle;  // options.shared_throttle, or own_throttle

    std::atomic<std::uint64_t> accepted_messages{0}, auth_failures{0};
    std::atomic<std::size_t> active{0};
    std::atomic<std::size_t> authenticated{0};  // sessions logged in now

    // Last: destroyed first, with the connections still running at stop(), which use the members above.
    net::Listeners listeners;

    Impl(ServerOptions o, const Policy& p, MessageSink& s)
        : options(std::move(o)), policy(p), sink(s), own_throttle(options.auth_throttle),
          throttle(options.shared_throttle ? *options.shared_throttle : own_throttle) {}
};

namespace {

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// One SMTP connection: the coroutine owns the engine; backend callbacks run inside engine calls on the
// same strand; asynchronous answers come back through post() + the wake timer.
class Connection : public std::enable_shared_from_this<Connection>, public proto::SmtpBackend, public net::Drainable {
public:
    Connection(SmtpServer::Impl& srv, tcp::socket socket, bool implicit_tls, std::uint64_t id, std::string client_ip)
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
        ctx_.conn_id = fmt::format("S{}", id);
    }

    awaitable<void> run();

    // Graceful shutdown: a session waiting for its next command gets 421 now; one in a transaction
    // finishes it (the message is answered) and gets 421 before its next command.
    void drain() override {
        asio::post(executor_, [self = shared_from_this()] {
            self->draining_ = true;
            if (self->reading_ && self->engine_ && self->engine_->between_transactions()) {
                self->drain_cancelled_ = true;
                boost::system::error_code ignored;
                self->lowest().cancel(ignored);
            }
        });
    }

    // --- SmtpBackend -----------------------------------------------------------------------------------
    proto::Answer authenticate(const proto::Session&, const proto::AuthRequest& request) override {
        auto self = shared_from_this();
        std::string user = request.user;
        Secret password = request.password;
        auto delay = srv_.throttle.delay_for(ip_);
        asio::post(srv_.auth_pool, [self, user = std::move(user), password = std::move(password), delay] {
            auto account = self->srv_.policy.authenticate(user, password);
            if (account) {
                self->srv_.throttle.record_success(self->ip_);
            } else {
                self->srv_.throttle.record_failure(self->ip_);
                ++self->srv_.auth_failures;
            }
            asio::post(self->executor_, [self, account = std::move(account), user, delay]() mutable {
                bool ok = account.has_value();
                if (ok) {
                    self->account_ = std::move(account);
                    self->logged_in_.set(self->srv_.authenticated);
                }
                // The login as the client typed it (escaped, capped), as IMAP and POP3 log it; never the password.
                log::Logger::instance().write(ok ? log::Level::Info : log::Level::Warn, "smtp", &self->ctx_,
                                              ok ? "authenticated" : "authentication failed",
                                              {{"ip", self->ip_},
                                               {"login", log::client_text(ok ? self->account_->login : user, 100)}});
                self->deliver(ok ? proto::Answer::accept() : proto::Answer::refuse(), delay);
            });
        });
        return proto::Answer::pending();
    }

    proto::Answer mail_from(const proto::Session&, const proto::MailRequest& request) override {
        Decision d = srv_.policy.mail_from(account_, ip_, request.reverse_path.to_string());
        if (!d.ok) {
            log::Logger::instance().write(log::Level::Warn, "smtp", &ctx_, "sender refused",
                                          {{"ip", ip_}, {"from", log::client_text(request.reverse_path.to_string())},
                                           {"code", d.code}});
            return proto::Reply{d.code, d.enhanced, d.text};
        }
        identity_ = d.identity;
        cap_.reset();
        if (srv_.options.size_cap && identity_) cap_ = srv_.options.size_cap(*identity_);
        if (cap_ && request.params.size && *request.params.size > cap_->bytes) {
            log::Logger::instance().write(log::Level::Warn, "smtp", &ctx_, "message too big for this sender",
                                          {{"ip", ip_}, {"size", *request.params.size}, {"limit", cap_->bytes}});
            return proto::Reply{552, "5.3.4", cap_->reason};
        }
        return proto::Reply{250, "2.1.0", "Sender OK"};
    }

    proto::Answer rcpt_to(const proto::Session&, const proto::Address& recipient) override {
        if (recipient.domain.empty() || recipient.domain.front() == '[')
            return proto::Reply{550, "5.1.3", "Recipient address must be user@domain"};
        return proto::Answer::accept();
    }

    proto::Answer data_begin(const proto::Session&) override {
        writer_ = srv_.sink.begin();
        body_bytes_ = 0;
        if (!writer_) return proto::Reply{451, "4.3.0", "Unable to accept message now"};
        return proto::Answer::accept();
    }

    void data_chunk(std::string_view bytes) override {
        body_bytes_ += bytes.size();
        if (cap_ && body_bytes_ > cap_->bytes) return;  // refused at the end; nothing more is written
        if (writer_) writer_->append(bytes);
    }

    proto::Answer data_end(const proto::Session& session) override {
        if (!writer_ || !session.transaction || !identity_) return proto::Reply{451, "4.3.0", "Local error"};
        if (cap_ && body_bytes_ > cap_->bytes) {
            writer_->abort();
            writer_.reset();
            log::Logger::instance().write(log::Level::Warn, "smtp", &ctx_, "message too big for this sender",
                                          {{"ip", ip_}, {"size", body_bytes_}, {"limit", cap_->bytes}});
            return proto::Reply{552, "5.3.4", cap_->reason};
        }
        Envelope env;
        env.reverse_path = session.transaction->reverse_path.to_string();
        for (const auto& r : session.transaction->recipients) env.recipients.push_back(r.to_string());
        env.identity = *identity_;
        env.client_ip = ip_;
        env.helo = session.helo;
        env.tls = session.tls_active;
        env.received_at = unix_now();
        auto self = shared_from_this();
        std::size_t rcpts = env.recipients.size();
        writer_->commit(env, [self, rcpts](std::variant<std::string, std::string> result) {
            asio::post(self->executor_, [self, result = std::move(result), rcpts] {
                if (auto* id = std::get_if<0>(&result)) {
                    ++self->srv_.accepted_messages;
                    log::Context c = self->ctx_;
                    c.queue_id = *id;
                    log::Logger::instance().write(log::Level::Info, "smtp", &c, "queued",
                                                  {{"ip", self->ip_}, {"mailbox", self->identity_->mailbox},
                                                   {"rcpts", static_cast<std::uint64_t>(rcpts)}});
                    self->deliver(proto::Reply{250, "2.0.0", "Ok: queued as " + *id}, {});
                } else {
                    log::Logger::instance().write(log::Level::Error, "smtp", &self->ctx_, "spool write failed",
                                                  {{"error", std::get<1>(result)}});
                    self->deliver(proto::Reply{452, "4.3.1", "Insufficient system storage"}, {});
                }
            });
        });
        writer_.reset();
        return proto::Answer::pending();
    }

    void transaction_reset(const proto::Session&) override {
        if (writer_) writer_->abort();
        writer_.reset();
    }

private:
    // Hands an asynchronous answer to the coroutine (on the strand), optionally after a delay.
    void deliver(proto::Answer answer, std::chrono::milliseconds delay) {
        answer_ = std::move(answer);
        answer_delay_ = delay;
        wake_.cancel();
    }

    awaitable<bool> write_out(const std::string& data) {
        boost::system::error_code ec;
        if (tls_) co_await asio::async_write(*tls_, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
        else co_await asio::async_write(socket_, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
        co_return !ec;
    }

    // Reads with the idle timeout. Returns bytes read; 0 with timed_out_ set on timeout; 0 on error.
    awaitable<std::size_t> read_some(std::array<char, 16384>& buf) {
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

    awaitable<bool> handshake() {
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

    tcp::socket& lowest() { return tls_ ? tls_->next_layer() : socket_; }

    SmtpServer::Impl& srv_;
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
    std::optional<SizeCap> cap_;      // for the current transaction's sender
    std::uint64_t body_bytes_ = 0;    // of the current message
    std::chrono::milliseconds answer_delay_{0};

    std::unique_ptr<proto::SmtpEngine> engine_;
    std::optional<Account> account_;
    net::GaugeHold logged_in_;
    std::optional<SenderIdentity> identity_;
    std::unique_ptr<MessageWriter> writer_;
};

awaitable<void> Connection::run() {
    auto self = shared_from_this();  // the coroutine keeps its connection alive
    struct Active {
        std::atomic<std::size_t>& n;
        ~Active() { --n; }
    } active{srv_.active};
    net::Tracked tracked(srv_.listeners, weak_from_this());
    if (implicit_tls_ && !co_await handshake()) co_return;

    proto::SmtpConfig cfg;
    cfg.hostname = srv_.options.hostname;
    cfg.tls_available = srv_.tls.available();
    cfg.limits.max_message_size = srv_.options.max_message_size;
    cfg.limits.max_recipients = srv_.options.max_recipients;
    engine_ = std::make_unique<proto::SmtpEngine>(cfg, proto::ConnectionInfo{loopback_, implicit_tls_}, *this);
    log::Logger::instance().write(log::Level::Debug, "smtp", &ctx_, "connected",
                                  {{"ip", ip_}, {"tls", implicit_tls_ ? "implicit" : "no"}});

    std::array<char, 16384> buf;
    std::string pending_input;  // bytes the engine could not take yet (a backend answer is pending)
    for (;;) {
        if (engine_->has_output() && !co_await write_out(engine_->take_output())) {
            engine_->connection_lost();
            break;
        }
        if (engine_->wants_close()) break;
        if (engine_->wants_starttls()) {
            pending_input.clear();  // anything pipelined before the handshake is discarded (RFC 3207)
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
            if (!pending_input.empty()) pending_input.erase(0, engine_->feed(pending_input));
            continue;
        }
        if (!pending_input.empty()) {
            std::size_t used = engine_->feed(pending_input);
            pending_input.erase(0, used);
            if (used > 0 || engine_->has_output() || engine_->awaiting_backend()) continue;
        }
        if (draining_ && engine_->between_transactions()) {
            engine_->shutdown();
            continue;  // writes the 421 and closes
        }
        reading_ = true;
        std::size_t n = co_await read_some(buf);
        reading_ = false;
        if (n == 0) {
            if (timed_out_) {
                engine_->timeout();
                continue;  // writes the 421 and closes
            }
            if (drain_cancelled_) {
                drain_cancelled_ = false;
                continue;  // the 421 above
            }
            engine_->connection_lost();
            break;
        }
        std::string_view in(buf.data(), n);
        std::size_t used = engine_->feed(in);
        if (used < n) pending_input.append(in.substr(used));
    }
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

SmtpServer::SmtpServer(ServerOptions options, const Policy& policy, MessageSink& sink)
    : impl_(std::make_unique<Impl>(std::move(options), policy, sink)) {}

SmtpServer::~SmtpServer() { stop(); }

void SmtpServer::start() {
    Impl& d = *impl_;
    const auto& o = d.options;
    d.tls.set(d.listeners.open(o.listen, o.tls_listen, o.tls_cert_pem, o.tls_key_pem, o.tls_min_version));
    net::AcceptOptions accept;
    accept.proxy_protocol = o.proxy_protocol;
    accept.proxy_trusted = o.proxy_trusted;
    accept.at_capacity = [&d] { return d.active.load() >= d.options.max_connections; };
    accept.refusal = "421 4.3.2 " + o.hostname + " Too many connections, try again later\r\n";
    auto spawn = [&d](tcp::socket socket, bool implicit, std::uint64_t id, std::string client_ip) {
        ++d.active;
        net::spawn<Connection>(d, std::move(socket), implicit, id, std::move(client_ip));
    };
    d.listeners.start(std::move(accept), spawn, o.threads);
}

void SmtpServer::drain() { impl_->listeners.drain(); }

void SmtpServer::set_tls(std::shared_ptr<asio::ssl::context> tls) {
    impl_->tls.replace(std::move(tls));
}

void SmtpServer::stop() {
    impl_->listeners.stop();
    impl_->auth_pool.join();
}

std::vector<std::uint16_t> SmtpServer::ports() const { return impl_->listeners.ports(); }

ServerStats SmtpServer::stats() const {
    ServerStats s;
    s.connections = impl_->listeners.connections();
    s.refused_connections = impl_->listeners.refused();
    s.messages_accepted = impl_->accepted_messages;
    s.auth_failures = impl_->auth_failures;
    s.active = impl_->active;
    s.authenticated = impl_->authenticated;
    return s;
}

}  // namespace gb::smtp
