// Socket-free tests of the sandbox's emulated Graph mail API (graph_api.cpp, mailstore.cpp, mime.cpp):
// MIME and JSON sendMail, drafts and upload sessions, folders, listing, delta, ids, permissions, errors.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "auth/crypto.h"
#include "graph/sandbox/graph_api.h"
#include "graph/sandbox/mime.h"

namespace gb::sandbox {
namespace {

constexpr const char* kBase = "https://graph.sandbox.test";

class GraphTest : public ::testing::Test {
  protected:
    void SetUp() override {
        tenant_.tenant_id = "11111111-2222-3333-4444-555555555555";
        tenant_.domains = {"sandbox.test"};
        tenant_.mailboxes = {{"alice@sandbox.test", "Alice", "aaaaaaaa-0000-4000-8000-000000000001"},
                             {"bob@sandbox.test", "Bob", "bbbbbbbb-0000-4000-8000-000000000002"},
                             {"scanner@sandbox.test", "Scanner", "cccccccc-0000-4000-8000-000000000003"},
                             {"dave@sandbox.test", "Dave", "dddddddd-0000-4000-8000-000000000004"}};
        options_.graph_base = kBase;
        options_.login_base = kBase;
        token_.roles = {"Mail.Send", "Mail.ReadWrite"};
        api_ = std::make_unique<GraphApi>(tenant_, options_, [this] { return now_; });
    }

    HttpResponse call(std::string method, std::string target, std::string body = {},
                      std::vector<std::pair<std::string, std::string>> headers = {},
                      const AccessToken* token = nullptr) {
        HttpRequest req;
        req.method = std::move(method);
        if (target.rfind(kBase, 0) == 0) target = target.substr(std::string(kBase).size());
        req.target = std::move(target);
        req.headers = std::move(headers);
        req.body = std::move(body);
        return api_->handle(req, token ? *token : token_);
    }
    HttpResponse post_json(const std::string& target, const std::string& body,
                           std::vector<std::pair<std::string, std::string>> extra = {}) {
        extra.emplace_back("Content-Type", "application/json");
        return call("POST", target, body, extra);
    }
    HttpResponse post_mime(const std::string& target, const std::string& mime_text) {
        return call("POST", target, auth::base64_encode(mime_text), {{"Content-Type", "text/plain"}});
    }
    HttpResponse patch(const std::string& target, const std::string& body) {
        return call("PATCH", target, body, {{"Content-Type", "application/json"}});
    }
    static rapidjson::Document json(const HttpResponse& r) {
        rapidjson::Document d;
        d.Parse(r.body.c_str());
        EXPECT_FALSE(d.HasParseError()) << r.body;
        return d;
    }
    static std::string s(const rapidjson::Value& v, const char* name) {
        if (!v.IsObject() || !v.HasMember(name) || !v[name].IsString()) return "<missing>";
        return v[name].GetString();
    }
    static std::string error_code(const HttpResponse& r) {
        auto d = json(r);
        if (!d.IsObject() || !d.HasMember("error")) return "<no error>";
        return s(d["error"], "code");
    }
    // Ids of the messages in a folder (newest first), following nextLinks.
    std::vector<std::string> folder_ids(const std::string& user, const std::string& folder) {
        std::vector<std::string> ids;
        std::string url =
            "/v1.0/users/" + user + "/mailFolders/" + folder + "/messages?$top=100&$select=subject";
        for (int guard = 0; guard < 50 && !url.empty(); ++guard) {
            auto r = call("GET", url);
            EXPECT_EQ(r.status, 200) << r.body;
            auto d = json(r);
            for (const auto& m : d["value"].GetArray()) ids.push_back(m["id"].GetString());
            url = d.HasMember("@odata.nextLink") ? d["@odata.nextLink"].GetString() : "";
        }
        return ids;
    }
    std::string value_of(const std::string& user, const std::string& id) {
        auto r = call("GET", "/v1.0/users/" + user + "/messages/" + id + "/$value");
        EXPECT_EQ(r.status, 200) << r.body;
        return r.body;
    }

