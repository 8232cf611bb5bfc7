// Spool tests: round trip, group commit under concurrency, torn/corrupt entries, temp files, delivery
// state, dead letters, hostile ids, disk full (real tmpfs and injected faults), a 30 MB streamed body,
// and SIGKILL crash cycles that check every acknowledged id survives.
#include "proxy/spool/spool.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;
using namespace gb::spool;

namespace {

class TempDir {
  public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "gb-spool-test-XXXXXX").string();
        char* p = ::mkdtemp(tmpl.data());
        if (!p) throw std::runtime_error("mkdtemp failed");
        path_ = p;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }
    std::string sub(const std::string& s) const { return path_ + "/" + s; }

  private:
    std::string path_;
};

Options opts(const std::string& root, Sync sync = Sync::Syncfs) {
    Options o;
    o.root = root;
    o.sync = sync;
    return o;
}

Envelope sample_envelope() {
    Envelope e;
    e.reverse_path = "scanner@example.com";
    e.recipients = {"a@example.com", "b@example.org", "weird\r\nBcc: x@evil%41=@y"};
    e.login = "printer1";
    e.relay_rule = "";
    e.mailbox = "noreply@contoso.com";
    e.app = "main";
    e.received_at = 1700000000;
    e.client_ip = "192.0.2.7";
    e.helo = "MFP-3\x01\xff";
    e.tls = true;
    e.extra = {{"conn", "C42"}, {"k=ey with space", "v\nal%ue\x00x"}};
    e.extra[1].second.push_back('\0');
    return e;
}

std::string make_body(std::uint64_t seed, std::size_t n) {
    std::string s(n, '\0');
    std::mt19937_64 rng(seed);
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
}

std::string read_file(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_file(const std::string& p, const std::string& data) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::size_t count_files(const std::string& dir) {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++n;
    return n;
}

std::string commit_one(Spool& sp, const std::string& body, Envelope env = sample_envelope()) {
    auto w = sp.begin();
    // uneven chunks exercise the buffer paths
    std::size_t pos = 0, step = 1;
    while (pos < body.size()) {
        std::size_t n = std::min(step, body.size() - pos);
        EXPECT_TRUE(w.append(std::string_view(body).substr(pos, n)));
        pos += n;
        step = step * 3 + 7;
    }
    auto r = w.commit_sync(std::move(env));
    EXPECT_TRUE(r.ok()) << (r.error ? r.error->message : "");
    return r.id;
}

}  // namespace

TEST(SpoolIds, AlphabetAndLength) {
    EXPECT_TRUE(valid_id("0123456789ABCDEF"));
    EXPECT_TRUE(valid_id("ZZZZZZZZZZZZZZZZ"));
    EXPECT_FALSE(valid_id(""));
    EXPECT_FALSE(valid_id("0123456789ABCDE"));
    EXPECT_FALSE(valid_id("0123456789ABCDEFG"));
    EXPECT_FALSE(valid_id("0123456789abcdef"));  // lower case is not the alphabet
    EXPECT_FALSE(valid_id("0123456789ABCDEI"));  // I, L, O, U excluded
    EXPECT_FALSE(valid_id("../../etc/passwd"));
    EXPECT_FALSE(valid_id("0123456789ABC/EF"));
    EXPECT_FALSE(valid_id(std::string("0123456789ABCD\0F", 16)));
}

TEST(SpoolEnvelope, CodecRoundTripAndRejectsMalformed) {
    Envelope e = sample_envelope();
    e.size = 1234;
    std::string text = encode_envelope(e);
    for (char c : text) {
        unsigned char u = static_cast<unsigned char>(c);
        EXPECT_TRUE(c == '\n' || (u >= 0x20 && u < 0x7f)) << "raw byte " << int(u);
    }
    auto d = decode_envelope(text);
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, e);
    EXPECT_FALSE(decode_envelope(""));
    EXPECT_FALSE(decode_envelope("v=2\n"));
    EXPECT_FALSE(decode_envelope("v=1\nfrom=a"));     // no final newline
    EXPECT_FALSE(decode_envelope("v=1\nfrom=%4\n"));  // short escape
    EXPECT_FALSE(decode_envelope("v=1\nfrom=%zz\n"));
    EXPECT_FALSE(decode_envelope("v=1\nfrom=a\rb\n"));  // raw control byte
    EXPECT_FALSE(decode_envelope("v=1\nreceived_at=12x\n"));
    EXPECT_FALSE(decode_envelope("v=1\nnoequals\n"));
    auto ok = decode_envelope("v=1\nfuture_field=1\nfrom=x\n");  // unknown keys ignored
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->reverse_path, "x");
}

