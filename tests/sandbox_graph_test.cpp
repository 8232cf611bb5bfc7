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

TEST_F(GraphTest, FolderNamesAreUniqueCaseInsensitivelyUnderOneParent) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    std::string a = json(post_json(u + "/mailFolders", R"({"displayName":"Clients"})"))["id"].GetString();
    std::string b = json(post_json(u + "/mailFolders", R"({"displayName":"Vendors"})"))["id"].GetString();
    ASSERT_EQ(post_json(u + "/mailFolders/" + a + "/childFolders", R"({"displayName":"Reports"})").status,
              201);
    auto dup = post_json(u + "/mailFolders/" + a + "/childFolders", R"({"displayName":"REPORTS"})");
    EXPECT_EQ(dup.status, 409);
    EXPECT_EQ(error_code(dup), "ErrorFolderExists");
    EXPECT_EQ(s(json(dup)["error"], "message"), "A folder with the specified name already exists.");
    // the same name under another parent is fine
    auto other = post_json(u + "/mailFolders/" + b + "/childFolders", R"({"displayName":"reports"})");
    ASSERT_EQ(other.status, 201);
    std::string vr = json(other)["id"].GetString();
    // Exchange folds case beyond ASCII
    ASSERT_EQ(
        post_json(u + "/mailFolders/" + a + "/childFolders", "{\"displayName\":\"\xC3\x84rger\"}").status,
        201);
    EXPECT_EQ(
        post_json(u + "/mailFolders/" + a + "/childFolders", "{\"displayName\":\"\xC3\xA4rger\"}").status,
        409);
    EXPECT_EQ(
        post_json(u + "/mailFolders/" + a + "/childFolders", "{\"displayName\":\"\xC3\xA4rger2\"}").status,
        201);

    // rename: a sibling's name in another case conflicts, a case change of the folder's own name does not
    EXPECT_EQ(patch(u + "/mailFolders/" + b, R"({"displayName":"clients"})").status, 409);
    auto own = patch(u + "/mailFolders/" + vr, R"({"displayName":"REPORTS"})");
    ASSERT_EQ(own.status, 200) << own.body;
    EXPECT_EQ(s(json(own), "displayName"), "REPORTS");

    // no name, an empty or blank name, or null: 400
    for (const char* body :
         {R"({})", R"({"displayName":""})", R"({"displayName":"   "})", R"({"displayName":null})"}) {
        auto r = post_json(u + "/mailFolders/" + a + "/childFolders", body);
        EXPECT_EQ(r.status, 400) << body;
        EXPECT_EQ(error_code(r), "ErrorInvalidParameter") << body;
    }
    EXPECT_EQ(post_json(u + "/mailFolders", R"({"displayName":""})").status, 400);
    EXPECT_EQ(patch(u + "/mailFolders/" + b, R"({"displayName":""})").status, 400);
    EXPECT_EQ(patch(u + "/mailFolders/" + b, R"({"displayName":null})").status, 400);
    EXPECT_EQ(s(json(call("GET", u + "/mailFolders/" + b)), "displayName"), "Vendors");
}

