// graphbridge configuration (PRODUCT.md "Configuration"): TOML read with toml++ into typed structs.
//
// The file is admin input, trusted for intent but not for typing: every key is declared; unknown
// keys, wrong types, missing required keys, bad listen addresses, bad networks and unreadable files
// are errors naming the file, line and dotted key. All problems are collected, not just the first.
// Secrets are never in the file: only the name of the environment variable or file holding them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/secret.h"

namespace gb::config {

struct Problem {
    std::string file;
    std::uint32_t line = 0;  // 0 = unknown
    std::string key;         // dotted path, e.g. "app.contoso.certificate.keystore"
    std::string message;
    std::string to_string() const;  // "file:line: key: message"
};

class ConfigError : public std::runtime_error {
public:
    explicit ConfigError(std::vector<Problem> problems);
    const std::vector<Problem>& problems() const { return problems_; }

private:
    std::vector<Problem> problems_;
};

struct ListenAddress {
    std::string host;  // IP literal (v4 or v6, without brackets)
    std::uint16_t port = 0;
    std::string to_string() const;
    bool is_loopback() const;
};

struct Network {  // CIDR
    std::string text;
    int family = 0;  // AF_INET / AF_INET6
    unsigned char addr[16] = {};
    int prefix = 0;
    bool contains(const std::string& ip) const;
};

struct CertificateConfig {
    std::string keystore;
    SecretSource password;
    SecretSource key_password;  // JKS: when the key password differs from the store password
    std::string cert_file;      // PEM: the certificate, when it is not in the keystore file
    std::string alias;
    std::string algorithm = "RS256";  // RS256 | PS256
    std::string thumbprint = "x5t";   // x5t | x5t#S256
    int assertion_lifetime = 300;     // seconds
    std::string extra_claims_json;    // [app.X.certificate.claims] as a JSON object, "" if none
};

struct AppConfig {
    std::string name;
    std::string tenant_id;
    std::string client_id;
    std::string cloud = "global";
    std::string authority;       // resolved: override or the cloud's login host
    std::string graph_url;       // resolved: override or the cloud's Graph root
    std::string token_endpoint;  // resolved: override or authority + "/" + tenant + "/oauth2/v2.0/token"
    std::string scope;           // resolved: override or graph_url + "/.default"
    std::string ca_file;
    SecretSource client_secret;
    std::optional<CertificateConfig> certificate;
};

struct AccountConfig {
    std::string login;
    std::string password_hash;
    std::string app;
    std::string mailbox;
    std::vector<std::string> send_as;  // defaults to {mailbox}
};

struct RelayConfig {
    std::vector<Network> networks;
    std::string app;
    std::string mailbox;
};

struct ListenerSet {
    std::vector<ListenAddress> listen;
    std::vector<ListenAddress> tls_listen;
    // Listeners (among listen and tls_listen) behind a load balancer: each connection starts with a
    // PROXY protocol v1/v2 header naming the real client, accepted only from `proxy_trusted` sources.
    std::vector<ListenAddress> proxy_protocol;
    std::vector<Network> proxy_trusted;
    // Open connections at once (all of this section's listeners); 0 = the server's default (SMTP and
    // POP3 1,000, IMAP 2,000). Past it a client gets the protocol's "too many connections" line.
    std::size_t max_connections = 0;
};

struct SmtpConfig : ListenerSet {
    std::uint64_t max_message_size = 150ull * 1000 * 1000;
    // Header From (or Sender) naming someone other than the sending mailbox: "rewrite" (From := the
    // mailbox, the original kept as Reply-To), "keep" (Graph then needs Send As rights on it), "reject".
    std::string from_policy = "rewrite";
};

// IMAP/POP3 read path: how often mailboxes are synced from Graph, and the body cache.
struct ImapConfig : ListenerSet {
    std::int64_t poll_interval_ms = 15000;      // mailboxes with a session open
    std::int64_t idle_poll_interval_ms = 3000;  // a folder a client IDLEs on
    std::uint64_t cache_size = 1024ull * 1024 * 1024;  // message bodies on disk
    // EXPUNGE inside Deleted Items: "permanent" (POST permanentDelete: gone for good, the IMAP meaning)
    // or "recoverable" (DELETE: into Recoverable Items, restorable by the user or an admin for 14+ days).
    std::string trash_expunge = "permanent";
};

// The outbound queue: how long and how often delivery is retried.
struct QueueConfig {
    std::int64_t lifetime_s = 5 * 24 * 3600;  // then the message bounces
    std::int64_t retry_initial_s = 30;        // first backoff without a Retry-After; doubles per attempt
    std::int64_t retry_max_s = 3600;
    int workers = 8;
    int per_mailbox = 4;  // concurrent Graph deliveries per mailbox (Outlook allows 4)
};

// Graph requests: how long one HTTP call may take before it is abandoned (and the work retried).
struct GraphConfig {
    std::int64_t timeout_ms = 120000;  // per request; an upload session's chunk counts as one
};

struct TlsConfig {
    std::string cert;
    std::string key;
    std::string min_version = "1.2";
};

struct Config {
    std::string path;
    std::string state_dir = "/var/lib/graphbridge";
    // SIGTERM: how long sessions in a transaction and deliveries in flight may take to finish before the
    // rest is cut off (the unit's TimeoutStopSec must be longer).
    std::int64_t shutdown_timeout_ms = 30000;
    std::map<std::string, AppConfig> apps;
    std::vector<AccountConfig> accounts;
    std::vector<RelayConfig> relays;
    SmtpConfig smtp;
    ImapConfig imap;
    ListenerSet pop3;
    TlsConfig tls;
    QueueConfig queue;
    GraphConfig graph;
    ListenAddress admin_listen;
    log::Level log_level = log::Level::Info;
    log::Format log_format = log::Format::Text;
};

// Reads and validates; throws ConfigError listing every problem.
Config load(const std::string& path);

// Exposed for tests and other modules.
std::optional<ListenAddress> parse_listen(const std::string& text);
std::optional<Network> parse_network(const std::string& text);
std::optional<std::uint64_t> parse_size(const std::string& text);
std::optional<std::int64_t> parse_duration(const std::string& text);  // "30s", "15m", "12h", "5d", "90"  // "150MB", "35MiB", "1048576"
bool is_guid(const std::string& s);
bool is_domain(const std::string& s);
bool is_email(const std::string& s);

}  // namespace gb::config