TEST(Spool, WriteCommitRecoverRoundTrip) {
    TempDir dir;
    std::string body = make_body(1, 200'000);
    std::string id;
    {
        Spool sp(opts(dir.path()));
        id = commit_one(sp, body);
        ASSERT_TRUE(valid_id(id));
        EXPECT_EQ(count_files(dir.sub("tmp")), 0u);
        EXPECT_EQ(sp.stats().commits, 1u);
    }
    Spool sp(opts(dir.path()));
    std::optional<Error> err;
    auto rec = sp.recover(&err);
    ASSERT_FALSE(err);
    ASSERT_EQ(rec.size(), 1u);
    EXPECT_EQ(rec[0].id, id);
    EXPECT_EQ(rec[0].size, body.size());
    EXPECT_EQ(rec[0].sender, "scanner@example.com");
    EXPECT_EQ(rec[0].recipient_count, 3u);
    EXPECT_EQ(rec[0].received_at, 1700000000);
    EXPECT_EQ(rec[0].state.attempts, 0u);
    EXPECT_EQ(rec[0].state.status, Status::Queued);

    auto e = sp.load(id);
    ASSERT_TRUE(e);
    Envelope want = sample_envelope();
    want.size = body.size();
    EXPECT_EQ(e->envelope, want);
    auto all = e->body.read_all();
    ASSERT_TRUE(all);
    EXPECT_TRUE(*all == body);
    // Every attempt reads again from disk.
    auto again = sp.load(id);
    ASSERT_TRUE(again);
    EXPECT_TRUE(*again->body.read_all() == body);
    EXPECT_FALSE(sp.verify(id));
}

TEST(Spool, NamedTempFileFallbackRoundTrip) {
    TempDir dir;
    Options o = opts(dir.path());
    o.use_o_tmpfile = false;
    std::string body = make_body(11, 70'000);
    std::string id;
    {
        Spool sp(o);
        auto w = sp.begin();
        w.append(body);
        EXPECT_EQ(count_files(dir.sub("tmp")), 1u);  // named while it is being received
        auto r = w.commit_sync(sample_envelope());
        ASSERT_TRUE(r.ok());
        id = r.id;
        EXPECT_EQ(count_files(dir.sub("tmp")), 0u);
        auto w2 = sp.begin();
        w2.append("aborted");
        w2.abort();
        EXPECT_EQ(count_files(dir.sub("tmp")), 0u);
    }
    Spool sp(o);
    auto rec = sp.recover();
    ASSERT_EQ(rec.size(), 1u);
    auto e = sp.load(id);
    ASSERT_TRUE(e);
    EXPECT_TRUE(*e->body.read_all() == body);
}

TEST(Spool, EmptyBodyAndIdsSortInAcceptanceOrder) {
    TempDir dir;
    Spool sp(opts(dir.path()));
    std::vector<std::string> ids;
    for (int i = 0; i < 20; ++i) ids.push_back(commit_one(sp, i == 0 ? "" : make_body(i, 100)));
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
    auto listed = sp.list();
    ASSERT_EQ(listed.size(), ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(listed[i].id, ids[i]);
    auto e = sp.load(ids[0]);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->body.size(), 0u);
}

class SpoolModes : public ::testing::TestWithParam<Sync> {};

TEST_P(SpoolModes, HundredConcurrentWritersShareFlushes) {
    TempDir dir;
    constexpr int kWriters = 100;
    constexpr int kPerWriter = 5;
    std::vector<std::string> ids(kWriters * kPerWriter);
    std::vector<std::string> bodies(ids.size());
    {
        Spool sp(opts(dir.path(), GetParam()));
        std::barrier sync_point(kWriters);
        std::vector<std::thread> threads;
        for (int t = 0; t < kWriters; ++t) {
            threads.emplace_back([&, t] {
                sync_point.arrive_and_wait();
                for (int i = 0; i < kPerWriter; ++i) {
                    std::size_t k = static_cast<std::size_t>(t * kPerWriter + i);
                    bodies[k] = make_body(k, 10'000);
                    auto w = sp.begin();
                    w.append(bodies[k]);
                    Envelope env = sample_envelope();
                    env.extra = {{"k", std::to_string(k)}};
                    auto r = w.commit_sync(env);
                    if (r.ok()) ids[k] = r.id;
                }
            });
        }
        for (auto& th : threads) th.join();
        auto st = sp.stats();
        EXPECT_EQ(st.commits, ids.size());
        EXPECT_EQ(st.failed_commits, 0u);
        EXPECT_LT(st.batches, st.commits) << "no group commit happened";
        if (GetParam() == Sync::Syncfs) {
            EXPECT_LT(st.flushes, st.commits);
        }
    }
    std::set<std::string> unique(ids.begin(), ids.end());
    EXPECT_EQ(unique.size(), ids.size());
    EXPECT_EQ(unique.count(""), 0u);
    Spool sp(opts(dir.path(), GetParam()));
    auto rec = sp.recover();
    ASSERT_EQ(rec.size(), ids.size());
    for (std::size_t k = 0; k < ids.size(); k += 37) {
        auto e = sp.load(ids[k]);
        ASSERT_TRUE(e);
        EXPECT_EQ(e->envelope.extra.at(0).second, std::to_string(k));
        EXPECT_TRUE(*e->body.read_all() == bodies[k]);
    }
}

INSTANTIATE_TEST_SUITE_P(Both, SpoolModes, ::testing::Values(Sync::Syncfs, Sync::PerFile),
                         [](const ::testing::TestParamInfo<Sync>& p) {
                             return std::string(p.param == Sync::Syncfs ? "Syncfs" : "PerFile");
                         });

TEST(Spool, TornAndCorruptEntriesAreQuarantinedNeverReturned) {
    TempDir dir;
    std::string id;
    std::string good;
    {
        Spool sp(opts(dir.path()));
        id = commit_one(sp, make_body(7, 3000));
        good = read_file(dir.sub("queue/" + id));
    }
    ASSERT_GT(good.size(), 3000u);
    std::vector<std::string> variants;
    for (std::size_t cut = 0; cut < good.size(); cut += (cut < 100 || cut > good.size() - 100) ? 1 : 97) {
        variants.push_back(good.substr(0, cut));  // torn write / truncation
    }
    for (std::size_t pos = 0; pos < good.size(); pos += 53) {
        std::string v = good;
        v[pos] = static_cast<char>(v[pos] ^ 0x20);  // bit flip anywhere
        variants.push_back(v);
    }
    for (std::size_t pos = good.size() - 56; pos < good.size(); ++pos) {  // every trailer byte
        std::string v = good;
        v[pos] = static_cast<char>(v[pos] ^ 0x01);
        variants.push_back(v);
    }
    variants.push_back(good + "x");  // trailing garbage
    std::size_t n = 0;
    for (const auto& v : variants) {
        fs::remove_all(dir.sub("corrupt"));
        write_file(dir.sub("queue/" + id), v);
        Spool sp(opts(dir.path()));
        auto rec = sp.recover();
        ASSERT_TRUE(rec.empty()) << "variant " << n << " of size " << v.size() << " accepted";
        EXPECT_FALSE(fs::exists(dir.sub("queue/" + id)));
        EXPECT_TRUE(fs::exists(dir.sub("corrupt/" + id))) << "variant " << n << " deleted, not quarantined";
        EXPECT_EQ(read_file(dir.sub("corrupt/" + id)), v);
        EXPECT_FALSE(sp.load(id));
        ++n;
    }
    EXPECT_GT(n, 200u);
    // The intact file still verifies, and a name that is not an id is quarantined as well.
    write_file(dir.sub("queue/" + id), good);
    write_file(dir.sub("queue/not-an-id"), good);
    Spool sp(opts(dir.path()));
    auto rec = sp.recover();
    ASSERT_EQ(rec.size(), 1u);
    EXPECT_EQ(rec[0].id, id);
    EXPECT_TRUE(fs::exists(dir.sub("corrupt/not-an-id")));
}

TEST(Spool, CorruptionAfterRecoverIsCaughtOnLoad) {
    TempDir dir;
    Spool sp(opts(dir.path()));
    std::string id = commit_one(sp, make_body(3, 5000));
    std::string f = read_file(dir.sub("queue/" + id));
    f[100] = static_cast<char>(f[100] ^ 1);
    write_file(dir.sub("queue/" + id), f);
    std::optional<Error> err;
    EXPECT_FALSE(sp.load(id, &err));
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code, Errc::Corrupt);
}

TEST(Spool, TempFilesAreNotRecovered) {
    TempDir dir;
    std::string id;
    {
        Spool sp(opts(dir.path()));
        id = commit_one(sp, make_body(5, 1000));
        // A complete-looking entry left in tmp/ (crash after writing, before the rename) and a partial one.
        fs::copy_file(dir.sub("queue/" + id), dir.sub("tmp/0000000000000001"));
        write_file(dir.sub("tmp/0000000000000002"), "GBSPOOL\n partial");
        auto w = sp.begin();
        w.append("never committed");
        w.abort();
        auto w2 = sp.begin();
        w2.append("dropped by the destructor");
    }
    EXPECT_EQ(count_files(dir.sub("tmp")), 2u);
    Spool sp(opts(dir.path()));
    auto rec = sp.recover();
    ASSERT_EQ(rec.size(), 1u);
    EXPECT_EQ(rec[0].id, id);
    EXPECT_EQ(count_files(dir.sub("tmp")), 0u);
    EXPECT_EQ(count_files(dir.sub("corrupt")), 0u);
}

TEST(Spool, DeliveryStateSurvivesReopen) {
    TempDir dir;
    std::string id;
    const std::int64_t next = 1'800'000'000'123;
    {
        Spool sp(opts(dir.path()));
        id = commit_one(sp, "Subject: hi\r\n\r\nbody\r\n");
        ASSERT_FALSE(sp.mark_attempt(id, "429 throttled", next - 5));
        ASSERT_FALSE(sp.set_draft(id, "AAMkAGI2=+/draft"));  // a Graph draft the attempt made
        ASSERT_FALSE(sp.mark_attempt(id, "503 ServiceUnavailable \n\x01", next));
    }
    {
        Spool sp(opts(dir.path()));
        auto rec = sp.recover();
        ASSERT_EQ(rec.size(), 1u);
        EXPECT_EQ(rec[0].state.attempts, 2u);
        EXPECT_EQ(rec[0].state.next_attempt_ms, next);
        EXPECT_EQ(rec[0].state.last_error, "503 ServiceUnavailable \n\x01");
        EXPECT_EQ(rec[0].state.status, Status::Deferred);
        EXPECT_GT(rec[0].state.last_attempt_ms, 0);
        EXPECT_EQ(rec[0].state.draft_id, "AAMkAGI2=+/draft");  // kept across later attempts and a restart
        auto e = sp.load(id);
        ASSERT_TRUE(e);
        EXPECT_EQ(e->state.attempts, 2u);
        ASSERT_FALSE(sp.retry_now(id));
    }
    Spool sp(opts(dir.path()));
    auto listed = sp.list();
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].state.next_attempt_ms, 0);
    EXPECT_EQ(listed[0].state.attempts, 2u);
    // A damaged state file falls back to defaults instead of blocking delivery.
    write_file(dir.sub("state/" + id), "GBSTATE1\nattempts=99\nsum=00\n");
    auto rec = sp.recover();
    ASSERT_EQ(rec.size(), 1u);
    EXPECT_EQ(rec[0].state.attempts, 0u);
}