TEST_F(GraphTest, FolderMoveKeepsIdAndContents) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    auto mk = [&](const std::string& parent, const std::string& name) {
        auto r = parent.empty() ? post_json(u + "/mailFolders", R"({"displayName":")" + name + R"("})")
                                : post_json(u + "/mailFolders/" + parent + "/childFolders",
                                            R"({"displayName":")" + name + R"("})");
        EXPECT_EQ(r.status, 201) << r.body;
        return std::string(json(r)["id"].GetString());
    };
    std::string a = mk("", "A"), b = mk("", "B"), c = mk(a, "C"), d = mk(c, "D");
    auto filed = post_json(
        u + "/mailFolders/" + c + "/messages",
        R"({"subject":"kept","singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"1"}]})");
    ASSERT_EQ(filed.status, 201);
    std::string mid = json(filed)["id"].GetString();

    auto mv = post_json(u + "/mailFolders/" + c + "/move", R"({"destinationId":")" + b + R"("})");
    ASSERT_EQ(mv.status, 201) << mv.body;
    auto moved = json(mv);
    EXPECT_EQ(s(moved, "id"), c);
    EXPECT_EQ(s(moved, "parentFolderId"), b);
    EXPECT_EQ(s(moved, "displayName"), "C");
    EXPECT_EQ(moved["totalItemCount"].GetInt(), 1);
    EXPECT_NE(s(moved, "@odata.context").find("mailFolders/$entity"), std::string::npos);
    EXPECT_EQ(json(call("GET", u + "/mailFolders/" + a))["childFolderCount"].GetInt(), 0);
    EXPECT_EQ(json(call("GET", u + "/mailFolders/" + b))["childFolderCount"].GetInt(), 1);
    EXPECT_EQ(s(json(call("GET", u + "/mailFolders/" + d)), "parentFolderId"), c);  // the subtree came along
    auto msg = call("GET", u + "/mailFolders/" + c + "/messages/" + mid);
    EXPECT_EQ(msg.status, 200);  // messages keep their ids: the folder id did not change
    EXPECT_EQ(s(json(msg), "parentFolderId"), c);

    // into itself or below itself: 400; the tree is unchanged
    for (const std::string& dest : {b, c, d}) {
        auto r = post_json(u + "/mailFolders/" + b + "/move", R"({"destinationId":")" + dest + R"("})");
        EXPECT_EQ(r.status, 400) << dest << " " << r.body;
        EXPECT_EQ(error_code(r), "ErrorMoveCopyFailed");
    }
    EXPECT_EQ(s(json(call("GET", u + "/mailFolders/" + b)), "parentFolderId"),
              s(json(call("GET", u + "/mailFolders/msgfolderroot")), "id"));

    // well-known folders stay where they are, even moved by name
    for (const char* wk : {"inbox", "sentitems", "msgfolderroot"}) {
        auto r = post_json(u + "/mailFolders/" + wk + "/move", R"({"destinationId":")" + a + R"("})");
        EXPECT_EQ(r.status, 403) << wk;
        EXPECT_EQ(error_code(r), "ErrorMoveDistinguishedFolder") << wk;
    }
    std::string inbox_id = s(json(call("GET", u + "/mailFolders/inbox")), "id");
    EXPECT_EQ(
        post_json(u + "/mailFolders/" + inbox_id + "/move", R"({"destinationId":")" + a + R"("})").status,
        403);

    // a well-known name as the destination; back to the top with msgfolderroot
    auto to_trash = post_json(u + "/mailFolders/" + c + "/move", R"({"destinationId":"DeletedItems"})");
    ASSERT_EQ(to_trash.status, 201);
    EXPECT_EQ(s(json(to_trash), "parentFolderId"),
              s(json(call("GET", u + "/mailFolders/deleteditems")), "id"));
    auto top = post_json(u + "/mailFolders/" + c + "/move", R"({"destinationId":"msgfolderroot"})");
    ASSERT_EQ(top.status, 201);
    EXPECT_EQ(s(json(top), "parentFolderId"), s(json(call("GET", u + "/mailFolders/msgfolderroot")), "id"));

    // a name the destination already has (in any case) -> 409
    mk(a, "c");
    auto clash = post_json(u + "/mailFolders/" + c + "/move", R"({"destinationId":")" + a + R"("})");
    EXPECT_EQ(clash.status, 409);
    EXPECT_EQ(error_code(clash), "ErrorFolderExists");

    EXPECT_EQ(post_json(u + "/mailFolders/" + c + "/move", R"({"destinationId":"nowhere"})").status, 404);
    EXPECT_EQ(post_json(u + "/mailFolders/nowhere/move", R"({"destinationId":")" + a + R"("})").status, 404);
    auto no_dest = post_json(u + "/mailFolders/" + c + "/move", R"({})");
    EXPECT_EQ(no_dest.status, 400);
    EXPECT_EQ(error_code(no_dest), "ErrorInvalidParameter");
    auto get = call("GET", u + "/mailFolders/" + c + "/move");
    EXPECT_EQ(get.status, 405);
    EXPECT_EQ(get.header("Allow").value_or(""), "POST");
    AccessToken read_only;
    read_only.roles = {"Mail.Read"};
    EXPECT_EQ(call("POST", u + "/mailFolders/" + c + "/move", R"({"destinationId":")" + a + R"("})",
                   {{"Content-Type", "application/json"}}, &read_only)
                  .status,
              403);
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

