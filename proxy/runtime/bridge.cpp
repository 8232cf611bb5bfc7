#include "proxy/runtime/bridge.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <unistd.h>

#include <fmt/format.h>

#include <condition_variable>
#include <filesystem>
#include <thread>
#include <map>
#include <stdexcept>

#include "common/log.h"
#include "graph/http/graph_client.h"
#include "graph/http/http_client.h"
#include "graph/http/token_transport.h"
#include "graph/mail/deliverer.h"
#include "proxy/queue/runner.h"
#include "proxy/runtime/apps.h"
#include "proxy/runtime/tls.h"
#include "proxy/smtp/policy.h"
#include "proxy/smtp/server.h"
#include "proxy/net/listener.h"
#include "proxy/imap/server.h"
#include "proxy/pop3/server.h"
#include "proxy/runtime/maildrop.h"
#include "proxy/spool/spool.h"
#include "proxy/admin/admin_server.h"
#include "common/metrics.h"
#include "graph/api/errors.h"
#include "proxy/sync/graph_source.h"
#include "proxy/sync/mail_service.h"
#include "proxy/sync/sent_registry.h"

namespace gb::runtime {
namespace {

spool::Envelope to_spool(const smtp::Envelope& e) {
    spool::Envelope s;
    s.reverse_path = e.reverse_path;
    s.recipients = e.recipients;
    if (e.identity.kind == smtp::SenderIdentity::Kind::Account) s.login = e.identity.name;
    else s.relay_rule = e.identity.name;
    s.mailbox = e.identity.mailbox;
    s.app = e.identity.app;
    s.received_at = e.received_at;
    s.client_ip = e.client_ip;
    s.helo = e.helo;
    s.tls = e.tls;
    return s;
}

smtp::Envelope from_spool(const spool::Envelope& s) {
    smtp::Envelope e;
    e.reverse_path = s.reverse_path;
    e.recipients = s.recipients;
    e.identity.kind = s.login.empty() ? smtp::SenderIdentity::Kind::Relay : smtp::SenderIdentity::Kind::Account;
    e.identity.name = s.login.empty() ? s.relay_rule : s.login;
    e.identity.mailbox = s.mailbox;
    e.identity.app = s.app;
    e.client_ip = s.client_ip;
    e.helo = s.helo;
    e.tls = s.tls;
    e.received_at = s.received_at;
    return e;
}

// The SMTP side's sink: every accepted message becomes a spool entry, and once durable, a queue item.
class SpoolSink : public smtp::MessageSink {
public:
    // `sent` (may be null): accepted messages are fingerprinted into it, for IMAP APPEND to Sent Items.
    SpoolSink(spool::Spool& spool, queue::Runner& runner, sync::SentRegistry* sent)
        : spool_(spool), runner_(runner), sent_(sent) {}

    class Writer : public smtp::MessageWriter {
    public:
        Writer(spool::SpoolWriter w, queue::Runner& runner, sync::SentRegistry* sent)
            : w_(std::move(w)), runner_(runner), sent_(sent) {}
        void append(std::string_view bytes) override {
            w_.append(bytes);
            if (sent_) fingerprint_.append(bytes);
        }
        void commit(const smtp::Envelope& env, Done done) override {
            queue::Runner* runner = &runner_;
            auto fp = std::make_shared<sync::SentRegistry::Fingerprint>(std::move(fingerprint_));
            sync::SentRegistry* sent = sent_;
            w_.commit(to_spool(env), [done = std::move(done), env, runner, fp, sent](spool::CommitResult r) {
                if (!r.ok()) {
                    done(std::variant<std::string, std::string>(std::in_place_index<1>, r.error->message));
                    return;
                }
                // Known before the 250: the client's APPEND to Sent Items may follow at once.
                if (sent) sent->record(env.identity.mailbox, std::move(*fp));
                queue::QueuedMessage m;
                m.id = r.id;
                m.envelope = env;
                runner->enqueue(m);
                done(std::variant<std::string, std::string>(std::in_place_index<0>, r.id));
            });
        }
        void abort() override { w_.abort(); }

    private:
        spool::SpoolWriter w_;
        queue::Runner& runner_;
        sync::SentRegistry* sent_;
        sync::SentRegistry::Fingerprint fingerprint_;
    };

