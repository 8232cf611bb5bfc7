// The IMAP write path against the sandbox: every write is checked three ways: the IMAP responses (UIDPLUS,
// CONDSTORE, untagged updates), the state in the emulated Microsoft 365 (read back over Graph), and the
// Graph calls the bridge made (the sandbox's request log: one PATCH per STORE of one message, a move
// and never a re-upload for MOVE, ...). Failures injected into Graph must leave the client's view as
// Microsoft 365 has it.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <thread>

#include "auth/crypto.h"
#include "auth/password.h"
#include "common/text.h"
#include "graph/http/graph_client.h"
#include "proxy/imap/session.h"
#include "proxy/sync/graph_source.h"
#include "proxy/sync/mail_service.h"
#include "proxy/sync/sent_registry.h"
#include "support/graph_access.h"
#include "support/mail_stack.h"
#include "support/test_sandbox.h"

using namespace gb;

namespace {

constexpr const char* kBox = "alice@sandbox.test";

class ImapWriteTest : public ::testing::Test {
protected:
    // A sandbox per test: every test starts from an empty mailbox, so UIDs and counts are exact.
    void SetUp() override {
        sb_ = new test::TestSandbox("imapw");
        access_ = new test::GraphAccess(*sb_);
        source_ = new sync::GraphSource(access_->graph, sb_->base(), 500, &access_->client);
        config::Config cfg;
        config::AccountConfig a;
        a.login = "alice";
        a.password_hash = auth::hash_password("pw");
        a.app = "sandbox";
        a.mailbox = kBox;
        a.send_as = {kBox};
        cfg.accounts.push_back(a);
        policy_ = new smtp::Policy(cfg);
        stack_ = std::make_unique<test::MailStack>("gb_imapw", kBox, *source_);
        mail_ = stack_->mail.get();
        store_ = stack_->store.get();
    }
    void TearDown() override {
        stack_.reset();
        delete policy_;
        delete source_;
        delete access_;
        delete sb_;
    }

