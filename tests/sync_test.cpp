// The IMAP read path's state: the SQLite store (UIDs, UIDVALIDITY, modseq), the sync engine with a fake
// source, and the Graph source against the sandbox over real HTTPS.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <thread>

#include "auth/keystore.h"
#include "graph/http/graph_client.h"
#include "proxy/sync/graph_source.h"
#include "proxy/sync/mailbox_sync.h"
#include "proxy/sync/sent_registry.h"
#include "proxy/sync/state_store.h"
#include "support/graph_access.h"
#include "support/test_sandbox.h"

using namespace gb;
using namespace gb::sync;

namespace {

std::string temp_db(const std::string& name) {
    std::string dir = ::testing::TempDir() + "/gb_sync_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    std::string path = dir + "/" + name + ".db";
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
    return path;
}

FolderRecord folder(const std::string& id, const std::string& path) {
    FolderRecord f;
    f.folder_id = id;
    f.name = path;
    f.path = path;
    return f;
}

RemoteMessage msg(const std::string& id, std::int64_t date, std::uint32_t flags = 0) {
    RemoteMessage m;
    m.graph_id = id;
    m.internal_date = date;
    m.flags = flags;
    m.size = 1000;
    return m;
}

RemoteMessage gone(const std::string& id) {
    RemoteMessage m;
    m.graph_id = id;
    m.removed = true;
    return m;
}

std::vector<std::uint32_t> uids(StateStore& s, const std::string& folder_id) {
    std::vector<std::uint32_t> out;
    for (const auto& m : s.messages("bob@x", folder_id)) out.push_back(m.uid);
    return out;
}

}  // namespace

TEST(SqliteStore, UidsGrowAndAreNeverReusedAcrossReopen) {
    std::string path = temp_db("uids");
    std::uint32_t validity = 0;
    {
        auto s = open_sqlite_store(path);
        auto fs = s->replace_folders("bob@x", {folder("F1", "INBOX")});
        ASSERT_EQ(fs.size(), 1u);
        validity = fs[0].uidvalidity;
        EXPECT_GT(validity, 0u);
        auto c = s->apply("bob@x", "F1", {msg("a", 1), msg("b", 2), msg("c", 3)}, false, "link1", 100);
        EXPECT_EQ(c.added, (std::vector<std::uint32_t>{1, 2, 3}));
        EXPECT_EQ(c.uidnext, 4u);
        c = s->apply("bob@x", "F1", {gone("c")}, false, "link2", 101);
        EXPECT_EQ(c.removed, (std::vector<std::uint32_t>{3}));
    }
    auto s = open_sqlite_store(path);  // a restart
    auto f = s->folder("bob@x", "F1");
    ASSERT_TRUE(f);
    EXPECT_EQ(f->uidvalidity, validity);
    EXPECT_EQ(f->delta_link, "link2");
    EXPECT_EQ(f->uidnext, 4u);
    auto c = s->apply("bob@x", "F1", {msg("d", 4), msg("c", 3)}, false, "link3", 102);  // c came back
    EXPECT_EQ(c.added, (std::vector<std::uint32_t>{4, 5}));                          // new UIDs, 3 not reused
    EXPECT_EQ(uids(*s, "F1"), (std::vector<std::uint32_t>{1, 2, 4, 5}));
}

TEST(SqliteStore, CorruptFileIsMovedAsideAndEveryUidvalidityIsNew) {
    std::string path = temp_db("corrupt");
    std::vector<std::uint32_t> old_validities;
    {
        auto s = open_sqlite_store(path);
        // Many folders in one second: their UIDVALIDITYs run ahead of the clock (max(now, last + 1)).
        std::vector<FolderRecord> fs;
        for (int i = 0; i < 50; ++i) fs.push_back(folder("F" + std::to_string(i), "Box" + std::to_string(i)));
        for (const auto& f : s->replace_folders("bob@x", fs)) old_validities.push_back(f.uidvalidity);
        s->apply("bob@x", "F0", {msg("a", 1)}, false, "l", 1);
    }
    ASSERT_EQ(old_validities.size(), 50u);
    // Damage the file: its header and first pages overwritten (a disk error, a stray write).
    {
        FILE* f = std::fopen(path.c_str(), "r+b");
        ASSERT_NE(f, nullptr);
        std::string junk(8192, '\x5a');
        std::fwrite(junk.data(), 1, junk.size(), f);
        std::fclose(f);
    }
    std::string aside;
    auto s = open_sqlite_store(path, &aside);
    ASSERT_FALSE(aside.empty()) << "a corrupt file must be detected";
    EXPECT_TRUE(std::filesystem::exists(aside)) << "the damaged file is kept for inspection";
    EXPECT_EQ(aside.rfind(path + ".corrupt-", 0), 0u) << aside;
    auto fresh = s->replace_folders("bob@x", {folder("F0", "Box0"), folder("F1", "Box1")});
    ASSERT_EQ(fresh.size(), 2u);
    std::uint32_t max_old = *std::max_element(old_validities.begin(), old_validities.end());
    for (const auto& f : fresh) EXPECT_GT(f.uidvalidity, max_old) << f.path << ": a client's cached UIDs must be dropped";
    EXPECT_TRUE(s->messages("bob@x", "F0").empty());  // rebuilt from Graph by the sync, not from the wreck
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    // A healthy file is left alone.
    std::string again;
    s.reset();
    auto s2 = open_sqlite_store(path, &again);
    EXPECT_TRUE(again.empty());
    EXPECT_EQ(s2->folders("bob@x").size(), 2u);
}