    std::unique_ptr<smtp::MessageWriter> begin() override {
        return std::make_unique<Writer>(spool_.begin(), runner_, sent_);
    }

private:
    spool::Spool& spool_;
    queue::Runner& runner_;
    sync::SentRegistry* sent_;
};

// The queue's view of the spool.
class SpoolStore : public queue::QueueStore {
public:
    explicit SpoolStore(spool::Spool& spool) : spool_(spool) {}
    std::string read_body(const std::string& id) override {
        std::optional<spool::Error> err;
        auto entry = spool_.load(id, &err);
        if (!entry && (!err || err->code == spool::Errc::NotFound)) throw queue::EntryGone("spool entry " + id);
        if (!entry) throw std::runtime_error("spool entry " + id + ": " + err->message);
        auto body = entry->body.read_all(200ull * 1024 * 1024);
        if (!body) throw std::runtime_error("spool entry " + id + ": body unreadable");
        return std::move(*body);
    }
    void delivered(const std::string& id) override { report(spool_.complete(id)); }
    void deferred(const std::string& id, const std::string& error, std::int64_t next) override {
        report(spool_.mark_attempt(id, error, next * 1000));
    }
    void failed(const std::string& id, const std::string& reason) override { report(spool_.fail(id, reason)); }
    void draft_created(const std::string& id, const std::string& draft_id) override {
        report(spool_.set_draft(id, draft_id));
    }

private:
    static void report(const std::optional<spool::Error>& e) {
        if (e) log::error("spool", "state update failed", {{"error", e->message}});
    }
    spool::Spool& spool_;
};

// One app registration: its token broker, Graph client and deliverer.
class GraphSender : public queue::AppSender {
public:
    struct Metrics {
        metrics::Registry::CounterFamily* requests = nullptr;  // app, method, route, status
        metrics::Registry::CounterFamily* throttled = nullptr; // app
        metrics::Registry::CounterFamily* waited = nullptr;    // app: Retry-After seconds
    };
    GraphSender(const config::AppConfig& app, long timeout_ms, Metrics m) : loaded_(load_app(app)) {
        http::ClientOptions o;
        o.ca_file = app.ca_file;
        http_ = std::make_unique<http::Client>(o);
        for (const auto& w : loaded_.warnings) log::warn("auth", w, {{"app", app.name}});
        // Token requests are small: at most 30 s even when Graph calls may take longer.
        broker_ = std::make_unique<auth::TokenBroker>(std::move(loaded_.broker),
                                                      http::make_token_transport(*http_, std::min<long>(timeout_ms, 30000)));
        graph_ = std::make_unique<http::GraphClient>(*http_, *broker_, app.graph_url);
        if (m.requests)
            graph_->set_observer([m, name = app.name](const std::string& method, const std::string& path,
                                                      const http::Response& r, std::chrono::milliseconds) {
                m.requests->child({name, method, http::route_template(path), std::to_string(r.status)}).inc();
                auto retry_after = r.header("retry-after");
                if (r.status == 429 || (r.status == 503 && retry_after)) {
                    m.throttled->child({name}).inc();
                    auto secs = retry_after ? graph::parse_retry_after(*retry_after, std::time(nullptr))
                                            : std::optional<std::int64_t>{};
                    if (secs && *secs > 0) m.waited->child({name}).inc(static_cast<std::uint64_t>(*secs));
                }
            });
        mail::DeliveryOptions delivery;
        delivery.timeout_ms = timeout_ms;
        deliverer_ = std::make_unique<mail::Deliverer>(*graph_, *http_, delivery);
        source_ = std::make_unique<sync::GraphSource>(*graph_, app.graph_url, 500, http_.get());
        source_->set_timeout_ms(timeout_ms);
    }
    sync::MailSource& source() { return *source_; }
    mail::DeliveryResult deliver(const mail::Prepared& m, const mail::Deliverer::Drafts& drafts) override {
        // Drafts (big messages, or recipients the envelope and headers disagree on) need Mail.ReadWrite;
        // without it Graph answers 403 ErrorAccessDenied, which otherwise means "an admin must fix
        // something, retry": say what is missing and bounce instead of retrying for the queue lifetime.
        if (m.mode != mail::Mode::Mime && known_to_lack("Mail.ReadWrite")) {
            mail::DeliveryResult r;
            r.outcome = mail::Outcome::Permanent;
            r.http_status = 403;
            r.step = "create draft";
            r.detail = "this message needs a draft (it is big, or its headers name recipients outside the "
                       "envelope), and the app registration lacks the Mail.ReadWrite permission that drafts need";
            return r;
        }
        return deliverer_->deliver(m, &drafts);
    }

    // Without Mail.ReadWrite only the one-request MIME sendMail is possible (no drafts, no upload
    // sessions): a message whose base64 exceeds the request limit can never be sent, so the SMTP side
    // refuses it up front. Unknown until the first token (then no cap: it bounces if it must).
    std::optional<smtp::SizeCap> size_cap(const mail::PreparePolicy& prepare) const {
        if (!known_to_lack("Mail.ReadWrite")) return std::nullopt;
        // base64 is 4/3 of the MIME; keep 64 KiB for the headers prepare() may add (Bcc, Date, Message-ID).
        std::uint64_t limit = prepare.max_request_body / 4 * 3 - 64 * 1024;
        return smtp::SizeCap{limit, fmt::format("Message too big for this sender: the app registration lacks the "
                                                "Mail.ReadWrite permission needed for mail over {} bytes",
                                                limit)};
    }
    auth::TokenBroker::Status token_status() const { return broker_->status(); }
    // The last token's roles are known and do not include `role` (false before the first token).
    bool known_to_lack(std::string_view role) const {
        auto roles = broker_->known_roles();
        return roles && std::find(roles->begin(), roles->end(), role) == roles->end();
    }
    // Shutdown past its grace period: Graph and token requests in progress end now (with an error).
    void abort_requests() { http_->abort_transfers(); }
    // Gets the first token in the background (so size_cap() and problems are known early).
    void warm_up() { (void)broker_->get(); }
    mail::DeliveryResult store_in_inbox(const std::string& mailbox, const std::string& mime) override {
        return deliverer_->store_in_inbox(mailbox, mime);
    }

private:
    LoadedApp loaded_;
    std::unique_ptr<http::Client> http_;
    std::unique_ptr<auth::TokenBroker> broker_;
    std::unique_ptr<http::GraphClient> graph_;
    std::unique_ptr<mail::Deliverer> deliverer_;
    std::unique_ptr<sync::GraphSource> source_;
};

std::string host_name() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || !host[0]) return "graphbridge";
    return host;
}

}  // namespace

