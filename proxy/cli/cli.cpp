#include "proxy/cli/cli.h"

#include <fmt/format.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "auth/password.h"
#include "proxy/cli/cert.h"
#include "proxy/cli/check.h"
#include "proxy/cli/queue_cmd.h"
#include "proxy/runtime/bridge.h"
#include "proxy/runtime/sd_notify.h"
#include "common/log.h"
#include "graph/sandbox/provision.h"
#include "graph/sandbox/server.h"
#include "proxy/config/config.h"

namespace gb::cli {
namespace {

constexpr const char* kUsage = R"(usage: graphbridge [COMMAND] [OPTIONS]

commands:
  serve --config FILE            run the bridge (default when no command is given)
  sandbox [--dir DIR] [--port P] [--no-bridge]
                                 run against the embedded sandbox tenant (default DIR ./sandbox-state,
                                 port 9443); writes a complete config to DIR and prints how to connect;
                                 --no-bridge serves only the emulated tenant (run `serve` on the config)
  check --config FILE            connectivity test: credentials, token, mailboxes
  cert new --out DIR [--cn NAME] [--days N]
  cert show KEYSTORE [--alias A]
  passwd                         read a password on standard input, print the password_hash line
  config check FILE              validate a config; errors name the file, line and key
  queue list | retry ID | delete ID
  --help, --version

serve: SIGHUP reloads accounts, relay networks, [tls] and [log] without dropping connections; SIGTERM
stops accepting and lets transactions in progress finish (at most shutdown_timeout, default 30s).
)";

// Parses "--name value" options after the command words.
struct Options {
    std::map<std::string, std::string> values;
    std::vector<std::string> positional;
    std::string error;
};

Options parse_options(const std::vector<std::string>& args, std::size_t from, std::initializer_list<const char*> known,
                      std::initializer_list<const char*> flags = {}) {
    Options o;
    for (std::size_t i = from; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a.rfind("--", 0) == 0) {
            std::string name = a.substr(2), value;
            bool is_flag = false;
            for (const char* f : flags) is_flag = is_flag || name == f;
            if (is_flag) {
                o.values[name] = "1";
                continue;
            }
            auto eq = name.find('=');
            if (eq != std::string::npos) {
                value = name.substr(eq + 1);
                name = name.substr(0, eq);
            } else if (i + 1 < args.size()) {
                value = args[++i];
            } else {
                o.error = "option --" + name + " needs a value";
                return o;
            }
            bool ok = false;
            for (const char* k : known) ok = ok || name == k;
            if (!ok) {
                o.error = "unknown option --" + name;
                return o;
            }
            o.values[name] = value;
        } else {
            o.positional.push_back(a);
        }
    }
    return o;
}

int config_check(const std::string& path, std::ostream& out, std::ostream& err) {
    try {
        auto cfg = config::load(path);
        std::size_t bad_hashes = 0;
        for (const auto& a : cfg.accounts) {
            if (!auth::is_password_hash(a.password_hash)) {
                err << fmt::format("{}: account '{}': password_hash is malformed; make one with `graphbridge passwd`\n",
                                   path, a.login);
                ++bad_hashes;
            }
        }
        if (bad_hashes) return 1;
        out << fmt::format("{}: ok ({} app(s), {} account(s), {} relay rule(s))\n", path, cfg.apps.size(),
                           cfg.accounts.size(), cfg.relays.size());
        return 0;
    } catch (const config::ConfigError& e) {
        for (const auto& p : e.problems()) err << p.to_string() << "\n";
        return 1;
    }
}