TEST(SqliteStore, LockedByAnotherProcessIsAClearErrorNotARebuild) {
    std::string path = temp_db("locked");
    { open_sqlite_store(path)->replace_folders("bob@x", {folder("F1", "INBOX")}); }
    sqlite3* other = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
    // Another process holding an exclusive lock (in rollback-journal terms: a writer that never ends).
    ASSERT_EQ(sqlite3_exec(other, "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;", nullptr, nullptr, nullptr), SQLITE_OK);
    std::string aside, error;
    try {
        open_sqlite_store(path, &aside);
    } catch (const std::exception& e) {
        error = e.what();
    }
    sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(other);
    EXPECT_NE(error.find("locked"), std::string::npos) << error;
    EXPECT_NE(error.find("another process"), std::string::npos) << error;
    EXPECT_TRUE(aside.empty()) << "a locked file is not corrupt: never moved aside";
    auto s = open_sqlite_store(path, &aside);
    EXPECT_TRUE(aside.empty());
    EXPECT_EQ(s->folders("bob@x").size(), 1u);  // nothing lost
}

TEST(SqliteStore, FlagChangesBumpModseqAndKeepTheLocalDeletedBit) {
    auto s = open_sqlite_store(temp_db("flags"));
    s->replace_folders("bob@x", {folder("F1", "INBOX")});
    auto c = s->apply("bob@x", "F1", {msg("a", 1), msg("b", 2)}, false, "l", 1);
    std::uint64_t before = c.highestmodseq;
    // Same data again: no change, no modseq.
    c = s->apply("bob@x", "F1", {msg("a", 1), msg("b", 2)}, false, "l", 2);
    EXPECT_TRUE(c.empty());
    EXPECT_EQ(c.highestmodseq, before);
    c = s->apply("bob@x", "F1", {msg("a", 1, kSeen | kFlagged)}, false, "l", 3);
    EXPECT_EQ(c.changed, (std::vector<std::uint32_t>{1}));
    EXPECT_EQ(c.highestmodseq, before + 1);
    auto a = s->message("bob@x", "F1", 1);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->flags, kSeen | kFlagged);
    EXPECT_EQ(a->modseq, before + 1);
    // Keywords are flags too.
    RemoteMessage k = msg("b", 2);
    k.keywords = {"Red category", "Invoice"};
    c = s->apply("bob@x", "F1", {k}, false, "l", 4);
    EXPECT_EQ(c.changed, (std::vector<std::uint32_t>{2}));
    EXPECT_EQ(s->message("bob@x", "F1", 2)->keywords, k.keywords);
}

TEST(SqliteStore, LocalWritesAssignUidsAtOnceAndTheDeltaFindsThemKnown) {
    auto path = temp_db("writes");
    {
        auto s = open_sqlite_store(path);
        s->replace_folders("bob@x", {folder("F1", "INBOX"), folder("F2", "Archive")});
        s->apply("bob@x", "F1", {msg("a", 1), msg("b", 2)}, false, "l", 1);
        std::uint64_t m0 = s->folder("bob@x", "F1")->highestmodseq;
        // STORE: flags and keywords change, each change takes the next modseq; kDeleted is stored.
        auto c = s->set_flags("bob@x", "F1", {{1, kSeen | kDeleted, {"Red"}, {}}, {2, 0, {}, {}}, {99, kSeen, {}, {}}});
        EXPECT_EQ(c.changed, (std::vector<std::uint32_t>{1}));  // 2 unchanged, 99 unknown
        EXPECT_EQ(c.highestmodseq, m0 + 1);
        EXPECT_EQ(s->message("bob@x", "F1", 1)->flags, kSeen | kDeleted);
        EXPECT_EQ(s->message("bob@x", "F1", 1)->modseq, m0 + 1);
        // COPY/APPEND into F2: UIDs at once (COPYUID), and a known id keeps its UID.
        auto [u, ch] = s->add_known("bob@x", "F2", {msg("x", 5, kSeen), msg("y", 6)});
        EXPECT_EQ(u, (std::vector<std::uint32_t>{1, 2}));
        EXPECT_EQ(ch.added, (std::vector<std::uint32_t>{1, 2}));
        EXPECT_EQ(ch.uidnext, 3u);
        auto again = s->add_known("bob@x", "F2", {msg("y", 6, kFlagged)});
        EXPECT_EQ(again.first, (std::vector<std::uint32_t>{2}));
        EXPECT_EQ(again.second.changed, (std::vector<std::uint32_t>{2}));
        // The next delta round reports x and y as created: known, no new UIDs, nothing added.
        c = s->apply("bob@x", "F2", {msg("x", 5, kSeen), msg("y", 6, kFlagged)}, false, "l", 2);
        EXPECT_TRUE(c.added.empty());
        EXPECT_EQ(uids(*s, "F2"), (std::vector<std::uint32_t>{1, 2}));
        // EXPUNGE / MOVE out: removed at once; the delta's @removed later is a no-op.
        c = s->remove_messages("bob@x", "F1", {1, 42});
        EXPECT_EQ(c.removed, (std::vector<std::uint32_t>{1}));
        c = s->apply("bob@x", "F1", {gone("a")}, false, "l", 3);
        EXPECT_TRUE(c.empty());
        // A delta update keeps the local \Deleted bit.
        s->set_flags("bob@x", "F1", {{2, kDeleted, {}, {}}});
        s->apply("bob@x", "F1", {msg("b", 2, kSeen)}, false, "l", 4);
        EXPECT_EQ(s->message("bob@x", "F1", 2)->flags, kSeen | kDeleted);
        s->set_subscribed("bob@x", "F2", false);
    }
    // Everything above is persistent; a removed UID is never handed out again. The file is owner-only.
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto s = open_sqlite_store(path);
    EXPECT_FALSE(s->folder("bob@x", "F2")->subscribed);
    EXPECT_TRUE(s->folder("bob@x", "F1")->subscribed);
    EXPECT_EQ(s->message("bob@x", "F1", 2)->flags, kSeen | kDeleted);
    auto [u, ch] = s->add_known("bob@x", "F1", {msg("a", 1)});
    EXPECT_EQ(u, (std::vector<std::uint32_t>{3}));
}

