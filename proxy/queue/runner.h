// The delivery side of the relay: takes spooled messages when they are due, sends them through Graph
// (graph/mail prepare + Deliverer) as the mailbox they were accepted for, and records the outcome:
// delivered -> removed from the spool; transient (429, 5xx, network) -> retried after exactly Retry-After
// when Graph sends one (and the whole mailbox waits that long: usage accrues while throttled, so early
// calls for other messages would prolong it), else after an exponential backoff with jitter, until the
// queue lifetime; permanent (or lifetime exceeded) -> an
// RFC 3464 bounce in the sender's Inbox and the message leaves the spool.
//
// At most `per_mailbox` deliveries run at once for one mailbox (Outlook's concurrency limit is 4), and
// every attempt re-reads the message from the spool, so a retry never re-sends a consumed body.
// One log line per attempt: queue id, mailbox, recipient count, Graph request-id, outcome.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "graph/mail/deliverer.h"
#include "graph/mail/prepare.h"
#include "proxy/smtp/server.h"


namespace gb::queue {

// A message waiting in the spool, as the runner sees it.
struct QueuedMessage {
    std::string id;
    smtp::Envelope envelope;
    int attempts = 0;
    std::int64_t next_attempt = 0;  // unix seconds
    // The last attempt failed for the whole app, not for this message (no token, Graph unreachable):
    // once a delivery of the same app succeeds, it is due again at once instead of after its backoff.
    bool waiting_for_app = false;
    // The draft an earlier attempt made (big messages), recorded in the spool before its attachments went
    // up: the next attempt checks it first (sent already, or an orphan to delete).
    std::string draft_id;
    // Loaded from the spool at start (or brought back by an admin): an earlier attempt may have been cut
    // off anywhere, e.g. while creating a draft whose id it never learned.
    bool recovered = false;
};

// Thrown by QueueStore::read_body when the entry no longer exists (e.g. `graphbridge queue delete`):
// the runner drops the message instead of retrying it.
struct EntryGone : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The runner's view of the spool (implemented over proxy/spool; a fake in unit tests).
class QueueStore {
public:
    virtual ~QueueStore() = default;
    virtual std::string read_body(const std::string& id) = 0;  // throws when unreadable
    virtual void delivered(const std::string& id) = 0;
    virtual void deferred(const std::string& id, const std::string& error, std::int64_t next_attempt) = 0;
    virtual void failed(const std::string& id, const std::string& reason) = 0;
    // An attempt made a draft; durable when it returns (it is checked after a crash).
    virtual void draft_created(const std::string& id, const std::string& draft_id) = 0;
};

// Sends one prepared message as one app; one per configured app (token broker + Graph client inside).
class AppSender {
public:
    virtual ~AppSender() = default;
    virtual mail::DeliveryResult deliver(const mail::Prepared& message, const mail::Deliverer::Drafts& drafts) = 0;
    virtual mail::DeliveryResult store_in_inbox(const std::string& mailbox, const std::string& mime) = 0;
};

struct RunnerOptions {
    int workers = 8;
    int per_mailbox = 4;
    std::chrono::seconds lifetime{5 * 24 * 3600};
    std::chrono::seconds backoff_initial{30};
    std::chrono::seconds backoff_max{3600};
    mail::PreparePolicy prepare;
    std::string hostname = "graphbridge";
};

struct RunnerStats {
    std::uint64_t delivered = 0, deferred = 0, bounced = 0, attempts = 0;
    std::size_t queued = 0, in_flight = 0;
    std::int64_t oldest_received = 0;  // unix seconds of the oldest message queued or in flight (0 = none)
};

class Runner {
public:
    using Clock = std::function<std::int64_t()>;  // unix seconds
    Runner(QueueStore& store, std::map<std::string, AppSender*> senders, RunnerOptions options, Clock clock = {});
    ~Runner();
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;

    void start();
    void stop();  // waits for attempts in flight
    void request_stop();  // no attempt starts after this returns; stop() then waits for those in flight
    void enqueue(QueuedMessage message);
    // Makes a queued message due now. Unknown: not queued here (e.g. moved back from dead/ by the CLI; the
    // caller may enqueue it); InFlight: being attempted right now (its outcome decides what follows).
    enum class RetryResult { Rescheduled, InFlight, Unknown };
    RetryResult retry_now(const std::string& id);
    RunnerStats stats() const;
    // Makes every message of `app` that waits only because the app was unreachable due now (called
    // after a delivery of that app succeeded). Returns how many.
    std::size_t release_waiting(const std::string& app);
    // Blocks until nothing is queued or in flight, or the timeout passes; true when idle (tests).
    bool wait_idle(std::chrono::milliseconds timeout);

private:
    void worker();
    void attempt(QueuedMessage& m);
    std::int64_t now() const;

    QueueStore& store_;
    std::map<std::string, AppSender*> senders_;
    RunnerOptions options_;
    Clock clock_;

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    // Per mailbox, by next attempt: picking the next message costs O(mailboxes), not O(messages) (a burst
    // of 10,000 messages for one mailbox at its concurrency limit made every wake-up scan all of them).
    std::map<std::string, std::multimap<std::int64_t, QueuedMessage>> due_;
    std::size_t queued_ = 0;
    std::map<std::string, int> in_flight_per_mailbox_;
    std::map<std::string, std::int64_t> paused_until_;  // mailbox -> unix seconds (Graph said Retry-After)
    // Apps with messages deferred because the app was unreachable: release_waiting() scans the queue only
    // for those (every successful delivery asks; a scan each time made delivering 20,000 queued messages
    // quadratic: 490 instead of 1,800 msg/s).
    std::set<std::string> apps_with_waiting_;
    std::set<std::string> in_flight_ids_;
    std::map<std::string, std::int64_t> in_flight_received_;  // id -> received_at, for the oldest age
    std::size_t in_flight_ = 0;
    bool stopping_ = false;
    RunnerStats stats_;
    std::vector<std::thread> threads_;
};

}  // namespace gb::queue
