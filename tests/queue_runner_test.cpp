// The delivery queue with a fake spool and a scripted Graph sender: retries honour Retry-After and
// back off, per-mailbox concurrency stays at 4, permanent failures and the queue lifetime bounce.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "proxy/queue/runner.h"

using namespace gb;
using namespace gb::queue;

namespace {

struct FakeStore : QueueStore {
    std::mutex mutex;
    std::map<std::string, std::string> bodies;
    std::vector<std::string> delivered_ids, failed_ids;
    std::map<std::string, std::int64_t> next;
    std::map<std::string, int> reads;
    std::string read_body(const std::string& id) override {
        std::lock_guard lock(mutex);
        ++reads[id];
        if (!bodies.count(id)) throw EntryGone(id);
        return bodies.at(id);
    }
    void delivered(const std::string& id) override {
        std::lock_guard lock(mutex);
        delivered_ids.push_back(id);
    }
    void deferred(const std::string& id, const std::string&, std::int64_t n) override {
        std::lock_guard lock(mutex);
        next[id] = n;
    }
    void failed(const std::string& id, const std::string&) override {
        std::lock_guard lock(mutex);
        failed_ids.push_back(id);
    }
    std::map<std::string, std::string> drafts;
    void draft_created(const std::string& id, const std::string& draft_id) override {
        std::lock_guard lock(mutex);
        drafts[id] = draft_id;
    }
};

struct FakeSender : AppSender {
    std::function<mail::DeliveryResult(const mail::Prepared&)> script;
    std::vector<std::string> previous_drafts;  // what each attempt was told (under mutex)
    std::atomic<int> concurrent{0}, max_concurrent{0}, calls{0};
    std::mutex mutex;
    std::vector<std::pair<std::string, std::string>> inbox;  // mailbox, mime
    mail::DeliveryResult deliver(const mail::Prepared& p, const mail::Deliverer::Drafts& drafts) override {
        {
            std::lock_guard lock(mutex);
            previous_drafts.push_back(drafts.previous);
        }
        if (p.mime.find("Subject: drafty") != std::string::npos && drafts.created)
            drafts.created("DRAFT-" + std::to_string(calls.load()));
        int now = ++concurrent;
        int seen = max_concurrent.load();
        while (now > seen && !max_concurrent.compare_exchange_weak(seen, now)) {
        }
        ++calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        auto r = script(p);
        --concurrent;
        return r;
    }
    mail::DeliveryResult store_in_inbox(const std::string& mailbox, const std::string& mime) override {
        std::lock_guard lock(mutex);
        inbox.emplace_back(mailbox, mime);
        mail::DeliveryResult r;
        r.outcome = mail::Outcome::Delivered;
        return r;
    }
};

mail::DeliveryResult result(mail::Outcome o, int status = 202, std::optional<std::int64_t> retry_after = {}) {
    mail::DeliveryResult r;
    r.outcome = o;
    r.http_status = status;
    r.retry_after = retry_after;
    r.detail = "HTTP " + std::to_string(status);
    if (status == 403) r.graph_code = "ErrorSendAsDenied";
    return r;
}

QueuedMessage msg(const std::string& id, const std::string& mailbox, std::int64_t received) {
    QueuedMessage m;
    m.id = id;
    m.envelope.identity.mailbox = mailbox;
    m.envelope.identity.app = "a";
    m.envelope.reverse_path = mailbox;
    m.envelope.recipients = {"bob@sandbox.test"};
    m.envelope.received_at = received;
    return m;
}

const char* kBody = "From: a@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: s\r\n\r\nhello\r\n";

}  // namespace

TEST(QueueRunner, DeliversWithAtMostFourPerMailbox) {
    FakeStore store;
    FakeSender sender;
    sender.script = [](const mail::Prepared&) { return result(mail::Outcome::Delivered); };
    RunnerOptions o;
    o.workers = 12;
    Runner runner(store, {{"a", &sender}}, o);
    for (int i = 0; i < 40; ++i) {
        std::string id = "Q" + std::to_string(i);
        store.bodies[id] = kBody;
        runner.enqueue(msg(id, i % 2 ? "alice@sandbox.test" : "scanner@sandbox.test", 0));
    }
    runner.start();
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(30)));
    EXPECT_EQ(store.delivered_ids.size(), 40u);
    EXPECT_LE(sender.max_concurrent.load(), 8);  // two mailboxes, four each
    EXPECT_GE(sender.max_concurrent.load(), 2);
    EXPECT_EQ(runner.stats().delivered, 40u);
}

