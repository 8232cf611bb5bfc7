#include "proxy/queue/runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "common/log.h"
#include "graph/mail/bounce.h"

namespace gb::queue {

Runner::Runner(QueueStore& store, std::map<std::string, AppSender*> senders, RunnerOptions options, Clock clock)
    : store_(store), senders_(std::move(senders)), options_(std::move(options)), clock_(std::move(clock)) {}

Runner::~Runner() { stop(); }

std::int64_t Runner::now() const {
    if (clock_) return clock_();
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void Runner::start() {
    for (int i = 0; i < std::max(1, options_.workers); ++i) threads_.emplace_back([this] { worker(); });
}

void Runner::request_stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
}

void Runner::stop() {
    request_stop();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

void Runner::enqueue(QueuedMessage message) {
    {
        std::lock_guard lock(mutex_);
        std::int64_t at = message.next_attempt;
        std::string mailbox = message.envelope.identity.mailbox;
        due_[mailbox].emplace(at, std::move(message));
        ++queued_;
    }
    changed_.notify_one();
}

Runner::RetryResult Runner::retry_now(const std::string& id) {
    std::lock_guard lock(mutex_);
    if (in_flight_ids_.count(id)) return RetryResult::InFlight;
    for (auto& [mailbox, queue] : due_) {
        for (auto it = queue.begin(); it != queue.end(); ++it) {
            if (it->second.id != id) continue;
            QueuedMessage m = std::move(it->second);
            queue.erase(it);
            m.next_attempt = 0;
            paused_until_.erase(mailbox);  // the admin asked for it now
            queue.emplace(0, std::move(m));
            changed_.notify_all();
            return RetryResult::Rescheduled;
        }
    }
    return RetryResult::Unknown;
}

std::size_t Runner::release_waiting(const std::string& app) {
    std::lock_guard lock(mutex_);
    if (!apps_with_waiting_.erase(app)) return 0;
    std::int64_t t = now();
    std::size_t n = 0;
    for (auto& [mailbox, queue] : due_) {
        for (auto it = queue.begin(); it != queue.end();) {
            if (it->first > t && it->second.waiting_for_app && it->second.envelope.identity.app == app) {
                QueuedMessage m = std::move(it->second);
                it = queue.erase(it);
                m.next_attempt = t;
                m.waiting_for_app = false;
                queue.emplace(t, std::move(m));
                ++n;
            } else {
                ++it;
            }
        }
    }
    if (n) changed_.notify_all();
    return n;
}

RunnerStats Runner::stats() const {
    std::lock_guard lock(mutex_);
    RunnerStats s = stats_;
    s.queued = queued_;
    s.in_flight = in_flight_;
    for (const auto& [mailbox, queue] : due_)
        for (const auto& [at, m] : queue)
            if (m.envelope.received_at > 0 && (s.oldest_received == 0 || m.envelope.received_at < s.oldest_received))
                s.oldest_received = m.envelope.received_at;
    for (const auto& [id, received] : in_flight_received_)
        if (received > 0 && (s.oldest_received == 0 || received < s.oldest_received)) s.oldest_received = received;
    return s;
}

bool Runner::wait_idle(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return queued_ == 0 && in_flight_ == 0; });
}