struct Bridge::Impl {
    // First: the senders' Graph observers count into it, so it outlives them.
    metrics::Registry registry;
    config::Config cfg;
    TlsMaterial tls;
    std::map<std::string, std::unique_ptr<GraphSender>> senders;
    std::unique_ptr<spool::Spool> spool;
    std::unique_ptr<SpoolStore> store;
    sync::SentRegistry sent;  // messages accepted over SMTP, for IMAP APPEND to Sent Items (outlives the sink)
    std::unique_ptr<queue::Runner> runner;
    std::unique_ptr<SpoolSink> sink;
    std::unique_ptr<smtp::Policy> policy;
    // Failed logins per client address, shared by SMTP, IMAP and POP3; declared before the servers so it
    // outlives them.
    std::unique_ptr<smtp::AuthThrottle> auth_throttle;
    std::unique_ptr<smtp::SmtpServer> smtp;
    std::size_t recovered = 0;

    // IMAP/POP3 read path.
    std::unique_ptr<sync::StateStore> state;
    std::unique_ptr<sync::BodyCache> cache;
    std::unique_ptr<sync::MailService> mail;
    std::unique_ptr<imap::ImapServer> imap;
    std::unique_ptr<GraphMaildrop> maildrop;
    std::unique_ptr<pop3::Pop3Server> pop3;

    // /healthz, /readyz and /metrics ([admin] listen); stopped first.
    std::unique_ptr<admin::AdminServer> admin;

    void register_metrics();
    std::string spool_unwritable() const;

    // Graceful shutdown in progress (/readyz: 503).
    std::atomic<bool> draining{false};
    // The config last applied by reload() (cfg itself never changes: other threads read it); guarded by
    // reload_mutex, as is the TLS material.
    mutable std::mutex reload_mutex;
    std::optional<config::Config> reloaded;
    std::map<std::string, std::string> mailbox_apps;  // the mailboxes IMAP/POP3 read, and through which app
    const config::Config& current() const { return reloaded ? *reloaded : cfg; }
    std::size_t open_sessions() const {
        return (smtp ? smtp->stats().active : 0) + (imap ? imap->stats().active : 0) + (pop3 ? pop3->stats().active : 0);
    }

    // Background chores: first tokens, and `graphbridge queue retry` notices from the CLI.
    std::thread chores;
    std::mutex chores_mutex;
    std::condition_variable chores_cv;
    bool stopping = false;
    // The chores loop's last round (it takes the servers', queue's and sync's locks each second): the
    // systemd watchdog is fed only while it keeps turning.
    std::atomic<std::chrono::steady_clock::rep> heartbeat{std::chrono::steady_clock::now().time_since_epoch().count()};

    void enqueue_from_spool(const std::string& id) {
        auto entry = spool->load(id);
        if (!entry) return;
        queue::QueuedMessage m;
        m.id = id;
        m.envelope = from_spool(entry->envelope);
        m.attempts = static_cast<int>(entry->state.attempts);
        m.next_attempt = entry->state.next_attempt_ms / 1000;
        m.draft_id = entry->state.draft_id;
        m.recovered = true;
        runner->enqueue(std::move(m));
    }

    void run_chores() {
        for (auto& [name, sender] : senders) sender->warm_up();
        std::unique_lock lock(chores_mutex);
        std::size_t peak_sessions = 0;
        for (unsigned tick = 1; !stopping; ++tick) {
            chores_cv.wait_for(lock, std::chrono::seconds(1));
            if (stopping) break;
            lock.unlock();
            // glibc keeps what thousands of closed connections freed in its arenas (bench/idle_conns.py:
            // 60 MB RSS after 4,000 connections closed, 41 MB after a trim): hand it back once a thousand
            // sessions have ended since the busiest moment, and every two minutes anyway.
            std::size_t sessions = open_sessions();
            peak_sessions = std::max(peak_sessions, sessions);
            heartbeat.store(std::chrono::steady_clock::now().time_since_epoch().count());
            if (peak_sessions - sessions >= 1000 || tick % 120 == 0) {
                ::malloc_trim(0);
                peak_sessions = sessions;
            }
            for (const auto& id : spool->take_kicks()) {
                auto r = runner->retry_now(id);
                if (r == queue::Runner::RetryResult::Unknown) enqueue_from_spool(id);  // e.g. back from dead/
                log::info("queue", "retry requested by an admin", {{"id", id}});
            }
            lock.lock();
        }
    }
};

namespace {

// Every connection is a descriptor, and so are the spool, the state DB, the body cache and the Graph
// connections. Services often start with a soft limit of 1024 (systemd's default) and a far higher hard
// one: take the hard limit, and say so when even that is below what the connection caps allow.
void raise_descriptor_limit(std::uint64_t connection_caps) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlimit raised = rl;
        raised.rlim_cur = rl.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
    }
    std::uint64_t needed = connection_caps + 512;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < needed)
        log::warn("main", "the open files limit is below what the connection caps allow; at the limit new "
                          "connections wait. Raise it (systemd: LimitNOFILE=)",
                  {{"limit", static_cast<std::uint64_t>(rl.rlim_cur)}, {"needed", needed}});
}

}  // namespace