    Tenant tenant_;
    SandboxOptions options_;
    AccessToken token_;
    std::int64_t now_ = 1751364000;  // 2025-07-01T10:00:00Z
    std::unique_ptr<GraphApi> api_;
};

const std::string kMime =
    "From: Alice <alice@sandbox.test>\r\n"
    "To: Bob <bob@sandbox.test>, outside@example.com\r\n"
    "Cc: \"Scan, Device\" <scanner@sandbox.test>\r\n"
    "Bcc: dave@sandbox.test\r\n"
    "Subject: Quarterly\r\n =?utf-8?B?cmVwb3J0?=\r\n"
    "Date: Tue, 01 Jul 2025 09:00:00 +0000\r\n"
    "Message-ID: <q1@sandbox.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello Bob,\r\nthe numbers.\r\n";

// ---- MIME helpers ---------------------------------------------------------------------------------------

TEST(Mime, HeadersUnfoldCaseInsensitiveAndLfOnly) {
    auto hb = mime::parse_headers("subject: a\n  folded\nX-A: 1\n\nbody\nNot: header\n");
    ASSERT_TRUE(hb);
    EXPECT_EQ(hb->get("SUBJECT").value_or(""), "a  folded");
    EXPECT_EQ(hb->get("x-a").value_or(""), "1");
    EXPECT_FALSE(hb->get("Not"));
    EXPECT_FALSE(hb->crlf);
    EXPECT_EQ(hb->body_offset, std::string("subject: a\n  folded\nX-A: 1\n\n").size());
}

TEST(Mime, RefusesAbsurdHeaderBlocks) {
    std::string many;
    for (int i = 0; i < 1500; ++i) many += "X-H: v\r\n";
    EXPECT_FALSE(mime::parse_headers(many + "\r\nbody"));
    std::string deep = "To: a@b.c " + std::string(100, '(') + "\r\n\r\n";
    EXPECT_FALSE(mime::parse_address_list(deep.substr(4)));
}

TEST(Mime, NestedMultipartBombIsBounded) {
    std::string msg = "From: a@b.c\r\nTo: d@e.f\r\n";
    for (int i = 0; i < 2000; ++i)
        msg += "Content-Type: multipart/mixed; boundary=\"b" + std::to_string(i) + "\"\r\n\r\n--b" +
               std::to_string(i) + "\r\n";
    msg += "Content-Type: text/plain\r\n\r\ndeep\r\n";
    auto sum = mime::summarize(msg);
    ASSERT_TRUE(sum);
    EXPECT_EQ(sum->to.at(0).address, "d@e.f");
    EXPECT_EQ(sum->body, "");  // the text part is beyond the depth limit and ignored
}

TEST(Mime, AddressListsQuirks) {
    auto a = mime::parse_address_list(
        "\"printer@x.test\" <printer@x.test>, Undisclosed recipients:;, bob@sandbox.test (Bob B), "
        "\"Doe, John\" <john@x.test>, Team: c@x.test, d@x.test;, =?utf-8?B?SsO8cmdlbg==?= <j@x.test>");
    ASSERT_TRUE(a);
    ASSERT_EQ(a->size(), 6u);
    EXPECT_EQ((*a)[0], (mime::Address{"printer@x.test", "printer@x.test"}));
    EXPECT_EQ((*a)[1], (mime::Address{"Bob B", "bob@sandbox.test"}));
    EXPECT_EQ((*a)[2], (mime::Address{"Doe, John", "john@x.test"}));
    EXPECT_EQ((*a)[3].address, "c@x.test");
    EXPECT_EQ((*a)[4].address, "d@x.test");
    EXPECT_EQ((*a)[5].name, "J\xC3\xBCrgen");
    auto none = mime::parse_address_list("Undisclosed recipients:;");
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
}

TEST(Mime, SummaryAndBccRemovalKeepsOtherBytes) {
    auto sum = mime::summarize(kMime);
    ASSERT_TRUE(sum);
    EXPECT_EQ(sum->subject, "Quarterly report");
    EXPECT_EQ(sum->to.size(), 2u);
    EXPECT_EQ(sum->cc[0].name, "Scan, Device");
    EXPECT_EQ(sum->bcc[0].address, "dave@sandbox.test");
    EXPECT_EQ(sum->message_id, "<q1@sandbox.test>");
    EXPECT_EQ(sum->date.value_or(0), 1751360400);
    std::string stripped = mime::remove_header(kMime, "bcc");
    std::string expected = kMime;
    expected.erase(expected.find("Bcc: dave@sandbox.test\r\n"),
                   std::string("Bcc: dave@sandbox.test\r\n").size());
    EXPECT_EQ(stripped, expected);
}

TEST(Mime, DatesRoundTrip) {
    EXPECT_EQ(mime::format_iso(1751364000), "2025-07-01T10:00:00Z");
    EXPECT_EQ(mime::format_rfc5322_date(1751364000), "Tue, 01 Jul 2025 10:00:00 +0000");
    EXPECT_EQ(mime::parse_rfc5322_date("1 Jul 2025 12:00 +0200").value_or(0), 1751364000);
    EXPECT_EQ(mime::parse_iso("2025-07-01T10:00:00.123Z").value_or(0), 1751364000);
    EXPECT_FALSE(mime::parse_iso("yesterday"));
}

// ---- sendMail -------------------------------------------------------------------------------------------

TEST_F(GraphTest, MimeSendMailDeliversToToCcAndBccWithoutBccHeader) {
    auto r = post_mime("/v1.0/users/alice@sandbox.test/sendMail", kMime);
    ASSERT_EQ(r.status, 202) << r.body;
    EXPECT_TRUE(r.body.empty());
    EXPECT_TRUE(r.header("request-id"));
    EXPECT_TRUE(r.header("client-request-id"));
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "inbox"), 1u);
    EXPECT_EQ(api_->count_messages("scanner@sandbox.test", "inbox"), 1u);
    EXPECT_EQ(api_->count_messages("dave@sandbox.test", "inbox"), 1u);
    EXPECT_EQ(api_->count_messages("alice@sandbox.test", "sentitems"), 1u);
    EXPECT_EQ(api_->count_messages("alice@sandbox.test", "inbox"), 0u);

    std::string without_bcc = kMime;
    without_bcc.erase(without_bcc.find("Bcc: "), std::string("Bcc: dave@sandbox.test\r\n").size());
    for (const char* user : {"bob@sandbox.test", "scanner@sandbox.test", "dave@sandbox.test"}) {
        auto ids = folder_ids(user, "inbox");
        ASSERT_EQ(ids.size(), 1u);
        EXPECT_EQ(value_of(user, ids[0]), without_bcc) << user;
        auto m = json(call("GET", std::string("/v1.0/users/") + user + "/messages/" + ids[0]));
        EXPECT_FALSE(m["isRead"].GetBool());
        EXPECT_FALSE(m["isDraft"].GetBool());
        EXPECT_EQ(s(m, "subject"), "Quarterly report");
        EXPECT_EQ(s(m, "internetMessageId"), "<q1@sandbox.test>");
        EXPECT_EQ(s(m, "sentDateTime"), "2025-07-01T09:00:00Z");
        EXPECT_EQ(s(m, "receivedDateTime"), "2025-07-01T10:00:00Z");
        EXPECT_EQ(m["bccRecipients"].Size(), 0u);
        EXPECT_EQ(s(m["from"]["emailAddress"], "address"), "alice@sandbox.test");
    }
    auto sent = folder_ids("alice@sandbox.test", "sentitems");
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(value_of("alice@sandbox.test", sent[0]), kMime);
    auto m = json(call("GET", "/v1.0/users/alice@sandbox.test/messages/" + sent[0]));
    EXPECT_TRUE(m["isRead"].GetBool());
    EXPECT_FALSE(m["isDraft"].GetBool());
    ASSERT_EQ(m["bccRecipients"].Size(), 1u);
}

TEST_F(GraphTest, MimeRecipientsComeOnlyFromHeaders) {
    // scanner would be an SMTP RCPT TO only: Graph has no envelope, so it must not be delivered.
    std::string mime_text = "From: alice@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: x\r\n\r\nbody\r\n";
    ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail", mime_text).status, 202);
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "inbox"), 1u);
    EXPECT_EQ(api_->count_messages("scanner@sandbox.test", "inbox"), 0u);
    EXPECT_EQ(api_->count_messages("dave@sandbox.test", "inbox"), 0u);
}