void Runner::worker() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        std::int64_t t = now();
        for (auto it = paused_until_.begin(); it != paused_until_.end();)
            it = it->second <= t ? paused_until_.erase(it) : std::next(it);
        // The mailbox whose next message is due earliest, among those not paused and below their limit.
        std::multimap<std::int64_t, QueuedMessage>* pick = nullptr;
        for (auto& [mb, queue] : due_) {
            if (queue.empty() || queue.begin()->first > t || paused_until_.count(mb)) continue;
            auto busy = in_flight_per_mailbox_.find(mb);
            if (busy != in_flight_per_mailbox_.end() && busy->second >= options_.per_mailbox) continue;
            if (!pick || queue.begin()->first < pick->begin()->first) pick = &queue;
        }
        if (!pick) {
            // Nothing due (or every due message's mailbox is at its limit): wait for a change or a second.
            changed_.wait_for(lock, std::chrono::seconds(1));
            continue;
        }
        QueuedMessage m = std::move(pick->begin()->second);
        pick->erase(pick->begin());
        --queued_;
        if (pick->empty()) due_.erase(m.envelope.identity.mailbox);
        std::string mailbox = m.envelope.identity.mailbox;
        std::string id = m.id;
        ++in_flight_per_mailbox_[mailbox];
        ++in_flight_;
        in_flight_ids_.insert(id);
        in_flight_received_[id] = m.envelope.received_at;
        ++stats_.attempts;
        lock.unlock();
        attempt(m);
        lock.lock();
        if (--in_flight_per_mailbox_[mailbox] == 0) in_flight_per_mailbox_.erase(mailbox);
        --in_flight_;
        in_flight_ids_.erase(id);
        in_flight_received_.erase(id);
        changed_.notify_all();
    }
}