Bridge::Bridge(const config::Config& cfg) : impl_(std::make_unique<Impl>()) {
    Impl& d = *impl_;
    d.cfg = cfg;
    {
        auto cap = [](std::size_t configured, std::size_t fallback) { return configured ? configured : fallback; };
        raise_descriptor_limit(cap(cfg.smtp.max_connections, smtp::ServerOptions{}.max_connections) +
                               cap(cfg.imap.max_connections, imap::ServerOptions{}.max_connections) +
                               cap(cfg.pop3.max_connections, pop3::ServerOptions{}.max_connections));
    }
    GraphSender::Metrics gm;
    gm.requests = &d.registry.counter("graphbridge_graph_requests_total",
                                      "Graph requests by app, method, route template and HTTP status (0 = no answer).",
                                      {"app", "method", "route", "status"});
    gm.throttled = &d.registry.counter("graphbridge_graph_throttled_total",
                                       "Graph answers telling the bridge to back off (429, 503 with Retry-After).",
                                       {"app"});
    gm.waited = &d.registry.counter("graphbridge_graph_retry_after_seconds_total",
                                    "Seconds of waiting Graph asked for in Retry-After headers.", {"app"});
    for (const auto& [name, app] : cfg.apps) {
        try {
            d.senders.emplace(name, std::make_unique<GraphSender>(app, static_cast<long>(cfg.graph.timeout_ms), gm));
        } catch (const std::exception& e) {
            throw std::runtime_error("app " + name + ": " + e.what());
        }
    }
    d.tls = load_or_create_tls(cfg);
    spool::Options so;
    so.root = (std::filesystem::path(cfg.state_dir) / "spool").string();
    d.spool = std::make_unique<spool::Spool>(so);
    d.store = std::make_unique<SpoolStore>(*d.spool);
    std::map<std::string, queue::AppSender*> senders;
    for (auto& [name, s] : d.senders) senders.emplace(name, s.get());
    queue::RunnerOptions ro;
    ro.hostname = host_name();
    ro.lifetime = std::chrono::seconds(cfg.queue.lifetime_s);
    ro.backoff_initial = std::chrono::seconds(cfg.queue.retry_initial_s);
    ro.backoff_max = std::chrono::seconds(cfg.queue.retry_max_s);
    ro.workers = cfg.queue.workers;
    ro.per_mailbox = cfg.queue.per_mailbox;
    ro.prepare.from_policy = cfg.smtp.from_policy == "keep"     ? mail::FromPolicy::Keep
                             : cfg.smtp.from_policy == "reject" ? mail::FromPolicy::Reject
                                                                : mail::FromPolicy::Rewrite;
    d.runner = std::make_unique<queue::Runner>(*d.store, senders, ro);

    std::optional<spool::Error> err;
    auto entries = d.spool->recover(&err);
    if (err) throw std::runtime_error("spool " + so.root + ": " + err->message);
    d.spool->take_kicks();  // everything is scheduled from its state file now
    for (const auto& info : entries) {
        d.enqueue_from_spool(info.id);
        ++d.recovered;
    }

    bool want_imap_early = !cfg.imap.listen.empty() || !cfg.imap.tls_listen.empty();
    d.sink = std::make_unique<SpoolSink>(*d.spool, *d.runner, want_imap_early ? &d.sent : nullptr);
    d.policy = std::make_unique<smtp::Policy>(cfg);
    smtp::ServerOptions o;
    o.hostname = host_name();
    o.listen = cfg.smtp.listen;
    o.tls_listen = cfg.smtp.tls_listen;
    o.proxy_protocol = cfg.smtp.proxy_protocol;
    o.proxy_trusted = cfg.smtp.proxy_trusted;
    if (cfg.smtp.max_connections) o.max_connections = cfg.smtp.max_connections;
    o.tls_cert_pem = d.tls.cert_chain_pem;
    o.tls_key_pem = d.tls.key_pem;
    o.tls_min_version = cfg.tls.min_version;
    o.max_message_size = cfg.smtp.max_message_size;
    d.auth_throttle = std::make_unique<smtp::AuthThrottle>();
    o.shared_throttle = d.auth_throttle.get();
    mail::PreparePolicy prepare = ro.prepare;
    o.size_cap = [&d, prepare](const smtp::SenderIdentity& who) -> std::optional<smtp::SizeCap> {
        auto it = d.senders.find(who.app);
        if (it == d.senders.end()) return std::nullopt;
        return it->second->size_cap(prepare);
    };
    d.smtp = std::make_unique<smtp::SmtpServer>(o, *d.policy, *d.sink);

    bool want_imap = !cfg.imap.listen.empty() || !cfg.imap.tls_listen.empty();
    bool want_pop3 = !cfg.pop3.listen.empty() || !cfg.pop3.tls_listen.empty();
    if (want_imap || want_pop3) {
        std::filesystem::path state_dir(cfg.state_dir);
        std::string aside;
        d.state = sync::open_sqlite_store((state_dir / "mailboxes.db").string(), &aside);
        if (!aside.empty())
            log::error("sync", "state database was corrupt: moved aside, rebuilding it from Graph; IMAP clients "
                               "see new UIDVALIDITYs and download their folders again",
                       {{"moved_to", aside}});
        d.cache = std::make_unique<sync::BodyCache>((state_dir / "cache").string(), cfg.imap.cache_size);
        sync::MailServiceOptions mo;
        mo.poll_interval = std::chrono::milliseconds(cfg.imap.poll_interval_ms);
        mo.idle_poll_interval = std::chrono::milliseconds(cfg.imap.idle_poll_interval_ms);
        d.mail = std::make_unique<sync::MailService>(*d.state, *d.cache, mo);
        for (const auto& [login, account] : d.policy->accounts()) {
            auto it = d.senders.find(account.app);
            if (it == d.senders.end() || d.mail->mailbox(account.mailbox)) continue;
            d.mail->add_mailbox(account.mailbox, it->second->source());
            d.mailbox_apps.emplace(account.mailbox, account.app);
        }
    }
    if (want_pop3) {
        d.maildrop = std::make_unique<GraphMaildrop>(*d.mail);
        pop3::ServerOptions po;
        po.hostname = host_name();
        po.listen = cfg.pop3.listen;
        po.tls_listen = cfg.pop3.tls_listen;
        po.proxy_protocol = cfg.pop3.proxy_protocol;
        po.proxy_trusted = cfg.pop3.proxy_trusted;
        if (cfg.pop3.max_connections) po.max_connections = cfg.pop3.max_connections;
        po.tls_cert_pem = d.tls.cert_chain_pem;
        po.tls_key_pem = d.tls.key_pem;
        po.tls_min_version = cfg.tls.min_version;
        po.shared_throttle = d.auth_throttle.get();
        d.pop3 = std::make_unique<pop3::Pop3Server>(po, *d.policy, *d.maildrop);
    }
    if (want_imap) {
        imap::ServerOptions io;
        io.hostname = host_name();
        io.listen = cfg.imap.listen;
        io.tls_listen = cfg.imap.tls_listen;
        io.proxy_protocol = cfg.imap.proxy_protocol;
        io.proxy_trusted = cfg.imap.proxy_trusted;
        if (cfg.imap.max_connections) io.max_connections = cfg.imap.max_connections;
        io.tls_cert_pem = d.tls.cert_chain_pem;
        io.tls_key_pem = d.tls.key_pem;
        io.tls_min_version = cfg.tls.min_version;
        imap::SessionServices services;
        services.policy = d.policy.get();
        services.throttle = d.auth_throttle.get();
        services.mail = d.mail.get();
        services.sent = &d.sent;
        services.trash_expunge_permanent = cfg.imap.trash_expunge == "permanent";
        d.imap = std::make_unique<imap::ImapServer>(io, services);
    }
}

