// The sandbox over real HTTPS on loopback: provisioning, TLS, token endpoint, Graph, throttling,
// faults and limits, driven by libcurl exactly as the bridge (and the outside checks) will.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <unistd.h>

#include "auth/crypto.h"
#include "auth/jwt.h"
#include "auth/pki.h"
#include "graph/sandbox/provision.h"
#include "graph/sandbox/server.h"
#include "tests/support/https_client.h"
#include "tests/support/test_sandbox.h"

using namespace gb;
using gb::test::HttpCall;
using gb::test::https;

namespace {

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

class SandboxServerTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        sb_ = new gb::test::TestSandbox("sandbox_server");
        app_key_ = new auth::PKey(auth::load_private_key_pem(sb_->tenant_dir() + "/app.pem"));
        auto cert = auth::load_cert(sb_->tenant_dir() + "/app.pem");
        app_der_ = new std::string(auth::cert_to_der(cert.get()));
        server_ = &sb_->server();
    }
    static void TearDownTestSuite() {
        delete app_key_;
        delete app_der_;
        delete sb_;
    }
    void SetUp() override {
        server_->clear_faults();
        server_->set_graph_latency_ms(0);
    }

    static std::string base() { return sb_->base(); }
    static std::string ca() { return sb_->ca(); }
    static std::string token_url() { return sb_->token_url(); }
    static const sandbox::App& app() { return sb_->app(); }

    static std::string assertion(auth::JwsAlg alg = auth::JwsAlg::RS256,
                                 auth::ThumbprintHeader tp = auth::ThumbprintHeader::X5t) {
        auth::ClientAssertionParams p;
        p.client_id = app().client_id;
        p.audience = token_url();
        p.cert_der = *app_der_;
        p.alg = alg;
        p.thumbprint = tp;
        p.now = now();
        return auth::make_client_assertion(p, app_key_->get());
    }

    static gb::test::HttpResult token_request(const std::string& client_assertion) {
        HttpCall c;
        c.method = "POST";
        c.url = token_url();
        c.ca_file = ca();
        c.headers = {"Content-Type: application/x-www-form-urlencoded"};
        c.body = gb::test::form({{"client_id", app().client_id},
                                 {"scope", base() + "/.default"},
                                 {"grant_type", "client_credentials"},
                                 {"client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
                                 {"client_assertion", client_assertion}});
        return https(c);
    }

    static std::string token() {
        auto r = token_request(assertion());
        EXPECT_EQ(r.status, 200) << r.body;
        rapidjson::Document d;
        d.Parse(r.body.c_str());
        return d.IsObject() && d.HasMember("access_token") ? d["access_token"].GetString() : "";
    }

    static gb::test::HttpResult graph(const std::string& method, const std::string& path, const std::string& bearer,
                                      const std::string& body = "", const std::string& content_type = "application/json") {
        HttpCall c;
        c.method = method;
        c.url = base() + path;
        c.ca_file = ca();
        if (!bearer.empty()) c.headers.push_back("Authorization: Bearer " + bearer);
        if (!body.empty() || method == "POST") c.headers.push_back("Content-Type: " + content_type);
        c.body = body;
        return https(c);
    }

    static std::vector<std::int64_t> aadsts(const std::string& body) {
        rapidjson::Document d;
        d.Parse(body.c_str());
        std::vector<std::int64_t> out;
        if (d.IsObject() && d.HasMember("error_codes") && d["error_codes"].IsArray())
            for (auto& v : d["error_codes"].GetArray()) out.push_back(v.GetInt64());
        return out;
    }

    static gb::test::TestSandbox* sb_;
    static sandbox::SandboxServer* server_;
    static auth::PKey* app_key_;
    static std::string* app_der_;
};

gb::test::TestSandbox* SandboxServerTest::sb_;
sandbox::SandboxServer* SandboxServerTest::server_;
auth::PKey* SandboxServerTest::app_key_;
std::string* SandboxServerTest::app_der_;

}  // namespace

