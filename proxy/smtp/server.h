// The SMTP front end: Asio listeners (plain with STARTTLS, and implicit TLS), one coroutine per
// connection driving the socket-free protocol engine (protocol/smtp), with the access policy
// (proxy/smtp/policy) and a message sink (the durable spool) behind the engine's backend interface.
//
// Invariants: a connection's engine is touched only from that connection's strand; slow work (scrypt
// password checks, spool commits) runs elsewhere and its answer is posted back to the strand. Every
// connection has an idle timeout; the number of connections is capped (421 above the cap).
// Input from the network is hostile; nothing here logs client data unescaped or any AUTH payload.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/smtp/policy.h"

namespace boost::asio::ssl {
class context;
}

namespace gb::smtp {

// What the spool needs to know about an accepted message.
struct Envelope {
    std::string reverse_path;             // MAIL FROM ("" for <>)
    std::vector<std::string> recipients;  // RCPT TO, accepted, in order
    SenderIdentity identity;              // who it is sent as (Graph mailbox) and under which app
    std::string client_ip;
    std::string helo;
    bool tls = false;
    std::int64_t received_at = 0;         // unix seconds
};

// One message being received. append() gets the body as it streams in; commit() makes it durable and
// calls `done` (from any thread) with the queue id, or with an error text when it could not be made
// durable (the client then gets 452 4.3.1). abort() discards it.
class MessageWriter {
public:
    virtual ~MessageWriter() = default;
    virtual void append(std::string_view bytes) = 0;
    using Done = std::function<void(std::variant<std::string /*queue id*/, std::string /*error*/>)>;
    virtual void commit(const Envelope& envelope, Done done) = 0;
    virtual void abort() = 0;
};

class MessageSink {
public:
    virtual ~MessageSink() = default;
    virtual std::unique_ptr<MessageWriter> begin() = 0;
};

// A size limit narrower than max_message_size for one sender, e.g. an app registration without
// Mail.ReadWrite can only use the one-request MIME sendMail (about 3 MB). Checked at MAIL FROM against
// SIZE= and while the body streams in; exceeding it answers "552 5.3.4 <reason>".
struct SizeCap {
    std::uint64_t bytes = 0;
    std::string reason;
};

struct ServerOptions {
    std::string hostname = "localhost";
    std::vector<config::ListenAddress> listen;      // plain, STARTTLS offered when TLS is configured
    std::vector<config::ListenAddress> tls_listen;  // implicit TLS
    std::vector<config::ListenAddress> proxy_protocol;  // listeners expecting a PROXY v1/v2 header first
    std::vector<config::Network> proxy_trusted;        // the only sources allowed to send one
    std::string tls_cert_pem;                       // chain, PEM ("" = no TLS: no STARTTLS, no tls_listen)
    std::string tls_key_pem;
    std::string tls_min_version = "1.2";
    std::uint64_t max_message_size = 35ull * 1024 * 1024;
    std::size_t max_recipients = 500;
    std::size_t max_connections = 1000;
    std::chrono::seconds idle_timeout{300};
    int threads = 2;
    AuthThrottle::Options auth_throttle;
    // Failed-AUTH bookkeeping shared with the other protocols (so a guesser cannot switch from SMTP to
    // IMAP to POP3 for fresh attempts); nullptr = this server's own. Must outlive the server.
    AuthThrottle* shared_throttle = nullptr;
    std::function<std::optional<SizeCap>(const SenderIdentity&)> size_cap;  // optional
};

struct ServerStats {
    std::uint64_t connections = 0;
    std::uint64_t refused_connections = 0;
    std::uint64_t messages_accepted = 0;
    std::uint64_t auth_failures = 0;
    std::size_t active = 0;
    std::size_t authenticated = 0;  // of the active sessions, logged in with AUTH
};

class SmtpServer {
public:
    SmtpServer(ServerOptions options, const Policy& policy, MessageSink& sink);
    ~SmtpServer();
    SmtpServer(const SmtpServer&) = delete;
    SmtpServer& operator=(const SmtpServer&) = delete;

    // Binds every listener (port 0 = ephemeral) and starts serving. Throws on bind failure.
    void start();
    // Graceful shutdown: stops accepting; sessions between transactions get "421 4.3.2 Service shutting
    // down" now, the others after their transaction (stats().active counts those still open).
    void drain();
    // Ends the sessions still open (after drain(): those that did not finish in time) and joins the
    // threads. A message not yet answered 250 is not accepted: the client sends it again.
    void stop();
    // New TLS connections use this context (net::make_server_tls: a reloaded certificate); those open keep
    // theirs. Ignored when the server started without TLS (it has no TLS listeners either).
    void set_tls(std::shared_ptr<boost::asio::ssl::context> tls);
    // Bound ports, in the order of options.listen then options.tls_listen.
    std::vector<std::uint16_t> ports() const;
    ServerStats stats() const;

    struct Impl;  // shared with the per-connection sessions in server.cpp

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::smtp