TEST_F(GraphTest, FilterByInternetMessageId) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    auto create = [&](const std::string& folder, const std::string& imid) {
        auto r = post_json(u + "/mailFolders/" + folder + "/messages",
                           R"({"subject":"s","internetMessageId":")" + imid + R"("})");
        EXPECT_EQ(r.status, 201) << r.body;
        return std::string(json(r)["id"].GetString());
    };
    std::string one = create("inbox", "<one@example.com>");
    create("inbox", "<two@example.com>");
    std::string quote = create("inbox", "<o'brien@example.com>");
    std::string plus = create("inbox", "<a+b@example.com>");
    std::string archived = create("archive", "<one@example.com>");  // the same id in another folder

    auto ids = [&](const std::string& url) {
        auto r = call("GET", url);
        EXPECT_EQ(r.status, 200) << url << " " << r.body;
        std::set<std::string> out;
        auto d = json(r);
        if (d.IsObject() && d.HasMember("value"))
            for (const auto& m : d["value"].GetArray()) out.insert(m["id"].GetString());
        return out;
    };
    const std::string in = u + "/mailFolders/inbox/messages?$select=internetMessageId&$filter=";
    EXPECT_EQ(ids(in + "internetMessageId%20eq%20'%3Cone%40example.com%3E'"), std::set<std::string>{one});
    EXPECT_EQ(ids(in + "internetMessageId eq '<one@example.com>'"), std::set<std::string>{one});
    EXPECT_EQ(ids(u + "/messages?$filter=internetMessageId eq '<one@example.com>'"),
              (std::set<std::string>{one, archived}));
    EXPECT_EQ(ids(in + "InternetMessageId   eq   '<one@example.com>'"), std::set<std::string>{one});
    // OData string literal: '' is a quote
    EXPECT_EQ(ids(in + "internetMessageId eq '<o''brien@example.com>'"), std::set<std::string>{quote});
    // the query is form-decoded: '+' must travel as %2B
    EXPECT_EQ(ids(in + "internetMessageId eq '<a%2Bb@example.com>'"), std::set<std::string>{plus});
    EXPECT_TRUE(ids(in + "internetMessageId eq '<a+b@example.com>'").empty());
    // exact comparison: no match for another case, a missing bracket or an unknown id
    EXPECT_TRUE(ids(in + "internetMessageId eq '<ONE@example.com>'").empty());
    EXPECT_TRUE(ids(in + "internetMessageId eq 'one@example.com'").empty());
    EXPECT_TRUE(ids(in + "internetMessageId eq '<three@example.com>'").empty());
    auto selected = json(call("GET", in + "internetMessageId eq '<one@example.com>'"));
    EXPECT_EQ(s(selected["value"][0], "internetMessageId"), "<one@example.com>");

    // anything else stays a 400, as for filters Graph cannot run
    for (const char* bad :
         {"internetMessageId eq '<one@example.com>' and isRead eq true",
          "internetMessageId ne '<one@example.com>'", "internetMessageId eq '<one@example.com>",
          "internetMessageId eq \"<one@example.com>\"", "internetMessageId eq <one@example.com>",
          "internetMessageIdeq '<one@example.com>'", "internetMessageId EQ '<one@example.com>'",
          "internetMessageId eq '<a@b>' '<c@d>'", "subject eq 'x'"}) {
        auto r = call("GET", in + bad);
        EXPECT_EQ(r.status, 400) << bad;
        EXPECT_EQ(error_code(r), "ErrorInvalidUrlQueryFilter") << bad;
    }
    // $orderby on a property that is not in $filter: Graph's InefficientFilter
    auto ordered =
        call("GET", in + "internetMessageId eq '<one@example.com>'&$orderby=receivedDateTime desc");
    EXPECT_EQ(ordered.status, 400);
    EXPECT_EQ(error_code(ordered), "InefficientFilter");
    // the isRead filters are unchanged
    EXPECT_EQ(ids(u + "/mailFolders/inbox/messages?$filter=isRead eq true").size(), 4u);
    EXPECT_TRUE(ids(u + "/mailFolders/inbox/messages?$filter=isRead eq false").empty());
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