void Runner::attempt(QueuedMessage& m) {
    log::Context ctx{"", m.id};
    const auto& env = m.envelope;
    auto count = [&](std::uint64_t RunnerStats::*field) {
        std::lock_guard lock(mutex_);
        ++(stats_.*field);
    };
    // Graph's Retry-After is obeyed exactly (GRAPH-FACTS C.1: waiting longer only delays mail, retrying
    // earlier prolongs the throttling); without one, exponential backoff with full jitter in [b/2, b].
    auto defer = [&](const std::string& why, std::optional<std::int64_t> retry_after) {
        int n = m.attempts + 1;
        std::int64_t backoff = 0;
        if (retry_after) {
            backoff = std::clamp<std::int64_t>(*retry_after, 1, options_.backoff_max.count());
        } else {
            backoff = options_.backoff_initial.count() << std::min(n - 1, 20);
            backoff = std::min<std::int64_t>(backoff, options_.backoff_max.count());
            static thread_local std::mt19937_64 rng{std::random_device{}()};
            backoff = backoff / 2 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(backoff / 2 + 1));
        }
        std::int64_t next = now() + backoff;
        store_.deferred(m.id, why, next);
        m.attempts = n;
        m.next_attempt = next;
        count(&RunnerStats::deferred);
        enqueue(m);
    };
    auto bounce = [&](const std::string& body, const std::string& reason, const std::string& status,
                      const mail::DeliveryResult* r, AppSender* sender) {
        if (sender) {
            mail::BounceInfo info;
            info.reporting_mta = options_.hostname;
            info.notify = env.identity.mailbox;
            info.recipients = env.recipients;
            info.status = status;
            info.reason = reason;
            if (r) {
                info.http_status = r->http_status;
                info.graph_code = r->graph_code;
                info.graph_message = r->graph_message;
                info.request_id = r->request_id;
            }
            info.original = body;
            info.arrival = env.received_at;
            auto stored = sender->store_in_inbox(env.identity.mailbox, mail::make_bounce(info));
            log::Logger::instance().write(stored.delivered() ? log::Level::Info : log::Level::Error, "queue", &ctx,
                                          stored.delivered() ? "bounce stored" : "bounce could not be stored",
                                          {{"mailbox", env.identity.mailbox}, {"detail", stored.detail}});
        }
        store_.failed(m.id, reason);
        count(&RunnerStats::bounced);
    };

    std::string body;
    try {
        body = store_.read_body(m.id);
    } catch (const EntryGone& e) {
        log::Logger::instance().write(log::Level::Info, "queue", &ctx, "no longer in the spool, dropped",
                                      {{"error", e.what()}});
        return;
    } catch (const std::exception& e) {
        log::Logger::instance().write(log::Level::Error, "queue", &ctx, "cannot read spooled message",
                                      {{"error", e.what()}});
        defer(e.what(), 60);
        return;
    }
    auto it = senders_.find(env.identity.app);
    AppSender* sender = it == senders_.end() ? nullptr : it->second;
    if (!sender) {
        bounce(body, "app '" + env.identity.app + "' is not configured", "5.3.5", nullptr, nullptr);
        return;
    }
    mail::Envelope menv{env.identity.mailbox, env.reverse_path, env.recipients};
    // A Message-ID made for this message stays the same on every attempt (and across restarts): the
    // drafts of an interrupted attempt can be found by it.
    mail::PreparePolicy policy = options_.prepare;
    // (Not the host name: a container gets a new one at each restart.)
    policy.message_id_seed = env.identity.mailbox + "/" + m.id + "/" + std::to_string(env.received_at);
    mail::Prepared prepared = mail::prepare(body, menv, policy);
    if (!prepared.ok()) {
        log::Logger::instance().write(log::Level::Warn, "queue", &ctx, "message refused before sending",
                                      {{"mailbox", env.identity.mailbox}, {"error", prepared.error->message}});
        bounce(body, prepared.error->message, prepared.error->enhanced, nullptr, sender);
        return;
    }
    mail::Deliverer::Drafts drafts;
    drafts.previous = m.draft_id;
    drafts.check_orphans = m.attempts > 0 || m.recovered;
    drafts.created = [&](const std::string& draft_id) {
        store_.draft_created(m.id, draft_id);
        m.draft_id = draft_id;
    };
    mail::DeliveryResult r = sender->deliver(prepared, drafts);
    std::string request_id = r.request_ids.empty() ? r.request_id : r.request_ids.back();
    bool expired = env.received_at > 0 && now() - env.received_at > options_.lifetime.count();
    const char* outcome = r.outcome == mail::Outcome::Delivered                ? "delivered"
                          : r.outcome == mail::Outcome::Transient && !expired ? "deferred"
                                                                               : "failed";
    log::Logger::instance().write(r.delivered() ? log::Level::Info : log::Level::Warn, "queue", &ctx, outcome,
                                  {{"mailbox", env.identity.mailbox},
                                   {"rcpts", static_cast<std::uint64_t>(env.recipients.size())},
                                   {"attempt", m.attempts + 1},
                                   {"status", r.http_status},
                                   {"request_id", request_id},
                                   {"detail", r.detail}});
    if (r.delivered()) {
        store_.delivered(m.id);
        count(&RunnerStats::delivered);
        if (std::size_t n = release_waiting(env.identity.app))
            log::Logger::instance().write(log::Level::Info, "queue", &ctx, "app reachable again: retrying now",
                                          {{"app", env.identity.app}, {"messages", static_cast<std::uint64_t>(n)}});
        return;
    }
    bool stopping = false;
    {
        std::lock_guard lock(mutex_);
        stopping = stopping_;
    }
    if (!r.delivered() && stopping) {
        // Cut off by the shutdown (or failed while it began): decided at the next start, never bounced
        // now (a bounce's own store would be aborted too).
        defer(r.detail, std::nullopt);
        return;
    }
    if (r.outcome == mail::Outcome::Transient && !expired) {
        // No HTTP answer (token endpoint down, network, timeout) or the token refused: the app's trouble,
        // not this message's. After a long outage the backoffs are long; the first success ends them.
        m.waiting_for_app = !r.retry_after && (r.http_status == 0 || r.http_status == 401);
        if (r.retry_after && (r.http_status == 429 || r.http_status == 503)) {
            // The throttle is per app and mailbox: hold every message of this mailbox, not just this one.
            std::lock_guard lock(mutex_);
            auto& until = paused_until_[env.identity.mailbox];
            until = std::max(until, now() + std::max<std::int64_t>(*r.retry_after, 1));
        }
        defer(r.detail, r.retry_after);
        if (m.waiting_for_app) {  // after it is queued again: the next success of the app finds it
            std::lock_guard lock(mutex_);
            apps_with_waiting_.insert(env.identity.app);
        }
        return;
    }
    std::string reason = expired ? "delivery kept failing until the queue lifetime ran out: " + r.detail : r.detail;
    bounce(body, reason, expired ? "4.4.7" : r.enhanced_status(), &r, sender);
}

}  // namespace gb::queue
