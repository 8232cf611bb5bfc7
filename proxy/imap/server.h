// The IMAP front end: Asio listeners (plain with STARTTLS, implicit TLS), one connection = a reader
// coroutine and a writer coroutine on the connection's strand, and the socket-free Session (session.h)
// run on a worker pool (its commands block on SQLite and Graph), serialised per connection.
//
// Invariants: the Session is touched only from its connection's work strand; the socket only from the
// connection's I/O strand. Output is queued to the writer, which is the only one writing, so untagged
// updates pushed during IDLE never interleave with command output. The reader stops reading while the
// session is busy (a big FETCH streams step by step as the writer drains) or output is queued above
// a bound: memory per connection is bounded. Idle connections are closed after idle_timeout (RFC 3501
// asks for at least 30 minutes; IDLE clients re-issue IDLE before that).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/imap/session.h"

namespace boost::asio::ssl {
class context;
}

namespace gb::imap {

struct ServerOptions {
    std::string hostname = "localhost";
    std::vector<config::ListenAddress> listen;
    std::vector<config::ListenAddress> tls_listen;
    std::vector<config::ListenAddress> proxy_protocol;  // listeners expecting a PROXY v1/v2 header first
    std::vector<config::Network> proxy_trusted;        // the only sources allowed to send one
    std::string tls_cert_pem, tls_key_pem;  // "" = no TLS
    std::string tls_min_version = "1.2";
    std::size_t max_connections = 2000;
    std::chrono::seconds idle_timeout{30 * 60};
    int io_threads = 1;
    // Session commands run here; they mostly wait (Graph, a mailbox's write lock held by another session),
    // so there are more threads than cores: one mailbox's long write must not stall every other user.
    int work_threads = 16;
};

struct ServerStats {
    std::uint64_t connections = 0, refused = 0, auth_failures = 0;
    std::size_t active = 0, authenticated = 0, idling = 0;
};

class ImapServer {
public:
    ImapServer(ServerOptions options, SessionServices services);
    ~ImapServer();
    ImapServer(const ImapServer&) = delete;
    ImapServer& operator=(const ImapServer&) = delete;

    void start();  // binds (port 0 = ephemeral); throws on bind failure
    void stop();
    // Graceful shutdown: stops accepting; sessions between commands (or in IDLE) get "* BYE" now, the
    // others once their command is answered (stats().active counts those still open).
    void drain();
    // New TLS connections use this context (net::make_server_tls: a reloaded certificate); those open keep
    // theirs. Ignored when the server started without TLS (it has no TLS listeners either).
    void set_tls(std::shared_ptr<boost::asio::ssl::context> tls);
    std::vector<std::uint16_t> ports() const;  // listen, then tls_listen
    ServerStats stats() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::imap