TEST_F(GraphTest, SendAsAnotherUserIsDenied) {
    std::string mime_text = "From: bob@sandbox.test\r\nTo: scanner@sandbox.test\r\nSubject: x\r\n\r\nb\r\n";
    auto r = post_mime("/v1.0/users/alice@sandbox.test/sendMail", mime_text);
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(error_code(r), "ErrorSendAsDenied");
    EXPECT_EQ(api_->count_messages("scanner@sandbox.test", "inbox"), 0u);
    EXPECT_EQ(api_->count_messages("alice@sandbox.test", "sentitems"), 0u);

    auto j = post_json("/v1.0/users/alice@sandbox.test/sendMail",
                       R"({"message":{"subject":"x","from":{"emailAddress":{"address":"bob@sandbox.test"}},
                          "toRecipients":[{"emailAddress":{"address":"scanner@sandbox.test"}}]}})");
    EXPECT_EQ(j.status, 403);
    EXPECT_EQ(error_code(j), "ErrorSendAsDenied");
    // The URL mailbox in another case, and a display name holding an @, are fine.
    std::string ok = "From: \"ALICE@sandbox.test\" <Alice@Sandbox.Test>\r\nTo: bob@sandbox.test\r\n\r\nb\r\n";
    EXPECT_EQ(post_mime("/v1.0/users/ALICE%40sandbox.test/sendMail", ok).status, 202);
}

TEST_F(GraphTest, MimeErrors) {
    auto bad = call("POST", "/v1.0/users/alice@sandbox.test/sendMail", "!!!not base64***",
                    {{"Content-Type", "text/plain"}});
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(error_code(bad), "ErrorMimeContentInvalidBase64String");

    auto none =
        post_mime("/v1.0/users/alice@sandbox.test/sendMail",
                  "From: alice@sandbox.test\r\nTo: Undisclosed recipients:;\r\nSubject: x\r\n\r\nb\r\n");
    EXPECT_EQ(none.status, 400);
    EXPECT_EQ(error_code(none), "ErrorInvalidRecipients");

    auto media =
        call("POST", "/v1.0/users/alice@sandbox.test/sendMail", "x", {{"Content-Type", "text/html"}});
    EXPECT_EQ(media.status, 415);
    EXPECT_EQ(error_code(media), "UnsupportedMediaType");
}

TEST_F(GraphTest, JsonSendMailWithoutSentCopy) {
    auto r = post_json("/v1.0/users/alice@sandbox.test/sendMail", R"({
        "message": {"subject": "Lunch?", "body": {"contentType": "Text", "content": "At noon."},
                    "toRecipients": [{"emailAddress": {"address": "bob@sandbox.test", "name": "Bob"}}],
                    "bccRecipients": [{"emailAddress": {"address": "dave@sandbox.test"}}]},
        "saveToSentItems": false})");
    ASSERT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(api_->count_messages("alice@sandbox.test", "sentitems"), 0u);
    EXPECT_EQ(api_->count_messages("dave@sandbox.test", "inbox"), 1u);
    auto ids = folder_ids("bob@sandbox.test", "inbox");
    ASSERT_EQ(ids.size(), 1u);
    std::string raw = value_of("bob@sandbox.test", ids[0]);
    EXPECT_NE(raw.find("Subject: Lunch?\r\n"), std::string::npos);
    EXPECT_NE(raw.find("From: Alice <alice@sandbox.test>\r\n"), std::string::npos);
    EXPECT_EQ(raw.find("Bcc:"), std::string::npos);
    auto m = json(call("GET", "/v1.0/users/bob@sandbox.test/messages/" + ids[0] + "?$select=body,subject"));
    EXPECT_EQ(s(m["body"], "content"), "At noon.");
    EXPECT_FALSE(m.HasMember("isRead"));

    ASSERT_EQ(
        post_json(
            "/v1.0/users/alice@sandbox.test/sendMail",
            R"({"message":{"subject":"s","toRecipients":[{"emailAddress":{"address":"bob@sandbox.test"}}]}})")
            .status,
        202);
    EXPECT_EQ(api_->count_messages("alice@sandbox.test", "sentitems"), 1u);  // default saveToSentItems=true
}

TEST_F(GraphTest, CustomHeaderRules) {
    auto send = [&](const std::string& headers) {
        return post_json(
            "/v1.0/users/alice@sandbox.test/sendMail",
            R"({"message":{"subject":"h","toRecipients":[{"emailAddress":{"address":"bob@sandbox.test"}}],
                            "internetMessageHeaders":)" +
                headers + "}}");
    };
    auto empty = send("[]");
    EXPECT_EQ(empty.status, 400);
    EXPECT_EQ(error_code(empty), "InvalidInternetMessageHeader");
    auto plain = send(R"([{"name":"Keywords","value":"v"}])");
    EXPECT_EQ(plain.status, 400);
    EXPECT_EQ(error_code(plain), "InvalidInternetMessageHeader");
    std::string six = "[";
    for (int i = 0; i < 6; ++i)
        six += std::string(i ? "," : "") + R"({"name":"X-H)" + std::to_string(i) + R"(","value":"v"})";
    auto too_many = send(six + "]");
    EXPECT_EQ(too_many.status, 400);
    EXPECT_EQ(error_code(too_many), "InvalidInternetMessageHeader");
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "inbox"), 0u);
    ASSERT_EQ(send(R"([{"name":"x-device","value":"MFP-3"}])").status, 202);
    auto ids = folder_ids("bob@sandbox.test", "inbox");
    ASSERT_EQ(ids.size(), 1u);
    EXPECT_NE(value_of("bob@sandbox.test", ids[0]).find("x-device: MFP-3\r\n"), std::string::npos);
}

// ---- drafts and upload sessions -------------------------------------------------------------------------