TEST(SqliteStore, LocalKeywordsPersistAndAnOlderFileGetsTheColumn) {
    auto path = temp_db("migrate");
    {
        // A state file as the first release wrote it: messages without local_keywords.
        sqlite3* db = nullptr;
        ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
        const char* old = R"SQL(
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema','1');
CREATE TABLE folders(mailbox TEXT NOT NULL, folder_id TEXT NOT NULL, parent_id TEXT NOT NULL, name TEXT NOT NULL,
  path TEXT NOT NULL, special_use TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL,
  highestmodseq INTEGER NOT NULL, delta_link TEXT NOT NULL, subscribed INTEGER NOT NULL, synced_at INTEGER NOT NULL,
  PRIMARY KEY(mailbox, folder_id));
INSERT INTO folders VALUES('bob@x','F1','','INBOX','INBOX','',7,3,5,'link',1,0);
CREATE TABLE messages(mailbox TEXT NOT NULL, folder_id TEXT NOT NULL, uid INTEGER NOT NULL, graph_id TEXT NOT NULL,
  flags INTEGER NOT NULL, keywords TEXT NOT NULL, size INTEGER NOT NULL, internal_date INTEGER NOT NULL,
  modseq INTEGER NOT NULL, PRIMARY KEY(mailbox, folder_id, uid));
INSERT INTO messages VALUES('bob@x','F1',2,'a',1,'Red',10,1,4);
)SQL";
        ASSERT_EQ(sqlite3_exec(db, old, nullptr, nullptr, nullptr), SQLITE_OK);
        sqlite3_close(db);
    }
    {
        auto s = open_sqlite_store(path);
        auto m = s->message("bob@x", "F1", 2);
        ASSERT_TRUE(m);
        EXPECT_EQ(m->keywords, (std::vector<std::string>{"Red"}));
        EXPECT_TRUE(m->local_keywords.empty());
        EXPECT_EQ(s->folder("bob@x", "F1")->uidvalidity, 7u);  // nothing else changed
        s->set_flags("bob@x", "F1", {{2, kSeen, {"Red"}, {"NonJunk"}}});
        // A delta update (categories from Graph) keeps the local ones.
        s->apply("bob@x", "F1", {msg("a", 1, kSeen)}, false, "l", 2);
    }
    auto s = open_sqlite_store(path);
    auto m = s->message("bob@x", "F1", 2);
    EXPECT_EQ(m->local_keywords, (std::vector<std::string>{"NonJunk"}));
    EXPECT_TRUE(m->keywords.empty());
    EXPECT_TRUE(is_client_keyword("nonjunk"));
    EXPECT_TRUE(is_client_keyword("$MDNSent"));
    EXPECT_FALSE(is_client_keyword("Work"));
    EXPECT_EQ(keyword_atom("Red (urgent) \"x\""), "Red__urgent___x_");
}

TEST(SentRegistry, MatchesTheSameMessageByIdAndBodyWithinTheWindowOnly) {
    SentRegistry r(std::chrono::seconds(60), 3);
    std::string sent = "From: a@x\r\nBcc: z@y\r\nMessage-ID: <m1@x>\r\nSubject: s\r\n\r\nbody line\r\n";
    // The client's own copy: other headers, LF line ends, a trailing empty line: still the same message.
    std::string appended = "Subject: s\nMessage-Id:\n <m1@x>\nFrom: A <a@x>\n\nbody line\n\n";
    r.record("bob@x", sent);
    EXPECT_EQ(r.match("bob@x", appended), "<m1@x>");
    EXPECT_EQ(r.match("BOB@x", appended), "<m1@x>");
    EXPECT_FALSE(r.match("eve@x", appended));  // another mailbox
    EXPECT_FALSE(r.match("bob@x", "Message-ID: <m1@x>\r\n\r\nanother body\r\n"));
    EXPECT_FALSE(r.match("bob@x", "Subject: s\r\n\r\nbody line\r\n"));  // no Message-ID: never matched
    // Bounded: the oldest entries go.
    for (int i = 0; i < 3; ++i) r.record("bob@x", "Message-ID: <n" + std::to_string(i) + "@x>\r\n\r\nb\r\n");
    EXPECT_EQ(r.size(), 3u);
    EXPECT_FALSE(r.match("bob@x", appended));
    // Streamed in any pieces (as the SMTP side does), the fingerprint is the same.
    for (std::size_t piece : {1u, 2u, 3u, 7u, 1000u}) {
        SentRegistry streamed(std::chrono::seconds(60), 10);
        SentRegistry::Fingerprint fp;
        for (std::size_t i = 0; i < sent.size(); i += piece) fp.append(std::string_view(sent).substr(i, piece));
        streamed.record("bob@x", std::move(fp));
        EXPECT_EQ(streamed.match("bob@x", appended), "<m1@x>") << piece;
    }
    // A header block over 64 KiB is not fingerprinted (bounded memory), and never matches.
    SentRegistry huge(std::chrono::seconds(60), 10);
    std::string big = "Message-ID: <h@x>\r\nX-Pad: " + std::string(70000, 'a') + "\r\n\r\nb\r\n";
    huge.record("bob@x", big);
    EXPECT_EQ(huge.size(), 0u);
    SentRegistry expired(std::chrono::seconds(0), 10);
    expired.record("bob@x", sent);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_FALSE(expired.match("bob@x", appended));
}