TEST(Spool, CompleteRemovesDurablyAndOrphanStateIsDropped) {
    TempDir dir;
    std::vector<std::string> ids;
    {
        Spool sp(opts(dir.path()));
        for (int i = 0; i < 3; ++i) ids.push_back(commit_one(sp, make_body(i, 500)));
        ASSERT_FALSE(sp.mark_attempt(ids[1], "timeout", 0));
        ASSERT_FALSE(sp.complete(ids[1]));
        EXPECT_FALSE(fs::exists(dir.sub("state/" + ids[1])));
        auto again = sp.complete(ids[1]);
        ASSERT_TRUE(again);
        EXPECT_EQ(again->code, Errc::NotFound);
        std::optional<Error> merr = sp.mark_attempt(ids[1], "x", 0);
        ASSERT_TRUE(merr);
        EXPECT_EQ(merr->code, Errc::NotFound);
        write_file(dir.sub("state/" + ids[2] + "x"), "orphan");
    }
    Spool sp(opts(dir.path()));
    auto rec = sp.recover();
    ASSERT_EQ(rec.size(), 2u);
    EXPECT_EQ(rec[0].id, ids[0]);
    EXPECT_EQ(rec[1].id, ids[2]);
    EXPECT_EQ(count_files(dir.sub("state")), 0u);
}