TEST(QueueRunner, TransientFailuresRetryAfterRetryAfterThenDeliver) {
    FakeStore store;
    FakeSender sender;
    std::atomic<std::int64_t> clock{1'000'000};
    std::atomic<int> n{0};
    sender.script = [&](const mail::Prepared&) {
        return ++n < 3 ? result(mail::Outcome::Transient, 429, 120) : result(mail::Outcome::Delivered);
    };
    RunnerOptions o;
    o.workers = 2;
    Runner runner(store, {{"a", &sender}}, o, [&] { return clock.load(); });
    store.bodies["Q1"] = kBody;
    runner.enqueue(msg("Q1", "alice@sandbox.test", clock.load()));
    runner.start();
    for (int i = 0; i < 200 && sender.calls.load() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::int64_t first_retry = 0;
    {
        std::lock_guard lock(store.mutex);
        ASSERT_TRUE(store.next.count("Q1"));
        first_retry = store.next["Q1"];
        EXPECT_EQ(first_retry - clock.load(), 120);  // exactly Retry-After: no shorter backoff, no longer one
    }
    EXPECT_EQ(sender.calls.load(), 1);  // not retried before it is due
    clock += 121;
    auto second_retry_scheduled = [&] {
        std::lock_guard lock(store.mutex);
        return store.next["Q1"] != first_retry;
    };
    for (int i = 0; i < 500 && !second_retry_scheduled(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(second_retry_scheduled());
    clock += 1000;
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(10)));
    EXPECT_EQ(sender.calls.load(), 3);
    EXPECT_EQ(store.delivered_ids, std::vector<std::string>{"Q1"});
    EXPECT_EQ(store.reads["Q1"], 3);  // every attempt re-reads the spool
}

TEST(QueueRunner, AfterAnOutageTheFirstSuccessEndsTheOthersBackoff) {
    FakeStore store;
    FakeSender sender;
    std::atomic<std::int64_t> clock{1'000'000};
    std::atomic<bool> up{false};
    // Down: no HTTP answer at all (the token endpoint or the network). Message-specific 500s stay put.
    sender.script = [&](const mail::Prepared& p) {
        if (p.mime.find("Subject: poison") != std::string::npos) return result(mail::Outcome::Transient, 500);
        return up ? result(mail::Outcome::Delivered) : result(mail::Outcome::Transient, 0);
    };
    RunnerOptions o;
    o.workers = 2;
    o.backoff_initial = std::chrono::seconds(3600);  // long backoffs, as after hours of outage
    Runner runner(store, {{"a", &sender}}, o, [&] { return clock.load(); });
    for (const char* id : {"Q1", "Q2", "Q3"}) {
        store.bodies[id] = kBody;
        runner.enqueue(msg(id, "alice@sandbox.test", clock.load()));
    }
    store.bodies["P"] = "From: a@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: poison\r\n\r\nx\r\n";
    runner.enqueue(msg("P", "alice@sandbox.test", clock.load()));
    runner.start();
    for (int i = 0; i < 500 && sender.calls.load() < 4; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_EQ(sender.calls.load(), 4);
    {
        std::lock_guard lock(store.mutex);
        for (const char* id : {"Q1", "Q2", "Q3", "P"}) EXPECT_GE(store.next[id] - clock.load(), 1800) << id;
    }
    // The app is back: one new message goes through, and the three waiting ones follow at once.
    up = true;
    store.bodies["Q4"] = kBody;
    runner.enqueue(msg("Q4", "alice@sandbox.test", clock.load()));
    for (int i = 0; i < 500; ++i) {
        {
            std::lock_guard lock(store.mutex);
            if (store.delivered_ids.size() == 4) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard lock(store.mutex);
    EXPECT_EQ(store.delivered_ids.size(), 4u) << "without the release they would wait an hour";
    EXPECT_EQ(std::count(store.delivered_ids.begin(), store.delivered_ids.end(), "P"), 0)
        << "a message that failed for its own reasons keeps its backoff";
    EXPECT_EQ(sender.calls.load(), 8);  // Q1-Q3 and P once each while down, then Q4, Q1-Q3; P not again
}

TEST(QueueRunner, TheDraftAnAttemptMadeIsRecordedAndHandedToTheNextAttempt) {
    FakeStore store;
    FakeSender sender;
    std::atomic<int> n{0};
    sender.script = [&](const mail::Prepared&) {
        return ++n < 2 ? result(mail::Outcome::Transient, 0) : result(mail::Outcome::Delivered);
    };
    RunnerOptions o;
    o.workers = 1;
    o.backoff_initial = std::chrono::seconds(1);
    Runner runner(store, {{"a", &sender}}, o);
    store.bodies["Q1"] = "From: a@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: drafty\r\n\r\nx\r\n";
    QueuedMessage m = msg("Q1", "alice@sandbox.test", 0);
    m.draft_id = "FROM-BEFORE-THE-CRASH";  // as enqueue_from_spool() reads it from the spool's state
    runner.enqueue(m);
    runner.start();
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(10)));
    std::lock_guard lock(store.mutex);
    EXPECT_EQ(store.delivered_ids, std::vector<std::string>{"Q1"});
    std::lock_guard lock2(sender.mutex);
    ASSERT_EQ(sender.previous_drafts.size(), 2u);
    EXPECT_EQ(sender.previous_drafts[0], "FROM-BEFORE-THE-CRASH");
    EXPECT_EQ(sender.previous_drafts[1], "DRAFT-0");  // the draft the first attempt made, recorded in the store
    EXPECT_EQ(store.drafts["Q1"], "DRAFT-1");
}

TEST(QueueRunner, RetryAfterHoldsTheWholeMailboxButNotOthers) {
    FakeStore store;
    FakeSender sender;
    std::atomic<std::int64_t> clock{1'000'000};
    std::atomic<bool> throttled{true};
    std::mutex seen_mutex;
    std::vector<std::string> seen;  // mailbox of each call, in order
    sender.script = [&](const mail::Prepared& p) {
        {
            std::lock_guard lock(seen_mutex);
            seen.push_back(p.mailbox);
        }
        if (p.mailbox == "alice@sandbox.test" && throttled.exchange(false))
            return result(mail::Outcome::Transient, 429, 30);
        return result(mail::Outcome::Delivered);
    };
    RunnerOptions o;
    o.workers = 1;  // one at a time, so the order of calls is the order of decisions
    Runner runner(store, {{"a", &sender}}, o, [&] { return clock.load(); });
    for (int i = 0; i < 5; ++i) {
        store.bodies["A" + std::to_string(i)] = kBody;
        runner.enqueue(msg("A" + std::to_string(i), "alice@sandbox.test", clock.load()));
    }
    store.bodies["B0"] = kBody;
    runner.enqueue(msg("B0", "scanner@sandbox.test", clock.load()));
    runner.start();
    auto delivered = [&] {
        std::lock_guard lock(store.mutex);
        return store.delivered_ids.size();
    };
    for (int i = 0; i < 300 && delivered() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    {
        // Alice's first message got 429 Retry-After 30: no other alice message was tried; scanner's went.
        std::lock_guard lock(seen_mutex);
        ASSERT_EQ(seen.size(), 2u);
        EXPECT_EQ(seen[0], "alice@sandbox.test");
        EXPECT_EQ(seen[1], "scanner@sandbox.test");
    }
    clock += 29;
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    EXPECT_EQ(sender.calls.load(), 2);  // still inside the 30 s
    clock += 1;
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(10)));
    EXPECT_EQ(store.delivered_ids.size(), 6u);
    EXPECT_EQ(sender.calls.load(), 7);
}

TEST(QueueRunner, RetryNowMakesAWaitingMessageDueAndReportsUnknownOnes) {
    FakeStore store;
    FakeSender sender;
    std::atomic<std::int64_t> clock{1'000'000};
    std::atomic<int> n{0};
    sender.script = [&](const mail::Prepared&) {
        return ++n == 1 ? result(mail::Outcome::Transient, 503) : result(mail::Outcome::Delivered);
    };
    RunnerOptions o;
    o.workers = 1;
    Runner runner(store, {{"a", &sender}}, o, [&] { return clock.load(); });
    store.bodies["Q1"] = kBody;
    runner.enqueue(msg("Q1", "alice@sandbox.test", clock.load()));
    runner.start();
    auto deferred = [&] {
        std::lock_guard lock(store.mutex);
        return store.next.count("Q1") > 0;
    };
    for (int i = 0; i < 300 && !deferred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(deferred());
    EXPECT_EQ(runner.retry_now("nope"), Runner::RetryResult::Unknown);
    EXPECT_EQ(runner.retry_now("Q1"), Runner::RetryResult::Rescheduled);  // the clock has not moved
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(10)));
    EXPECT_EQ(store.delivered_ids, std::vector<std::string>{"Q1"});
}