TEST_F(GraphTest, CopyGetsNewIdsKeepsStateAndShowsInDelta) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    const std::vector<std::pair<std::string, std::string>> prefer = {{"Prefer", "IdType=\"ImmutableId\""}};
    auto created = post_json(u + "/mailFolders/inbox/messages", R"({"subject":"keep me",
        "internetMessageId":"<copy-src@example.com>","categories":["Blue"],"flag":{"flagStatus":"flagged"},
        "singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"1"},
            {"id":"SystemTime 0x0E06","value":"2024-02-03T04:05:06Z"},
            {"id":"Integer 0x1081","value":"102"}]})",
                             prefer);
    ASSERT_EQ(created.status, 201) << created.body;
    std::string original = json(created)["id"].GetString();
    std::string original_rest = json(call("GET", u + "/messages/" + original))["id"].GetString();

    // a delta round of the destination before the copy
    auto first = json(call("GET", u + "/mailFolders/archive/messages/delta", {}, prefer));
    EXPECT_EQ(first["value"].Size(), 0u);
    std::string delta_link = first["@odata.deltaLink"].GetString();

    auto cp = post_json(u + "/messages/" + original + "/copy", R"({"destinationId":"archive"})", prefer);
    ASSERT_EQ(cp.status, 201) << cp.body;
    std::string copy_imm = json(cp)["id"].GetString();
    EXPECT_NE(copy_imm, original);
    std::string copy_rest = json(call("GET", u + "/messages/" + copy_imm))["id"].GetString();
    EXPECT_NE(copy_rest, original_rest);
    EXPECT_NE(copy_rest, copy_imm);

    const std::string q =
        "?$select=isRead,isDraft,flag,categories,receivedDateTime,internetMessageId,parentFolderId,subject"
        "&$expand=singleValueExtendedProperties($filter=id eq 'Integer 0x1081')";
    auto src = json(call("GET", u + "/messages/" + original + q));
    auto dup = json(call("GET", u + "/messages/" + copy_imm + q));
    EXPECT_TRUE(dup["isRead"].GetBool());
    EXPECT_FALSE(dup["isDraft"].GetBool());
    EXPECT_EQ(s(dup["flag"], "flagStatus"), "flagged");
    ASSERT_EQ(dup["categories"].Size(), 1u);
    EXPECT_STREQ(dup["categories"][0].GetString(), "Blue");
    EXPECT_EQ(s(dup, "receivedDateTime"), "2024-02-03T04:05:06Z");
    EXPECT_EQ(s(dup, "internetMessageId"), "<copy-src@example.com>");
    EXPECT_EQ(s(dup["singleValueExtendedProperties"][0], "value"), "102");
    EXPECT_EQ(s(dup, "parentFolderId"), s(json(call("GET", u + "/mailFolders/archive")), "id"));
    EXPECT_EQ(s(src, "parentFolderId"), s(json(call("GET", u + "/mailFolders/inbox")), "id"));
    EXPECT_EQ(value_of("bob@sandbox.test", copy_imm), value_of("bob@sandbox.test", original));

    // the copy is a change of the destination folder; the source folder's round does not see it
    auto round = json(call("GET", delta_link, {}, prefer));
    ASSERT_EQ(round["value"].Size(), 1u);
    EXPECT_EQ(s(round["value"][0], "id"), copy_imm);
    EXPECT_FALSE(round["value"][0].HasMember("@removed"));

    // move keeps the immutable id; the inbox's delta reports the message as removed
    auto inbox_round = json(call("GET", u + "/mailFolders/inbox/messages/delta", {}, prefer));
    std::string inbox_link = inbox_round["@odata.deltaLink"].GetString();
    auto mv = post_json(u + "/messages/" + original + "/move", R"({"destinationId":"junkemail"})", prefer);
    ASSERT_EQ(mv.status, 201);
    EXPECT_EQ(s(json(mv), "id"), original);
    auto gone = json(call("GET", inbox_link, {}, prefer));
    ASSERT_EQ(gone["value"].Size(), 1u);
    EXPECT_EQ(s(gone["value"][0], "id"), original);
    EXPECT_TRUE(gone["value"][0].HasMember("@removed"));
    // the copy is independent of the original
    ASSERT_EQ(patch(u + "/messages/" + copy_imm, R"({"isRead":false})").status, 200);
    EXPECT_TRUE(json(call("GET", u + "/messages/" + original + "?$select=isRead"))["isRead"].GetBool());
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