TEST(Spool, DeadLetterRetryAndDelete) {
    TempDir dir;
    Spool sp(opts(dir.path()));
    std::string id = commit_one(sp, make_body(9, 700));
    std::string other = commit_one(sp, make_body(10, 700));
    ASSERT_FALSE(sp.mark_attempt(id, "ErrorSendAsDenied", 0));
    ASSERT_FALSE(sp.fail(id, "550 5.7.1 ErrorSendAsDenied"));
    EXPECT_EQ(sp.list().size(), 1u);
    auto dead = sp.list_dead();
    ASSERT_EQ(dead.size(), 1u);
    EXPECT_EQ(dead[0].id, id);
    EXPECT_EQ(dead[0].state.status, Status::Dead);
    EXPECT_EQ(dead[0].state.last_error, "550 5.7.1 ErrorSendAsDenied");
    EXPECT_EQ(dead[0].state.attempts, 1u);
    EXPECT_FALSE(sp.load(id));  // not deliverable while dead
    auto rec = sp.recover();
    ASSERT_EQ(rec.size(), 1u);
    EXPECT_EQ(rec[0].id, other);
    EXPECT_TRUE(fs::exists(dir.sub("dead/" + id)));  // recover keeps dead letters

    ASSERT_FALSE(sp.retry_now(id));  // back from the dead, attempts reset
    auto live = sp.list();
    ASSERT_EQ(live.size(), 2u);
    EXPECT_EQ(live[0].id, id);
    EXPECT_EQ(live[0].state.attempts, 0u);
    EXPECT_TRUE(sp.list_dead().empty());

    ASSERT_FALSE(sp.fail(id, "again"));
    ASSERT_FALSE(sp.remove(id));
    ASSERT_FALSE(sp.remove(other));
    EXPECT_TRUE(sp.list().empty());
    EXPECT_TRUE(sp.list_dead().empty());
    EXPECT_EQ(count_files(dir.sub("dead")), 0u);
    auto nf = sp.remove(id);
    ASSERT_TRUE(nf);
    EXPECT_EQ(nf->code, Errc::NotFound);
}