    std::string inject(const std::string& folder, const std::string& subject, bool read = false) {
        std::string mime = "From: Bob <bob@sandbox.test>\r\nTo: alice@sandbox.test\r\nSubject: " + subject +
                           "\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <" + subject +
                           "@sandbox.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody of " + subject + "\r\n";
        auto r = sb_->server().graph().inject_message(kBox, folder, mime, read, 1'700'000'000 + (++clock_));
        EXPECT_EQ(r.index(), 0u);
        return r.index() == 0 ? std::get<0>(r) : std::string();
    }

    std::unique_ptr<imap::Session> session(bool trash_permanent = true) {
        imap::SessionServices s;
        s.trash_expunge_permanent = trash_permanent;
        s.policy = policy_;
        s.throttle = &throttle_;
        s.mail = mail_;
        s.sent = &sent_;
        imap::SessionConfig c;
        c.loopback = true;
        c.client_ip = "127.0.0.1";
        auto out = std::make_unique<imap::Session>(s, c);
        talk(*out, "L LOGIN alice pw\r\n");
        return out;
    }

    static std::string talk(imap::Session& s, const std::string& in) {
        std::string out = s.take_output();
        s.feed(in);
        out += s.take_output();
        while (s.busy()) {
            s.step();
            out += s.take_output();
        }
        return out;
    }

    // GET on Graph as the app; the parsed JSON.
    rapidjson::Document get(const std::string& path) {
        http::Request r;
        r.method = "GET";
        r.url = "/v1.0/users/" + std::string(kBox) + path;
        r.headers.emplace_back("Prefer", "IdType=\"ImmutableId\"");
        auto res = access_->graph.call(r);
        rapidjson::Document d;
        d.Parse(res.response.body.c_str());
        EXPECT_EQ(res.response.status, 200) << path << " " << res.response.body;
        return d;
    }
    std::string raw(const std::string& id) {
        http::Request r;
        r.method = "GET";
        r.url = "/v1.0/users/" + std::string(kBox) + "/messages/" + id + "/$value";
        return access_->graph.call(r).response.body;
    }
    // Messages of a folder (well-known name or id): subject -> message JSON members we check.
    struct Msg {
        std::string id, subject;
        bool read = false, draft = false;
        std::string flag;
        std::vector<std::string> categories;
        std::string verb;  // Integer 0x1081
        std::string imid;
    };
    std::vector<Msg> folder(const std::string& f) {
        auto d = get("/mailFolders/" + f +
                     "/messages?$top=100&$select=subject,isRead,isDraft,flag,categories,internetMessageId&$expand="
                     "singleValueExtendedProperties($filter=id%20eq%20'Integer%200x1081')");
        std::vector<Msg> out;
        if (!d.IsObject() || !d.HasMember("value")) return out;
        for (const auto& v : d["value"].GetArray()) {
            Msg m;
            m.id = v["id"].GetString();
            m.subject = v["subject"].GetString();
            m.read = v["isRead"].GetBool();
            m.draft = v["isDraft"].GetBool();
            m.flag = v["flag"]["flagStatus"].GetString();
            for (const auto& c : v["categories"].GetArray()) m.categories.emplace_back(c.GetString());
            if (v.HasMember("internetMessageId") && v["internetMessageId"].IsString()) m.imid = v["internetMessageId"].GetString();
            if (v.HasMember("singleValueExtendedProperties"))
                for (const auto& p : v["singleValueExtendedProperties"].GetArray()) m.verb = p["value"].GetString();
            out.push_back(m);
        }
        return out;
    }
    std::optional<Msg> find(const std::string& f, const std::string& subject) {
        for (auto& m : folder(f))
            if (m.subject == subject) return m;
        return std::nullopt;
    }
    // Graph writes since the last reset, as "METHOD route" for this mailbox (GETs, the reads of syncing,
    // left out).
    std::vector<std::string> calls() {
        std::vector<std::string> out;
        for (const auto& r : sb_->server().requests())
            if (r.mailbox == kBox && r.method != "GET") out.push_back(r.method + " " + r.route);
        return out;
    }
    // PATCH a message as Outlook would (the app's own Graph access).
    void outlook_patch(const std::string& id, const std::string& json) {
        http::Request r;
        r.method = "PATCH";
        r.url = "/v1.0/users/" + std::string(kBox) + "/messages/" + url_encode(id);
        r.headers.emplace_back("Content-Type", "application/json");
        r.body = json;
        EXPECT_EQ(access_->graph.call(r).response.status, 200);
    }
    void reset_calls() { sb_->server().clear_requests(); }
    static std::size_t count(const std::vector<std::string>& v, const std::string& what) {
        return static_cast<std::size_t>(std::count(v.begin(), v.end(), what));
    }

    test::TestSandbox* sb_ = nullptr;
    test::GraphAccess* access_ = nullptr;
    sync::GraphSource* source_ = nullptr;
    smtp::Policy* policy_ = nullptr;
    int clock_ = 0;
    std::unique_ptr<test::MailStack> stack_;
    sync::MailService* mail_ = nullptr;
    sync::StateStore* store_ = nullptr;
    smtp::AuthThrottle throttle_;
    sync::SentRegistry sent_;
};

bool has(const std::string& out, const std::string& needle) { return out.find(needle) != std::string::npos; }

std::string first_match(const std::string& out, const std::string& re) {
    std::smatch m;
    if (!std::regex_search(out, m, std::regex(re))) return {};
    return m[1].str();
}

}  // namespace

TEST_F(ImapWriteTest, StoreMapsFlagsToGraphWithOnePatchEach) {
    inject("inbox", "store-1");
    inject("inbox", "store-2");
    auto s = session();
    std::string out = talk(*s, "1 SELECT INBOX\r\n");
    ASSERT_TRUE(has(out, "1 OK [READ-WRITE]")) << out;
    reset_calls();
    out = talk(*s, "2 STORE 1 +FLAGS (\\Seen \\Flagged Invoice)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen \\Flagged Invoice))\r\n2 OK STORE completed")) << out;
    EXPECT_EQ(calls(), (std::vector<std::string>{"PATCH /messages/{id}"}));
    auto m = find("inbox", "store-1");
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->read);
    EXPECT_EQ(m->flag, "flagged");
    EXPECT_EQ(m->categories, (std::vector<std::string>{"Invoice"}));

    // \Answered and $Forwarded are Exchange's last verb (102 / 104); .SILENT sends no FETCH.
    reset_calls();
    out = talk(*s, "3 STORE 1 +FLAGS.SILENT (\\Answered)\r\n");
    EXPECT_EQ(out, "3 OK STORE completed\r\n");
    EXPECT_EQ(find("inbox", "store-1")->verb, "102");
    out = talk(*s, "4 UID STORE 1 +FLAGS ($Forwarded)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen \\Flagged $Forwarded Invoice))")) << out;
    EXPECT_EQ(find("inbox", "store-1")->verb, "104");
    // Replacing the set: everything off but \Seen; the category goes.
    out = talk(*s, "5 STORE 1 FLAGS (\\Seen)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen))")) << out;
    m = find("inbox", "store-1");
    EXPECT_EQ(m->flag, "notFlagged");
    EXPECT_TRUE(m->categories.empty());
    EXPECT_EQ(m->verb, "0");
    EXPECT_EQ(count(calls(), "PATCH /messages/{id}"), 3u);
    // \Deleted is local: no Graph call. A no-op STORE makes none either, but still answers FETCH.
    reset_calls();
    out = talk(*s, "6 STORE 2 +FLAGS (\\Deleted)\r\n7 STORE 1 +FLAGS (\\Seen)\r\n");
    EXPECT_TRUE(has(out, "* 2 FETCH (UID 2 FLAGS (\\Deleted))")) << out;
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n7 OK")) << out;
    EXPECT_TRUE(calls().empty());
    // Invalid flags are refused before anything happens.
    out = talk(*s, "8 STORE 1 +FLAGS (\\Bogus)\r\n9 STORE 1 FLAGS.LOUD (\\Seen)\r\n");
    EXPECT_TRUE(has(out, "8 BAD")) << out;
    EXPECT_TRUE(has(out, "9 BAD")) << out;

    // Another session sees the change as an untagged FETCH at its next command.
    auto other = session();
    talk(*other, "a SELECT INBOX\r\n");
    talk(*s, "10 STORE 1 +FLAGS (\\Flagged)\r\n");
    out = talk(*other, "b NOOP\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen \\Flagged))")) << out;

    // A later delta round changes nothing: the store already has what Graph has.
    ASSERT_FALSE(mail_->mailbox(kBox)->sync_all());
    out = talk(*s, "11 FETCH 1:2 (UID FLAGS)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen \\Flagged))")) << out;
    EXPECT_TRUE(has(out, "* 2 FETCH (UID 2 FLAGS (\\Deleted))")) << out;
}

TEST_F(ImapWriteTest, GraphFailureLeavesNoPhantomFlags) {
    inject("inbox", "fail-1");
    auto s = session();
    talk(*s, "1 SELECT INBOX\r\n");
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.status = 503;
    sb_->server().inject(f, 10);  // a poll of the mailbox may take some of them too
    std::string out = talk(*s, "2 STORE 1 +FLAGS (\\Seen)\r\n");
    sb_->server().clear_faults();
    EXPECT_TRUE(has(out, "2 NO [UNAVAILABLE]")) << out;
    EXPECT_FALSE(has(out, "FETCH")) << out;
    out = talk(*s, "3 FETCH 1 FLAGS\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (FLAGS ())")) << out;
    EXPECT_FALSE(find("inbox", "fail-1")->read);
    // A refusal (4xx) names Graph's reason.
    f.status = 403;
    sb_->server().inject(f, 10);
    out = talk(*s, "4 STORE 1 +FLAGS (\\Flagged)\r\n");
    sb_->server().clear_faults();
    EXPECT_TRUE(has(out, "4 NO [CANNOT] Microsoft 365 refused")) << out;
    // And it works once Graph does.
    out = talk(*s, "5 STORE 1 +FLAGS (\\Seen)\r\n");
    EXPECT_TRUE(has(out, "5 OK")) << out;
    EXPECT_TRUE(find("inbox", "fail-1")->read);
}

