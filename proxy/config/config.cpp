#include "proxy/config/config.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>
#include <toml++/toml.h>

namespace gb::config {

std::string Problem::to_string() const {
    std::string out = file;
    if (line) out += fmt::format(":{}", line);
    out += ": ";
    if (!key.empty()) out += key + ": ";
    out += message;
    return out;
}

static std::string join_problems(const std::vector<Problem>& problems) {
    std::string out;
    for (const auto& p : problems) {
        if (!out.empty()) out += "\n";
        out += p.to_string();
    }
    return out;
}

ConfigError::ConfigError(std::vector<Problem> problems)
    : std::runtime_error(join_problems(problems)), problems_(std::move(problems)) {}

std::string ListenAddress::to_string() const {
    if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
    return fmt::format("{}:{}", host, port);
}

bool ListenAddress::is_loopback() const {
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    in6_addr a6{};
    if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

bool Network::contains(const std::string& ip) const {
    unsigned char a[16] = {};
    if (inet_pton(family, ip.c_str(), a) != 1) return false;
    int full = prefix / 8, rest = prefix % 8;
    if (std::memcmp(a, addr, static_cast<std::size_t>(full)) != 0) return false;
    if (rest == 0) return true;
    unsigned char mask = static_cast<unsigned char>(0xFF << (8 - rest));
    return (a[full] & mask) == (addr[full] & mask);
}

std::optional<ListenAddress> parse_listen(const std::string& text) {
    std::string host, port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        in6_addr a6{};
        if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) return std::nullopt;
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string::npos || text.find(':') != colon) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host == "localhost") host = "127.0.0.1";
        in_addr a4{};
        if (inet_pton(AF_INET, host.c_str(), &a4) != 1) return std::nullopt;
    }
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) return std::nullopt;
    int p = std::stoi(port);
    if (p < 1 || p > 65535) return std::nullopt;
    return ListenAddress{host, static_cast<std::uint16_t>(p)};
}

std::optional<Network> parse_network(const std::string& text) {
    Network n;
    n.text = text;
    auto slash = text.find('/');
    std::string addr = text.substr(0, slash);
    n.family = addr.find(':') != std::string::npos ? AF_INET6 : AF_INET;
    if (inet_pton(n.family, addr.c_str(), n.addr) != 1) return std::nullopt;
    int max = n.family == AF_INET ? 32 : 128;
    if (slash == std::string::npos) {
        n.prefix = max;
    } else {
        std::string p = text.substr(slash + 1);
        if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), ::isdigit)) return std::nullopt;
        n.prefix = std::stoi(p);
        if (n.prefix > max) return std::nullopt;
    }
    // Host bits must be zero: "192.168.10.5/24" is almost always a typo.
    int bytes = max / 8;
    for (int bit = n.prefix; bit < max; ++bit) {
        if (n.addr[bit / 8] & (0x80 >> (bit % 8))) return std::nullopt;
    }
    (void)bytes;
    return n;
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
    std::size_t i = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (i == 0 || i > 15) return std::nullopt;
    std::uint64_t n = std::stoull(text.substr(0, i));
    std::string unit = text.substr(i);
    unit.erase(std::remove(unit.begin(), unit.end(), ' '), unit.end());
    std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::toupper(c); });
    static const std::map<std::string, std::uint64_t> units = {
        {"", 1},           {"B", 1},
        {"K", 1000},       {"KB", 1000},       {"KIB", 1024},
        {"M", 1000000},    {"MB", 1000000},    {"MIB", 1024 * 1024},
        {"G", 1000000000}, {"GB", 1000000000}, {"GIB", 1024ull * 1024 * 1024}};
    auto it = units.find(unit);
    if (it == units.end()) return std::nullopt;
    return n * it->second;
}

std::optional<std::int64_t> parse_duration(const std::string& text) {
    std::size_t i = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (i == 0 || i > 9) return std::nullopt;
    std::int64_t n = std::stoll(text.substr(0, i));
    std::string unit = text.substr(i);
    unit.erase(std::remove(unit.begin(), unit.end(), ' '), unit.end());
    static const std::map<std::string, std::int64_t> units = {{"", 1}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};
    auto it = units.find(unit);
    if (it == units.end()) return std::nullopt;
    return n * it->second;
}