TEST(Spool, InvalidIdsAreRejectedBeforeTouchingPaths) {
    TempDir dir;
    Spool sp(opts(dir.path()));
    write_file(dir.sub("victim"), "keep me");
    for (std::string bad : std::vector<std::string>{"", "..", "../victim", "../../../../etc/passwd",
                                                    "0123456789abcdef", "0123456789ABCDE/",
                                                    "0123456789ABCDE\n", std::string("0123456789ABCDE\0", 16),
                                                    "0123456789ABCDEF0", "../queue/0123456"}) {
        for (auto e : {sp.retry_now(bad), sp.remove(bad), sp.complete(bad), sp.mark_attempt(bad, "x", 0),
                       sp.fail(bad, "x"), sp.verify(bad)}) {
            ASSERT_TRUE(e) << bad;
            EXPECT_EQ(e->code, Errc::InvalidId) << bad;
        }
        std::optional<Error> err;
        EXPECT_FALSE(sp.load(bad, &err));
        ASSERT_TRUE(err);
        EXPECT_EQ(err->code, Errc::InvalidId);
    }
    EXPECT_EQ(read_file(dir.sub("victim")), "keep me");
}

TEST(Spool, RecoverNeedsTheLockAndTheLockIsExclusive) {
    TempDir dir;
    Spool owner(opts(dir.path()));
    EXPECT_THROW(Spool second(opts(dir.path())), std::runtime_error);
    Options cli = opts(dir.path());
    cli.exclusive = false;
    Spool viewer(cli);
    std::optional<Error> err;
    viewer.recover(&err);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code, Errc::Locked);
    std::string id = commit_one(owner, "x");
    ASSERT_EQ(viewer.list().size(), 1u);
    ASSERT_FALSE(viewer.retry_now(id));  // the CLI path
    ASSERT_FALSE(viewer.remove(id));
    EXPECT_TRUE(owner.list().empty());
}