TEST(QueueRunner, PermanentFailureBouncesToTheSendersInbox) {
    FakeStore store;
    FakeSender sender;
    sender.script = [](const mail::Prepared&) { return result(mail::Outcome::Permanent, 403); };
    Runner runner(store, {{"a", &sender}}, {});
    store.bodies["Q9"] = kBody;
    runner.enqueue(msg("Q9", "scanner@sandbox.test", 0));
    runner.start();
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(10)));
    EXPECT_EQ(store.failed_ids, std::vector<std::string>{"Q9"});
    ASSERT_EQ(sender.inbox.size(), 1u);
    EXPECT_EQ(sender.inbox[0].first, "scanner@sandbox.test");
    EXPECT_NE(sender.inbox[0].second.find("multipart/report"), std::string::npos);
    EXPECT_NE(sender.inbox[0].second.find("ErrorSendAsDenied"), std::string::npos);
    EXPECT_EQ(runner.stats().bounced, 1u);
}

TEST(QueueRunner, QueueLifetimeEndsRetries) {
    FakeStore store;
    FakeSender sender;
    sender.script = [](const mail::Prepared&) { return result(mail::Outcome::Transient, 503); };
    RunnerOptions o;
    o.lifetime = std::chrono::seconds(3600);
    std::int64_t now = 2'000'000;
    Runner runner(store, {{"a", &sender}}, o, [&] { return now; });
    store.bodies["Q5"] = kBody;
    runner.enqueue(msg("Q5", "alice@sandbox.test", now - 3601));
    runner.start();
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(10)));
    EXPECT_EQ(store.failed_ids, std::vector<std::string>{"Q5"});
    ASSERT_EQ(sender.inbox.size(), 1u);
    EXPECT_NE(sender.inbox[0].second.find("4.4.7"), std::string::npos);
}