TEST_F(GraphTest, JsonCreateKeepsInternetMessageIdAndReplyProperties) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    auto r = post_json(u + "/mailFolders/inbox/messages", R"({"subject":"Re: plans",
        "internetMessageId":"<reply-1@example.com>",
        "from":{"emailAddress":{"address":"carol@example.com"}},
        "toRecipients":[{"emailAddress":{"address":"bob@sandbox.test"}}],
        "body":{"contentType":"text","content":"sounds good"},
        "singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"1"},
            {"id":"SystemTime 0x0039","value":"2024-05-01T12:34:56Z"},
            {"id":"String 0x1042","value":"<parent@example.com>"},
            {"id":"String 0x1039","value":"<root@example.com> <parent@example.com>"},
            {"id":"Integer 0x1081","value":"102"}]})");
    ASSERT_EQ(r.status, 201) << r.body;
    auto m = json(r);
    EXPECT_FALSE(m["isDraft"].GetBool());
    EXPECT_EQ(s(m, "internetMessageId"), "<reply-1@example.com>");
    EXPECT_EQ(s(m, "sentDateTime"), "2024-05-01T12:34:56Z");
    std::string id = m["id"].GetString();

    auto sel = json(call("GET", u + "/messages/" + id + "?$select=internetMessageId"));
    EXPECT_EQ(s(sel, "internetMessageId"), "<reply-1@example.com>");
    EXPECT_FALSE(sel.HasMember("subject"));

    std::string mime_text = value_of("bob@sandbox.test", id);
    auto hb = mime::parse_headers(mime_text);
    ASSERT_TRUE(hb);
    EXPECT_EQ(hb->get("Message-ID").value_or(""), "<reply-1@example.com>");
    EXPECT_EQ(hb->get("In-Reply-To").value_or(""), "<parent@example.com>");
    EXPECT_EQ(hb->get("References").value_or(""), "<root@example.com> <parent@example.com>");
    EXPECT_EQ(hb->get("Date").value_or(""), "Wed, 01 May 2024 12:34:56 +0000");
    auto sum = mime::summarize(mime_text);
    ASSERT_TRUE(sum);
    EXPECT_EQ(sum->in_reply_to, "<parent@example.com>");
    EXPECT_EQ(sum->body, "sounds good");

    auto x = json(call("GET", u + "/messages/" + id +
                                  "?$select=subject&$expand=singleValueExtendedProperties($filter=id eq "
                                  "'Integer 0x1081' or id eq 'String 0x1042' or id eq 'String 0x1039')"));
    ASSERT_TRUE(x.HasMember("singleValueExtendedProperties"));
    std::map<std::string, std::string> props;
    for (const auto& p : x["singleValueExtendedProperties"].GetArray()) props[s(p, "id")] = s(p, "value");
    EXPECT_EQ(props["Integer 0x1081"], "102");
    EXPECT_EQ(props["String 0x1042"], "<parent@example.com>");
    EXPECT_EQ(props["String 0x1039"], "<root@example.com> <parent@example.com>");
    // ... and PATCH changes 0x1081 on the non-draft (\Answered -> forwarded)
    ASSERT_EQ(patch(u + "/messages/" + id,
                    R"({"singleValueExtendedProperties":[{"id":"Integer 0x1081","value":"104"}]})")
                  .status,
              200);
    auto verb =
        json(call("GET", u + "/messages/" + id +
                             "?$expand=singleValueExtendedProperties($filter=id eq 'Integer 0x1081')"));
    EXPECT_EQ(s(verb["singleValueExtendedProperties"][0], "value"), "104");

    // without internetMessageId the sandbox makes one up, as Exchange does
    auto gen = json(post_json(u + "/messages", R"({"subject":"new"})"));
    std::string generated = s(gen, "internetMessageId");
    EXPECT_EQ(generated.front(), '<');
    EXPECT_NE(generated.find("@sandbox.test>"), std::string::npos);
    EXPECT_EQ(value_of("bob@sandbox.test", s(gen, "id")).find("In-Reply-To"), std::string::npos);
}

TEST_F(GraphTest, LongReferencesAreFoldedInTheGeneratedMime) {
    std::string refs;
    for (int i = 0; i < 12; ++i)
        refs += (refs.empty() ? "" : " ") + ("<ancestor-" + std::to_string(i) + "@lists.example.org>");
    auto r = post_json(
        "/v1.0/users/bob@sandbox.test/mailFolders/inbox/messages",
        R"({"subject":"deep thread","singleValueExtendedProperties":[{"id":"String 0x1039","value":")" +
            refs + R"("}]})");
    ASSERT_EQ(r.status, 201) << r.body;
    std::string mime_text = value_of("bob@sandbox.test", json(r)["id"].GetString());
    std::string head = mime_text.substr(0, mime_text.find("\r\n\r\n"));
    std::size_t pos = 0;
    while (pos < head.size()) {
        std::size_t eol = head.find("\r\n", pos);
        if (eol == std::string::npos) eol = head.size();
        EXPECT_LE(eol - pos, 78u) << head.substr(pos, eol - pos);
        pos = eol + 2;
    }
    auto hb = mime::parse_headers(mime_text);
    ASSERT_TRUE(hb);
    EXPECT_EQ(hb->get("References").value_or(""), refs);
}