TEST_F(GraphTest, DraftUploadSessionInChunksThenSend) {
    auto d = post_json("/v1.0/users/alice@sandbox.test/messages", R"({"subject":"Scan",
        "body":{"contentType":"text","content":"see attached"},
        "toRecipients":[{"emailAddress":{"address":"bob@sandbox.test"}}]})");
    ASSERT_EQ(d.status, 201) << d.body;
    auto draft = json(d);
    EXPECT_TRUE(draft["isDraft"].GetBool());
    std::string draft_id = draft["id"].GetString();
    EXPECT_EQ(api_->count_messages("alice@sandbox.test", "drafts"), 1u);
    auto imm = json(call("GET", "/v1.0/users/alice@sandbox.test/messages/" + draft_id, {},
                         {{"Prefer", "IdType=\"ImmutableId\""}}));
    std::string immutable_id = imm["id"].GetString();
    EXPECT_NE(immutable_id, draft_id);

    std::string payload;
    for (int i = 0; i < 10000; ++i) payload.push_back(static_cast<char>((i * 7 + 3) % 256));
    auto big =
        post_json("/v1.0/users/alice@sandbox.test/messages/" + draft_id + "/attachments/createUploadSession",
                  R"({"AttachmentItem":{"attachmentType":"file","name":"scan.pdf","size":999999999}})");
    EXPECT_EQ(big.status, 400);
    auto us =
        post_json("/v1.0/users/alice@sandbox.test/messages/" + draft_id + "/attachments/createUploadSession",
                  R"({"AttachmentItem":{"attachmentType":"file","name":"scan.pdf","size":10000,
                           "contentType":"application/pdf"}})");
    ASSERT_EQ(us.status, 201) << us.body;
    auto session = json(us);
    std::string url = session["uploadUrl"].GetString();
    ASSERT_EQ(url.rfind(std::string(kBase) + "/upload/", 0), 0u);
    EXPECT_EQ(std::string(session["nextExpectedRanges"][0].GetString()), "0-");
    std::string path = url.substr(std::string(kBase).size());

    auto put = [&](std::size_t a, std::size_t b, bool auth_header = false) {
        HttpRequest req;
        req.method = "PUT";
        req.target = path;
        req.body = payload.substr(a, b - a + 1);
        req.headers = {{"Content-Type", "application/octet-stream"},
                       {"Content-Length", std::to_string(req.body.size())},
                       {"Content-Range", "bytes " + std::to_string(a) + "-" + std::to_string(b) + "/10000"}};
        if (auth_header) req.headers.emplace_back("Authorization", "Bearer abc");
        return api_->handle_upload(req);
    };
    auto first = put(0, 3999);
    ASSERT_EQ(first.status, 200) << first.body;
    EXPECT_EQ(std::string(json(first)["nextExpectedRanges"][0].GetString()), "4000");
    auto out_of_order = put(8000, 9999);
    EXPECT_EQ(out_of_order.status, 416);
    EXPECT_EQ(error_code(out_of_order), "ErrorInvalidRange");
    EXPECT_EQ(put(4000, 7999, true).status, 401);
    auto second = put(4000, 7999);
    ASSERT_EQ(second.status, 200);
    EXPECT_EQ(std::string(json(second)["nextExpectedRanges"][0].GetString()), "8000");
    auto last = put(8000, 9999);
    ASSERT_EQ(last.status, 201) << last.body;
    EXPECT_TRUE(last.body.empty());
    EXPECT_TRUE(last.header("Location"));
    EXPECT_EQ(put(0, 10).status, 404);  // the session is finished

    auto atts = json(call("GET", "/v1.0/users/alice@sandbox.test/messages/" + draft_id + "/attachments"));
    ASSERT_EQ(atts["value"].Size(), 1u);
    EXPECT_EQ(atts["value"][0]["size"].GetUint64(), 10000u);

    auto sendr = call("POST", "/v1.0/users/alice@sandbox.test/messages/" + draft_id + "/send", {},
                      {{"Content-Length", "0"}});
    ASSERT_EQ(sendr.status, 202) << sendr.body;
    EXPECT_EQ(api_->count_messages("alice@sandbox.test", "drafts"), 0u);
    EXPECT_EQ(api_->count_messages("alice@sandbox.test", "sentitems"), 1u);
    // the draft's immutable id finds the Sent Items copy
    auto sent = json(call("GET", "/v1.0/users/alice@sandbox.test/messages/" + immutable_id));
    EXPECT_FALSE(sent["isDraft"].GetBool());
    EXPECT_TRUE(sent["hasAttachments"].GetBool());
    auto sent_folder = json(call("GET", "/v1.0/users/alice@sandbox.test/mailFolders/sentitems"));
    EXPECT_EQ(s(sent, "parentFolderId"), s(sent_folder, "id"));

    auto ids = folder_ids("bob@sandbox.test", "inbox");
    ASSERT_EQ(ids.size(), 1u);
    std::string raw = value_of("bob@sandbox.test", ids[0]);
    EXPECT_NE(raw.find("multipart/mixed"), std::string::npos);
    auto part = raw.find("filename=\"scan.pdf\"");
    ASSERT_NE(part, std::string::npos);
    auto body_start = raw.find("\r\n\r\n", part) + 4;
    auto body_end = raw.find("--", body_start);
    auto decoded = auth::base64_decode(raw.substr(body_start, body_end - body_start));
    ASSERT_TRUE(decoded);
    EXPECT_EQ(*decoded, payload);
    auto bob_msg = json(call("GET", "/v1.0/users/bob@sandbox.test/messages/" + ids[0]));
    EXPECT_TRUE(bob_msg["hasAttachments"].GetBool());
    EXPECT_EQ(s(bob_msg["body"], "content"), "see attached");
}

TEST_F(GraphTest, UploadSessionOnlyForDraftsAndSmallAttachments) {
    ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail", kMime).status, 202);
    auto sent = folder_ids("alice@sandbox.test", "sentitems");
    auto r =
        post_json("/v1.0/users/alice@sandbox.test/messages/" + sent[0] + "/attachments/createUploadSession",
                  R"({"AttachmentItem":{"attachmentType":"file","name":"a","size":10}})");
    EXPECT_EQ(r.status, 400);
    auto d = json(post_json("/v1.0/users/alice@sandbox.test/messages", R"({"subject":"d"})"));
    auto a = post_json(
        "/v1.0/users/alice@sandbox.test/messages/" + std::string(d["id"].GetString()) + "/attachments",
        R"({"@odata.type":"#microsoft.graph.fileAttachment","name":"a.txt","contentBytes":"aGVsbG8="})");
    ASSERT_EQ(a.status, 201) << a.body;
    EXPECT_EQ(json(a)["size"].GetUint64(), 5u);
    HttpRequest req;
    req.method = "PUT";
    req.target = "/upload/doesnotexist";
    EXPECT_EQ(api_->handle_upload(req).status, 404);
}

// ---- folders ----------------------------------------------------------------------------------------------

TEST_F(GraphTest, FolderLifecycle) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    auto c = post_json(u + "/mailFolders", R"({"displayName":"Projects"})");
    ASSERT_EQ(c.status, 201) << c.body;
    std::string pid = json(c)["id"].GetString();
    auto dup = post_json(u + "/mailFolders", R"({"displayName":"projects"})");
    EXPECT_EQ(dup.status, 409);
    EXPECT_EQ(error_code(dup), "ErrorFolderExists");
    auto child = post_json(u + "/mailFolders/" + pid + "/childFolders", R"({"displayName":"2025"})");
    ASSERT_EQ(child.status, 201);
    std::string cid = json(child)["id"].GetString();
    EXPECT_EQ(s(json(child), "parentFolderId"), pid);
    auto kids = json(call("GET", u + "/mailFolders/" + pid + "/childFolders"));
    ASSERT_EQ(kids["value"].Size(), 1u);
    EXPECT_EQ(s(kids["value"][0], "displayName"), "2025");
    EXPECT_EQ(json(call("GET", u + "/mailFolders/" + pid))["childFolderCount"].GetInt(), 1);

    auto ren = patch(u + "/mailFolders/" + cid, R"({"displayName":"2026"})");
    ASSERT_EQ(ren.status, 200);
    EXPECT_EQ(s(json(ren), "displayName"), "2026");
    EXPECT_EQ(patch(u + "/mailFolders/" + pid, R"({"displayName":"Inbox"})").status, 409);

    auto wk = call("DELETE", u + "/mailFolders/inbox");
    EXPECT_EQ(wk.status, 403);
    EXPECT_EQ(error_code(wk), "ErrorDeleteDistinguishedFolder");

    // a message filed in the child goes away with the folder
    ASSERT_EQ(post_json(u + "/mailFolders/" + cid + "/messages", R"({"subject":"filed"})").status, 201);
    EXPECT_EQ(call("DELETE", u + "/mailFolders/" + pid).status, 204);
    EXPECT_EQ(call("GET", u + "/mailFolders/" + pid).status, 404);
    EXPECT_EQ(call("GET", u + "/mailFolders/" + cid).status, 404);
    EXPECT_EQ(error_code(call("GET", u + "/mailFolders/" + cid)), "ErrorItemNotFound");
}