TEST_F(ImapWriteTest, PartialFailureReportsExactlyWhatGraphDidAndThrottlingIsWaitedOut) {
    std::vector<std::string> ids;
    for (int i = 1; i <= 8; ++i) ids.push_back(inject("inbox", "part-" + std::to_string(i)));
    auto s = session();
    talk(*s, "1 SELECT INBOX\r\n");
    // Message 4's PATCH fails; the others run in parallel (at most 3 at a time) until the failure is seen.
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.status = 500;
    f.path_suffix = "/messages/" + url_encode(ids[3]);  // as the request line has it ("=" is %3D)
    sb_->server().inject(f, 1);
    std::string out = talk(*s, "2 STORE 1:8 +FLAGS (\\Flagged)\r\n");
    EXPECT_TRUE(has(out, "2 NO [UNAVAILABLE]")) << out;
    // What the client was told equals what Microsoft 365 has, message by message.
    out += talk(*s, "3 FETCH 1:8 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n");
    int flagged = 0;
    for (int i = 1; i <= 8; ++i) {
        auto m = find("inbox", "part-" + std::to_string(i));
        ASSERT_TRUE(m);
        std::smatch fm;
        ASSERT_TRUE(std::regex_search(out, fm, std::regex("\\* " + std::to_string(i) + " FETCH \\(FLAGS \\(([^)]*)\\)"))) << out;
        bool told = fm[1].str().find("\\Flagged") != std::string::npos;
        EXPECT_EQ(told, m->flag == "flagged") << "message " << i << "\n" << out;
        flagged += told;
    }
    EXPECT_EQ(find("inbox", "part-4")->flag, "notFlagged");
    EXPECT_GE(flagged, 3);
    EXPECT_LE(flagged, 7);
    // A 429 with Retry-After is waited out, not failed.
    f.status = 429;
    f.retry_after = 1;
    f.path_suffix = "/messages/" + url_encode(ids[3]);  // as the request line has it ("=" is %3D)
    sb_->server().inject(f, 1);
    auto start = std::chrono::steady_clock::now();
    out = talk(*s, "4 STORE 4 +FLAGS (\\Flagged)\r\n");
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(has(out, "* 4 FETCH (UID 4 FLAGS (\\Flagged))\r\n4 OK")) << out;
    EXPECT_GE(took, std::chrono::milliseconds(900));
    EXPECT_EQ(find("inbox", "part-4")->flag, "flagged");
}

TEST_F(ImapWriteTest, ExpungeMovesToDeletedItemsAndPermanentlyDeletesThere) {
    inject("inbox", "exp-1");
    inject("inbox", "exp-2");
    inject("inbox", "exp-3");
    auto s = session();
    std::string out = talk(*s, "1 SELECT INBOX\r\n2 STORE 1,3 +FLAGS.SILENT (\\Deleted)\r\n");
    reset_calls();
    out = talk(*s, "3 UID EXPUNGE 3\r\n");
    EXPECT_TRUE(has(out, "* 3 EXPUNGE\r\n3 OK UID EXPUNGE completed")) << out;
    EXPECT_EQ(calls(), (std::vector<std::string>{"POST /messages/{id}/move"}));
    out = talk(*s, "4 EXPUNGE\r\n");
    EXPECT_TRUE(has(out, "* 1 EXPUNGE\r\n4 OK EXPUNGE completed")) << out;
    EXPECT_FALSE(find("inbox", "exp-1"));
    EXPECT_TRUE(find("inbox", "exp-2"));
    EXPECT_TRUE(find("deleteditems", "exp-1"));
    EXPECT_TRUE(find("deleteditems", "exp-3"));

    // In Deleted Items an expunge is final (permanentDelete); CLOSE expunges silently.
    out = talk(*s, "5 SELECT \"Deleted Items\"\r\n6 UID SEARCH SUBJECT exp-1\r\n");
    std::string uid = first_match(out, R"(\* SEARCH (\d+))");
    ASSERT_FALSE(uid.empty()) << out;
    reset_calls();
    out = talk(*s, "7 UID STORE " + uid + " +FLAGS (\\Deleted)\r\n8 CLOSE\r\n");
    EXPECT_TRUE(has(out, "8 OK CLOSE completed")) << out;
    EXPECT_FALSE(has(out, "EXPUNGE")) << out;
    EXPECT_EQ(count(calls(), "POST /messages/{id}/permanentdelete"), 1u);
    EXPECT_FALSE(find("deleteditems", "exp-1"));
    EXPECT_TRUE(find("deleteditems", "exp-3"));
    // EXAMINE cannot expunge.
    out = talk(*s, "9 EXAMINE INBOX\r\n10 EXPUNGE\r\n");
    EXPECT_TRUE(has(out, "10 NO [READ-ONLY]")) << out;
    // trash_expunge = "recoverable": a DELETE (into Recoverable Items) instead.
    auto r = session(false);
    out = talk(*r, "1 SELECT \"Deleted Items\"\r\n2 STORE 1:* +FLAGS.SILENT (\\Deleted)\r\n");
    reset_calls();
    out = talk(*r, "3 EXPUNGE\r\n");
    EXPECT_TRUE(has(out, "* 1 EXPUNGE\r\n3 OK")) << out;
    EXPECT_EQ(calls(), (std::vector<std::string>{"DELETE /messages/{id}"}));
    EXPECT_FALSE(find("deleteditems", "exp-3"));
}