TEST(SqliteStore, CompleteRoundReconcilesKeepingSurvivorsUids) {
    auto s = open_sqlite_store(temp_db("complete"));
    s->replace_folders("bob@x", {folder("F1", "INBOX")});
    s->apply("bob@x", "F1", {msg("a", 1), msg("b", 2), msg("c", 3), msg("d", 4)}, false, "l", 1);
    // A full round after a lost token: b and d are gone, e is new.
    auto c = s->apply("bob@x", "F1", {msg("a", 1), msg("c", 3), msg("e", 5)}, true, "l2", 2);
    EXPECT_EQ(c.removed, (std::vector<std::uint32_t>{2, 4}));
    EXPECT_EQ(c.added, (std::vector<std::uint32_t>{5}));
    EXPECT_EQ(uids(*s, "F1"), (std::vector<std::uint32_t>{1, 3, 5}));
    EXPECT_EQ(s->message("bob@x", "F1", 3)->graph_id, "c");
}

TEST(SqliteStore, FolderTreeChangesKeepIdentityAndNewFoldersGetGreaterValidity) {
    auto s = open_sqlite_store(temp_db("folders"));
    auto fs = s->replace_folders("bob@x", {folder("F1", "INBOX"), folder("F2", "Projects")});
    std::map<std::string, FolderRecord> by;
    for (auto& f : fs) by[f.folder_id] = f;
    s->apply("bob@x", "F2", {msg("a", 1)}, false, "l", 1);
    // F2 renamed, F3 created (with the old name), F1 unchanged.
    fs = s->replace_folders("bob@x", {folder("F1", "INBOX"), folder("F2", "Archive 2026"), folder("F3", "Projects")});
    std::map<std::string, FolderRecord> after;
    for (auto& f : fs) after[f.folder_id] = f;
    EXPECT_EQ(after["F2"].uidvalidity, by["F2"].uidvalidity);
    EXPECT_EQ(after["F2"].path, "Archive 2026");
    EXPECT_EQ(uids(*s, "F2"), (std::vector<std::uint32_t>{1}));
    EXPECT_GT(after["F3"].uidvalidity, std::max(by["F1"].uidvalidity, by["F2"].uidvalidity));
    // F2 deleted in Outlook: its messages go with it.
    s->replace_folders("bob@x", {folder("F1", "INBOX"), folder("F3", "Projects")});
    EXPECT_FALSE(s->folder("bob@x", "F2"));
    EXPECT_TRUE(uids(*s, "F2").empty());
}

TEST(SqliteStore, NotADatabaseIsKeptAsideAndReplaced) {
    std::string path = temp_db("garbage");
    const std::string text = "this is not sqlite, just some text that is long enough to be a header";
    {
        FILE* f = std::fopen(path.c_str(), "w");
        std::fputs(text.c_str(), f);
        std::fclose(f);
    }
    std::string aside;
    auto s = open_sqlite_store(path, &aside);
    ASSERT_FALSE(aside.empty());
    std::ifstream kept(aside);
    std::string content((std::istreambuf_iterator<char>(kept)), std::istreambuf_iterator<char>());
    EXPECT_EQ(content, text) << "the file is moved, never overwritten";
    EXPECT_EQ(s->replace_folders("bob@x", {folder("F1", "INBOX")}).size(), 1u);
}

TEST(SqliteStore, AnotherSchemaVersionIsAClearErrorAndLeftAlone) {
    std::string path = temp_db("future");
    { open_sqlite_store(path); }
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value='99' WHERE key='schema'", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
    std::string aside, error;
    try {
        open_sqlite_store(path, &aside);
    } catch (const std::runtime_error& e) {
        error = e.what();
    }
    EXPECT_NE(error.find("schema version 99"), std::string::npos) << error;
    EXPECT_TRUE(aside.empty()) << "a newer graphbridge's file is not corrupt";
}

// ---- the engine with a scripted source -----------------------------------------------------------------