TEST_F(GraphTest, FolderListPagingAndHidden) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    ASSERT_EQ(post_json(u + "/mailFolders", R"({"displayName":"Secret","isHidden":true})").status, 201);
    for (int i = 0; i < 5; ++i)
        ASSERT_EQ(post_json(u + "/mailFolders", R"({"displayName":"F)" + std::to_string(i) + R"("})").status,
                  201);
    // 7 well-known top folders + 5 visible user folders = 12 -> default page 10
    auto p1 = json(call("GET", u + "/mailFolders"));
    EXPECT_EQ(p1["value"].Size(), 10u);
    ASSERT_TRUE(p1.HasMember("@odata.nextLink"));
    std::string next = p1["@odata.nextLink"].GetString();
    EXPECT_EQ(next.rfind(kBase, 0), 0u);
    auto p2 = json(call("GET", next));
    EXPECT_EQ(p2["value"].Size(), 2u);
    EXPECT_FALSE(p2.HasMember("@odata.nextLink"));
    std::set<std::string> names;
    for (auto* page : {&p1, &p2})
        for (const auto& f : (*page)["value"].GetArray()) names.insert(f["displayName"].GetString());
    EXPECT_EQ(names.size(), 12u);
    EXPECT_TRUE(names.count("Inbox"));
    EXPECT_TRUE(names.count("Sent Items"));
    EXPECT_FALSE(names.count("Secret"));
    auto all = json(call("GET", u + "/mailFolders?includeHiddenFolders=true&$top=50"));
    EXPECT_EQ(all["value"].Size(), 13u);
    auto three = json(call("GET", u + "/mailFolders?$top=3"));
    EXPECT_EQ(three["value"].Size(), 3u);
    auto root = json(call("GET", u + "/mailFolders/msgfolderroot"));
    auto inbox = json(call("GET", u + "/mailFolders/INBOX"));
    EXPECT_EQ(s(inbox, "parentFolderId"), s(root, "id"));
    EXPECT_EQ(s(inbox, "displayName"), "Inbox");
}

// ---- listing
// ------------------------------------------------------------------------------------------------

TEST_F(GraphTest, ListMessagesPagingOrderAndFilter) {
    for (int i = 0; i < 25; ++i) {
        now_ += 60;
        ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail",
                            "From: alice@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: m" +
                                std::to_string(i) + "\r\n\r\nbody\r\n")
                      .status,
                  202);
    }
    auto p1 = json(call(
        "GET", "/v1.0/users/bob@sandbox.test/mailFolders/inbox/messages?$select=subject,receivedDateTime"));
    ASSERT_EQ(p1["value"].Size(), 10u);
    EXPECT_EQ(s(p1["value"][0], "subject"), "m24");
    EXPECT_FALSE(p1["value"][0].HasMember("body"));
    std::vector<std::string> subjects;
    std::string url = "/v1.0/users/bob@sandbox.test/mailFolders/inbox/messages?$select=subject&$top=7";
    int pages = 0;
    while (!url.empty() && pages < 20) {
        auto d = json(call("GET", url));
        for (const auto& m : d["value"].GetArray()) subjects.push_back(m["subject"].GetString());
        url = d.HasMember("@odata.nextLink") ? d["@odata.nextLink"].GetString() : "";
        ++pages;
    }
    EXPECT_EQ(pages, 4);
    ASSERT_EQ(subjects.size(), 25u);
    EXPECT_EQ(subjects.front(), "m24");
    EXPECT_EQ(subjects.back(), "m0");

    auto ids = folder_ids("bob@sandbox.test", "inbox");
    ASSERT_EQ(patch("/v1.0/users/bob@sandbox.test/messages/" + ids[0], R"({"isRead":true})").status, 200);
    auto unread = json(
        call("GET",
             "/v1.0/users/bob@sandbox.test/mailFolders/inbox/messages?$filter=isRead%20eq%20false&$top=100"));
    EXPECT_EQ(unread["value"].Size(), 24u);
    auto read = json(call("GET", "/v1.0/users/bob@sandbox.test/messages?$filter=isRead eq true"));
    EXPECT_EQ(read["value"].Size(), 1u);
    auto badf = call("GET", "/v1.0/users/bob@sandbox.test/messages?$filter=subject eq 'x'");
    EXPECT_EQ(badf.status, 400);
    EXPECT_EQ(error_code(badf), "ErrorInvalidUrlQueryFilter");
    EXPECT_EQ(call("GET", "/v1.0/users/bob@sandbox.test/messages?$top=0").status, 400);
    EXPECT_EQ(call("GET", "/v1.0/users/bob@sandbox.test/messages?$select=nope").status, 400);
    auto inbox = json(call("GET", "/v1.0/users/bob@sandbox.test/mailFolders/inbox"));
    EXPECT_EQ(inbox["totalItemCount"].GetInt(), 25);
    EXPECT_EQ(inbox["unreadItemCount"].GetInt(), 24);
}

// ---- delta
// --------------------------------------------------------------------------------------------------