TEST_F(SandboxServerTest, ProvisioningIsStableAcrossRuns) {
    auto again = sandbox::provision(sb_->tenant_dir(), 0);
    EXPECT_FALSE(again.created);
    EXPECT_TRUE(sb_->setup().created);
    EXPECT_EQ(again.tenant.tenant_id, sb_->setup().tenant.tenant_id);
    EXPECT_EQ(again.tenant.apps.front().client_id, app().client_id);
    EXPECT_EQ(again.accounts.size(), 3u);
    EXPECT_EQ(again.accounts[0].password, sb_->setup().accounts[0].password);
    auto perms = std::filesystem::status(sb_->tenant_dir() + "/app.pem").permissions();
    EXPECT_EQ(perms & (std::filesystem::perms::group_all | std::filesystem::perms::others_all),
              std::filesystem::perms::none);
}

TEST_F(SandboxServerTest, TlsIsVerifiedAgainstTheSandboxCa) {
    HttpCall c;
    c.url = base() + "/v1.0/users/alice@sandbox.test/mailFolders";
    c.ca_file = "/etc/ssl/certs/ca-certificates.crt";  // the system store does not know the sandbox CA
    auto r = https(c);
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.curl_code, 0);
    c.ca_file = ca();
    EXPECT_EQ(https(c).status, 401);  // TLS fine; no token
}

TEST_F(SandboxServerTest, AssertionTokensRs256AndPs256) {
    auto rs = token_request(assertion(auth::JwsAlg::RS256, auth::ThumbprintHeader::X5t));
    EXPECT_EQ(rs.status, 200) << rs.body;
    EXPECT_NE(rs.header("cache-control").find("no-store"), std::string::npos);
    auto ps = token_request(assertion(auth::JwsAlg::PS256, auth::ThumbprintHeader::X5tS256));
    EXPECT_EQ(ps.status, 200) << ps.body;
    rapidjson::Document d;
    d.Parse(ps.body.c_str());
    ASSERT_TRUE(d.IsObject());
    EXPECT_STREQ(d["token_type"].GetString(), "Bearer");
    EXPECT_EQ(d["expires_in"].GetInt(), 3599);
}

TEST_F(SandboxServerTest, ForgedAssertionsGetAadstsErrors) {
    // Signed by a key that is not registered, but claiming the registered certificate's thumbprint.
    auto other = auth::generate_rsa_key(2048);
    auth::ClientAssertionParams p;
    p.client_id = app().client_id;
    p.audience = token_url();
    p.cert_der = *app_der_;
    p.now = now();
    auto forged = token_request(auth::make_client_assertion(p, other.get()));
    EXPECT_EQ(forged.status, 401);
    EXPECT_EQ(aadsts(forged.body), std::vector<std::int64_t>{700027}) << forged.body;

    p.audience = "https://login.microsoftonline.com/" + sb_->setup().tenant.tenant_id + "/oauth2/v2.0/token";
    auto aud = token_request(auth::make_client_assertion(p, app_key_->get()));
    EXPECT_EQ(aadsts(aud.body), std::vector<std::int64_t>{50012}) << aud.body;

    p.audience = token_url();
    p.now = now() - 3600;
    auto expired = token_request(auth::make_client_assertion(p, app_key_->get()));
    EXPECT_EQ(aadsts(expired.body), std::vector<std::int64_t>{700024}) << expired.body;

    std::string once = assertion();
    EXPECT_EQ(token_request(once).status, 200);
    auto replay = token_request(once);
    EXPECT_NE(replay.status, 200);
    EXPECT_EQ(aadsts(replay.body).size(), 1u) << replay.body;
}