namespace {

struct FakeSource : MailSource {
    std::vector<RemoteFolder> tree;
    // Per folder: the pages of the next round; a page list is consumed per delta() call.
    std::map<std::string, std::vector<DeltaPage>> rounds;
    std::map<std::string, int> calls;
    bool lose_token_once = false;
    std::mutex mu;  // a test changing `rounds` while MailService's pollers run holds it
    SourceResult<std::vector<RemoteFolder>> folders(const std::string&) override {
        std::lock_guard g(mu);
        return tree;
    }
    SourceResult<DeltaPage> delta(const std::string&, const std::string& folder_id, const std::string& link) override {
        std::lock_guard g(mu);
        ++calls[folder_id];
        if (lose_token_once && !link.empty() && link.rfind("delta", 0) == 0) {
            lose_token_once = false;
            return SourceError{SourceError::Kind::SyncStateLost, "410", {}};
        }
        auto& pages = rounds[folder_id];
        if (pages.empty()) {
            DeltaPage p;
            p.delta_link = "delta-empty";
            return p;
        }
        DeltaPage p = pages.front();
        pages.erase(pages.begin());
        return p;
    }
    SourceResult<std::string> mime(const std::string&, const std::string&) override {
        return SourceError{SourceError::Kind::NotFound, "no", {}};
    }
};

DeltaPage page(std::vector<RemoteMessage> items, std::string next, std::string delta = "") {
    DeltaPage p;
    p.items = std::move(items);
    p.next_link = std::move(next);
    p.delta_link = std::move(delta);
    return p;
}

}  // namespace

TEST(MailboxSync, PathsAndSpecialUse) {
    std::vector<RemoteFolder> tree = {{"i", "", "Posteingang", "inbox"},  {"s", "", "Gesendete Elemente", "sentitems"},
                                      {"c", "i", "Kunden", ""},           {"cc", "c", "A/B Tests", ""},
                                      {"t", "", "Gelöschte Elemente", "deleteditems"}, {"x", "", "inbox", ""}};
    std::map<std::string, FolderRecord> by;
    for (auto& f : MailboxSync::paths_for(tree)) by[f.folder_id] = f;
    EXPECT_EQ(by["i"].path, "INBOX");
    EXPECT_EQ(by["c"].path, "INBOX/Kunden");
    EXPECT_EQ(by["cc"].path, "INBOX/Kunden/A\xE2\x88\x95" "B Tests");
    EXPECT_EQ(by["s"].special_use, "\\Sent");
    EXPECT_EQ(by["t"].special_use, "\\Trash");
    EXPECT_EQ(by["x"].path, "inbox_");  // only the real inbox is INBOX
}

TEST(MailboxSync, RoundIsAppliedAsOneBatchInDateOrderAndLostTokenResyncs) {
    auto store = open_sqlite_store(temp_db("engine"));
    FakeSource src;
    src.tree = {{"F1", "", "Inbox", "inbox"}};
    // First round over two pages, newest first (as Graph tends to), one message updated twice.
    src.rounds["F1"] = {page({msg("c", 30), msg("b", 20, kSeen)}, "next1"),
                        page({msg("a", 10), msg("b", 20, kSeen | kFlagged)}, "", "delta1")};
    MailboxSync sync("bob@x", src, *store);
    std::vector<FolderChange> seen;
    int sub = sync.subscribe("F1", [&](const std::string&, const FolderChange& c) { seen.push_back(c); });
    ASSERT_FALSE(sync.sync_all());
    auto ms = store->messages("bob@x", "F1");
    ASSERT_EQ(ms.size(), 3u);
    EXPECT_EQ(ms[0].graph_id, "a");  // UIDs follow receivedDateTime
    EXPECT_EQ(ms[1].graph_id, "b");
    EXPECT_EQ(ms[2].graph_id, "c");
    EXPECT_EQ(ms[1].flags, kSeen | kFlagged);  // the last word in the round
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].added.size(), 3u);
    EXPECT_EQ(store->folder("bob@x", "F1")->delta_link, "delta1");

    // Next round: the stored token is lost; the full round (b gone, d new) keeps a and c's UIDs.
    src.lose_token_once = true;
    src.rounds["F1"] = {page({msg("d", 40), msg("c", 30), msg("a", 10)}, "", "delta2")};
    ASSERT_FALSE(sync.sync_folder("F1"));
    EXPECT_EQ(sync.stats().full_resyncs, 1u);
    ms = store->messages("bob@x", "F1");
    ASSERT_EQ(ms.size(), 3u);
    EXPECT_EQ(ms[0].uid, 1u);
    EXPECT_EQ(ms[1].uid, 3u);
    EXPECT_EQ(ms[2].uid, 4u);
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[1].removed, (std::vector<std::uint32_t>{2}));
    EXPECT_EQ(seen[1].added, (std::vector<std::uint32_t>{4}));
    sync.unsubscribe(sub);
}

// ---- Graph over HTTPS: the sandbox -------------------------------------------------------------------

