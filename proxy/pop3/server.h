// The POP3 front end: Asio listeners (plain with STLS, and implicit TLS "POP3S"), one coroutine per
// connection driving the socket-free protocol engine (protocol/pop3), with the account policy
// (proxy/smtp/policy: logins, scrypt, per-address AUTH throttling) and a MaildropProvider (the
// account's Inbox) behind the engine's backend interface.
//
// Invariants: a connection's engine is touched only from that connection's strand; slow work (scrypt
// password checks, provider calls that reach Graph) runs on thread pools and its answer is posted back
// to the strand. Every connection has an idle timeout (also bounding each write, so a client that stops
// reading a large RETR is dropped); the number of connections is capped ("-ERR [SYS/TEMP]" above it).
// A RETR holds one copy of the message (handed from the provider to the engine, which sends it in
// chunks). Input from the network is hostile; nothing here logs client data unescaped or any password.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/smtp/policy.h"

namespace boost::asio::ssl {
class context;
}

namespace gb::pop3 {

// One message of an account's maildrop as the provider lists it.
struct MaildropEntry {
    std::string uid;         // UIDL: stable across sessions and restarts, 1..70 octets of 0x21-0x7E,
                             // unique within the list (else the login is refused, "[SYS/TEMP]")
    std::uint64_t size = 0;  // octets of what fetch() returns (CRLF lines)
    std::string ref;         // the provider's own key for fetch/remove (e.g. the Graph id); never sent
};

// A provider failure. `detail` goes to the log (escaped), never to the client.
struct ProviderError {
    enum class Kind {
        Temporary,  // Graph unreachable, throttled, ...: "-ERR [SYS/TEMP] ..."
        Gone,       // fetch: the message no longer exists (deleted by another client): "-ERR message N no longer exists"
    };
    Kind kind = Kind::Temporary;
    std::string detail;
};

template <typename T>
using ProviderResult = std::variant<T, ProviderError>;

// Where POP3 sessions get mail: an authenticated account's Inbox. Every call blocks; the server makes
// them on its provider thread pool (ServerOptions::provider_threads), never on a network thread. Calls
// for different sessions run concurrently, also for the same account (POP3 sessions do not lock the
// maildrop: each has the snapshot it took at login). Exceptions are treated as Temporary errors.
class MaildropProvider {
public:
    virtual ~MaildropProvider() = default;
    // The snapshot taken at login: the Inbox, oldest first (POP3 message 1 is element 0).
    virtual ProviderResult<std::vector<MaildropEntry>> list(const smtp::Account& account) = 0;
    // One message, exactly as RETR should send it before dot-stuffing: CRLF lines (the engine turns any
    // bare CR or LF into CRLF anyway). Its size should equal entry.size (LIST/STAT report entry.size).
    virtual ProviderResult<std::string> fetch(const smtp::Account& account, const MaildropEntry& entry) = 0;
    // QUIT after DELE: remove these messages from the Inbox (delete or move to Deleted Items: the
    // provider's policy). A message that is already gone counts as removed. nullopt = all removed.
    virtual std::optional<ProviderError> remove(const smtp::Account& account,
                                                const std::vector<MaildropEntry>& entries) = 0;
};

struct ServerOptions {
    std::string hostname = "localhost";             // in the greeting
    std::vector<config::ListenAddress> listen;      // plain, STLS offered when TLS is configured
    std::vector<config::ListenAddress> tls_listen;  // implicit TLS (POP3S)
    std::vector<config::ListenAddress> proxy_protocol;  // listeners expecting a PROXY v1/v2 header first
    std::vector<config::Network> proxy_trusted;        // the only sources allowed to send one
    std::string tls_cert_pem;                       // chain, PEM ("" = no TLS: no STLS, no tls_listen)
    std::string tls_key_pem;
    std::string tls_min_version = "1.2";
    std::size_t max_connections = 1000;
    std::chrono::seconds idle_timeout{600};  // RFC 1939 section 3: at least 10 minutes (shorter only in tests)
    int threads = 2;                         // network threads
    int provider_threads = 4;                // concurrent MaildropProvider calls
    smtp::AuthThrottle::Options auth_throttle;
    smtp::AuthThrottle* shared_throttle = nullptr;  // shared with SMTP and IMAP; nullptr = own. Outlives the server.
};

struct ServerStats {
    std::uint64_t connections = 0;
    std::uint64_t refused_connections = 0;
    std::uint64_t logins = 0;
    std::uint64_t auth_failures = 0;
    std::uint64_t messages_retrieved = 0;  // RETR and TOP answered with the message
    std::uint64_t messages_deleted = 0;    // removed through the provider at QUIT
    std::size_t active = 0;
    std::size_t authenticated = 0;  // of the active sessions, logged in
};

class Pop3Server {
public:
    // policy and provider must outlive the server.
    Pop3Server(ServerOptions options, const smtp::Policy& policy, MaildropProvider& provider);
    ~Pop3Server();
    Pop3Server(const Pop3Server&) = delete;
    Pop3Server& operator=(const Pop3Server&) = delete;

    // Binds every listener (port 0 = ephemeral) and starts serving. Throws on bind failure.
    void start();
    // Stops accepting, closes open sessions (no UPDATE: nothing is deleted), joins the threads
    // (waiting for provider calls in progress).
    void stop();
    // Graceful shutdown: stops accepting; sessions between commands get "-ERR [SYS/TEMP] Server shutting
    // down" now (no UPDATE: nothing is deleted), the others once their command is answered.
    void drain();
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

}  // namespace gb::pop3