TEST_F(ImapWriteTest, CopyAndMoveAnswerCopyUidAndNeverReupload) {
    inject("inbox", "cm-1", true);
    inject("inbox", "cm-2");
    inject("inbox", "cm-3");
    auto s = session();
    std::string out = talk(*s, "1 CREATE Projects\r\n2 SELECT Projects\r\n");
    ASSERT_TRUE(has(out, "1 OK CREATE completed")) << out;
    std::string validity = first_match(out, R"(\[UIDVALIDITY (\d+)\])");
    out = talk(*s, "3 SELECT INBOX\r\n");
    reset_calls();
    out = talk(*s, "4 COPY 1:2 Projects\r\n");
    EXPECT_TRUE(has(out, "4 OK [COPYUID " + validity + " 1:2 1:2] COPY completed")) << out;
    EXPECT_EQ(calls(), (std::vector<std::string>{"POST /messages/{id}/copy", "POST /messages/{id}/copy"}));
    out = talk(*s, "5 UID MOVE 3 Projects\r\n");
    EXPECT_TRUE(has(out, "* OK [COPYUID " + validity + " 3 3] Moved\r\n* 3 EXPUNGE\r\n5 OK UID MOVE completed")) << out;
    auto c = calls();
    EXPECT_EQ(count(c, "POST /messages/{id}/move"), 1u);
    EXPECT_EQ(count(c, "PUT /messages/{id}/$value") + count(c, "POST /mailfolders/{id}/messages"), 0u);
    EXPECT_EQ(folder("inbox").size(), 2u);
    EXPECT_TRUE(find("inbox", "cm-1"));
    // The destination is right at once, flags included, and stays so after the delta sees the copies.
    out = talk(*s, "6 SELECT Projects\r\n7 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n");
    EXPECT_TRUE(has(out, "* 3 EXISTS")) << out;
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\* 1 FETCH \(UID 1 FLAGS \(\\Seen\) BODY\[HEADER.FIELDS \(SUBJECT\)\] \{\d+\}\r\nSubject: cm-1)")))
        << out;
    ASSERT_FALSE(mail_->mailbox(kBox)->sync_all());
    out = talk(*s, "8 NOOP\r\n9 UID FETCH 1:* (FLAGS)\r\n");
    EXPECT_FALSE(has(out, "EXISTS")) << out;
    EXPECT_FALSE(has(out, "EXPUNGE")) << out;
    EXPECT_TRUE(has(out, "* 3 FETCH (UID 3 FLAGS ())")) << out;
    EXPECT_FALSE(has(out, "UID 4")) << out;
    // Unknown destination: TRYCREATE.
    out = talk(*s, "10 COPY 1 Nowhere\r\n");
    EXPECT_TRUE(has(out, "10 NO [TRYCREATE]")) << out;
}

TEST_F(ImapWriteTest, AppendKeepsHeadersReadStateAndDraftBytes) {
    auto s = session();
    std::string msg =
        "From: Alice <alice@sandbox.test>\r\nTo: Bob <bob@sandbox.test>\r\nSubject: appended\r\n"
        "Date: Wed, 01 Nov 2023 10:00:00 +0000\r\nMessage-ID: <app-1@sandbox.test>\r\n"
        "In-Reply-To: <orig@sandbox.test>\r\nReferences: <root@sandbox.test> <orig@sandbox.test>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nappended body\r\n";
    std::string out = talk(*s, "1 SELECT INBOX\r\n2 APPEND INBOX (\\Seen) \"01-Nov-2023 11:00:00 +0100\" {" +
                                   std::to_string(msg.size()) + "+}\r\n" + msg + "\r\n");
    std::string validity = first_match(out, R"(\[UIDVALIDITY (\d+)\])");
    std::string uid = first_match(out, "2 OK \\[APPENDUID " + validity + " (\\d+)\\] APPEND completed");
    ASSERT_FALSE(uid.empty()) << out;
    EXPECT_TRUE(has(out, "EXISTS")) << out;
    auto m = find("inbox", "appended");
    ASSERT_TRUE(m);
    EXPECT_FALSE(m->draft);
    EXPECT_TRUE(m->read);
    EXPECT_EQ(m->imid, "<app-1@sandbox.test>");
    std::string bytes = raw(m->id);
    EXPECT_TRUE(has(bytes, "In-Reply-To: <orig@sandbox.test>")) << bytes;
    EXPECT_TRUE(has(bytes, "<root@sandbox.test> <orig@sandbox.test>")) << bytes;
    // Exchange regenerates the MIME of a JSON-created item (base64 body here): the text is the same.
    auto body_at = bytes.find("\r\n\r\n");
    ASSERT_NE(body_at, std::string::npos);
    std::string b64 = bytes.substr(body_at + 4);
    b64.erase(std::remove_if(b64.begin(), b64.end(), [](char ch) { return ch == '\r' || ch == '\n'; }), b64.end());
    EXPECT_EQ(auth::base64_decode(b64).value_or(""), "appended body\r\n") << bytes;
    out = talk(*s, "3 UID FETCH " + uid + " (FLAGS INTERNALDATE)\r\n");
    EXPECT_TRUE(has(out, "FLAGS (\\Seen)")) << out;
    EXPECT_TRUE(has(out, "INTERNALDATE \"01-Nov-2023 10:00:00 +0000\"")) << out;

    // A draft keeps its exact bytes.
    std::string draft = "From: alice@sandbox.test\r\nSubject: draft one\r\nX-Odd:  kept   as is\r\n\r\nhalf written\r\n";
    out = talk(*s, "4 APPEND Drafts (\\Draft) {" + std::to_string(draft.size()) + "+}\r\n" + draft + "\r\n");
    EXPECT_TRUE(has(out, "4 OK [APPENDUID")) << out;
    auto d = find("drafts", "draft one");
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->draft);
    EXPECT_EQ(normalize_crlf(raw(d->id)), draft);
    // No such folder: TRYCREATE.
    out = talk(*s, "5 APPEND Nowhere {3+}\r\nabc\r\n");
    EXPECT_TRUE(has(out, "5 NO [TRYCREATE]")) << out;
}