// Every family the admin endpoint serves; values read at scrape time from the components' own
// counters, so nothing on the mail path pays for metrics it does not already keep.
void Bridge::Impl::register_metrics() {
    using metrics::Sink;
    using metrics::Type;
    registry.family("graphbridge_messages_accepted_total", "Messages answered 250 over SMTP (on disk).", Type::Counter);
    registry.family("graphbridge_messages_delivered_total", "Messages Graph accepted for delivery.", Type::Counter);
    registry.family("graphbridge_messages_deferred_total", "Delivery attempts that failed temporarily.", Type::Counter);
    registry.family("graphbridge_messages_bounced_total", "Messages bounced to the sender (permanent failure or "
                                                          "queue lifetime).", Type::Counter);
    registry.family("graphbridge_delivery_attempts_total", "Delivery attempts.", Type::Counter);
    registry.family("graphbridge_queue_depth", "Messages in the spool not yet delivered (waiting or in flight).",
                    Type::Gauge);
    registry.family("graphbridge_queue_in_flight", "Deliveries in progress.", Type::Gauge);
    registry.family("graphbridge_queue_oldest_age_seconds", "Age of the oldest message in the queue (0 when empty).",
                    Type::Gauge);
    registry.family("graphbridge_sessions", "Open client sessions by protocol.", Type::Gauge);
    registry.family("graphbridge_sessions_authenticated", "Open client sessions that have logged in, by protocol.",
                    Type::Gauge);
    registry.family("graphbridge_imap_idle_sessions", "IMAP sessions in IDLE (waiting for new mail).", Type::Gauge);
    registry.family("graphbridge_connections_total", "Connections accepted by protocol.", Type::Counter);
    registry.family("graphbridge_connections_refused_total", "Connections refused at the connection cap.",
                    Type::Counter);
    registry.family("graphbridge_auth_failures_total", "Failed logins by protocol.", Type::Counter);
    registry.family("graphbridge_token_requests_total", "Token requests sent to the identity platform, by app.",
                    Type::Counter);
    registry.family("graphbridge_token_failures_total", "Token requests that failed, by app.", Type::Counter);
    registry.family("graphbridge_token_usable", "1 when the app holds a usable access token.", Type::Gauge);
    registry.family("graphbridge_imap_cache_hits_total", "Message bodies served from the disk cache.", Type::Counter);
    registry.family("graphbridge_imap_cache_misses_total", "Message bodies downloaded from Graph.", Type::Counter);
    registry.family("graphbridge_imap_cache_bytes", "Bytes in the body cache.", Type::Gauge);
    registry.family("graphbridge_sync_polls_total", "Mailbox sync rounds.", Type::Counter);
    registry.family("graphbridge_sync_poll_errors_total", "Mailbox sync rounds that failed.", Type::Counter);
    registry.family("graphbridge_sync_lag_seconds",
                    "Seconds since the mailbox's last complete sync succeeded (mailboxes with IMAP/POP3 sessions "
                    "are polled every [imap] poll_interval).",
                    Type::Gauge);
    registry.collector([this](Sink& s) {
        auto n = [](auto v) { return static_cast<double>(v); };
        const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count();  // unix seconds, for the ages below
        // One protocol's front end: open sessions, connections, refusals, failed logins.
        auto server = [&](const char* protocol, std::size_t active, std::size_t authenticated, std::uint64_t connections,
                          std::uint64_t refused, std::uint64_t auth_failures) {
            metrics::Labels l{{"protocol", protocol}};
            s.sample("graphbridge_sessions", l, n(active));
            s.sample("graphbridge_sessions_authenticated", l, n(authenticated));
            s.sample("graphbridge_connections_total", l, n(connections));
            s.sample("graphbridge_connections_refused_total", l, n(refused));
            s.sample("graphbridge_auth_failures_total", l, n(auth_failures));
        };
        if (smtp) {
            auto st = smtp->stats();
            s.sample("graphbridge_messages_accepted_total", {}, n(st.messages_accepted));
            server("smtp", st.active, st.authenticated, st.connections, st.refused_connections, st.auth_failures);
        }
        if (imap) {
            auto st = imap->stats();
            server("imap", st.active, st.authenticated, st.connections, st.refused, st.auth_failures);
            s.sample("graphbridge_imap_idle_sessions", {}, n(st.idling));
        }
        if (pop3) {
            auto st = pop3->stats();
            server("pop3", st.active, st.authenticated, st.connections, st.refused_connections, st.auth_failures);
        }
        if (runner) {
            auto st = runner->stats();
            s.sample("graphbridge_messages_delivered_total", {}, n(st.delivered));
            s.sample("graphbridge_messages_deferred_total", {}, n(st.deferred));
            s.sample("graphbridge_messages_bounced_total", {}, n(st.bounced));
            s.sample("graphbridge_delivery_attempts_total", {}, n(st.attempts));
            s.sample("graphbridge_queue_depth", {}, n(st.queued + st.in_flight));
            s.sample("graphbridge_queue_in_flight", {}, n(st.in_flight));
            s.sample("graphbridge_queue_oldest_age_seconds", {},
                     st.oldest_received > 0 ? n(std::max<std::int64_t>(0, now - st.oldest_received)) : 0.0);
        }
        for (const auto& [name, sender] : senders) {
            auto st = sender->token_status();
            s.sample("graphbridge_token_requests_total", {{"app", name}}, n(st.requests));
            s.sample("graphbridge_token_failures_total", {{"app", name}}, n(st.failures));
            s.sample("graphbridge_token_usable", {{"app", name}}, st.token_usable ? 1.0 : 0.0);
        }
        if (cache) {
            auto st = cache->stats();
            s.sample("graphbridge_imap_cache_hits_total", {}, n(st.hits));
            s.sample("graphbridge_imap_cache_misses_total", {}, n(st.misses));
            s.sample("graphbridge_imap_cache_bytes", {}, n(st.bytes));
        }
        if (mail) {
            auto st = mail->stats();
            s.sample("graphbridge_sync_polls_total", {}, n(st.polls));
            s.sample("graphbridge_sync_poll_errors_total", {}, n(st.poll_errors));
            for (const auto& [mailbox, at] : mail->last_synced())
                s.sample("graphbridge_sync_lag_seconds", {{"mailbox", mailbox}}, n(std::max<std::int64_t>(0, now - at)));
        }
    });
}