TEST_F(GraphTest, InternetMessageIdRules) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    for (const std::string& bad :
         {std::string(""), std::string("plain@example.com"), std::string("<no-at-sign>"),
          std::string("<@example.com>"), std::string("<left@>"), std::string("<a b@example.com>"),
          std::string("<a@b> "), std::string("<<a@b>>"), std::string("<\xC3\xA4@example.com>"),
          "<" + std::string(490, 'x') + "@example.com>"}) {
        auto r = post_json(u + "/messages", R"({"subject":"x","internetMessageId":")" + bad + R"("})");
        EXPECT_EQ(r.status, 400) << bad;
        EXPECT_EQ(error_code(r), "ErrorInvalidInternetMessageId") << bad;
    }
    EXPECT_EQ(post_json(u + "/messages", R"({"internetMessageId":42})").status, 400);
    std::string longest = "<" + std::string(498 - 12, 'x') + "@example.com>";
    ASSERT_EQ(longest.size(), 500u);
    EXPECT_EQ(post_json(u + "/messages", R"({"internetMessageId":")" + longest + R"("})").status, 201);
    EXPECT_EQ(post_json(u + "/messages", R"({"internetMessageId":null})").status, 201);

    // PATCH: drafts only ("Updatable only if isDraft = true"), and valid
    std::string draft = json(post_json(u + "/messages", R"({"subject":"d"})"))["id"].GetString();
    auto p = patch(u + "/messages/" + draft, R"({"internetMessageId":"<patched@example.com>"})");
    ASSERT_EQ(p.status, 200) << p.body;
    EXPECT_EQ(s(json(p), "internetMessageId"), "<patched@example.com>");
    EXPECT_NE(value_of("bob@sandbox.test", draft).find("Message-ID: <patched@example.com>\r\n"),
              std::string::npos);
    EXPECT_EQ(error_code(patch(u + "/messages/" + draft, R"({"internetMessageId":"patched"})")),
              "ErrorInvalidInternetMessageId");
    // a MIME draft gets its Message-ID field replaced
    std::string mime_draft = json(post_mime(u + "/messages", kMime))["id"].GetString();
    ASSERT_EQ(patch(u + "/messages/" + mime_draft, R"({"internetMessageId":"<m2@example.com>"})").status,
              200);
    std::string replaced = value_of("bob@sandbox.test", mime_draft);
    EXPECT_NE(replaced.find("Message-ID: <m2@example.com>\r\n"), std::string::npos);
    EXPECT_EQ(replaced.find("<q1@sandbox.test>"), std::string::npos);
    // a PATCHed In-Reply-To shows in a JSON draft's MIME
    ASSERT_EQ(patch(u + "/messages/" + draft,
                    R"({"singleValueExtendedProperties":[{"id":"String 0x1042","value":"<p@example.com>"}]})")
                  .status,
              200);
    EXPECT_NE(value_of("bob@sandbox.test", draft).find("In-Reply-To: <p@example.com>\r\n"),
              std::string::npos);

    std::string sent = json(post_json(
        u + "/mailFolders/inbox/messages",
        R"({"subject":"r","singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"1"}]})"))["id"]
                           .GetString();
    auto ro = patch(u + "/messages/" + sent, R"({"internetMessageId":"<other@example.com>"})");
    EXPECT_EQ(ro.status, 400);
    EXPECT_EQ(error_code(ro), "ErrorInvalidPropertyUpdateSentMessage");
}