TEST_F(ImapWriteTest, AppendToSentOfAMessageJustSentMapsOntoGraphsCopy) {
    std::string msg = "From: alice@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: sent over smtp\r\n"
                      "Message-ID: <sent-1@sandbox.test>\r\n\r\nhello\r\n";
    // What sendMail does: Graph saves the copy in Sent Items; the runner records it.
    auto r = sb_->server().graph().inject_message(kBox, "sentitems", msg, true, 1'700'100'000);
    ASSERT_EQ(r.index(), 0u);
    sent_.record(kBox, msg);
    auto s = session();
    reset_calls();
    std::string out = talk(*s, "1 APPEND \"Sent Items\" (\\Seen) {" + std::to_string(msg.size()) + "+}\r\n" + msg + "\r\n");
    EXPECT_TRUE(has(out, "1 OK [APPENDUID")) << out;
    auto sent = folder("sentitems");
    EXPECT_EQ(std::count_if(sent.begin(), sent.end(), [](const auto& m) { return m.subject == "sent over smtp"; }), 1);
    EXPECT_EQ(count(calls(), "POST /mailfolders/{id}/messages"), 0u);
    // Another message (not sent by the bridge) is appended normally.
    std::string other = "From: alice@sandbox.test\r\nSubject: sent elsewhere\r\nMessage-ID: <x-2@sandbox.test>\r\n\r\nhi\r\n";
    out = talk(*s, "2 APPEND \"Sent Items\" (\\Seen) {" + std::to_string(other.size()) + "+}\r\n" + other + "\r\n");
    EXPECT_TRUE(has(out, "2 OK [APPENDUID")) << out;
    EXPECT_TRUE(find("sentitems", "sent elsewhere"));
}

TEST_F(ImapWriteTest, FoldersCreateRenameDeleteSubscribe) {
    auto s = session();
    std::string out = talk(*s, "1 CREATE Clients/Contoso/2026\r\n2 LIST \"\" \"Clients*\"\r\n");
    EXPECT_TRUE(has(out, "1 OK CREATE completed")) << out;
    EXPECT_TRUE(has(out, "* LIST (\\HasChildren) \"/\" Clients\r\n")) << out;
    EXPECT_TRUE(has(out, "* LIST (\\HasNoChildren) \"/\" Clients/Contoso/2026\r\n")) << out;
    out = talk(*s, "3 CREATE Clients\r\n4 CREATE INBOX\r\n5 CREATE \"a//b\"\r\n");
    EXPECT_TRUE(has(out, "3 NO [ALREADYEXISTS]")) << out;
    EXPECT_TRUE(has(out, "4 NO [ALREADYEXISTS]")) << out;
    EXPECT_TRUE(has(out, "5 BAD")) << out;
    // Outlook sees the hierarchy.
    auto top = get("/mailFolders?$top=100");
    std::string clients_id;
    for (const auto& f : top["value"].GetArray())
        if (std::string(f["displayName"].GetString()) == "Clients") clients_id = f["id"].GetString();
    ASSERT_FALSE(clients_id.empty());
    auto kids = get("/mailFolders/" + clients_id + "/childFolders");
    ASSERT_EQ(kids["value"].Size(), 1u);
    EXPECT_STREQ(kids["value"][0]["displayName"].GetString(), "Contoso");

    // RENAME moves the subtree (same folder ids: UIDVALIDITY kept) and can change the parent.
    out = talk(*s, "6 STATUS Clients/Contoso (UIDVALIDITY)\r\n");
    std::string validity = first_match(out, R"(UIDVALIDITY (\d+))");
    out = talk(*s, "7 RENAME Clients/Contoso Customers/Contoso\r\n8 LIST \"\" \"*\"\r\n9 STATUS Customers/Contoso (UIDVALIDITY)\r\n");
    EXPECT_TRUE(has(out, "7 OK RENAME completed")) << out;
    EXPECT_TRUE(has(out, "\"/\" Customers/Contoso/2026\r\n")) << out;
    EXPECT_FALSE(has(out, "Clients/Contoso")) << out;
    EXPECT_TRUE(has(out, "(UIDVALIDITY " + validity + ")")) << out;
    out = talk(*s, "10 RENAME Customers/Contoso Customers/Fabrikam\r\n11 LIST \"\" \"Customers/*\"\r\n");
    EXPECT_TRUE(has(out, "\"/\" Customers/Fabrikam/2026\r\n")) << out;
    // SUBSCRIBE state persists and LSUB/LIST (SUBSCRIBED) follow it.
    out = talk(*s, "12 UNSUBSCRIBE Customers\r\n13 LSUB \"\" \"Customers*\"\r\n");
    EXPECT_TRUE(has(out, "12 OK")) << out;
    EXPECT_FALSE(has(out, "* LSUB (\\HasChildren) \"/\" Customers\r\n")) << out;
    EXPECT_TRUE(has(out, "* LSUB (\\HasChildren) \"/\" Customers/Fabrikam\r\n")) << out;
    EXPECT_FALSE(store_->folders(kBox).empty());
    // DELETE: not with subfolders, never a system folder; the leaf first, then the parent.
    out = talk(*s, "14 DELETE Customers/Fabrikam\r\n15 DELETE \"Sent Items\"\r\n16 DELETE Customers/Fabrikam/2026\r\n"
                   "17 DELETE Customers/Fabrikam\r\n18 LIST \"\" \"Customers*\"\r\n");
    EXPECT_TRUE(has(out, "14 NO [INUSE]")) << out;
    EXPECT_TRUE(has(out, "15 NO [CANNOT]")) << out;
    EXPECT_TRUE(has(out, "16 OK DELETE completed")) << out;
    EXPECT_TRUE(has(out, "17 OK DELETE completed")) << out;
    EXPECT_TRUE(has(out, "* LIST (\\HasNoChildren) \"/\" Customers\r\n")) << out;
    // RENAME INBOX moves its messages into the new folder; INBOX stays.
    inject("inbox", "inbox-rename");
    out = talk(*s, "19 RENAME INBOX \"Old Inbox\"\r\n20 STATUS \"Old Inbox\" (MESSAGES)\r\n21 STATUS INBOX (MESSAGES)\r\n");
    EXPECT_TRUE(has(out, "19 OK")) << out;
    EXPECT_FALSE(has(out, "(MESSAGES 0)\r\n20 OK")) << out;
    EXPECT_TRUE(has(out, "* STATUS INBOX (MESSAGES 0)")) << out;
}

TEST_F(ImapWriteTest, CondstoreModseqChangedSinceUnchangedSince) {
    inject("inbox", "cs-1");
    inject("inbox", "cs-2");
    auto s = session();
    std::string out = talk(*s, "1 SELECT INBOX (CONDSTORE)\r\n");
    std::string hms = first_match(out, R"(\[HIGHESTMODSEQ (\d+)\])");
    ASSERT_FALSE(hms.empty()) << out;
    out = talk(*s, "2 FETCH 1:* (FLAGS MODSEQ)\r\n");
    std::string m1 = first_match(out, R"(\* 1 FETCH \(FLAGS \(\) MODSEQ \((\d+)\)\))");
    ASSERT_FALSE(m1.empty()) << out;
    out = talk(*s, "3 STORE 2 +FLAGS (\\Flagged)\r\n");
    std::string m2 = first_match(out, R"(\* 2 FETCH \(UID \d+ FLAGS \(\\Flagged\) MODSEQ \((\d+)\)\))");
    ASSERT_FALSE(m2.empty()) << out;
    EXPECT_GT(std::stoull(m2), std::stoull(hms));
    // CHANGEDSINCE: only message 2 changed since the select.
    out = talk(*s, "4 FETCH 1:* (FLAGS) (CHANGEDSINCE " + hms + ")\r\n");
    EXPECT_FALSE(has(out, "* 1 FETCH")) << out;
    EXPECT_TRUE(has(out, "* 2 FETCH (MODSEQ (" + m2 + ") FLAGS (\\Flagged))")) << out;
    // UNCHANGEDSINCE older than message 2's modseq: refused for 2 (MODIFIED), done for 1.
    reset_calls();
    out = talk(*s, "5 STORE 1:2 (UNCHANGEDSINCE " + hms + ") +FLAGS (\\Seen)\r\n");
    EXPECT_TRUE(has(out, "5 OK [MODIFIED 2]")) << out;
    EXPECT_TRUE(has(out, "* 1 FETCH (UID")) << out;
    EXPECT_EQ(count(calls(), "PATCH /messages/{id}"), 1u);
    out = talk(*s, "6 SEARCH MODSEQ " + m2 + "\r\n7 STATUS INBOX (HIGHESTMODSEQ)\r\n");
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\* SEARCH (1 2|2 1|1|2) \(MODSEQ \d+\))"))) << out;
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\* STATUS INBOX \(HIGHESTMODSEQ \d+\))"))) << out;
    // BODY[] sets \Seen (one PATCH), and the FETCH tells the new flags.
    out = talk(*s, "8 STORE 2 -FLAGS (\\Seen)\r\n");
    reset_calls();
    out = talk(*s, "9 FETCH 2 BODY[TEXT]\r\n");
    EXPECT_TRUE(has(out, "FLAGS (\\Seen \\Flagged)")) << out;
    // ... in the same FETCH response as the body (curl and others expect the body in the first one).
    EXPECT_EQ(out.find("* 2 FETCH"), out.rfind("* 2 FETCH")) << out;
    EXPECT_EQ(count(calls(), "PATCH /messages/{id}"), 1u);
    EXPECT_TRUE(find("inbox", "cs-2")->read);
}