TEST_F(SandboxServerTest, ClientSecretWorksAndWrongSecretFails) {
    auto call = [&](const std::string& secret) {
        HttpCall c;
        c.method = "POST";
        c.url = token_url();
        c.ca_file = ca();
        c.body = gb::test::form({{"client_id", app().client_id},
                                 {"scope", base() + "/.default"},
                                 {"grant_type", "client_credentials"},
                                 {"client_secret", secret}});
        c.headers = {"Content-Type: application/x-www-form-urlencoded"};
        return https(c);
    };
    EXPECT_EQ(call(app().secrets.front().value).status, 200);
    auto bad = call("not-the-secret");
    EXPECT_EQ(bad.status, 401);
    EXPECT_EQ(aadsts(bad.body), std::vector<std::int64_t>{7000215});
}

TEST_F(SandboxServerTest, GraphRequiresAValidBearer) {
    auto none = graph("GET", "/v1.0/users/alice@sandbox.test/mailFolders", "");
    EXPECT_EQ(none.status, 401);
    EXPECT_NE(none.body.find("InvalidAuthenticationToken"), std::string::npos);
    EXPECT_FALSE(none.header("www-authenticate").empty());
    auto garbage = graph("GET", "/v1.0/users/alice@sandbox.test/mailFolders", "abc.def.ghi");
    EXPECT_EQ(garbage.status, 401);
    auto ok = graph("GET", "/v1.0/users/alice@sandbox.test/mailFolders", token());
    EXPECT_EQ(ok.status, 200) << ok.body;
    EXPECT_FALSE(ok.header("request-id").empty());
}

TEST_F(SandboxServerTest, MimeSendMailDeliversOverHttps) {
    std::string t = token();
    std::string mime =
        "From: Alice <alice@sandbox.test>\r\nTo: bob@sandbox.test\r\nSubject: over https\r\n"
        "Message-ID: <https-1@sandbox.test>\r\n\r\nhello bob\r\n";
    std::size_t before = server_->graph().count_messages("bob@sandbox.test", "inbox");
    auto r = graph("POST", "/v1.0/users/alice@sandbox.test/sendMail", t, auth::base64_encode(mime), "text/plain");
    EXPECT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(server_->graph().count_messages("bob@sandbox.test", "inbox"), before + 1);
    auto list = graph("GET", "/v1.0/users/bob@sandbox.test/mailFolders/inbox/messages?$select=subject", t);
    EXPECT_EQ(list.status, 200);
    EXPECT_NE(list.body.find("over https"), std::string::npos);
}

TEST_F(SandboxServerTest, OversizedBodyGets413) {
    std::string big(4 * 1024 * 1024 + 100, 'A');
    auto r = graph("POST", "/v1.0/users/alice@sandbox.test/sendMail", token(), big, "text/plain");
    EXPECT_EQ(r.status, 413);
    EXPECT_NE(r.body.find("RequestEntityTooLarge"), std::string::npos);
}

TEST_F(SandboxServerTest, MoreThanFourConcurrentRequestsPerMailboxAreThrottled) {
    std::string t = token();
    server_->set_graph_latency_ms(1500);
    constexpr int kClients = 8;
    std::vector<std::thread> threads;
    std::vector<gb::test::HttpResult> results(kClients);
    for (int i = 0; i < kClients; ++i)
        threads.emplace_back([&, i] { results[i] = graph("GET", "/v1.0/users/alice@sandbox.test/mailFolders", t); });
    for (auto& th : threads) th.join();
    int ok = 0, throttled = 0;
    for (const auto& r : results) {
        if (r.status == 200) ++ok;
        if (r.status == 429) {
            ++throttled;
            EXPECT_EQ(r.header("retry-after"), "1");
            EXPECT_NE(r.body.find("MailboxConcurrency"), std::string::npos);
        }
    }
    EXPECT_EQ(ok + throttled, kClients);
    EXPECT_LE(ok, 4);
    EXPECT_GE(throttled, kClients - 4);
    // Another mailbox is not affected by alice's load.
    server_->set_graph_latency_ms(0);
    EXPECT_EQ(graph("GET", "/v1.0/users/bob@sandbox.test/mailFolders", t).status, 200);
}