namespace {

class GraphSyncTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        sb_ = new test::TestSandbox("sync");
        access_ = new test::GraphAccess(*sb_);
    }
    static void TearDownTestSuite() {
        delete access_;
        delete sb_;
    }
    static std::string inject(const std::string& mailbox, const std::string& folder, int i, bool read = false) {
        std::string mime = "From: alice@sandbox.test\r\nTo: " + mailbox + "\r\nSubject: message " + std::to_string(i) +
                           "\r\nMessage-ID: <m" + std::to_string(i) + "@sandbox.test>\r\n\r\nbody " +
                           std::to_string(i) + "\r\n";
        auto r = sb_->server().graph().inject_message(mailbox, folder, mime, read, 1'700'000'000 + i);
        EXPECT_EQ(r.index(), 0u) << std::get<1>(r);
        return r.index() == 0 ? std::get<0>(r) : std::string();
    }
    static http::GraphResult call(const std::string& method, const std::string& url, const std::string& body = "") {
        http::Request r;
        r.method = method;
        r.url = url;
        r.body = body;
        if (!body.empty()) r.headers.emplace_back("Content-Type", "application/json");
        r.headers.emplace_back("Prefer", "IdType=\"ImmutableId\"");
        return access_->graph.call(r);
    }
    static test::TestSandbox* sb_;
    static test::GraphAccess* access_;
};
test::TestSandbox* GraphSyncTest::sb_;
test::GraphAccess* GraphSyncTest::access_;

}  // namespace

TEST_F(GraphSyncTest, FolderTreeWithSpecialUse) {
    GraphSource src(access_->graph, sb_->base());
    auto r = src.folders("alice@sandbox.test");
    ASSERT_EQ(r.index(), 0u) << std::get<1>(r).message;
    std::map<std::string, std::string> wk;
    for (const auto& f : std::get<0>(r)) wk[f.well_known] = f.name;
    EXPECT_TRUE(wk.count("inbox"));
    EXPECT_TRUE(wk.count("sentitems"));
    EXPECT_TRUE(wk.count("drafts"));
    EXPECT_TRUE(wk.count("deleteditems"));
}

TEST_F(GraphSyncTest, InitialSyncInFewRequestsThenChangesThenLostTokenKeepsUids) {
    std::string mb = "bob@sandbox.test";
    std::vector<std::string> ids;
    for (int i = 0; i < 1200; ++i) ids.push_back(inject(mb, "inbox", i, i % 3 == 0));
    std::string db = temp_db("graph");
    auto store = open_sqlite_store(db);
    GraphSource src(access_->graph, sb_->base(), 500);
    MailboxSync sync(mb, src, *store);
    ASSERT_FALSE(sync.sync_folders());
    std::string inbox_id;
    for (const auto& f : store->folders(mb))
        if (f.path == "INBOX") inbox_id = f.folder_id;
    ASSERT_FALSE(inbox_id.empty());
    auto before = sb_->server().stats().graph_requests;
    ASSERT_FALSE(sync.sync_folder(inbox_id));
    auto requests = sb_->server().stats().graph_requests - before;
    EXPECT_EQ(requests, 3u);  // 1200 messages at 500 per page: paging is the only cost
    auto ms = store->messages(mb, inbox_id);
    ASSERT_EQ(ms.size(), 1200u);
    std::map<std::string, std::uint32_t> uid_of;
    for (const auto& m : ms) uid_of[m.graph_id] = m.uid;
    EXPECT_EQ(uid_of[ids[0]], 1u);  // oldest first
    EXPECT_EQ(uid_of[ids[1199]], 1200u);
    EXPECT_EQ(ms[0].flags & kSeen, kSeen);
    EXPECT_EQ(ms[1].flags & kSeen, 0u);
    EXPECT_GT(ms[0].size, 0u);
    EXPECT_EQ(ms[0].internal_date, 1'700'000'000);

    // In Outlook: one flagged and read, one deleted, one new.
    auto r = call("PATCH", "/v1.0/users/" + mb + "/messages/" + ids[5],
                  R"({"isRead":true,"flag":{"flagStatus":"flagged"}})");
    ASSERT_EQ(r.response.status, 200) << r.response.body;
    r = call("DELETE", "/v1.0/users/" + mb + "/messages/" + ids[7]);
    ASSERT_EQ(r.response.status, 204) << r.response.body;
    std::string fresh = inject(mb, "inbox", 5000);
    std::vector<FolderChange> changes;
    sync.subscribe(inbox_id, [&](const std::string&, const FolderChange& c) { changes.push_back(c); });
    before = sb_->server().stats().graph_requests;
    ASSERT_FALSE(sync.sync_folder(inbox_id));
    EXPECT_EQ(sb_->server().stats().graph_requests - before, 1u);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].changed, (std::vector<std::uint32_t>{uid_of[ids[5]]}));
    EXPECT_EQ(changes[0].removed, (std::vector<std::uint32_t>{uid_of[ids[7]]}));
    EXPECT_EQ(changes[0].added, (std::vector<std::uint32_t>{1201}));
    auto m5 = store->message(mb, inbox_id, uid_of[ids[5]]);
    ASSERT_TRUE(m5);
    EXPECT_EQ(m5->flags, kSeen | kFlagged);

    // Every delta token expires: a full round; survivors keep their UIDs, nothing is re-added.
    sb_->server().graph().expire_delta_tokens();
    changes.clear();
    ASSERT_FALSE(sync.sync_folder(inbox_id));
    EXPECT_EQ(sync.stats().full_resyncs, 1u);
    EXPECT_TRUE(changes.empty());  // nothing changed in between
    auto after = store->messages(mb, inbox_id);
    ASSERT_EQ(after.size(), 1200u);
    for (const auto& m : after) {
        if (m.graph_id != fresh) {
            EXPECT_EQ(m.uid, uid_of[m.graph_id]);
        }
    }

    // A restart keeps everything: same UIDVALIDITY and UIDs from a reopened database.
    auto validity = store->folder(mb, inbox_id)->uidvalidity;
    store.reset();
    auto reopened = open_sqlite_store(db);
    EXPECT_EQ(reopened->folder(mb, inbox_id)->uidvalidity, validity);
    EXPECT_EQ(reopened->messages(mb, inbox_id).size(), 1200u);
}