TEST_F(ImapWriteTest, QresyncVanishedAndResyncAtSelect) {
    for (int i = 1; i <= 5; ++i) inject("inbox", "qr-" + std::to_string(i));
    auto a = session();
    std::string out = talk(*a, "1 SELECT INBOX (QRESYNC (1 1))\r\n");
    EXPECT_TRUE(has(out, "1 BAD")) << out;  // QRESYNC must be enabled first
    out = talk(*a, "2 ENABLE QRESYNC\r\n3 SELECT INBOX\r\n");
    EXPECT_TRUE(has(out, "* ENABLED CONDSTORE QRESYNC") || has(out, "* ENABLED QRESYNC")) << out;
    std::string validity = first_match(out, R"(\[UIDVALIDITY (\d+)\])");
    std::string h0 = first_match(out, R"(\[HIGHESTMODSEQ (\d+)\])");
    ASSERT_FALSE(h0.empty()) << out;

    auto b = session();
    talk(*b, "1 SELECT INBOX\r\n2 STORE 2 +FLAGS (\\Flagged)\r\n3 STORE 4 +FLAGS (\\Deleted)\r\n4 EXPUNGE\r\n");
    // A QRESYNC client hears of expunges as VANISHED with UIDs, never as EXPUNGE.
    out = talk(*a, "4 NOOP\r\n");
    EXPECT_TRUE(has(out, "* VANISHED 4\r\n")) << out;
    EXPECT_FALSE(has(out, "EXPUNGE")) << out;
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\))"))) << out;
    std::string h1 = first_match(talk(*a, "5 STATUS INBOX (HIGHESTMODSEQ)\r\n"), R"(HIGHESTMODSEQ (\d+))");
    EXPECT_GT(std::stoull(h1), std::stoull(h0));

    // A client coming back with what it knew at h0 is told exactly what it missed.
    auto c = session();
    out = talk(*c, "1 ENABLE QRESYNC\r\n2 SELECT INBOX (QRESYNC (" + validity + " " + h0 + " 1:5))\r\n");
    EXPECT_TRUE(has(out, "* VANISHED (EARLIER) 4\r\n")) << out;
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\))"))) << out;
    EXPECT_FALSE(has(out, "UID 1 ")) << out;
    EXPECT_FALSE(has(out, "UID 3 ")) << out;
    EXPECT_TRUE(has(out, "2 OK [READ-WRITE]")) << out;
    // A stale UIDVALIDITY gets no resync data (the client must start over).
    out = talk(*c, "3 SELECT INBOX (QRESYNC (1 " + h0 + "))\r\n");
    EXPECT_FALSE(has(out, "VANISHED")) << out;
    // UID FETCH with VANISHED.
    out = talk(*c, "4 SELECT INBOX\r\n5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE " + h0 + " VANISHED)\r\n");
    EXPECT_TRUE(has(out, "* VANISHED (EARLIER) 4\r\n")) << out;
    EXPECT_TRUE(has(out, "FETCH (UID 2 MODSEQ (")) << out;
    EXPECT_FALSE(has(out, "FETCH (UID 1 ")) << out;
    out = talk(*c, "6 FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n");
    EXPECT_TRUE(has(out, "6 BAD")) << out;  // VANISHED only with UID FETCH
}