// Ready needs a writable spool: a probe file created, written, fsync'd and removed.
std::string Bridge::Impl::spool_unwritable() const {
    std::string probe = (std::filesystem::path(cfg.state_dir) / "spool" / ".ready-probe").string();
    int fd = ::open(probe.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return std::string("cannot create a file in the spool: ") + std::strerror(errno);
    bool ok = ::write(fd, "x", 1) == 1 && ::fsync(fd) == 0;
    int err = errno;
    ::close(fd);
    ::unlink(probe.c_str());
    return ok ? std::string() : std::string("cannot write to the spool: ") + std::strerror(err);
}

Bridge::~Bridge() { stop(); }

void Bridge::start() {
    Impl& d = *impl_;
    d.register_metrics();
    std::vector<admin::ReadinessCheck> checks;
    checks.push_back({"shutdown", [&d] { return d.draining ? std::string("shutting down") : std::string(); }});
    checks.push_back({"spool", [&d] { return d.spool_unwritable(); }});
    for (const auto& [name, sender] : d.senders) {
        GraphSender* g = sender.get();
        checks.push_back({"app " + name, [g] {
                              auto st = g->token_status();
                              if (st.token_usable) return std::string();
                              return st.last_error.empty() ? std::string("no access token yet") : st.last_error;
                          }});
    }
    d.admin = std::make_unique<admin::AdminServer>(d.cfg.admin_listen, d.registry, std::move(checks));
    d.admin->start();
    impl_->smtp->start();
    impl_->runner->start();
    if (impl_->mail) impl_->mail->start();
    if (impl_->imap) impl_->imap->start();
    if (impl_->pop3) impl_->pop3->start();
    impl_->chores = std::thread([d = impl_.get()] { d->run_chores(); });
}

void Bridge::stop() {
    {
        std::lock_guard lock(impl_->chores_mutex);
        impl_->stopping = true;
    }
    impl_->chores_cv.notify_all();
    if (impl_->chores.joinable()) impl_->chores.join();
    if (impl_->imap) impl_->imap->stop();
    if (impl_->pop3) impl_->pop3->stop();
    if (impl_->mail) impl_->mail->stop();
    if (impl_->smtp) impl_->smtp->stop();
    if (impl_->runner) impl_->runner->stop();
    if (impl_->admin) impl_->admin->stop();
}

Bridge::ShutdownReport Bridge::shutdown(std::chrono::milliseconds grace) {
    Impl& d = *impl_;
    ShutdownReport report;
    const auto started = std::chrono::steady_clock::now();
    const auto deadline = started + grace;
    d.draining = true;
    if (d.smtp) d.smtp->drain();
    if (d.imap) d.imap->drain();
    if (d.pop3) d.pop3->drain();
    // The queue starts nothing new (at once: no attempt may begin after this) and waits for its attempts
    // in flight (on its own thread, so the deadline below can cut them off).
    if (d.runner) d.runner->request_stop();
    std::thread queue_stop([&d] {
        if (d.runner) d.runner->stop();
    });
    std::size_t sessions = d.open_sessions();
    log::info("main", "shutting down: not accepting connections; waiting for transactions and deliveries in flight",
              {{"sessions", static_cast<std::uint64_t>(sessions)},
               {"in_flight", static_cast<std::uint64_t>(d.runner ? d.runner->stats().in_flight : 0)},
               {"grace_ms", static_cast<std::int64_t>(grace.count())}});
    auto queue_idle = [&d] { return !d.runner || d.runner->stats().in_flight == 0; };
    while (std::chrono::steady_clock::now() < deadline && (d.open_sessions() > 0 || !queue_idle()))
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    report.sessions_cut = d.open_sessions();
    if (!queue_idle()) {
        report.deliveries_aborted = true;
        log::warn("main", "shutdown grace period over: aborting Graph requests in flight (their messages stay in the "
                          "spool and are retried at the next start)",
                  {{"in_flight", static_cast<std::uint64_t>(d.runner->stats().in_flight)}});
    }
    if (report.deliveries_aborted || report.sessions_cut > 0)
        for (auto& [name, sender] : d.senders) sender->abort_requests();  // also IMAP commands waiting on Graph
    queue_stop.join();
    if (report.sessions_cut > 0)
        log::warn("main", "shutdown grace period over: closing sessions still in a transaction or command (mail not yet "
                          "answered 250 was not accepted; clients send it again)",
                  {{"sessions", static_cast<std::uint64_t>(report.sessions_cut)}});
    stop();
    report.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    return report;
}

namespace {

std::string listeners_text(const config::ListenerSet& s) {
    std::string out;
    for (const auto* list : {&s.listen, &s.tls_listen, &s.proxy_protocol})
        for (const auto& a : *list) out += a.to_string() + ",";
    out += "|" + std::to_string(s.max_connections);
    for (const auto& n : s.proxy_trusted) out += n.text + ",";
    return out;
}

std::string apps_text(const std::map<std::string, config::AppConfig>& apps) {
    std::string out;
    for (const auto& [name, a] : apps) {
        out += name + "|" + a.tenant_id + "|" + a.client_id + "|" + a.token_endpoint + "|" + a.graph_url + "|" + a.scope +
               "|" + a.ca_file + "|" + a.client_secret.describe();
        if (const auto& c = a.certificate)
            out += "|" + c->keystore + "|" + c->cert_file + "|" + c->alias + "|" + c->algorithm + "|" + c->thumbprint +
                   "|" + std::to_string(c->assertion_lifetime) + "|" + c->password.describe() + "|" +
                   c->key_password.describe() + "|" + c->extra_claims_json;
        out += ";";
    }
    return out;
}

}  // namespace

Bridge::ReloadReport Bridge::reload() {
    Impl& d = *impl_;
    std::lock_guard lock(d.reload_mutex);
    ReloadReport r;
    config::Config next;
    try {
        next = config::load(d.cfg.path);
    } catch (const config::ConfigError& e) {
        for (const auto& p : e.problems()) r.errors.push_back(p.to_string());
        return r;
    } catch (const std::exception& e) {
        r.errors.push_back(d.cfg.path + ": " + e.what());
        return r;
    }
    // Accounts and relay rules may only name the apps the bridge started with (an app is a token broker,
    // a Graph client and a queue lane: added at start only).
    for (const auto& a : next.accounts)
        if (!d.senders.count(a.app))
            r.errors.push_back("account " + a.login + ": app \"" + a.app + "\" was not there at start (adding an app "
                               "needs a restart)");
    for (std::size_t i = 0; i < next.relays.size(); ++i)
        if (!d.senders.count(next.relays[i].app))
            r.errors.push_back("relay " + std::to_string(i + 1) + ": app \"" + next.relays[i].app +
                               "\" was not there at start (adding an app needs a restart)");
    // The certificate must load before anything changes.
    TlsMaterial tls;
    std::shared_ptr<boost::asio::ssl::context> tls_context;  // one for the three servers
    try {
        // A generated certificate stays where the running bridge keeps it (state_dir needs a restart).
        config::Config tls_cfg = next;
        tls_cfg.state_dir = d.cfg.state_dir;
        tls = load_or_create_tls(tls_cfg);
        tls_context = net::make_server_tls(tls.cert_chain_pem, tls.key_pem, d.cfg.tls.min_version);
    } catch (const std::exception& e) {
        r.errors.push_back(std::string("[tls]: ") + e.what());
    }
    if (!r.errors.empty()) return r;

    const config::Config& before = d.current();
    // Accounts: what changed, for the log (never the hashes themselves).
    std::size_t added = 0, removed = 0, changed = 0;
    {
        std::map<std::string, const config::AccountConfig*> old_accounts;
        for (const auto& a : before.accounts) old_accounts[a.login] = &a;
        for (const auto& a : next.accounts) {
            auto it = old_accounts.find(a.login);
            if (it == old_accounts.end()) {
                ++added;
                continue;
            }
            const auto& o = *it->second;
            if (o.password_hash != a.password_hash || o.app != a.app || smtp::lower(o.mailbox) != smtp::lower(a.mailbox) ||
                o.send_as != a.send_as)
                ++changed;
            old_accounts.erase(it);
        }
        removed = old_accounts.size();
    }
    d.policy->reload(next);
    r.applied.push_back(fmt::format("accounts: {} ({} added, {} removed, {} changed)", next.accounts.size(), added,
                                    removed, changed));
    r.applied.push_back(fmt::format("relay rules: {}", next.relays.size()));
    if (d.mail) {
        for (const auto& a : next.accounts) {
            std::string mailbox = smtp::lower(a.mailbox);
            auto known = d.mailbox_apps.find(mailbox);
            if (known == d.mailbox_apps.end()) {
                d.mail->add_mailbox(mailbox, d.senders.at(a.app)->source());
                d.mailbox_apps.emplace(mailbox, a.app);
            } else if (known->second != a.app) {
                r.needs_restart.push_back("IMAP/POP3 of " + mailbox + " (still read through app " + known->second + ")");
            }
        }
    }
    if (tls.cert_chain_pem != d.tls.cert_chain_pem || tls.key_pem != d.tls.key_pem) {
        if (d.smtp) d.smtp->set_tls(tls_context);
        if (d.imap) d.imap->set_tls(tls_context);
        if (d.pop3) d.pop3->set_tls(tls_context);
        r.applied.push_back("TLS certificate: reloaded from " + tls.cert_path);
        d.tls = tls;
    } else {
        r.applied.push_back("TLS certificate: unchanged");
    }
    log::Logger::instance().configure(next.log_level, next.log_format);
    r.applied.push_back(std::string("log level: ") + std::string(log::level_name(next.log_level)));

    auto differs = [&](bool different, const char* what) {
        if (different) r.needs_restart.push_back(what);
    };
    // Against what is running: these were read at start and are never changed by a reload.
    const config::Config& running = d.cfg;
    differs(listeners_text(running.smtp) != listeners_text(next.smtp), "[smtp] listeners");
    differs(listeners_text(running.imap) != listeners_text(next.imap), "[imap] listeners");
    differs(listeners_text(running.pop3) != listeners_text(next.pop3), "[pop3] listeners");
    differs(running.admin_listen.to_string() != next.admin_listen.to_string(), "[admin] listen");
    differs(apps_text(running.apps) != apps_text(next.apps), "[app.*]");
    differs(running.state_dir != next.state_dir, "state_dir");
    differs(running.smtp.max_message_size != next.smtp.max_message_size || running.smtp.from_policy != next.smtp.from_policy,
            "[smtp] max_message_size / from_policy");
    differs(running.tls.min_version != next.tls.min_version, "[tls] min_version");
    differs(running.queue.lifetime_s != next.queue.lifetime_s || running.queue.retry_initial_s != next.queue.retry_initial_s ||
                running.queue.retry_max_s != next.queue.retry_max_s || running.queue.workers != next.queue.workers ||
                running.queue.per_mailbox != next.queue.per_mailbox,
            "[queue]");
    differs(running.graph.timeout_ms != next.graph.timeout_ms, "[graph] timeout");
    differs(running.imap.poll_interval_ms != next.imap.poll_interval_ms ||
                running.imap.idle_poll_interval_ms != next.imap.idle_poll_interval_ms ||
                running.imap.cache_size != next.imap.cache_size || running.imap.trash_expunge != next.imap.trash_expunge,
            "[imap] poll_interval / idle_poll_interval / cache_size / trash_expunge");
    d.reloaded = std::move(next);
    r.ok = true;
    return r;
}

std::chrono::milliseconds Bridge::shutdown_grace() const {
    std::lock_guard lock(impl_->reload_mutex);
    return std::chrono::milliseconds(impl_->current().shutdown_timeout_ms);
}

std::uint16_t Bridge::admin_port() const { return impl_->admin ? impl_->admin->port() : 0; }

std::chrono::steady_clock::time_point Bridge::last_heartbeat() const {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(impl_->heartbeat.load()));
}

std::vector<std::uint16_t> Bridge::smtp_ports() const { return impl_->smtp->ports(); }
std::vector<std::uint16_t> Bridge::imap_ports() const {
    return impl_->imap ? impl_->imap->ports() : std::vector<std::uint16_t>{};
}
std::vector<std::uint16_t> Bridge::pop3_ports() const {
    return impl_->pop3 ? impl_->pop3->ports() : std::vector<std::uint16_t>{};
}
std::size_t Bridge::recovered() const { return impl_->recovered; }
std::string Bridge::tls_cert_path() const { return impl_->tls.cert_path; }

}  // namespace gb::runtime