TEST_F(SandboxServerTest, InjectedFaultsThroughTheAdminApi) {
    std::string t = token();
    HttpCall admin;
    admin.method = "POST";
    admin.url = base() + "/sandbox/faults";
    admin.ca_file = ca();
    admin.headers = {"Content-Type: application/json"};
    admin.body = R"({"target":"graph","kind":"status","status":429,"count":2,"retry_after":3})";
    ASSERT_EQ(https(admin).status, 204);
    for (int i = 0; i < 2; ++i) {
        auto r = graph("GET", "/v1.0/users/alice@sandbox.test/mailFolders", t);
        EXPECT_EQ(r.status, 429);
        EXPECT_EQ(r.header("retry-after"), "3");
    }
    EXPECT_EQ(graph("GET", "/v1.0/users/alice@sandbox.test/mailFolders", t).status, 200);

    admin.body = R"({"target":"token","kind":"status","status":503})";
    ASSERT_EQ(https(admin).status, 204);
    EXPECT_EQ(token_request(assertion()).status, 503);
    EXPECT_EQ(token_request(assertion()).status, 200);

    admin.body = R"({"target":"graph","kind":"reset"})";
    ASSERT_EQ(https(admin).status, 204);
    auto reset = graph("GET", "/v1.0/users/alice@sandbox.test/mailFolders", t);
    EXPECT_EQ(reset.status, 0);
    EXPECT_NE(reset.curl_code, 0);

    admin.body = R"({"target":"graph","kind":"delay","delay_ms":1500})";
    ASSERT_EQ(https(admin).status, 204);
    HttpCall slow;
    slow.url = base() + "/v1.0/users/alice@sandbox.test/mailFolders";
    slow.ca_file = ca();
    slow.headers = {"Authorization: Bearer " + t};
    slow.timeout_ms = 500;
    auto timed_out = https(slow);
    EXPECT_EQ(timed_out.status, 0);  // the client gave up first

    // An outage: every token request fails for 1.2 s, then the endpoint is back by itself.
    admin.body = R"({"target":"token","kind":"status","status":503,"duration_ms":1200})";
    ASSERT_EQ(https(admin).status, 204);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(token_request(assertion()).status, 503) << i;
    EXPECT_EQ(graph("GET", "/v1.0/users/alice@sandbox.test/mailFolders", t).status, 200);  // Graph unaffected
    std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    EXPECT_EQ(token_request(assertion()).status, 200);

    admin.body = R"({"target":"token","duration_ms":1000,"count":2})";
    EXPECT_EQ(https(admin).status, 400);
    admin.body = R"({"target":"nowhere"})";
    EXPECT_EQ(https(admin).status, 400);

    HttpCall stats;
    stats.url = base() + "/sandbox/stats";
    stats.ca_file = ca();
    auto s = https(stats);
    ASSERT_EQ(s.status, 200);
    rapidjson::Document d;
    d.Parse(s.body.c_str());
    ASSERT_TRUE(d.IsObject());
    EXPECT_GE(d["faults_injected"].GetInt(), 5);
    EXPECT_GE(d["token_requests"].GetInt(), 2);
}