TEST_F(ImapWriteTest, LargeDraftIsUploadedInPiecesLargeNonDraftIsRefusedCleanly) {
    // 5 MB of attachment: over Graph's 4 MB request limit even before base64.
    std::string pdf(5'000'000, '\0');
    for (std::size_t i = 0; i < pdf.size(); ++i) pdf[i] = static_cast<char>((i * 7919) % 251);
    std::string b64 = auth::base64_encode(pdf);
    std::string wrapped;
    for (std::size_t i = 0; i < b64.size(); i += 76) wrapped += b64.substr(i, 76) + "\r\n";
    auto message = [&](const std::string& subject) {
        return "From: alice@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: " + subject +
               "\r\nMessage-ID: <" + subject + "@sandbox.test>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
               "see the attachment\r\n--b1\r\nContent-Type: application/pdf; name=\"big.pdf\"\r\n"
               "Content-Disposition: attachment; filename=\"big.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
               wrapped + "--b1--\r\n";
    };
    auto s = session();
    reset_calls();
    std::string draft = message("big-draft");
    std::string out = talk(*s, "1 APPEND Drafts (\\Draft \\Seen) {" + std::to_string(draft.size()) + "+}\r\n" + draft + "\r\n");
    EXPECT_TRUE(has(out, "1 OK [APPENDUID")) << out.substr(0, 300);
    auto d = find("drafts", "big-draft");
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->draft);
    auto c = calls();
    EXPECT_EQ(count(c, "POST /mailfolders/{id}/messages"), 1u);
    EXPECT_EQ(count(c, "POST /messages/{id}/attachments/createuploadsession"), 1u);
    // The attachment arrived whole.
    auto atts = get("/messages/" + d->id + "/attachments");
    ASSERT_EQ(atts["value"].Size(), 1u);
    EXPECT_STREQ(atts["value"][0]["name"].GetString(), "big.pdf");
    EXPECT_EQ(atts["value"][0]["size"].GetInt64(), 5'000'000);
    std::string bytes = raw(d->id);
    EXPECT_NE(bytes.find(b64.substr(0, 76)), std::string::npos);

    // Not a draft: Graph cannot take it (attachments after the create need a draft). Refused, nothing left.
    std::string big = message("big-received");
    out = talk(*s, "2 APPEND INBOX (\\Seen) {" + std::to_string(big.size()) + "+}\r\n" + big + "\r\n");
    EXPECT_TRUE(has(out, "2 NO [TOOBIG]")) << out.substr(0, 300);
    EXPECT_FALSE(find("inbox", "big-received"));
    // An upload failing half-way deletes the half-made draft: no draft without its attachment.
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Upload;
    f.status = 500;
    sb_->server().inject(f, 5);
    std::string again = message("big-draft-2");
    out = talk(*s, "3 APPEND Drafts (\\Draft) {" + std::to_string(again.size()) + "+}\r\n" + again + "\r\n");
    sb_->server().clear_faults();
    EXPECT_TRUE(has(out, "3 NO [UNAVAILABLE]")) << out.substr(0, 300);
    EXPECT_FALSE(find("drafts", "big-draft-2"));
}

TEST_F(ImapWriteTest, StoreDecidesOnWhatGraphHasNowNotOnTheLastPoll) {
    std::string id = inject("inbox", "fresh-1");
    auto s = session();
    talk(*s, "1 SELECT INBOX\r\n");
    // Flagged and read in Outlook a moment ago; the bridge has not polled since.
    outlook_patch(id, R"({"flag":{"flagStatus":"flagged"},"isRead":true})");
    reset_calls();
    std::string out = talk(*s, "2 STORE 1 -FLAGS (\\Flagged)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen))")) << out;
    EXPECT_EQ(calls(), (std::vector<std::string>{"PATCH /messages/{id}"}));
    EXPECT_EQ(find("inbox", "fresh-1")->flag, "notFlagged");
    outlook_patch(id, R"({"isRead":false})");
    out = talk(*s, "3 STORE 1 FLAGS ()\r\n4 STORE 1 +FLAGS (\\Seen)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n4 OK")) << out;
    EXPECT_TRUE(find("inbox", "fresh-1")->read);
}

TEST_F(ImapWriteTest, FailedCopyLeavesTheDestinationAsItWas) {
    std::vector<std::string> ids;
    for (int i = 1; i <= 6; ++i) ids.push_back(inject("inbox", "cp-" + std::to_string(i)));
    auto s = session();
    std::string out = talk(*s, "1 CREATE Dest\r\n2 SELECT INBOX\r\n");
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.status = 503;
    f.path_suffix = "/messages/" + url_encode(ids[2]) + "/copy";
    sb_->server().inject(f, 1);
    out = talk(*s, "3 COPY 1:6 Dest\r\n4 STATUS Dest (MESSAGES)\r\n");
    EXPECT_TRUE(has(out, "3 NO [UNAVAILABLE]")) << out;
    EXPECT_FALSE(has(out, "COPYUID")) << out;
    EXPECT_TRUE(has(out, "* STATUS Dest (MESSAGES 0)")) << out;
    auto top = get("/mailFolders?$top=100");
    std::string dest_id;
    for (const auto& fo : top["value"].GetArray())
        if (std::string(fo["displayName"].GetString()) == "Dest") dest_id = fo["id"].GetString();
    ASSERT_FALSE(dest_id.empty());
    EXPECT_TRUE(folder(dest_id).empty());
    // The retry then copies each message exactly once.
    out = talk(*s, "5 COPY 1:6 Dest\r\n");
    EXPECT_TRUE(has(out, "5 OK [COPYUID")) << out;
    EXPECT_EQ(folder(dest_id).size(), 6u);
}