TEST_F(GraphTest, DeltaRoundsShowExactlyTheChanges) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    for (int i = 0; i < 5; ++i) {
        now_ += 10;
        ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail",
                            "From: alice@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: d" +
                                std::to_string(i) + "\r\n\r\nbody\r\n")
                      .status,
                  202);
    }
    std::map<std::string, std::string> subject_of;  // id -> subject
    std::string url = u + "/mailFolders/inbox/messages/delta?$select=subject,isRead&$top=2";
    std::string delta_link;
    int pages = 0;
    while (!url.empty() && pages < 10) {
        auto r = call("GET", url);
        ASSERT_EQ(r.status, 200) << r.body;
        auto d = json(r);
        ++pages;
        EXPECT_FALSE(d.HasMember("@odata.nextLink") && d.HasMember("@odata.deltaLink"));
        for (const auto& m : d["value"].GetArray()) {
            subject_of[m["id"].GetString()] = m["subject"].GetString();
            EXPECT_FALSE(m.HasMember("body"));
        }
        if (d.HasMember("@odata.nextLink")) {
            url = d["@odata.nextLink"].GetString();
            EXPECT_NE(url.find("skiptoken="), std::string::npos);
        } else {
            ASSERT_TRUE(d.HasMember("@odata.deltaLink"));
            delta_link = d["@odata.deltaLink"].GetString();
            EXPECT_NE(delta_link.find("deltatoken="), std::string::npos);
            url.clear();
        }
    }
    EXPECT_EQ(pages, 3);
    ASSERT_EQ(subject_of.size(), 5u);
    std::map<std::string, std::string> id_of;
    for (const auto& [id, subj] : subject_of) id_of[subj] = id;

    // nothing changed yet -> empty round
    auto quiet = json(call("GET", delta_link));
    EXPECT_EQ(quiet["value"].Size(), 0u);
    delta_link = quiet["@odata.deltaLink"].GetString();

    ASSERT_EQ(patch(u + "/messages/" + id_of["d0"], R"({"isRead":true})").status, 200);
    ASSERT_EQ(post_json(u + "/messages/" + id_of["d1"] + "/move", R"({"destinationId":"archive"})").status,
              201);
    ASSERT_EQ(call("DELETE", u + "/messages/" + id_of["d2"]).status, 204);
    ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail",
                        "From: alice@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: d5\r\n\r\nbody\r\n")
                  .status,
              202);

    // $top=2 from the first call is baked into the tokens: the 4 changes come on 2 pages
    std::set<std::string> removed, updated_subjects;
    std::size_t entries = 0;
    std::string next_delta;
    url = delta_link;
    pages = 0;
    while (!url.empty() && pages < 10) {
        auto r = call("GET", url);
        ASSERT_EQ(r.status, 200) << r.body;
        auto d = json(r);
        ++pages;
        EXPECT_FALSE(d.HasMember("@odata.nextLink") && d.HasMember("@odata.deltaLink"));
        for (const auto& m : d["value"].GetArray()) {
            ++entries;
            if (m.HasMember("@removed")) {
                EXPECT_EQ(s(m["@removed"], "reason"), "deleted");
                removed.insert(m["id"].GetString());
            } else {
                updated_subjects.insert(m["subject"].GetString());
                if (s(m, "subject") == "d0") {
                    EXPECT_TRUE(m["isRead"].GetBool());
                }
                if (s(m, "subject") == "d5") {
                    EXPECT_FALSE(m["isRead"].GetBool());
                }
            }
        }
        if (d.HasMember("@odata.nextLink")) {
            url = d["@odata.nextLink"].GetString();
        } else {
            next_delta = d["@odata.deltaLink"].GetString();
            url.clear();
        }
    }
    EXPECT_EQ(pages, 2);
    EXPECT_EQ(entries, 4u);
    EXPECT_EQ(removed, (std::set<std::string>{id_of["d1"], id_of["d2"]}));
    EXPECT_EQ(updated_subjects, (std::set<std::string>{"d0", "d5"}));
    ASSERT_FALSE(next_delta.empty());

    EXPECT_EQ(json(call("GET", next_delta))["value"].Size(), 0u);

    // garbled token -> 400; expired -> 410 SyncStateNotFound
    std::string garbled = next_delta;
    garbled[garbled.size() - 3] = garbled[garbled.size() - 3] == 'A' ? 'B' : 'A';
    EXPECT_EQ(call("GET", garbled).status, 400);
    api_->expire_delta_tokens();
    auto gone = call("GET", next_delta);
    EXPECT_EQ(gone.status, 410);
    EXPECT_EQ(error_code(gone), "SyncStateNotFound");
    // a fresh initial sync works again and sees the 4 messages now in the inbox
    EXPECT_EQ(json(call("GET", u + "/mailFolders/inbox/messages/delta"))["value"].Size(), 4u);
}

TEST_F(GraphTest, DeltaPagingWithPreferMaxPageSize) {
    for (int i = 0; i < 3; ++i)
        ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail",
                            "From: alice@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: p\r\n\r\nb\r\n")
                      .status,
                  202);
    auto d = json(call("GET", "/v1.0/users/bob@sandbox.test/mailFolders/inbox/messages/delta", {},
                       {{"Prefer", "odata.maxpagesize=1"}}));
    EXPECT_EQ(d["value"].Size(), 1u);
    EXPECT_TRUE(d.HasMember("@odata.nextLink"));
    // a token from another folder is refused
    std::string link = d["@odata.nextLink"].GetString();
    auto token = link.substr(link.find("skiptoken=") + 10);
    EXPECT_EQ(
        call("GET", "/v1.0/users/bob@sandbox.test/mailFolders/archive/messages/delta?$skiptoken=" + token)
            .status,
        400);
}

// ---- ids, create, move, copy, delete ----------------------------------------------------------------------

