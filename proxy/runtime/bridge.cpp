#include "proxy/runtime/bridge.h"

#include <unistd.h>

#include <filesystem>
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
#include "proxy/spool/spool.h"

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
    SpoolSink(spool::Spool& spool, queue::Runner& runner) : spool_(spool), runner_(runner) {}

    class Writer : public smtp::MessageWriter {
    public:
        Writer(spool::SpoolWriter w, queue::Runner& runner) : w_(std::move(w)), runner_(runner) {}
        void append(std::string_view bytes) override { w_.append(bytes); }
        void commit(const smtp::Envelope& env, Done done) override {
            queue::Runner* runner = &runner_;
            w_.commit(to_spool(env), [done = std::move(done), env, runner](spool::CommitResult r) {
                if (!r.ok()) {
                    done(std::variant<std::string, std::string>(std::in_place_index<1>, r.error->message));
                    return;
                }
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
    };

    std::unique_ptr<smtp::MessageWriter> begin() override {
        return std::make_unique<Writer>(spool_.begin(), runner_);
    }

private:
    spool::Spool& spool_;
    queue::Runner& runner_;
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

private:
    static void report(const std::optional<spool::Error>& e) {
        if (e) log::error("spool", "state update failed", {{"error", e->message}});
    }
    spool::Spool& spool_;
};

// One app registration: its token broker, Graph client and deliverer.
class GraphSender : public queue::AppSender {
public:
    explicit GraphSender(const config::AppConfig& app) : loaded_(load_app(app)) {
        http::ClientOptions o;
        o.ca_file = app.ca_file;
        http_ = std::make_unique<http::Client>(o);
        for (const auto& w : loaded_.warnings) log::warn("auth", w, {{"app", app.name}});
        broker_ = std::make_unique<auth::TokenBroker>(std::move(loaded_.broker), http::make_token_transport(*http_));
        graph_ = std::make_unique<http::GraphClient>(*http_, *broker_, app.graph_url);
        deliverer_ = std::make_unique<mail::Deliverer>(*graph_, *http_);
    }
    mail::DeliveryResult deliver(const mail::Prepared& m) override { return deliverer_->deliver(m); }
    mail::DeliveryResult store_in_inbox(const std::string& mailbox, const std::string& mime) override {
        return deliverer_->store_in_inbox(mailbox, mime);
    }

private:
    LoadedApp loaded_;
    std::unique_ptr<http::Client> http_;
    std::unique_ptr<auth::TokenBroker> broker_;
    std::unique_ptr<http::GraphClient> graph_;
    std::unique_ptr<mail::Deliverer> deliverer_;
};

std::string host_name() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || !host[0]) return "graphbridge";
    return host;
}

}  // namespace

struct Bridge::Impl {
    config::Config cfg;
    TlsMaterial tls;
    std::map<std::string, std::unique_ptr<GraphSender>> senders;
    std::unique_ptr<spool::Spool> spool;
    std::unique_ptr<SpoolStore> store;
    std::unique_ptr<queue::Runner> runner;
    std::unique_ptr<SpoolSink> sink;
    std::unique_ptr<smtp::Policy> policy;
    std::unique_ptr<smtp::SmtpServer> smtp;
    std::size_t recovered = 0;
};

Bridge::Bridge(const config::Config& cfg) : impl_(std::make_unique<Impl>()) {
    Impl& d = *impl_;
    d.cfg = cfg;
    for (const auto& [name, app] : cfg.apps) {
        try {
            d.senders.emplace(name, std::make_unique<GraphSender>(app));
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
    d.runner = std::make_unique<queue::Runner>(*d.store, senders, ro);

    std::optional<spool::Error> err;
    auto entries = d.spool->recover(&err);
    if (err) throw std::runtime_error("spool " + so.root + ": " + err->message);
    for (const auto& info : entries) {
        auto entry = d.spool->load(info.id);
        if (!entry) continue;
        queue::QueuedMessage m;
        m.id = info.id;
        m.envelope = from_spool(entry->envelope);
        m.attempts = static_cast<int>(info.state.attempts);
        m.next_attempt = info.state.next_attempt_ms / 1000;
        d.runner->enqueue(std::move(m));
        ++d.recovered;
    }

    d.sink = std::make_unique<SpoolSink>(*d.spool, *d.runner);
    d.policy = std::make_unique<smtp::Policy>(cfg);
    smtp::ServerOptions o;
    o.hostname = host_name();
    o.listen = cfg.smtp.listen;
    o.tls_listen = cfg.smtp.tls_listen;
    o.tls_cert_pem = d.tls.cert_chain_pem;
    o.tls_key_pem = d.tls.key_pem;
    o.tls_min_version = cfg.tls.min_version;
    o.max_message_size = cfg.smtp.max_message_size;
    d.smtp = std::make_unique<smtp::SmtpServer>(o, *d.policy, *d.sink);
}

Bridge::~Bridge() { stop(); }

void Bridge::start() {
    impl_->smtp->start();
    impl_->runner->start();
}

void Bridge::stop() {
    if (impl_->smtp) impl_->smtp->stop();
    if (impl_->runner) impl_->runner->stop();
}

std::vector<std::uint16_t> Bridge::smtp_ports() const { return impl_->smtp->ports(); }
std::size_t Bridge::recovered() const { return impl_->recovered; }
std::string Bridge::tls_cert_path() const { return impl_->tls.cert_path; }

}  // namespace gb::runtime