TEST_F(ImapWriteTest, ClientBookkeepingKeywordsStayLocalCategoriesRoundTripByTheirAtom) {
    std::string id = inject("inbox", "kw-1");
    outlook_patch(id, R"({"categories":["Red category"]})");
    auto s = session();
    std::string out = talk(*s, "1 SELECT INBOX\r\n2 FETCH 1 FLAGS\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (FLAGS (Red_category))")) << out;
    reset_calls();
    // Junk training and read-receipt keywords are the client's own business: not Outlook categories.
    out = talk(*s, "3 STORE 1 +FLAGS (NonJunk $MDNSent Work)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (Red_category Work NonJunk $MDNSent))")) << out;
    auto m = find("inbox", "kw-1");
    EXPECT_EQ(m->categories, (std::vector<std::string>{"Red category", "Work"}));
    EXPECT_EQ(calls(), (std::vector<std::string>{"PATCH /messages/{id}"}));
    // The atom form names the category: a full FLAGS set written back keeps its real name.
    out = talk(*s, "4 STORE 1 FLAGS (Red_category NonJunk)\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (UID 1 FLAGS (Red_category NonJunk))")) << out;
    EXPECT_EQ(find("inbox", "kw-1")->categories, (std::vector<std::string>{"Red category"}));
    out = talk(*s, "5 STORE 1 -FLAGS (red_CATEGORY)\r\n6 SEARCH KEYWORD NonJunk\r\n7 SEARCH KEYWORD Red_category\r\n");
    EXPECT_TRUE(find("inbox", "kw-1")->categories.empty());
    EXPECT_TRUE(has(out, "* SEARCH 1\r\n6 OK")) << out;
    EXPECT_TRUE(has(out, "* SEARCH\r\n7 OK")) << out;
    // Local keywords survive a sync round and a restart of the store (they live only here).
    ASSERT_FALSE(mail_->mailbox(kBox)->sync_all());
    out = talk(*s, "8 FETCH 1 FLAGS\r\n");
    EXPECT_TRUE(has(out, "* 1 FETCH (FLAGS (NonJunk))")) << out;
}

TEST_F(ImapWriteTest, HostileNumbersAreRefusedNotFatal) {
    inject("inbox", "num-1");
    auto s = session();
    std::string big = "99999999999999999999";  // > 2^64 - 1
    std::string out = talk(*s, "1 ENABLE QRESYNC\r\n2 SELECT INBOX\r\n3 STORE 1 (UNCHANGEDSINCE " + big +
                                   ") +FLAGS (\\Seen)\r\n4 UID FETCH 1:* FLAGS (CHANGEDSINCE " + big + ")\r\n"
                                   "5 SEARCH MODSEQ " + big + "\r\n6 SELECT INBOX (QRESYNC (1 " + big + "))\r\n"
                                   "7 STORE 1 (UNCHANGEDSINCE 9223372036854775808) +FLAGS (\\Seen)\r\n8 NOOP\r\n");
    for (const char* tag : {"3 BAD", "4 BAD", "5 BAD", "6 BAD", "7 BAD"}) EXPECT_TRUE(has(out, tag)) << tag << "\n" << out;
    EXPECT_TRUE(has(out, "8 OK")) << out;
    EXPECT_FALSE(s->wants_close());
    // The largest mod-sequence RFC 7162 allows is fine.
    out = talk(*s, "9 SELECT INBOX\r\n10 STORE 1 (UNCHANGEDSINCE 9223372036854775807) +FLAGS (\\Seen)\r\n");
    EXPECT_TRUE(has(out, "10 OK")) << out;
}

TEST_F(ImapWriteTest, SilentStoreStillTellsModseqAndAppendKnowsItsSize) {
    inject("inbox", "sil-1");
    auto s = session();
    talk(*s, "1 SELECT INBOX (CONDSTORE)\r\n");
    std::string out = talk(*s, "2 STORE 1 +FLAGS.SILENT (\\Flagged)\r\n");
    EXPECT_TRUE(std::regex_search(out, std::regex(R"(^\* 1 FETCH \(UID 1 MODSEQ \(\d+\)\)\r\n2 OK)"))) << out;
    EXPECT_FALSE(has(out, "FLAGS (")) << out;
    std::string msg = "From: alice@sandbox.test\r\nSubject: sized\r\nMessage-ID: <sized@sandbox.test>\r\n\r\n" +
                      std::string(500, 'x') + "\r\n";
    out = talk(*s, "3 APPEND INBOX {" + std::to_string(msg.size()) + "+}\r\n" + msg + "\r\n4 FETCH 2 (RFC822.SIZE INTERNALDATE)\r\n");
    EXPECT_TRUE(has(out, "3 OK [APPENDUID")) << out;
    EXPECT_FALSE(has(out, "RFC822.SIZE 0")) << out;
    EXPECT_FALSE(has(out, "1970")) << out;
}

TEST_F(ImapWriteTest, WritesOverManyMessagesGoInChunksAndAFailedCopyIsUndoneWhole) {
    std::vector<std::string> ids;
    for (int i = 1; i <= 150; ++i) ids.push_back(inject("inbox", "many-" + std::to_string(i)));
    auto s = session();
    talk(*s, "1 CREATE Dest\r\n2 SELECT INBOX\r\n");
    reset_calls();
    std::string out = talk(*s, "3 STORE 1:150 +FLAGS.SILENT (\\Flagged)\r\n");
    EXPECT_TRUE(has(out, "3 OK")) << out;
    EXPECT_EQ(count(calls(), "PATCH /messages/{id}"), 150u);
    out = talk(*s, "4 SEARCH FLAGGED\r\n");
    EXPECT_TRUE(has(out, " 150\r\n4 OK")) << out;
    // A COPY failing in its third chunk: the two chunks before are deleted again too.
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.status = 503;
    f.path_suffix = "/messages/" + url_encode(ids[130]) + "/copy";
    sb_->server().inject(f, 1);
    out = talk(*s, "5 COPY 1:150 Dest\r\n6 STATUS Dest (MESSAGES)\r\n");
    EXPECT_TRUE(has(out, "5 NO [UNAVAILABLE]")) << out;
    EXPECT_TRUE(has(out, "* STATUS Dest (MESSAGES 0)")) << out;
    // Another session with Dest selected when Dest is deleted: told, and its writes refused, no crash.
    auto other = session();
    talk(*other, "a SELECT Dest\r\n");
    out = talk(*s, "7 DELETE Dest\r\n");
    EXPECT_TRUE(has(out, "7 OK")) << out;
    out = talk(*other, "b NOOP\r\nc STORE 1 +FLAGS (\\Seen)\r\nd SELECT INBOX\r\n");
    EXPECT_TRUE(has(out, "b OK")) << out;
    EXPECT_TRUE(has(out, "d OK")) << out;
    EXPECT_FALSE(other->wants_close());
}