TEST_F(GraphTest, MoveChangesRestIdButNotImmutableId) {
    ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail", kMime).status, 202);
    const std::string u = "/v1.0/users/bob@sandbox.test";
    std::string rest_id = folder_ids("bob@sandbox.test", "inbox").at(0);
    const std::vector<std::pair<std::string, std::string>> prefer = {{"Prefer", "IdType=\"ImmutableId\""}};
    auto imm = json(call("GET", u + "/messages/" + rest_id, {}, prefer));
    std::string immutable_id = imm["id"].GetString();
    ASSERT_NE(immutable_id, rest_id);

    auto mv = post_json(u + "/messages/" + rest_id + "/move", R"({"destinationId":"archive"})");
    ASSERT_EQ(mv.status, 201);
    std::string new_rest = json(mv)["id"].GetString();
    EXPECT_NE(new_rest, rest_id);
    EXPECT_NE(new_rest, immutable_id);
    auto old = call("GET", u + "/messages/" + rest_id);
    EXPECT_EQ(old.status, 404);
    EXPECT_EQ(error_code(old), "ErrorItemNotFound");
    EXPECT_EQ(call("GET", u + "/messages/" + new_rest).status, 200);

    auto mv2 = post_json(u + "/messages/" + immutable_id + "/move", R"({"destinationId":"inbox"})", prefer);
    ASSERT_EQ(mv2.status, 201);
    EXPECT_EQ(std::string(json(mv2)["id"].GetString()), immutable_id);
    EXPECT_EQ(mv2.header("Preference-Applied").value_or(""), "IdType=\"ImmutableId\"");
    auto listed = json(call("GET", u + "/mailFolders/inbox/messages", {}, prefer));
    EXPECT_EQ(std::string(listed["value"][0]["id"].GetString()), immutable_id);
    EXPECT_EQ(call("GET", u + "/messages/" + new_rest).status, 404);
    auto lower_case = immutable_id;
    for (auto& c : lower_case) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(call("GET", u + "/messages/" + lower_case).status, 404);  // ids are case-sensitive

    auto cp =
        post_json(u + "/messages/" + immutable_id + "/copy", R"({"destinationId":"deleteditems"})", prefer);
    ASSERT_EQ(cp.status, 201);
    EXPECT_NE(std::string(json(cp)["id"].GetString()), immutable_id);
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "deleteditems"), 1u);
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "inbox"), 1u);
    EXPECT_EQ(post_json(u + "/messages/" + immutable_id + "/move", R"({"destinationId":"nowhere"})").status,
              404);

    EXPECT_EQ(call("DELETE", u + "/messages/" + immutable_id).status, 204);
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "inbox"), 0u);
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "deleteditems"), 1u);  // soft delete != Deleted Items
    std::string copy_id = json(cp)["id"].GetString();
    EXPECT_EQ(call("POST", u + "/messages/" + copy_id + "/permanentDelete").status, 204);
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "deleteditems"), 0u);
}

TEST_F(GraphTest, JsonCreateWithMessageFlagsIsNotADraft) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    auto r = post_json(u + "/mailFolders/inbox/messages", R"({"subject":"appended",
        "from":{"emailAddress":{"address":"someone@example.com"}},
        "toRecipients":[{"emailAddress":{"address":"bob@sandbox.test"}}],
        "singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"1"},
                                         {"id":"SystemTime 0x0E06","value":"2024-12-24T08:00:00Z"}]})");
    ASSERT_EQ(r.status, 201) << r.body;
    auto m = json(r);
    EXPECT_FALSE(m["isDraft"].GetBool());
    EXPECT_TRUE(m["isRead"].GetBool());
    EXPECT_EQ(s(m, "receivedDateTime"), "2024-12-24T08:00:00Z");
    std::string id = m["id"].GetString();
    auto x = json(call(
        "GET",
        u + "/messages/" + id +
            "?$select=subject&$expand=singleValueExtendedProperties($filter=id%20eq%20'Integer%200x0E07')"));
    ASSERT_TRUE(x.HasMember("singleValueExtendedProperties"));
    ASSERT_EQ(x["singleValueExtendedProperties"].Size(), 1u);
    EXPECT_EQ(s(x["singleValueExtendedProperties"][0], "id"), "Integer 0xe07");
    EXPECT_EQ(s(x["singleValueExtendedProperties"][0], "value"), "1");

    auto unread = json(post_json(
        u + "/mailFolders/inbox/messages",
        R"({"subject":"u","singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"0"}]})"));
    EXPECT_FALSE(unread["isDraft"].GetBool());
    EXPECT_FALSE(unread["isRead"].GetBool());
    auto draft = json(post_json(
        u + "/mailFolders/inbox/messages",
        R"({"subject":"d","singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"9"}]})"));
    EXPECT_TRUE(draft["isDraft"].GetBool());

    auto mime_created = post_mime(u + "/mailFolders/inbox/messages", kMime);
    ASSERT_EQ(mime_created.status, 201) << mime_created.body;
    auto mc = json(mime_created);
    EXPECT_TRUE(mc["isDraft"].GetBool());
    EXPECT_EQ(s(mc, "subject"), "Quarterly report");
    EXPECT_EQ(value_of("bob@sandbox.test", mc["id"].GetString()), kMime);
    // MIME-created messages land in Drafts when posted to /messages
    ASSERT_EQ(post_mime(u + "/messages", kMime).status, 201);
    EXPECT_EQ(api_->count_messages("bob@sandbox.test", "drafts"), 1u);
}

TEST_F(GraphTest, PatchRulesAndChangeKey) {
    ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail", kMime).status, 202);
    const std::string u = "/v1.0/users/bob@sandbox.test";
    std::string id = folder_ids("bob@sandbox.test", "inbox").at(0);
    auto before = json(call("GET", u + "/messages/" + id));
    auto r = patch(u + "/messages/" + id,
                   R"({"isRead":true,"flag":{"flagStatus":"flagged"},"categories":["Red","Blue"],
                      "singleValueExtendedProperties":[{"id":"Integer 0x1081","value":"102"}]})");
    ASSERT_EQ(r.status, 200) << r.body;
    auto after = json(r);
    EXPECT_TRUE(after["isRead"].GetBool());
    EXPECT_EQ(s(after["flag"], "flagStatus"), "flagged");
    EXPECT_EQ(after["categories"].Size(), 2u);
    EXPECT_NE(s(after, "changeKey"), s(before, "changeKey"));
    auto x = json(call("GET", u + "/messages/" + id +
                                  "?$expand=singleValueExtendedProperties($filter=id eq 'Integer 0x1081')"));
    EXPECT_EQ(s(x["singleValueExtendedProperties"][0], "value"), "102");

    auto draft_flag = patch(u + "/messages/" + id, R"({"isDraft":true})");
    EXPECT_EQ(draft_flag.status, 400);
    EXPECT_EQ(patch(u + "/messages/" + id, R"({"subject":"changed"})").status, 400);
    EXPECT_EQ(patch(u + "/messages/" + id, R"({"flag":{"flagStatus":"bogus"}})").status, 400);
    EXPECT_EQ(patch(u + "/messages/" + id, R"({"unknownProp":1})").status, 400);
    EXPECT_EQ(patch(u + "/messages/" + id, "{not json").status, 400);

    auto d = json(post_json(u + "/messages", R"({"subject":"draft"})"));
    std::string did = d["id"].GetString();
    auto dp = patch(u + "/messages/" + did,
                    R"({"subject":"renamed","body":{"contentType":"html","content":"<b>x</b>"}})");
    ASSERT_EQ(dp.status, 200);
    EXPECT_EQ(s(json(dp), "subject"), "renamed");
    EXPECT_NE(value_of("bob@sandbox.test", did).find("Subject: renamed\r\n"), std::string::npos);
    // PUT $value replaces a draft's MIME
    auto put = call("PUT", u + "/messages/" + did + "/$value", auth::base64_encode(kMime),
                    {{"Content-Type", "text/plain"}});
    EXPECT_EQ(put.status, 204);
    EXPECT_EQ(value_of("bob@sandbox.test", did), kMime);
    EXPECT_EQ(call("PUT", u + "/messages/" + id + "/$value", auth::base64_encode(kMime),
                   {{"Content-Type", "text/plain"}})
                  .status,
              400);
}