std::string read_password(std::istream& in, std::ostream& err, bool interactive) {
    std::string line;
    if (interactive) {
        termios old{};
        bool tty = ::tcgetattr(STDIN_FILENO, &old) == 0;
        if (tty) {
            termios noecho = old;
            noecho.c_lflag &= ~static_cast<tcflag_t>(ECHO);
            ::tcsetattr(STDIN_FILENO, TCSANOW, &noecho);
            err << "Password: " << std::flush;
        }
        std::getline(in, line);
        if (tty) {
            ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
            err << "\n";
        }
    } else {
        std::getline(in, line);
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
}

int passwd(std::istream& in, std::ostream& out, std::ostream& err) {
    bool interactive = &in == &std::cin && ::isatty(STDIN_FILENO);
    std::string pw = read_password(in, err, interactive);
    if (pw.empty()) {
        err << "graphbridge passwd: empty password (type it on standard input)\n";
        return 1;
    }
    if (pw.size() < 8) err << "graphbridge passwd: warning: passwords shorter than 8 characters are weak\n";
    out << "password_hash = \"" << auth::hash_password(pw) << "\"\n";
    std::fill(pw.begin(), pw.end(), '\0');
    return 0;
}

sigset_t block_stop_signals() {
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    return stop_signals;
}

// Starts the bridge for a config; returns it running, or nullptr after printing why it cannot start.
std::unique_ptr<runtime::Bridge> start_bridge(const std::string& path, std::ostream& err) {
    config::Config cfg;
    try {
        cfg = config::load(path);
    } catch (const config::ConfigError& e) {
        for (const auto& p : e.problems()) err << p.to_string() << "\n";
        return nullptr;
    }
    log::Logger::instance().configure(cfg.log_level, cfg.log_format);
    try {
        auto bridge = std::make_unique<runtime::Bridge>(cfg);
        bridge->start();
        std::string ports;
        for (auto p : bridge->smtp_ports()) ports += (ports.empty() ? "" : ",") + std::to_string(p);
        std::string iports, pports;
        for (auto p : bridge->imap_ports()) iports += (iports.empty() ? "" : ",") + std::to_string(p);
        for (auto p : bridge->pop3_ports()) pports += (pports.empty() ? "" : ",") + std::to_string(p);
        log::info("main", "graphbridge ready", {{"config", path}, {"smtp_ports", ports}, {"imap_ports", iports},
                                                {"pop3_ports", pports},
                                                {"recovered", static_cast<std::uint64_t>(bridge->recovered())}});
        return bridge;
    } catch (const std::exception& e) {
        err << "graphbridge: " << e.what() << "\n";
        return nullptr;
    }
}

int serve(const std::string& path, std::ostream& err) {
    sigset_t stop_signals = block_stop_signals();
    sigaddset(&stop_signals, SIGHUP);  // reload (blocked before any thread starts, like the stop signals)
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    auto bridge = start_bridge(path, err);
    if (!bridge) {
        runtime::sd_notify("STATUS=failed to start (see the journal)");
        return 1;
    }
    runtime::sd_notify("READY=1\nSTATUS=serving");
    // systemd's watchdog (WatchdogSec=): fed at half the interval, and only while the bridge's
    // housekeeping loop keeps turning; a wedged bridge is restarted by systemd.
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::thread watchdog;
    if (auto interval = runtime::sd_watchdog_interval()) {
        watchdog = std::thread([&, every = *interval / 2, limit = *interval] {
            std::unique_lock lock(mu);
            while (!cv.wait_for(lock, every, [&] { return done; })) {
                if (std::chrono::steady_clock::now() - bridge->last_heartbeat() < limit)
                    runtime::sd_notify("WATCHDOG=1");
            }
        });
    }
    int sig = 0;
    for (;;) {
        sigwait(&stop_signals, &sig);
        if (sig != SIGHUP) break;
        // Reload: accounts, relay networks, the TLS certificate and the log level; connections stay.
        runtime::sd_notify("RELOADING=1\nSTATUS=reloading the configuration");
        auto r = bridge->reload();
        if (!r.ok) {
            for (const auto& e : r.errors) log::error("main", "reload refused: the running configuration stays", {{"problem", e}});
            runtime::sd_notify("READY=1\nSTATUS=serving (last reload refused: see the journal)");
            continue;
        }
        std::string applied, restart;
        for (const auto& a : r.applied) applied += (applied.empty() ? "" : "; ") + a;
        for (const auto& n : r.needs_restart) restart += (restart.empty() ? "" : ", ") + n;
        log::info("main", "configuration reloaded", {{"applied", applied}});
        if (!restart.empty())
            log::warn("main", "changed settings that take effect only after a restart", {{"settings", restart}});
        runtime::sd_notify("READY=1\nSTATUS=serving (configuration reloaded)");
    }
    log::info("main", "stopping", {{"signal", sig}});
    runtime::sd_notify("STOPPING=1\nSTATUS=stopping: finishing transactions and deliveries in flight");
    {
        std::lock_guard lock(mu);
        done = true;
    }
    cv.notify_all();
    if (watchdog.joinable()) watchdog.join();
    auto report = bridge->shutdown(bridge->shutdown_grace());
    log::info("main", "stopped", {{"took_ms", static_cast<std::int64_t>(report.took.count())},
                                  {"sessions_cut", static_cast<std::uint64_t>(report.sessions_cut)},
                                  {"deliveries_aborted", report.deliveries_aborted ? "yes" : "no"}});
    return 0;
}

int sandbox(const Options& o, std::ostream& out, std::ostream& err) {
    std::string dir = o.values.count("dir") ? o.values.at("dir") : "sandbox-state";
    int port = 9443;
    if (o.values.count("port")) {
        try {
            port = std::stoi(o.values.at("port"));
        } catch (...) {
            port = -1;
        }
        if (port < 0 || port > 65535) {
            err << "graphbridge sandbox: --port must be 0-65535\n";
            return 2;
        }
    }
    // Block the stop signals before any thread starts, then wait for one in this thread.
    sigset_t stop_signals = block_stop_signals();

    sandbox::SandboxSetup setup;
    try {
        setup = sandbox::provision(dir, static_cast<std::uint16_t>(port));
    } catch (const std::exception& e) {
        err << "graphbridge sandbox: " << e.what() << "\n";
        return 1;
    }
    sandbox::SandboxOptions options;
    options.login_base = fmt::format("https://127.0.0.1:{}", setup.port);
    options.graph_base = options.login_base;
    sandbox::SandboxServer server(setup.tenant, options, setup.credentials);
    try {
        server.start("127.0.0.1", setup.port);
    } catch (const std::exception& e) {
        err << fmt::format("graphbridge sandbox: cannot listen on 127.0.0.1:{}: {} (is another sandbox running? "
                           "use --port)\n", setup.port, e.what());
        return 1;
    }
    const auto& app = setup.tenant.apps.front();
    std::string base = options.login_base;
    std::string token_url = fmt::format("{}/{}/oauth2/v2.0/token", base, setup.tenant.tenant_id);
    out << fmt::format("graphbridge sandbox {} in {}\n\n", setup.created ? "created" : "loaded", setup.dir);
    out << "Emulated tenant (Entra ID + Graph mail API over HTTPS):\n";
    out << fmt::format("  token endpoint  {}\n", token_url);
    out << fmt::format("  Graph           {}/v1.0\n", base);
    out << fmt::format("  tenant id       {}  (domain {})\n", setup.tenant.tenant_id, setup.tenant.domains.front());
    out << fmt::format("  client id       {}\n", app.client_id);
    out << fmt::format("  CA certificate  {}/ca.pem\n", setup.dir);
    out << fmt::format("  app credential  {}/app.pem (certificate {}), client secret in {}/client-secret\n",
                       setup.dir, setup.dir + "/app.cer", setup.dir);
    out << "  mailboxes       ";
    for (std::size_t i = 0; i < setup.tenant.mailboxes.size(); ++i)
        out << (i ? ", " : "") << setup.tenant.mailboxes[i].address;
    out << "\n\nBridge config: " << setup.config_path << "\n";
    out << "Local accounts (login / password -> mailbox):\n";
    for (const auto& a : setup.accounts) out << fmt::format("  {:8} {}  -> {}\n", a.login, a.password, a.mailbox);
    out << "\nTry it:\n";
    out << fmt::format("  curl --cacert {0}/ca.pem {1} -d grant_type=client_credentials -d client_id={2} \\\n"
                       "       --data-urlencode scope={3}/.default --data-urlencode client_secret@{0}/client-secret\n",
                       setup.dir, token_url, app.client_id, base);
    out << fmt::format("  graphbridge config check {}\n", setup.config_path);

    // The bridge itself, on the generated config (SMTP now; IMAP and POP3 are not part of this build yet).
    std::unique_ptr<runtime::Bridge> bridge;
    if (o.values.count("no-bridge")) {
        out << fmt::format("\nBridge not started (--no-bridge): graphbridge serve --config {}\n", setup.config_path);
    } else {
        bridge = start_bridge(setup.config_path, err);
        if (!bridge) {
            server.stop();
            return 1;
        }
        auto ports = bridge->smtp_ports();
        auto iports = bridge->imap_ports();
        out << fmt::format("\nBridge running: SMTP on 127.0.0.1:{} (STARTTLS) and 127.0.0.1:{} (TLS)",
                           ports.empty() ? 0 : ports[0], ports.size() > 1 ? ports[1] : 0);
        if (!iports.empty())
            out << fmt::format("; IMAP on 127.0.0.1:{} (STARTTLS) and 127.0.0.1:{} (TLS)", iports[0],
                               iports.size() > 1 ? iports[1] : 0);
        auto pports = bridge->pop3_ports();
        if (!pports.empty())
            out << fmt::format("; POP3 on 127.0.0.1:{} (STLS) and 127.0.0.1:{} (TLS)", pports[0],
                               pports.size() > 1 ? pports[1] : 0);
        out << ".\n";
        const auto& alice = setup.accounts.front();
        out << fmt::format("  swaks --server 127.0.0.1:{} --auth-user {} --auth-password '{}' \\\n"
                           "        --from {} --to bob@sandbox.test\n",
                           ports.empty() ? 0 : ports[0], alice.login, alice.password, alice.mailbox);
        out << fmt::format("  (the sandbox's copy of each mailbox: GET {}/v1.0/users/bob@sandbox.test/messages)\n",
                           base);
        if (!iports.empty())
            out << fmt::format("  curl --user '{}:{}' imap://127.0.0.1:{}/INBOX   (lists the Inbox over IMAP)\n",
                               alice.login, alice.password, iports[0]);
        out << fmt::format("  curl http://127.0.0.1:{}/metrics   (Prometheus metrics; also /healthz and /readyz)\n",
                           bridge->admin_port());
    }
    out << "Press Ctrl-C to stop.\n" << std::flush;

    int sig = 0;
    sigwait(&stop_signals, &sig);
    out << fmt::format("\nstopping (signal {})\n", sig) << std::flush;
    if (bridge) bridge->shutdown(bridge->shutdown_grace());  // while the emulated Graph still answers
    server.stop();
    return 0;
}

}  // namespace