bool is_guid(const std::string& s) {
    if (s.size() != 36) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
        } else if (!std::isxdigit(static_cast<unsigned char>(s[i]))) {
            return false;
        }
    }
    return true;
}

bool is_domain(const std::string& s) {
    if (s.empty() || s.size() > 253 || s.find('.') == std::string::npos) return false;
    std::size_t label = 0;
    for (std::size_t i = 0; i <= s.size(); ++i) {
        if (i == s.size() || s[i] == '.') {
            if (label == 0 || label > 63) return false;
            if (s[i - 1] == '-' || s[i - label] == '-') return false;
            label = 0;
        } else if (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '-') {
            ++label;
        } else {
            return false;
        }
    }
    return true;
}

bool is_email(const std::string& s) {
    auto at = s.rfind('@');
    if (at == std::string::npos || at == 0 || at > 64) return false;
    for (std::size_t i = 0; i < at; ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c <= ' ' || c >= 0x7f || std::strchr("()<>[]\\,;:\"@", c)) return false;
    }
    return is_domain(s.substr(at + 1));
}

namespace {

struct Cloud {
    const char* name;
    const char* authority;
    const char* graph;
};
constexpr Cloud kClouds[] = {
    {"global", "https://login.microsoftonline.com", "https://graph.microsoft.com"},
    {"usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us"},
    {"usgov-dod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us"},
    {"china", "https://login.partner.microsoftonline.cn", "https://microsoftgraph.chinacloudapi.cn"},
};

std::string type_name(const toml::node& n) {
    switch (n.type()) {
        case toml::node_type::table: return "a table";
        case toml::node_type::array: return "an array";
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a number";
        case toml::node_type::boolean: return "a boolean";
        default: return "a date/time";
    }
}

// Walks one TOML table: every read marks the key as known; finish() reports the rest as unknown.
class Section {
public:
    Section(const toml::table& table, std::string path, const std::string& file, std::vector<Problem>& problems)
        : table_(table), path_(std::move(path)), file_(file), problems_(problems) {}

    std::string key_path(std::string_view key) const {
        return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
    }

    std::uint32_t line_of(std::string_view key) const {
        for (auto&& [k, v] : table_)
            if (k.str() == key) return static_cast<std::uint32_t>(k.source().begin.line);
        return static_cast<std::uint32_t>(table_.source().begin.line);
    }

    void problem(std::string_view key, std::string message) {
        problems_.push_back({file_, line_of(key), key_path(key), std::move(message)});
    }

    const toml::node* get(std::string_view key) {
        known_.insert(std::string(key));
        return table_.get(key);
    }

    // A duration: seconds as an integer or text such as "30s", "15m", "12h", "5d", within [min_s, max_s].
    // Leaves `seconds` alone when the key is absent; a problem (naming `example`) when it is invalid.
    void duration(std::string_view key, std::int64_t min_s, std::int64_t max_s, std::int64_t& seconds,
                  std::string_view example) {
        const toml::node* n = get(key);
        if (!n) return;
        std::optional<std::int64_t> v;
        if (n->is_integer()) v = n->as_integer()->get();
        else if (n->is_string()) v = parse_duration(n->as_string()->get());
        if (!v || *v < min_s || *v > max_s)
            problem(key, fmt::format("must be a duration between {} and {} seconds, e.g. {}", min_s, max_s, example));
        else seconds = *v;
    }
    // The same, kept in milliseconds.
    void duration_ms(std::string_view key, std::int64_t min_s, std::int64_t max_s, std::int64_t& ms,
                     std::string_view example) {
        std::int64_t seconds = ms / 1000;
        duration(key, min_s, max_s, seconds, example);
        ms = seconds * 1000;
    }

    std::optional<std::string> str(std::string_view key, bool required) {
        const toml::node* n = get(key);
        if (!n) {
            if (required) problem(key, "required key is missing");
            return std::nullopt;
        }
        if (!n->is_string()) {
            problem(key, "must be a string, not " + type_name(*n));
            return std::nullopt;
        }
        return n->as_string()->get();
    }

    std::optional<std::int64_t> integer(std::string_view key) {
        const toml::node* n = get(key);
        if (!n) return std::nullopt;
        if (!n->is_integer()) {
            problem(key, "must be an integer, not " + type_name(*n));
            return std::nullopt;
        }
        return n->as_integer()->get();
    }