// ---- faults --------------------------------------------------------------------------------------

TEST(SpoolFaults, InjectedSyncfsFailureIsAnErrorAndLeavesNothing) {
    TempDir dir;
    Options o = opts(dir.path());
    std::atomic<bool> fail{true};
    o.hooks.syncfs = [&](int fd) {
        if (fail) {
            errno = EIO;
            return -1;
        }
        return ::syncfs(fd);
    };
    Spool sp(o);
    auto w = sp.begin();
    w.append(make_body(1, 5000));
    auto r = w.commit_sync(sample_envelope());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error->code, Errc::Io);
    EXPECT_EQ(r.error->sys_errno, EIO);
    EXPECT_TRUE(r.id.empty());
    EXPECT_EQ(count_files(dir.sub("queue")), 0u);
    EXPECT_EQ(count_files(dir.sub("tmp")), 0u);
    EXPECT_EQ(sp.stats().failed_commits, 1u);
    fail = false;
    EXPECT_TRUE(valid_id(commit_one(sp, "ok now")));
}

TEST(SpoolFaults, InjectedFdatasyncAndDirFsyncFailures) {
    TempDir dir;
    Options o = opts(dir.path(), Sync::PerFile);
    std::atomic<int> fail_data{1}, fail_dir{0};
    o.hooks.fdatasync = [&](int fd) {
        if (fail_data.load()) {
            errno = EIO;
            return -1;
        }
        return ::fdatasync(fd);
    };
    o.hooks.fsync_dir = [&](int fd) {
        if (fail_dir.load()) {
            errno = EIO;
            return -1;
        }
        return ::fsync(fd);
    };
    Spool sp(o);
    auto w = sp.begin();
    w.append("a");
    auto r = w.commit_sync(sample_envelope());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error->code, Errc::Io);
    fail_data = 0;
    fail_dir = 1;
    auto w2 = sp.begin();
    w2.append("b");
    r = w2.commit_sync(sample_envelope());
    ASSERT_FALSE(r.ok()) << "success reported although the directory entry is not durable";
    EXPECT_EQ(count_files(dir.sub("queue")), 0u);  // the renamed file was taken back
    EXPECT_EQ(count_files(dir.sub("tmp")), 0u);
    fail_dir = 0;
    EXPECT_TRUE(valid_id(commit_one(sp, "fine")));
    EXPECT_EQ(count_files(dir.sub("queue")), 1u);
}

TEST(SpoolFaults, InjectedEnospcOnWriteIsNoSpace) {
    TempDir dir;
    Options o = opts(dir.path());
    std::atomic<long> budget{20'000};
    o.hooks.write = [&](int fd, const void* p, std::size_t n) -> long {
        if (budget.fetch_sub(static_cast<long>(n)) < static_cast<long>(n)) {
            errno = ENOSPC;
            return -1;
        }
        return ::write(fd, p, n);
    };
    o.write_buffer = 4096;
    Spool sp(o);
    auto w = sp.begin();
    bool ok = true;
    for (int i = 0; i < 10 && ok; ++i) ok = w.append(make_body(i, 4000));
    EXPECT_FALSE(ok);
    ASSERT_TRUE(w.error());
    auto r = w.commit_sync(sample_envelope());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error->code, Errc::NoSpace);
    EXPECT_EQ(count_files(dir.sub("tmp")), 0u);
    EXPECT_EQ(count_files(dir.sub("queue")), 0u);
}