int run(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err) {
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        (args.empty() ? err : out) << kUsage;
        return args.empty() ? 2 : 0;
    }
    const std::string& cmd = args[0];
    // `graphbridge COMMAND --help`: the usage (it lists every command with its options), never the command.
    for (std::size_t i = 1; i < args.size(); ++i) {
        if (args[i] == "--help" || args[i] == "-h") {
            out << kUsage;
            return 0;
        }
    }
    if (cmd == "--version") {
        out << "graphbridge 0.1.0\n";
        return 0;
    }
    if (cmd == "config") {
        if (args.size() != 3 || args[1] != "check") {
            err << "usage: graphbridge config check FILE\n";
            return 2;
        }
        return config_check(args[2], out, err);
    }
    if (cmd == "passwd") return passwd(in, out, err);
    if (cmd == "sandbox") {
        Options o = parse_options(args, 1, {"dir", "port"}, {"no-bridge"});
        if (!o.error.empty() || !o.positional.empty()) {
            err << "graphbridge sandbox: " << (o.error.empty() ? "unexpected argument " + o.positional[0] : o.error)
                << "\n";
            return 2;
        }
        return sandbox(o, out, err);
    }
    if (cmd == "check") {
        Options o = parse_options(args, 1, {"config"});
        if (!o.error.empty() || !o.positional.empty() || !o.values.count("config")) {
            err << "usage: graphbridge check --config FILE\n";
            return 2;
        }
        return run_check(o.values.at("config"), out, err);
    }
    if (cmd == "cert") return run_cert(std::vector<std::string>(args.begin() + 1, args.end()), out, err);
    if (cmd == "serve" || cmd.rfind("--config", 0) == 0) {
        Options o = parse_options(args, cmd == "serve" ? 1 : 0, {"config"});
        if (!o.error.empty() || !o.positional.empty() || !o.values.count("config")) {
            err << "usage: graphbridge serve --config FILE\n";
            return 2;
        }
        return serve(o.values.at("config"), err);
    }
    if (cmd == "queue") return run_queue(std::vector<std::string>(args.begin() + 1, args.end()), out, err);
    err << "graphbridge: unknown command '" << cmd << "'\n" << kUsage;
    return 2;
}

}  // namespace gb::cli