TEST_F(GraphSyncTest, MessageMovedBetweenFoldersKeepsItsImmutableId) {
    std::string mb = "alice@sandbox.test";
    std::string id = inject(mb, "inbox", 9000);
    auto store = open_sqlite_store(temp_db("move"));
    GraphSource src(access_->graph, sb_->base());
    MailboxSync sync(mb, src, *store);
    ASSERT_FALSE(sync.sync_all());
    std::string inbox, trash;
    for (const auto& f : store->folders(mb)) {
        if (f.path == "INBOX") inbox = f.folder_id;
        if (f.special_use == "\\Trash") trash = f.folder_id;
    }
    auto r = call("POST", "/v1.0/users/" + mb + "/messages/" + id + "/move", R"({"destinationId":"deleteditems"})");
    ASSERT_EQ(r.response.status, 201) << r.response.body;
    ASSERT_FALSE(sync.sync_all());
    bool in_inbox = false, in_trash = false;
    for (const auto& m : store->messages(mb, inbox)) in_inbox = in_inbox || m.graph_id == id;
    for (const auto& m : store->messages(mb, trash)) in_trash = in_trash || m.graph_id == id;
    EXPECT_FALSE(in_inbox);
    EXPECT_TRUE(in_trash);
    // The MIME is reachable by the same immutable id after the move.
    auto mime = src.mime(mb, id);
    ASSERT_EQ(mime.index(), 0u) << std::get<1>(mime).message;
    EXPECT_NE(std::get<0>(mime).find("body 9000"), std::string::npos);
}

TEST(GraphRoutes, IdsAddressesAndNamesBecomePlaceholders) {
    using http::route_template;
    EXPECT_EQ(route_template("/v1.0/users/bob@x.test/mailFolders/AAMkAGI2=/messages/delta?$top=5&$select=id"),
              "/users/{id}/mailFolders/{id}/messages/delta");
    EXPECT_EQ(route_template("/v1.0/users/bob%40x.test/sendMail"), "/users/{id}/sendMail");
    EXPECT_EQ(route_template("/v1.0/users/b/messages/AAMk/$value"), "/users/{id}/messages/{id}/$value");
    EXPECT_EQ(route_template("/v1.0/users/b/mailFolders/inbox?$select=id"), "/users/{id}/mailFolders/inbox");
    EXPECT_EQ(route_template("/v1.0/users/b/messages/AAMk/attachments/createUploadSession"),
              "/users/{id}/messages/{id}/attachments/createUploadSession");
    EXPECT_EQ(route_template("/v1.0/users/b/mailFolders/My%20Secret%20Project/childFolders"),
              "/users/{id}/mailFolders/{id}/childFolders");  // a folder name never becomes a label
    EXPECT_EQ(route_template("/v1.0/"), "/");
}

TEST_F(GraphSyncTest, EveryGraphExchangeIsObservedWithItsRouteAndStatus) {
    std::vector<std::pair<std::string, long>> seen;
    std::mutex mu;
    access_->graph.set_observer([&](const std::string& method, const std::string& path, const http::Response& r,
                                    std::chrono::milliseconds) {
        std::lock_guard g(mu);
        seen.emplace_back(method + " " + http::route_template(path), r.status);
    });
    GraphSource source(access_->graph, sb_->base());
    auto folders = source.folders("bob@sandbox.test");
    ASSERT_EQ(folders.index(), 0u);
    auto missing = source.mime("bob@sandbox.test", "no-such-message");
    ASSERT_EQ(missing.index(), 1u);
    access_->graph.set_observer({});
    std::lock_guard g(mu);
    ASSERT_GE(seen.size(), 2u);
    EXPECT_EQ(seen.front(), (std::pair<std::string, long>{"GET /users/{id}/mailFolders", 200}));
    EXPECT_EQ(seen.back(), (std::pair<std::string, long>{"GET /users/{id}/messages/{id}/$value", 404}));
}