TEST_F(GraphTest, ExtendedPropertyValuesMustFitTheirType) {
    const std::string u = "/v1.0/users/bob@sandbox.test";
    for (const char* prop :
         {R"({"id":"Integer 0x1081","value":"replied"})", R"({"id":"Integer 0x1081","value":""})",
          R"({"id":"Integer 0x1081","value":"4294967296"})", R"({"id":"Integer 0x1081","value":" 102"})",
          R"({"id":"SystemTime 0x1082","value":"yesterday"})", R"({"id":"Boolean 0x0E1F","value":"yes"})"}) {
        auto r = post_json(u + "/messages",
                           std::string(R"({"subject":"x","singleValueExtendedProperties":[)") + prop + "]}");
        EXPECT_EQ(r.status, 400) << prop;
        EXPECT_EQ(error_code(r), "ErrorInvalidExtendedPropertyValue") << prop;
    }
    auto ok =
        post_json(u + "/mailFolders/inbox/messages",
                  R"({"subject":"ok","singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"0"},
                            {"id":"Integer 0x1081","value":"103"},
                            {"id":"SystemTime 0x1082","value":"2025-01-02T03:04:05Z"},
                            {"id":"Boolean 0x0E1F","value":"true"}]})");
    ASSERT_EQ(ok.status, 201) << ok.body;
    std::string id = json(ok)["id"].GetString();
    // a bad value in a PATCH changes nothing, not even the valid members next to it
    auto bad = patch(u + "/messages/" + id, R"({"isRead":true,
        "singleValueExtendedProperties":[{"id":"Integer 0x1081","value":"abc"}]})");
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(error_code(bad), "ErrorInvalidExtendedPropertyValue");
    auto after = json(call("GET", u + "/messages/" + id +
                                      "?$select=isRead&$expand=singleValueExtendedProperties($filter=id eq "
                                      "'Integer 0x1081')"));
    EXPECT_FALSE(after["isRead"].GetBool());
    EXPECT_EQ(s(after["singleValueExtendedProperties"][0], "value"), "103");
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

TEST(GraphRoute, IdsBecomePlaceholdersLiteralsAreKept) {
    auto route = [](const std::string& target) {
        HttpRequest req;
        req.method = "GET";
        req.target = target;
        return GraphApi::route_of(req);
    };
    const std::string u = "/v1.0/users/Bob%40sandbox.test";
    EXPECT_EQ(route(u + "/messages/AAMkAGI2xyz="), "/messages/{id}");
    EXPECT_EQ(route(u + "/messages/AAMkAGI2xyz=/move"), "/messages/{id}/move");
    EXPECT_EQ(route(u + "/messages/AAMk/$value"), "/messages/{id}/$value");
    EXPECT_EQ(route(u + "/mailFolders/AAMkAGI2AAEu/messages/delta?$select=id&$top=5"),
              "/mailfolders/{id}/messages/delta");
    EXPECT_EQ(route(u + "/mailFolders/Inbox/messages?$top=1"), "/mailfolders/inbox/messages");
    EXPECT_EQ(route(u + "/mailFolders/RecoverableItemsDeletions"), "/mailfolders/recoverableitemsdeletions");
    EXPECT_EQ(route(u + "/mailFolders/AAMkF/childFolders"), "/mailfolders/{id}/childfolders");
    EXPECT_EQ(route(u + "/mailFolders/AAMkF/childFolders/AAMkG/messages/AAMkM"),
              "/mailfolders/{id}/childfolders/{id}/messages/{id}");
    EXPECT_EQ(route(u + "/mailFolders/AAMkF/move"), "/mailfolders/{id}/move");
    EXPECT_EQ(route(u + "/mailFolders/drafts/messages/AAMkM"), "/mailfolders/drafts/messages/{id}");
    EXPECT_EQ(route(u + "/messages/M/attachments/createUploadSession"),
              "/messages/{id}/attachments/createuploadsession");
    EXPECT_EQ(route(u + "/messages/M/attachments/AAMkAtt"), "/messages/{id}/attachments/{id}");
    EXPECT_EQ(route(u + "/sendMail"), "/sendmail");
    EXPECT_EQ(route(u + "/mailFolders"), "/mailfolders");
    EXPECT_EQ(route(u), "");
    EXPECT_EQ(route("/v1.0/users/cccccccc-0000-4000-8000-000000000003/messages/M"), "/messages/{id}");
    // not under /users/{user}: the path after /v1.0
    EXPECT_EQ(route("/v1.0/me/messages/M"), "/me/messages/{id}");
    EXPECT_EQ(route("/v1.0/$batch"), "/$batch");
    // hostile bytes are escaped, so the log stays printable JSON text
    EXPECT_EQ(route(u + "/Bogus%0A%22%C3%A4%25"), "/bogus%0A\"%C3%A4%25");
    EXPECT_EQ(route(u + "/bad%zz"), "(malformed)");
    EXPECT_LE(route(u + "/" + std::string(5000, 'a')).size(), 1024u);
}

}  // namespace
}  // namespace gb::sandbox