    // An array of strings; a single string is accepted as a one-element list.
    std::optional<std::vector<std::string>> strings(std::string_view key, bool required) {
        const toml::node* n = get(key);
        if (!n) {
            if (required) problem(key, "required key is missing");
            return std::nullopt;
        }
        std::vector<std::string> out;
        if (n->is_string()) {
            out.push_back(n->as_string()->get());
            return out;
        }
        if (!n->is_array()) {
            problem(key, "must be an array of strings, not " + type_name(*n));
            return std::nullopt;
        }
        for (auto&& e : *n->as_array()) {
            if (!e.is_string()) {
                problem(key, "must be an array of strings, found " + type_name(e));
                return std::nullopt;
            }
            out.push_back(e.as_string()->get());
        }
        return out;
    }

    const toml::table* table(std::string_view key) {
        const toml::node* n = get(key);
        if (!n) return nullptr;
        if (!n->is_table()) {
            problem(key, "must be a table, not " + type_name(*n));
            return nullptr;
        }
        return n->as_table();
    }

    void finish() {
        for (auto&& [k, v] : table_) {
            if (known_.count(std::string(k.str()))) continue;
            problems_.push_back({file_, static_cast<std::uint32_t>(k.source().begin.line),
                                 key_path(k.str()), "unknown key"});
        }
    }

private:
    const toml::table& table_;
    std::string path_;
    const std::string& file_;
    std::vector<Problem>& problems_;
    std::set<std::string> known_;
};

bool readable(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

// Relative paths in the file are relative to the file's own directory, not to the working directory.
thread_local std::string g_base_dir;  // set by load() for the file being read
std::string resolve(const std::string& path) {
    if (path.empty() || path.front() == '/' || g_base_dir.empty()) return path;
    return g_base_dir + "/" + path;
}

void read_secret_source(Section& s, std::string_view env_key, std::string_view file_key, SecretSource& out) {
    auto env = s.str(env_key, false);
    auto file = s.str(file_key, false);
    if (env && file) {
        s.problem(file_key, fmt::format("set either {} or {}, not both", env_key, file_key));
        return;
    }
    if (env) {
        if (env->empty()) s.problem(env_key, "must name an environment variable");
        out = {SecretSource::Kind::Env, *env};
    } else if (file) {
        std::string path = resolve(*file);
        if (!readable(path)) s.problem(file_key, "cannot read file '" + path + "'");
        out = {SecretSource::Kind::File, path};
    }
}

void read_listeners(Section& s, std::string_view key, std::vector<ListenAddress>& out) {
    auto list = s.strings(key, false);
    if (!list) return;
    out.clear();
    for (const auto& text : *list) {
        auto addr = parse_listen(text);
        if (!addr) {
            s.problem(key, "'" + text + "' is not a listen address (expected IP:PORT or [IPv6]:PORT)");
            continue;
        }
        out.push_back(*addr);
    }
}

// max_connections, proxy_protocol (listen addresses of this section) and proxy_trusted (networks): read
// after listen and tls_listen, which proxy_protocol is checked against.
void read_proxy(Section& s, ListenerSet& set) {
    if (auto v = s.integer("max_connections")) {
        if (*v < 1 || *v > 1000000) s.problem("max_connections", "must be between 1 and 1000000");
        else set.max_connections = static_cast<std::size_t>(*v);
    }
    read_listeners(s, "proxy_protocol", set.proxy_protocol);
    if (auto list = s.strings("proxy_trusted", false)) {
        for (const auto& text : *list) {
            if (auto n = parse_network(text)) set.proxy_trusted.push_back(*n);
            else s.problem("proxy_trusted", "'" + text + "' is not a network (expected e.g. \"10.0.0.0/8\")");
        }
    }
    for (const auto& a : set.proxy_protocol) {
        auto same = [&](const ListenAddress& b) { return b.to_string() == a.to_string(); };
        if (std::none_of(set.listen.begin(), set.listen.end(), same) &&
            std::none_of(set.tls_listen.begin(), set.tls_listen.end(), same))
            s.problem("proxy_protocol", a.to_string() + " is not one of this section's listen or tls_listen addresses");
    }
    if (!set.proxy_protocol.empty() && set.proxy_trusted.empty())
        s.problem("proxy_trusted", "required with proxy_protocol: the load balancers' addresses (anyone else could "
                                   "claim any client address)");
}

void read_app(const std::string& name, const toml::table& t, const std::string& file, std::vector<Problem>& problems,
              AppConfig& app) {
    Section s(t, "app." + name, file, problems);
    app.name = name;
    if (auto v = s.str("tenant_id", true)) {
        app.tenant_id = *v;
        if (!is_guid(*v) && !is_domain(*v))
            s.problem("tenant_id", "must be the tenant's GUID or a verified domain such as contoso.onmicrosoft.com");
    }
    if (auto v = s.str("client_id", true)) {
        app.client_id = *v;
        if (!is_guid(*v)) s.problem("client_id", "must be the application (client) ID, a GUID");
    }
    const Cloud* cloud = &kClouds[0];
    if (auto v = s.str("cloud", false)) {
        cloud = nullptr;
        for (const auto& c : kClouds)
            if (*v == c.name) cloud = &c;
        if (!cloud) {
            s.problem("cloud", "must be one of global, usgov, usgov-dod, china");
            cloud = &kClouds[0];
        }
        app.cloud = *v;
    }
    auto check_url = [&](std::string_view key, const std::string& url) {
        if (url.rfind("https://", 0) != 0 || url.size() <= 8)
            s.problem(key, "must be an https:// URL");
    };
    app.authority = s.str("authority", false).value_or(cloud->authority);
    check_url("authority", app.authority);
    while (!app.authority.empty() && app.authority.back() == '/') app.authority.pop_back();
    app.graph_url = s.str("graph_url", false).value_or(cloud->graph);
    check_url("graph_url", app.graph_url);
    while (!app.graph_url.empty() && app.graph_url.back() == '/') app.graph_url.pop_back();
    auto endpoint = s.str("token_endpoint", false);
    if (endpoint && !endpoint->empty()) {
        check_url("token_endpoint", *endpoint);
        app.token_endpoint = *endpoint;
    } else {
        app.token_endpoint = app.authority + "/" + app.tenant_id + "/oauth2/v2.0/token";
    }
    auto scope = s.str("scope", false);
    app.scope = scope && !scope->empty() ? *scope : app.graph_url + "/.default";
    if (auto ca = s.str("ca_file", false); ca && !ca->empty()) {
        app.ca_file = resolve(*ca);
        if (!readable(app.ca_file)) s.problem("ca_file", "cannot read file '" + app.ca_file + "'");
    }
    read_secret_source(s, "client_secret_env", "client_secret_file", app.client_secret);

    if (const toml::table* ct = s.table("certificate")) {
        Section c(*ct, "app." + name + ".certificate", file, problems);
        CertificateConfig cert;
        if (auto ks = c.str("keystore", true)) {
            cert.keystore = resolve(*ks);
            if (!readable(cert.keystore)) c.problem("keystore", "cannot read keystore '" + cert.keystore + "'");
        }
        read_secret_source(c, "password_env", "password_file", cert.password);
        read_secret_source(c, "key_password_env", "key_password_file", cert.key_password);
        if (auto cf = c.str("cert_file", false); cf && !cf->empty()) {
            cert.cert_file = resolve(*cf);
            if (!readable(cert.cert_file)) c.problem("cert_file", "cannot read certificate '" + cert.cert_file + "'");
        }
        if (const toml::table* claims = c.table("claims")) {
            static const std::set<std::string> reserved = {"aud", "iss", "sub", "jti", "nbf", "iat", "exp"};
            std::string json = "{";
            for (auto&& [k, v] : *claims) {
                std::string key(k.str());
                auto line = static_cast<std::uint32_t>(k.source().begin.line);
                std::string path = "app." + name + ".certificate.claims." + key;
                if (reserved.count(key)) {
                    problems.push_back({file, line, path, "is set by graphbridge and cannot be overridden"});
                    continue;
                }
                std::string value;
                if (v.is_string()) {
                    value = "\"";
                    for (char ch : v.as_string()->get()) {
                        if (ch == '"' || ch == '\\') value.push_back('\\');
                        if (static_cast<unsigned char>(ch) < 0x20) continue;
                        value.push_back(ch);
                    }
                    value += "\"";
                } else if (v.is_integer()) {
                    value = std::to_string(v.as_integer()->get());
                } else if (v.is_boolean()) {
                    value = v.as_boolean()->get() ? "true" : "false";
                } else {
                    problems.push_back({file, line, path, "must be a string, integer or boolean"});
                    continue;
                }
                std::string escaped_key;
                for (char ch : key) {
                    if (ch == '"' || ch == '\\') escaped_key.push_back('\\');
                    escaped_key.push_back(ch);
                }
                json += (json.size() > 1 ? "," : "") + std::string("\"") + escaped_key + "\":" + value;
            }
            cert.extra_claims_json = json + "}";
        }
        cert.alias = c.str("alias", false).value_or("");
        if (auto a = c.str("algorithm", false)) {
            if (*a != "RS256" && *a != "PS256") c.problem("algorithm", "must be RS256 or PS256");
            cert.algorithm = *a;
        }
        if (auto tp = c.str("thumbprint", false)) {
            if (*tp != "x5t" && *tp != "x5t#S256") c.problem("thumbprint", "must be x5t or x5t#S256");
            cert.thumbprint = *tp;
        }
        if (auto life = c.integer("assertion_lifetime")) {
            if (*life < 60 || *life > 600) c.problem("assertion_lifetime", "must be between 60 and 600 seconds");
            cert.assertion_lifetime = static_cast<int>(*life);
        }
        c.finish();
        app.certificate = cert;
    }
    bool has_secret = app.client_secret.kind != SecretSource::Kind::None;
    if (!has_secret && !app.certificate)
        s.problem("certificate", "the app needs a credential: a [certificate] table or client_secret_env/_file");
    if (has_secret && app.certificate)
        s.problem("certificate", "set a certificate or a client secret, not both");
    s.finish();
}

}  // namespace

Config load(const std::string& path) {
    std::vector<Problem> problems;
    toml::table root;
    try {
        root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
        problems.push_back({path, static_cast<std::uint32_t>(e.source().begin.line), "",
                            std::string(e.description())});
        throw ConfigError(std::move(problems));
    }
    Config cfg;
    cfg.path = path;
    {
        auto slash = path.rfind('/');
        g_base_dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
    }
    Section top(root, "", path, problems);
    if (auto v = top.str("state_dir", false)) {
        if (v->empty() || v->front() != '/') top.problem("state_dir", "must be an absolute path");
        cfg.state_dir = *v;
    }
    top.duration_ms("shutdown_timeout", 0, 3600, cfg.shutdown_timeout_ms, "\"30s\"");

    if (const toml::table* apps = top.table("app")) {
        for (auto&& [name, node] : *apps) {
            std::string n(name.str());
            if (!node.is_table()) {
                problems.push_back({path, static_cast<std::uint32_t>(name.source().begin.line), "app." + n,
                                    "must be a table ([app." + n + "])"});
                continue;
            }
            AppConfig app;
            read_app(n, *node.as_table(), path, problems, app);
            cfg.apps.emplace(n, std::move(app));
        }
    }

    auto array_of_tables = [&](std::string_view key, auto&& each) {
        const toml::node* n = top.get(key);
        if (!n) return;
        if (!n->is_array_of_tables()) {
            top.problem(key, "must be an array of tables ([[" + std::string(key) + "]])");
            return;
        }
        std::size_t index = 0;
        for (auto&& e : *n->as_array()) {
            Section s(*e.as_table(), fmt::format("{}[{}]", key, index++), path, problems);
            each(s);
            s.finish();
        }
    };

    std::set<std::string> logins;
    array_of_tables("account", [&](Section& s) {
        AccountConfig a;
        a.login = s.str("login", true).value_or("");
        if (!a.login.empty() && !logins.insert(a.login).second) s.problem("login", "duplicate login '" + a.login + "'");
        auto hash = s.str("password_hash", true);
        a.password_hash = hash.value_or("");
        if (hash && a.password_hash.rfind("$scrypt$", 0) != 0)
            s.problem("password_hash", "must be a hash from `graphbridge passwd` (starts with $scrypt$)");
        a.app = s.str("app", true).value_or("");
        a.mailbox = s.str("mailbox", true).value_or("");
        if (!a.mailbox.empty() && !is_email(a.mailbox)) s.problem("mailbox", "'" + a.mailbox + "' is not an address");
        if (auto sa = s.strings("send_as", false)) {
            for (const auto& addr : *sa)
                if (!is_email(addr)) s.problem("send_as", "'" + addr + "' is not an address");
            a.send_as = *sa;
        } else if (!a.mailbox.empty()) {
            a.send_as = {a.mailbox};
        }
        if (!a.app.empty() && !cfg.apps.count(a.app)) s.problem("app", "no [app." + a.app + "] is defined");
        cfg.accounts.push_back(std::move(a));
    });

    array_of_tables("relay", [&](Section& s) {
        RelayConfig r;
        if (auto nets = s.strings("networks", true)) {
            for (const auto& text : *nets) {
                auto net = parse_network(text);
                if (!net) s.problem("networks", "'" + text + "' is not a network (expected CIDR like 192.168.10.0/24)");
                else r.networks.push_back(*net);
            }
        }
        r.app = s.str("app", true).value_or("");
        r.mailbox = s.str("mailbox", true).value_or("");
        if (!r.mailbox.empty() && !is_email(r.mailbox)) s.problem("mailbox", "'" + r.mailbox + "' is not an address");
        if (!r.app.empty() && !cfg.apps.count(r.app)) s.problem("app", "no [app." + r.app + "] is defined");
        cfg.relays.push_back(std::move(r));
    });

    cfg.smtp.listen = {*parse_listen("127.0.0.1:1025")};
    cfg.smtp.tls_listen = {*parse_listen("127.0.0.1:1465")};
    cfg.imap.listen = {*parse_listen("127.0.0.1:1143")};
    cfg.imap.tls_listen = {*parse_listen("127.0.0.1:1993")};
    cfg.pop3.listen = {*parse_listen("127.0.0.1:1110")};
    cfg.pop3.tls_listen = {*parse_listen("127.0.0.1:1995")};
    cfg.admin_listen = *parse_listen("127.0.0.1:1080");

    if (const toml::table* t = top.table("smtp")) {
        Section s(*t, "smtp", path, problems);
        read_listeners(s, "listen", cfg.smtp.listen);
        read_listeners(s, "tls_listen", cfg.smtp.tls_listen);
        read_proxy(s, cfg.smtp);
        if (const toml::node* n = s.get("max_message_size")) {
            std::optional<std::uint64_t> size;
            if (n->is_integer() && n->as_integer()->get() > 0) size = static_cast<std::uint64_t>(n->as_integer()->get());
            else if (n->is_string()) size = parse_size(n->as_string()->get());
            if (!size || *size < 1024 || *size > 150ull * 1024 * 1024)
                s.problem("max_message_size", "must be a size between 1KB and 150MiB, e.g. \"35MB\"");
            else cfg.smtp.max_message_size = *size;
        }
        if (auto v = s.str("from_policy", false)) {
            if (*v != "rewrite" && *v != "keep" && *v != "reject")
                s.problem("from_policy", "must be \"rewrite\", \"keep\" or \"reject\"");
            else cfg.smtp.from_policy = *v;
        }
        s.finish();
    }
    if (const toml::table* t = top.table("queue")) {
        Section s(*t, "queue", path, problems);
        const char* examples = "\"30s\", \"15m\", \"12h\", \"5d\"";
        s.duration("lifetime", 60, 30 * 86400, cfg.queue.lifetime_s, examples);
        s.duration("retry_initial", 1, 3600, cfg.queue.retry_initial_s, examples);
        s.duration("retry_max", 1, 86400, cfg.queue.retry_max_s, examples);
        if (cfg.queue.retry_max_s < cfg.queue.retry_initial_s)
            s.problem("retry_max", "must not be shorter than retry_initial");
        if (auto v = s.integer("workers")) {
            if (*v < 1 || *v > 256) s.problem("workers", "must be between 1 and 256");
            else cfg.queue.workers = static_cast<int>(*v);
        }
        if (auto v = s.integer("per_mailbox")) {
            if (*v < 1 || *v > 4) s.problem("per_mailbox", "must be between 1 and 4 (Outlook's concurrency limit)");
            else cfg.queue.per_mailbox = static_cast<int>(*v);
        }
        s.finish();
    }
    if (const toml::table* t = top.table("graph")) {
        Section s(*t, "graph", path, problems);
        s.duration_ms("timeout", 1, 3600, cfg.graph.timeout_ms, "\"120s\"");
        s.finish();
    }
    for (auto [key, set] : {std::pair<const char*, ListenerSet*>{"imap", &cfg.imap},
                            std::pair<const char*, ListenerSet*>{"pop3", &cfg.pop3}}) {
        if (const toml::table* t = top.table(key)) {
            Section s(*t, key, path, problems);
            read_listeners(s, "listen", set->listen);
            read_listeners(s, "tls_listen", set->tls_listen);
            read_proxy(s, *set);
            if (set == &cfg.imap) {
                s.duration_ms("poll_interval", 1, 3600, cfg.imap.poll_interval_ms, "\"15s\"");
                s.duration_ms("idle_poll_interval", 1, 600, cfg.imap.idle_poll_interval_ms, "\"15s\"");
                if (const toml::node* n = s.get("cache_size")) {
                    std::optional<std::uint64_t> size;
                    if (n->is_string()) size = parse_size(n->as_string()->get());
                    else if (n->is_integer() && n->as_integer()->get() > 0)
                        size = static_cast<std::uint64_t>(n->as_integer()->get());
                    if (!size || *size < 1024 * 1024) s.problem("cache_size", "must be a size of at least 1MB, e.g. \"1GB\"");
                    else cfg.imap.cache_size = *size;
                }
                if (auto v = s.str("trash_expunge", false)) {
                    if (*v != "permanent" && *v != "recoverable")
                        s.problem("trash_expunge", "must be \"permanent\" or \"recoverable\"");
                    else cfg.imap.trash_expunge = *v;
                }
            }
            s.finish();
        }
    }
    if (const toml::table* t = top.table("tls")) {
        Section s(*t, "tls", path, problems);
        cfg.tls.cert = resolve(s.str("cert", false).value_or(""));
        cfg.tls.key = resolve(s.str("key", false).value_or(""));
        if (cfg.tls.cert.empty() != cfg.tls.key.empty())
            s.problem(cfg.tls.cert.empty() ? "cert" : "key", "set both cert and key, or neither (generated)");
        if (!cfg.tls.cert.empty() && !readable(cfg.tls.cert)) s.problem("cert", "cannot read '" + cfg.tls.cert + "'");
        if (!cfg.tls.key.empty() && !readable(cfg.tls.key)) s.problem("key", "cannot read '" + cfg.tls.key + "'");
        if (auto v = s.str("min_version", false)) {
            if (*v != "1.2" && *v != "1.3") s.problem("min_version", "must be \"1.2\" or \"1.3\"");
            cfg.tls.min_version = *v;
        }
        s.finish();
    }
    if (const toml::table* t = top.table("admin")) {
        Section s(*t, "admin", path, problems);
        if (auto v = s.str("listen", false)) {
            if (auto a = parse_listen(*v)) cfg.admin_listen = *a;
            else s.problem("listen", "'" + *v + "' is not a listen address (expected IP:PORT)");
        }
        s.finish();
    }
    if (const toml::table* t = top.table("log")) {
        Section s(*t, "log", path, problems);
        if (auto v = s.str("level", false); v && !log::parse_level(*v, cfg.log_level))
            s.problem("level", "must be one of error, warn, info, debug");
        if (auto v = s.str("format", false); v && !log::parse_format(*v, cfg.log_format))
            s.problem("format", "must be text or json");
        s.finish();
    }
    top.finish();

    // Cross-checks: one port, one listener.
    std::map<std::string, std::string> used;
    auto claim = [&](const std::vector<ListenAddress>& list, const std::string& key) {
        for (const auto& a : list) {
            auto [it, fresh] = used.emplace(a.to_string(), key);
            if (!fresh)
                problems.push_back({path, top.line_of(key.substr(0, key.find('.'))), key,
                                    a.to_string() + " is also used by " + it->second});
        }
    };
    claim(cfg.smtp.listen, "smtp.listen");
    claim(cfg.smtp.tls_listen, "smtp.tls_listen");
    claim(cfg.imap.listen, "imap.listen");
    claim(cfg.imap.tls_listen, "imap.tls_listen");
    claim(cfg.pop3.listen, "pop3.listen");
    claim(cfg.pop3.tls_listen, "pop3.tls_listen");
    claim({cfg.admin_listen}, "admin.listen");

    if (!problems.empty()) throw ConfigError(std::move(problems));
    return cfg;
}

}  // namespace gb::config