TEST(GraphTime, Parses) {
    EXPECT_EQ(parse_graph_time("1970-01-01T00:00:00Z"), 0);
    EXPECT_EQ(parse_graph_time("2023-11-14T22:13:20Z"), 1'700'000'000);
    EXPECT_EQ(parse_graph_time("2023-11-14T22:13:20.1234567Z"), 1'700'000'000);
    EXPECT_EQ(parse_graph_time("2023-11-14T23:13:20+01:00"), 1'700'000'000);
    EXPECT_FALSE(parse_graph_time("yesterday"));
    EXPECT_FALSE(parse_graph_time("2023-13-14T22:13:20Z"));
}

// ---- body cache and the service -------------------------------------------------------------------

#include <atomic>
#include <fstream>
#include <thread>

#include "proxy/sync/body_cache.h"
#include "proxy/sync/mail_service.h"

TEST(BodyCache, StoresVerifiesAndEvictsLeastRecentlyUsed) {
    std::string dir = ::testing::TempDir() + "/gb_cache_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    {
        BodyCache c(dir, 3 * (1000 + 48));
        c.put("bob", "a", std::string(1000, 'a'));
        c.put("bob", "b", std::string(1000, 'b'));
        c.put("bob", "c", std::string(1000, 'c'));
        EXPECT_EQ(c.get("bob", "a"), std::string(1000, 'a'));  // a is now the most recent
        c.put("bob", "d", std::string(1000, 'd'));             // evicts b, the least recently used
        EXPECT_FALSE(c.get("bob", "b"));
        EXPECT_TRUE(c.get("bob", "a"));
        EXPECT_TRUE(c.get("bob", "c"));
        EXPECT_EQ(c.stats().evictions, 1u);
        EXPECT_LE(c.stats().bytes, 3u * 1048);
        // Same id in another mailbox is another entry.
        EXPECT_FALSE(c.get("alice", "a"));
    }
    // A torn or flipped file is a miss (and removed), never wrong bytes.
    std::string file = dir + "/" + BodyCache::key("bob", "c");
    {
        std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(100);
        f.put('X');
    }
    BodyCache again(dir, 1 << 20);  // a restart rebuilds the index from the directory
    EXPECT_EQ(again.stats().files, 3u);
    EXPECT_FALSE(again.get("bob", "c"));
    EXPECT_EQ(again.stats().corrupt, 1u);
    EXPECT_FALSE(std::filesystem::exists(file));
    EXPECT_EQ(again.get("bob", "d"), std::string(1000, 'd'));
}

TEST(BodyCache, NormalisesLineEnds) {
    EXPECT_EQ(normalize_crlf("a\nb\r\nc\rd"), "a\r\nb\r\nc\r\nd");
    EXPECT_EQ(normalize_crlf("\r\r\n\n"), "\r\n\r\n\r\n");
}

namespace {
struct CountingSource : FakeSource {
    std::atomic<int> mime_calls{0};
    std::atomic<int> delta_calls{0};
    SourceResult<DeltaPage> delta(const std::string& mb, const std::string& f, const std::string& link) override {
        ++delta_calls;
        return FakeSource::delta(mb, f, link);
    }
    SourceResult<std::string> mime(const std::string&, const std::string& id) override {
        ++mime_calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return std::string("Subject: " + id + "\nX: y\n\nbody\n");
    }
};
}  // namespace

TEST(MailService, BodiesAreDownloadedOnceAndNormalised) {
    auto store = open_sqlite_store(temp_db("service_body"));
    std::string dir = ::testing::TempDir() + "/gb_cache2_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    BodyCache cache(dir, 1 << 20);
    CountingSource src;
    MailService svc(*store, cache);
    svc.add_mailbox("bob@x", src);
    std::vector<std::thread> ts;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i)
        ts.emplace_back([&] {
            auto r = svc.body("bob@x", "m1");
            if (r.index() == 0 && std::get<0>(r) == "Subject: m1\r\nX: y\r\n\r\nbody\r\n") ++ok;
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(ok.load(), 8);
    EXPECT_EQ(src.mime_calls.load(), 1);  // single flight, then the cache
    EXPECT_EQ(svc.stats().body_downloads, 1u);
    EXPECT_EQ(svc.body("nobody@x", "m1").index(), 1u);
}

TEST(MailService, WatchedMailboxesArePolledAndIdleFoldersFaster) {
    auto store = open_sqlite_store(temp_db("service_poll"));
    std::string dir = ::testing::TempDir() + "/gb_cache3_" + std::to_string(::getpid());
    BodyCache cache(dir, 1 << 20);
    CountingSource src;
    src.tree = {{"F1", "", "Inbox", "inbox"}, {"F2", "", "Other", ""}};
    MailServiceOptions o;
    o.poll_interval = std::chrono::milliseconds(60000);
    o.idle_poll_interval = std::chrono::milliseconds(300);
    MailService svc(*store, cache, o);
    svc.add_mailbox("bob@x", src);
    ASSERT_FALSE(svc.ensure_synced("bob@x", "F1"));
    EXPECT_EQ(store->messages("bob@x", "F1").size(), 0u);
    svc.start();
    // Nobody watches: no polling.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    int before = src.delta_calls.load();
    EXPECT_EQ(before, 1);  // only ensure_synced's round
    std::atomic<int> notified{0};
    svc.mailbox("bob@x")->subscribe("F1", [&](const std::string&, const FolderChange& c) {
        notified += static_cast<int>(c.added.size());
    });
    int w = svc.watch("bob@x", "F1");  // first poll is due at once (both folders)
    for (int i = 0; i < 200 && src.delta_calls.load() < before + 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    int after_watch = src.delta_calls.load();
    EXPECT_EQ(after_watch, before + 2);  // and not again: the interval is a minute
    svc.set_fast(w, true);  // IDLE: F1 every 300 ms
    {
        std::lock_guard g(src.mu);  // the pollers run
        src.rounds["F1"] = {page({msg("new", 5)}, "", "d2")};
    }
    for (int i = 0; i < 50 && notified.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(notified.load(), 1);
    auto t0 = std::chrono::steady_clock::now();
    int start_polls = src.delta_calls.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    int fast_polls = src.delta_calls.load() - start_polls;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(fast_polls, 2);                                  // keeps polling F1 while IDLE
    EXPECT_LE(fast_polls, static_cast<int>(ms / 300) + 1);  // but not faster than the interval
    svc.unwatch(w);
    svc.stop();
}