TEST(QueueRunner, UnknownAppBouncesWithoutSending) {
    FakeStore store;
    FakeSender sender;
    sender.script = [](const mail::Prepared&) { return result(mail::Outcome::Delivered); };
    Runner runner(store, {{"a", &sender}}, {});
    store.bodies["Q7"] = kBody;
    auto m = msg("Q7", "alice@sandbox.test", 0);
    m.envelope.identity.app = "gone";
    runner.enqueue(m);
    runner.start();
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(10)));
    EXPECT_EQ(store.failed_ids, std::vector<std::string>{"Q7"});
    EXPECT_EQ(sender.calls.load(), 0);
}

TEST(QueueRunner, EntryDeletedByAnAdminIsDroppedNotRetried) {
    FakeStore store;
    FakeSender sender;
    sender.script = [](const mail::Prepared&) { return result(mail::Outcome::Delivered); };
    Runner runner(store, {{"a", &sender}}, {});
    runner.enqueue(msg("GONE", "alice@sandbox.test", 0));
    runner.start();
    ASSERT_TRUE(runner.wait_idle(std::chrono::seconds(10)));
    EXPECT_EQ(sender.calls.load(), 0);
    EXPECT_TRUE(store.next.empty());  // not deferred
    EXPECT_TRUE(store.failed_ids.empty());
}