TEST_F(SandboxServerTest, RequestLogRecordsGraphRequestsWithRoutes) {
    std::string t = token();
    HttpCall admin;
    admin.url = base() + "/sandbox/requests";
    admin.ca_file = ca();
    admin.method = "DELETE";
    ASSERT_EQ(https(admin).status, 204);
    EXPECT_TRUE(server_->requests().empty());

    const std::string u = "/v1.0/users/alice@sandbox.test";
    ASSERT_EQ(graph("GET", u + "/mailFolders/Inbox/messages?$top=1&$select=id", t).status, 200);
    auto created = graph("POST", u + "/messages", t, R"({"subject":"logged"})");
    ASSERT_EQ(created.status, 201) << created.body;
    rapidjson::Document c;
    c.Parse(created.body.c_str());
    std::string id = c["id"].GetString();
    ASSERT_EQ(graph("PATCH", u + "/messages/" + id, t, R"({"categories":["x"]})").status, 200);
    auto moved = graph("POST", u + "/messages/" + id + "/move", t, R"({"destinationId":"archive"})");
    ASSERT_EQ(moved.status, 201);
    auto archive = graph("GET", u + "/mailFolders/archive", t);
    rapidjson::Document a;
    a.Parse(archive.body.c_str());
    std::string archive_id = a["id"].GetString();
    ASSERT_EQ(graph("GET", u + "/mailFolders/" + archive_id + "/messages/delta", t).status, 200);
    EXPECT_EQ(graph("GET", "/v1.0/users/bob@sandbox.test/messages/nope", t).status, 404);
    EXPECT_EQ(graph("GET", "/v1.0/users/bob@sandbox.test/mailFolders", "not-a-token").status, 401);
    HttpCall fault;
    fault.method = "POST";
    fault.url = base() + "/sandbox/faults";
    fault.ca_file = ca();
    fault.body = R"({"target":"graph","kind":"status","status":503})";
    ASSERT_EQ(https(fault).status, 204);
    EXPECT_EQ(graph("DELETE", u + "/messages/" + id, t).status, 503);
    fault.body = R"({"target":"graph","kind":"reset"})";
    ASSERT_EQ(https(fault).status, 204);
    EXPECT_EQ(graph("GET", u + "/mailFolders/sentitems", t).status, 0);  // logged with status 0
    std::string big(4 * 1024 * 1024 + 100, 'A');
    EXPECT_EQ(graph("POST", u + "/sendMail", t, big, "text/plain").status, 413);  // refused unread
    token();  // token requests are not Graph requests

    admin.method = "GET";
    auto r = https(admin);
    ASSERT_EQ(r.status, 200);
    EXPECT_NE(r.header("content-type").find("application/json"), std::string::npos);
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    ASSERT_TRUE(d.IsObject() && d.HasMember("requests") && d["requests"].IsArray()) << r.body;
    struct Want {
        const char* method;
        const char* route;
        const char* mailbox;
        int status;
    };
    const std::vector<Want> want = {
        {"GET", "/mailfolders/inbox/messages", "alice@sandbox.test", 200},
        {"POST", "/messages", "alice@sandbox.test", 201},
        {"PATCH", "/messages/{id}", "alice@sandbox.test", 200},
        {"POST", "/messages/{id}/move", "alice@sandbox.test", 201},
        {"GET", "/mailfolders/archive", "alice@sandbox.test", 200},
        {"GET", "/mailfolders/{id}/messages/delta", "alice@sandbox.test", 200},
        {"GET", "/messages/{id}", "bob@sandbox.test", 404},
        {"GET", "/mailfolders", "bob@sandbox.test", 401},
        {"DELETE", "/messages/{id}", "alice@sandbox.test", 503},
        {"GET", "/mailfolders/sentitems", "alice@sandbox.test", 0},
        {"POST", "/sendmail", "alice@sandbox.test", 413},
    };
    const auto& log = d["requests"];
    ASSERT_EQ(log.Size(), want.size()) << r.body;
    for (std::size_t i = 0; i < want.size(); ++i) {
        EXPECT_STREQ(log[i]["method"].GetString(), want[i].method) << i;
        EXPECT_STREQ(log[i]["route"].GetString(), want[i].route) << i;
        EXPECT_STREQ(log[i]["mailbox"].GetString(), want[i].mailbox) << i;
        EXPECT_EQ(log[i]["status"].GetInt(), want[i].status) << i;
    }
    auto direct = server_->requests();
    ASSERT_EQ(direct.size(), want.size());
    EXPECT_EQ(direct[3].route, "/messages/{id}/move");

    admin.method = "DELETE";
    ASSERT_EQ(https(admin).status, 204);
    admin.method = "GET";
    EXPECT_EQ(https(admin).body, R"({"requests":[]})");
    admin.method = "PUT";
    EXPECT_EQ(https(admin).status, 404);
}