// ---- permissions and errors
// --------------------------------------------------------------------------------

TEST_F(GraphTest, PermissionChecks) {
    AccessToken none;
    auto r = call("GET", "/v1.0/users/alice@sandbox.test/messages", {}, {}, &none);
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(error_code(r), "ErrorAccessDenied");
    EXPECT_EQ(s(json(r)["error"], "message"), "Either scp or roles claim need to be present in the token.");

    AccessToken send_only;
    send_only.roles = {"Mail.Send"};
    ASSERT_EQ(post_mime("/v1.0/users/alice@sandbox.test/sendMail", kMime).status, 202);
    std::string id = folder_ids("bob@sandbox.test", "inbox").at(0);
    auto p = call("PATCH", "/v1.0/users/bob@sandbox.test/messages/" + id, R"({"isRead":true})",
                  {{"Content-Type", "application/json"}}, &send_only);
    EXPECT_EQ(p.status, 403);
    EXPECT_EQ(error_code(p), "ErrorAccessDenied");
    EXPECT_EQ(s(json(p)["error"], "message"), "Access is denied. Check credentials and try again.");
    EXPECT_EQ(call("GET", "/v1.0/users/bob@sandbox.test/messages", {}, {}, &send_only).status, 403);
    EXPECT_EQ(call("POST", "/v1.0/users/alice@sandbox.test/sendMail", auth::base64_encode(kMime),
                   {{"Content-Type", "text/plain"}}, &send_only)
                  .status,
              202);

    AccessToken read_only;
    read_only.roles = {"Mail.Read"};
    EXPECT_EQ(call("GET", "/v1.0/users/bob@sandbox.test/messages/" + id, {}, {}, &read_only).status, 200);
    EXPECT_EQ(call("POST", "/v1.0/users/alice@sandbox.test/sendMail", auth::base64_encode(kMime),
                   {{"Content-Type", "text/plain"}}, &read_only)
                  .status,
              403);
    EXPECT_EQ(call("DELETE", "/v1.0/users/bob@sandbox.test/messages/" + id, {}, {}, &read_only).status, 403);
}

TEST_F(GraphTest, ErrorsHaveGraphShapeAndRequestIds) {
    auto r = call("GET", "/v1.0/users/nobody@sandbox.test/messages", {}, {{"client-request-id", "my-id-1"}});
    EXPECT_EQ(r.status, 404);
    auto d = json(r);
    EXPECT_EQ(s(d["error"], "code"), "ErrorInvalidUser");
    EXPECT_EQ(s(d["error"], "message"), "The requested user 'nobody@sandbox.test' is invalid.");
    EXPECT_EQ(s(d["error"]["innerError"], "client-request-id"), "my-id-1");
    EXPECT_EQ(s(d["error"]["innerError"], "date"), "2025-07-01T10:00:00Z");
    EXPECT_EQ(s(d["error"]["innerError"], "request-id"), std::string(r.header("request-id").value_or("?")));
    EXPECT_EQ(r.header("client-request-id").value_or(""), "my-id-1");

    const std::vector<HttpResponse> errors = {
        call("GET", "/v1.0/users/alice@sandbox.test/messages/AAMkdoesnotexist"),
        call("GET", "/v1.0/users/alice@sandbox.test/bogus"),
        call("DELETE", "/v1.0/users/alice@sandbox.test/sendMail"),
        call("GET", "/v1.0/me/messages"),
        call("GET", "/v1.0/users/alice@sandbox.test/mailFolders/nope/messages"),
        call("POST", "/v1.0/users/alice@sandbox.test/mailFolders", "[1,2]",
             {{"Content-Type", "application/json"}}),
    };
    const std::vector<int> statuses = {404, 400, 405, 400, 404, 400};
    for (std::size_t i = 0; i < errors.size(); ++i) {
        EXPECT_EQ(errors[i].status, statuses[i]) << i << " " << errors[i].body;
        auto e = json(errors[i]);
        ASSERT_TRUE(e.HasMember("error")) << i;
        EXPECT_NE(s(e["error"], "code"), "<missing>");
        EXPECT_NE(s(e["error"]["innerError"], "request-id"), "<missing>");
        EXPECT_TRUE(errors[i].header("request-id"));
    }
    EXPECT_EQ(errors[2].header("Allow").value_or(""), "POST");

    // the user segment: GUID or UPN, percent-decoded, case-insensitive
    EXPECT_EQ(call("GET", "/v1.0/users/BBBBBBBB-0000-4000-8000-000000000002/mailFolders/inbox").status, 200);
    EXPECT_EQ(call("GET", "/v1.0/users/Bob%40Sandbox.test/mailFolders/inbox").status, 200);
}

TEST_F(GraphTest, MailboxOf) {
    HttpRequest req;
    req.method = "GET";
    req.target = "/v1.0/users/Bob%40SANDBOX.test/messages?$top=1";
    EXPECT_EQ(api_->mailbox_of(req), "bob@sandbox.test");
    req.target = "/v1.0/users/cccccccc-0000-4000-8000-000000000003/mailFolders";
    EXPECT_EQ(api_->mailbox_of(req), "scanner@sandbox.test");
    req.target = "/v1.0/users/ghost@sandbox.test/messages";
    EXPECT_EQ(api_->mailbox_of(req), "");
    req.target = "/upload/abc";
    EXPECT_EQ(api_->mailbox_of(req), "");
}

}  // namespace
}  // namespace gb::sandbox