class SpoolTmpfs : public ::testing::Test {
  protected:
    void SetUp() override {
        mnt_ = dir_.sub("mnt");
        fs::create_directory(mnt_);
        if (::mount("tmpfs", mnt_.c_str(), "tmpfs", 0, "size=512k") != 0) {
            GTEST_SKIP() << "cannot mount a tmpfs (not root?): " << std::strerror(errno);
        }
        mounted_ = true;
    }
    void TearDown() override {
        if (mounted_) ::umount2(mnt_.c_str(), MNT_DETACH);
    }
    TempDir dir_;
    std::string mnt_;
    bool mounted_ = false;
};

TEST_F(SpoolTmpfs, DiskFullIsReportedAndNothingUndurableIsAcknowledged) {
    std::string root = mnt_ + "/spool";
    std::map<std::string, std::string> acked;
    int failures = 0;
    {
        Spool sp(opts(root));
        for (int i = 0; i < 40 && failures < 3; ++i) {
            std::string body = make_body(static_cast<std::uint64_t>(i), 60'000);
            auto w = sp.begin();
            w.append(body);
            auto r = w.commit_sync(sample_envelope());
            if (r.ok()) {
                acked[r.id] = body;
            } else {
                ++failures;
                EXPECT_EQ(r.error->code, Errc::NoSpace) << r.error->message;
                EXPECT_TRUE(r.id.empty());
            }
        }
        EXPECT_GT(failures, 0) << "the 512k tmpfs never filled up";
        EXPECT_GT(acked.size(), 0u);
        EXPECT_EQ(count_files(root + "/tmp"), 0u);  // failed writers cleaned up
        // Space comes back after a delivery; state updates may fail with NoSpace but never lie.
        ASSERT_FALSE(sp.complete(acked.begin()->first));
        acked.erase(acked.begin());
        EXPECT_TRUE(valid_id(commit_one(sp, "small one after space was freed")));
    }
    Spool sp(opts(root));
    auto rec = sp.recover();
    EXPECT_EQ(rec.size(), acked.size() + 1);
    for (const auto& [id, body] : acked) {
        auto e = sp.load(id);
        ASSERT_TRUE(e) << id;
        EXPECT_TRUE(*e->body.read_all() == body);
    }
    EXPECT_EQ(count_files(root + "/corrupt"), 0u);
}

// ---- large bodies --------------------------------------------------------------------------------

namespace {
std::int64_t peak_rss_kb() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
    }
    return -1;
}
}  // namespace

TEST(Spool, ThirtyMegabyteBodyStreamsWithBoundedMemory) {
    TempDir dir;
    Spool sp(opts(dir.path()));
    constexpr std::size_t kTotal = 30u * 1024 * 1024;
    constexpr std::size_t kChunk = 64 * 1024;
    { std::ofstream("/proc/self/clear_refs") << "5"; }  // reset the peak RSS counter
    std::int64_t before = peak_rss_kb();
    std::mt19937_64 rng(42);
    std::uint64_t h_in = 1469598103934665603ull;
    std::string chunk(kChunk, '\0');
    auto w = sp.begin();
    for (std::size_t done = 0; done < kTotal; done += kChunk) {
        for (auto& c : chunk) {
            c = static_cast<char>(rng());
            h_in = (h_in ^ static_cast<unsigned char>(c)) * 1099511628211ull;
        }
        ASSERT_TRUE(w.append(chunk));
    }
    auto r = w.commit_sync(sample_envelope());
    ASSERT_TRUE(r.ok());
    auto e = sp.load(r.id);  // verifies the digest over 30 MB in bounded chunks
    ASSERT_TRUE(e);
    EXPECT_EQ(e->body.size(), kTotal);
    EXPECT_EQ(e->envelope.size, kTotal);
    std::uint64_t h_out = 1469598103934665603ull;
    std::size_t got = 0;
    for (;;) {
        auto n = e->body.read(chunk.data(), chunk.size());
        ASSERT_GE(n, 0);
        if (n == 0) break;
        for (std::int64_t i = 0; i < n; ++i)
            h_out = (h_out ^ static_cast<unsigned char>(chunk[i])) * 1099511628211ull;
        got += static_cast<std::size_t>(n);
    }
    EXPECT_EQ(got, kTotal);
    EXPECT_EQ(h_in, h_out);
    EXPECT_FALSE(e->body.read_all(1024 * 1024));  // read_all refuses above its cap
    std::int64_t after = peak_rss_kb();
    if (before > 0 && after > 0) {
        EXPECT_LT(after - before, 12 * 1024) << "peak RSS grew by " << (after - before) << " KiB";
    }
}

// ---- crash simulation ----------------------------------------------------------------------------

namespace {

std::string crash_body(std::uint64_t seq) {
    return make_body(seq * 7919 + 1, 1000 + seq % 5000);
}

[[noreturn]] void crash_child(const std::string& root, int out_fd) {
    Options o;
    o.root = root;
    Spool sp(o);
    std::atomic<std::uint64_t> seq{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&] {
            for (;;) {
                std::uint64_t s = seq.fetch_add(1);
                auto w = sp.begin();
                w.append(crash_body(s));
                Envelope env;
                env.reverse_path = "crash@test";
                env.recipients = {"r@test"};
                env.extra = {{"seq", std::to_string(s)}};
                auto r = w.commit_sync(env);
                if (!r.ok()) continue;
                std::string line = "A " + r.id + " " + std::to_string(s) + "\n";
                if (::write(out_fd, line.data(), line.size()) < 0) ::_exit(3);
                if (s % 3 == 0) {
                    line = "P " + r.id + "\n";  // delivery in flight: may or may not survive the kill
                    if (::write(out_fd, line.data(), line.size()) < 0) ::_exit(3);
                    if (!sp.complete(r.id)) {
                        line = "C " + r.id + "\n";
                        if (::write(out_fd, line.data(), line.size()) < 0) ::_exit(3);
                    }
                } else if (s % 3 == 1) {
                    sp.mark_attempt(r.id, "try " + std::to_string(s), 1);
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    ::_exit(0);
}

}  // namespace

TEST(SpoolCrash, SigkillNeverLosesAnAcknowledgedMessage) {
    std::mt19937 rng(std::random_device{}());
    std::size_t total_acked = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int cycle = 0; cycle < 20; ++cycle) {
        TempDir dir;
        int p[2];
        ASSERT_EQ(::pipe(p), 0);
        pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(p[0]);
            crash_child(dir.path(), p[1]);
        }
        ::close(p[1]);
        std::string data;
        char buf[4096];
        auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 250)(rng));
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd pf{p[0], POLLIN, 0};
            if (::poll(&pf, 1, 5) > 0) {
                ssize_t n = ::read(p[0], buf, sizeof buf);
                if (n > 0) data.append(buf, static_cast<std::size_t>(n));
            }
        }
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;)
            data.append(buf, static_cast<std::size_t>(n));
        ::close(p[0]);
        ASSERT_TRUE(WIFSIGNALED(status)) << "child exited on its own: " << status;

        std::map<std::string, std::uint64_t> acked;
        std::set<std::string> completed, completing;
        std::istringstream in(data);
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream ls(line);
            std::string kind, id;
            ls >> kind >> id;
            if (kind == "A")
                ls >> acked[id];
            else if (kind == "C")
                completed.insert(id);
            else if (kind == "P")
                completing.insert(id);
        }
        total_acked += acked.size();

        Spool sp(opts(dir.path()));
        auto rec = sp.recover();
        std::set<std::string> present;
        for (const auto& e : rec) present.insert(e.id);
        for (const auto& [id, seq] : acked) {
            if (completed.count(id)) {
                EXPECT_EQ(present.count(id), 0u) << "completed message came back: " << id;
                continue;
            }
            if (completing.count(id) && !present.count(id)) continue;  // complete() ran, not confirmed
            ASSERT_EQ(present.count(id), 1u) << "cycle " << cycle << ": acknowledged " << id << " lost";
            auto e = sp.load(id);
            ASSERT_TRUE(e) << id;
            ASSERT_EQ(e->envelope.extra.at(0).second, std::to_string(seq));
            ASSERT_TRUE(*e->body.read_all() == crash_body(seq)) << id;
        }
        EXPECT_EQ(count_files(dir.sub("corrupt")), 0u);
        EXPECT_EQ(count_files(dir.sub("tmp")), 0u);
        if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(15)) break;
    }
    EXPECT_GT(total_acked, 20u);
}
