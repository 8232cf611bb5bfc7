// Token broker: single flight, refresh ahead of expiry, backoff, forced refresh after a 401, and the
// admin-facing explanations; then the real thing over HTTPS against the sandbox.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <atomic>
#include <barrier>
#include <filesystem>
#include <thread>
#include <unistd.h>

#include "auth/crypto.h"
#include "auth/jwt.h"
#include "auth/token_broker.h"
#include "graph/http/graph_client.h"
#include "graph/http/token_transport.h"
#include "tests/support/test_sandbox.h"

using namespace gb;
using namespace gb::auth;

namespace {

// A transport that answers from a script and counts calls; the clock is the test's.
struct FakeEndpoint {
    std::atomic<int> calls{0};
    std::atomic<std::int64_t> now_ms{1'700'000'000'000};
    std::atomic<int> delay_ms{0};
    std::mutex mutex;
    std::vector<std::string> bodies;
    std::function<TokenHttpResponse(int)> answer = [](int n) {
        TokenHttpResponse r;
        r.status = 200;
        r.body = R"({"token_type":"Bearer","expires_in":3599,"access_token":"token-)" + std::to_string(n) + "\"}";
        return r;
    };

    TokenTransport transport() {
        return [this](const TokenHttpRequest& req) {
            int n = ++calls;
            {
                std::lock_guard lock(mutex);
                bodies.push_back(req.body);
            }
            if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
            return answer(n);
        };
    }
    TokenBroker::Clock clock() {
        return [this] { return now_ms.load(); };
    }
};

TokenBrokerConfig secret_config() {
    TokenBrokerConfig c;
    c.app_name = "contoso";
    c.client_id = "11111111-2222-3333-4444-555555555555";
    c.tenant = "contoso.onmicrosoft.com";
    c.token_endpoint = "https://login.example/contoso.onmicrosoft.com/oauth2/v2.0/token";
    c.scope = "https://graph.microsoft.com/.default";
    c.client_secret = Secret("super-secret-value");
    return c;
}

CertificateCredential make_cred(PKey key, std::string der, JwsAlg alg = JwsAlg::RS256,
                                ThumbprintHeader tp = ThumbprintHeader::X5t) {
    CertificateCredential c;
    c.key = std::move(key);
    c.cert_der = std::move(der);
    c.alg = alg;
    c.thumbprint = tp;
    return c;
}

std::string access_token(const TokenResult& r) {
    if (auto* t = std::get_if<Token>(&r)) return t->access_token;
    return "FAILED: " + std::get<TokenFailure>(r).explanation;
}

}  // namespace

TEST(TokenBroker, ColdCacheManyCallersOneRequest) {
    FakeEndpoint ep;
    ep.delay_ms = 100;
    TokenBroker broker(secret_config(), ep.transport(), ep.clock());
    constexpr int kCallers = 1000;
    std::barrier start(kCallers);
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kCallers; ++i)
        threads.emplace_back([&] {
            start.arrive_and_wait();
            if (access_token(broker.get()) == "token-1") ++ok;
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), kCallers);
    EXPECT_EQ(ep.calls.load(), 1);
    EXPECT_EQ(broker.requests_sent(), 1u);
}

TEST(TokenBroker, CachedUntilRefreshPointThenRefreshedInTheBackground) {
    FakeEndpoint ep;
    TokenBroker broker(secret_config(), ep.transport(), ep.clock());
    EXPECT_EQ(access_token(broker.get()), "token-1");
    ep.now_ms += 3000 * 1000;  // 50 min: still before the refresh point (5 min before expiry)
    EXPECT_EQ(access_token(broker.get()), "token-1");
    EXPECT_EQ(ep.calls.load(), 1);
    ep.now_ms += 320 * 1000;  // 4m39s before expiry: refresh due, but the old token is still served at once
    ep.delay_ms = 300;
    EXPECT_EQ(access_token(broker.get()), "token-1");
    for (int i = 0; i < 100 && ep.calls.load() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(ep.calls.load(), 2);
    for (int i = 0; i < 100 && access_token(broker.get()) != "token-2"; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(access_token(broker.get()), "token-2");
}

TEST(TokenBroker, ExpiredTokenIsNeverHandedOut) {
    FakeEndpoint ep;
    TokenBroker broker(secret_config(), ep.transport(), ep.clock());
    EXPECT_EQ(access_token(broker.get()), "token-1");
    ep.now_ms += 3600 * 1000;
    // The refresher may race us to it; either way the caller gets the new token.
    EXPECT_EQ(access_token(broker.get()), "token-2");
}

TEST(TokenBroker, FailuresBackOffWithJitterAndHonourRetryAfter) {
    FakeEndpoint ep;
    ep.answer = [](int) {
        TokenHttpResponse r;
        r.status = 503;
        r.body = "<html>unavailable</html>";
        return r;
    };
    BrokerTiming timing;
    timing.backoff_initial_ms = 2000;
    TokenBroker broker(secret_config(), ep.transport(), ep.clock(), timing);
    auto first = broker.get();
    ASSERT_TRUE(std::holds_alternative<TokenFailure>(first));
    EXPECT_TRUE(std::get<TokenFailure>(first).transient);
    // During the backoff the last error comes back without a request.
    for (int i = 0; i < 50; ++i) broker.get();
    EXPECT_EQ(ep.calls.load(), 1);
    ep.now_ms += 999;  // backoff is at least half the initial delay
    broker.get();
    EXPECT_EQ(ep.calls.load(), 1);
    ep.now_ms += 1001;  // past the full initial delay
    broker.get();
    EXPECT_EQ(ep.calls.load(), 2);
    ep.now_ms += 1999;  // second backoff is in [2000, 4000]
    broker.get();
    EXPECT_EQ(ep.calls.load(), 2);

    ep.answer = [](int) {
        TokenHttpResponse r;
        r.status = 429;
        r.retry_after = 120;
        return r;
    };
    ep.now_ms += 10'000;
    broker.get();
    EXPECT_EQ(ep.calls.load(), 3);
    ep.now_ms += 119'000;
    broker.get();
    EXPECT_EQ(ep.calls.load(), 3);  // Retry-After wins over the shorter backoff
    ep.now_ms += 2'000;
    ep.answer = [](int) {
        TokenHttpResponse r;
        r.status = 200;
        r.body = R"({"token_type":"Bearer","expires_in":3599,"access_token":"finally"})";
        return r;
    };
    EXPECT_EQ(access_token(broker.get()), "finally");
}

TEST(TokenBroker, RejectedTokenIsRefreshedOnceForAllCallers) {
    FakeEndpoint ep;
    TokenBroker broker(secret_config(), ep.transport(), ep.clock());
    std::string first = access_token(broker.get());
    ep.delay_ms = 50;
    std::vector<std::thread> threads;
    std::atomic<int> got_new{0};
    for (int i = 0; i < 20; ++i)
        threads.emplace_back([&] {
            if (access_token(broker.refresh_after_rejection(first)) == "token-2") ++got_new;
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(got_new.load(), 20);
    EXPECT_EQ(ep.calls.load(), 2);
}

TEST(TokenBroker, SecretRequestBodyAndNoSecretInErrors) {
    FakeEndpoint ep;
    ep.answer = [](int) {
        TokenHttpResponse r;
        r.status = 401;
        r.body = R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]})";
        return r;
    };
    TokenBroker broker(secret_config(), ep.transport(), ep.clock());
    auto r = broker.get();
    ASSERT_TRUE(std::holds_alternative<TokenFailure>(r));
    const auto& f = std::get<TokenFailure>(r);
    EXPECT_FALSE(f.transient);
    EXPECT_EQ(f.codes, std::vector<std::int64_t>{7000215});
    EXPECT_NE(f.explanation.find("Value, not its Secret ID"), std::string::npos);
    EXPECT_EQ(f.explanation.find("super-secret-value"), std::string::npos);
    std::lock_guard lock(ep.mutex);
    ASSERT_EQ(ep.bodies.size(), 1u);
    EXPECT_NE(ep.bodies[0].find("client_secret=super-secret-value"), std::string::npos);
    EXPECT_NE(ep.bodies[0].find("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"), std::string::npos);
    EXPECT_NE(ep.bodies[0].find("grant_type=client_credentials"), std::string::npos);
}

TEST(TokenBroker, EachRequestCarriesAFreshAssertion) {
    FakeEndpoint ep;
    auto key = generate_rsa_key(2048);
    auto cert = make_self_signed_cert(key.get(), "broker-test", 30);
    TokenBrokerConfig c = secret_config();
    c.client_secret.reset();
    c.certificate = make_cred(std::move(key), cert_to_der(cert.get()));
    TokenBroker broker(std::move(c), ep.transport(), ep.clock());
    std::string a = broker.build_request_body(1000), b = broker.build_request_body(1000);
    EXPECT_NE(a, b);  // new jti every time
    EXPECT_NE(a.find("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"),
              std::string::npos);
    EXPECT_EQ(a.find("client_secret"), std::string::npos);
}

TEST(TokenBrokerExplain, EachAadstsCodeNamesItsCauseAndFix) {
    auto key = generate_rsa_key(2048);
    auto cert = make_self_signed_cert(key.get(), "explain", 30);
    TokenBrokerConfig c = secret_config();
    c.certificate = make_cred(std::move(key), cert_to_der(cert.get()));
    std::string thumb = hex_upper(cert_sha1_thumbprint(cert.get()));
    auto say = [&](std::int64_t code, long status = 400) { return explain_token_error(c, status, "x", {code}); };
    EXPECT_NE(say(700027, 401).find(thumb), std::string::npos);
    EXPECT_NE(say(700027, 401).find("Certificates & secrets"), std::string::npos);
    EXPECT_NE(say(700024, 401).find("clock"), std::string::npos);
    EXPECT_NE(say(50012, 401).find("audience"), std::string::npos);
    EXPECT_NE(say(50027).find("malformed"), std::string::npos);
    EXPECT_NE(say(700016).find("was not found in tenant"), std::string::npos);
    EXPECT_NE(say(7000215, 401).find("Secret ID"), std::string::npos);
    EXPECT_NE(say(7000222, 401).find("expired"), std::string::npos);
    EXPECT_NE(say(90002).find("tenant"), std::string::npos);
    EXPECT_NE(say(900023).find("valid GUID or domain"), std::string::npos);
    EXPECT_NE(say(70011).find("/.default"), std::string::npos);
    EXPECT_NE(say(700022).find("/.default"), std::string::npos);
    EXPECT_NE(say(1002012).find("/.default"), std::string::npos);
    EXPECT_NE(say(500011).find("national cloud"), std::string::npos);
    EXPECT_NE(say(7000112).find("disabled"), std::string::npos);
    EXPECT_NE(explain_token_error(c, 0, "Connection refused", {}).find("cannot reach"), std::string::npos);
}

// --- against the sandbox over HTTPS ---------------------------------------------------------------

class BrokerSandboxTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        sb_ = new test::TestSandbox("broker");
        server_ = &sb_->server();
        http::ClientOptions o;
        o.ca_file = sb_->ca();
        client_ = new http::Client(o);
    }
    static void TearDownTestSuite() {
        delete client_;
        delete sb_;
    }
    static TokenBrokerConfig config(JwsAlg alg, ThumbprintHeader tp) {
        TokenBrokerConfig c;
        c.app_name = "sandbox";
        c.client_id = sb_->app().client_id;
        c.tenant = sb_->setup().tenant.tenant_id;
        c.token_endpoint = sb_->token_url();
        c.scope = sb_->base() + "/.default";
        auto cert = load_cert(sb_->tenant_dir() + "/app.pem");
        c.certificate = make_cred(load_private_key_pem(sb_->tenant_dir() + "/app.pem"), cert_to_der(cert.get()), alg, tp);
        return c;
    }
    static test::TestSandbox* sb_;
    static sandbox::SandboxServer* server_;
    static http::Client* client_;
};
test::TestSandbox* BrokerSandboxTest::sb_;
sandbox::SandboxServer* BrokerSandboxTest::server_;
http::Client* BrokerSandboxTest::client_;

TEST_F(BrokerSandboxTest, ThousandConcurrentCallersMakeOneRequestToTheSandbox) {
    TokenBroker broker(config(JwsAlg::RS256, ThumbprintHeader::X5t), http::make_token_transport(*client_));
    auto before = server_->stats().token_requests;
    constexpr int kCallers = 1000;
    std::barrier start(kCallers);
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kCallers; ++i)
        threads.emplace_back([&] {
            start.arrive_and_wait();
            if (std::holds_alternative<Token>(broker.get())) ++ok;
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), kCallers);
    EXPECT_EQ(server_->stats().token_requests - before, 1u);
    auto t = std::get<Token>(broker.get());
    EXPECT_EQ(t.roles, (std::vector<std::string>{"Mail.Send", "Mail.ReadWrite"}));
    EXPECT_GT(t.expires_at - t.obtained_at, 3500);
}

TEST_F(BrokerSandboxTest, Ps256WithSha256ThumbprintGetsAToken) {
    TokenBroker broker(config(JwsAlg::PS256, ThumbprintHeader::X5tS256), http::make_token_transport(*client_));
    auto r = broker.get();
    ASSERT_TRUE(std::holds_alternative<Token>(r)) << std::get<TokenFailure>(r).explanation;
}

TEST_F(BrokerSandboxTest, UnregisteredCertificateIsExplained) {
    auto c = config(JwsAlg::RS256, ThumbprintHeader::X5t);
    auto key = generate_rsa_key(2048);
    auto cert = make_self_signed_cert(key.get(), "not-registered", 30);
    c.certificate = make_cred(std::move(key), cert_to_der(cert.get()));
    TokenBroker broker(std::move(c), http::make_token_transport(*client_));
    auto r = broker.get();
    ASSERT_TRUE(std::holds_alternative<TokenFailure>(r));
    const auto& f = std::get<TokenFailure>(r);
    EXPECT_EQ(f.codes, std::vector<std::int64_t>{700027});
    EXPECT_NE(f.explanation.find(hex_upper(cert_sha1_thumbprint(cert.get()))), std::string::npos);
}

TEST_F(BrokerSandboxTest, UnreachableEndpointIsATransientFailure) {
    auto c = config(JwsAlg::RS256, ThumbprintHeader::X5t);
    c.token_endpoint = "https://127.0.0.1:1/" + c.tenant + "/oauth2/v2.0/token";
    TokenBroker broker(std::move(c), http::make_token_transport(*client_, 2000));
    auto r = broker.get();
    ASSERT_TRUE(std::holds_alternative<TokenFailure>(r));
    EXPECT_TRUE(std::get<TokenFailure>(r).transient);
    EXPECT_NE(std::get<TokenFailure>(r).explanation.find("cannot reach"), std::string::npos);
}

TEST_F(BrokerSandboxTest, GraphRefusesTheTokenOnceThenOneRefreshAndOneRetry) {
    TokenBroker broker(config(JwsAlg::RS256, ThumbprintHeader::X5t), http::make_token_transport(*client_));
    http::GraphClient graph(*client_, broker, sb_->base());
    http::Request req;
    req.url = "/v1.0/users/alice@sandbox.test/mailFolders/inbox";
    auto first = graph.call(req);
    ASSERT_EQ(first.response.status, 200) << first.response.body;
    EXPECT_FALSE(first.retried_after_401);
    EXPECT_EQ(broker.requests_sent(), 1u);

    server_->identity().revoke_issued_tokens();
    auto before = server_->stats();
    auto second = graph.call(req);
    EXPECT_EQ(second.response.status, 200) << second.response.body;
    EXPECT_TRUE(second.retried_after_401);
    EXPECT_EQ(broker.requests_sent(), 2u);
    auto after = server_->stats();
    EXPECT_EQ(after.token_requests - before.token_requests, 1u);
    EXPECT_EQ(after.graph_requests - before.graph_requests, 2u);

    // A token that keeps being refused is replaced once and retried once, not forever.
    sandbox::Fault f;
    f.target = sandbox::Fault::Target::Graph;
    f.status = 401;
    server_->inject(f, 5);
    auto tokens_before = server_->stats().token_requests;
    auto stale = graph.call(req);
    EXPECT_EQ(stale.response.status, 401);
    EXPECT_TRUE(stale.retried_after_401);
    EXPECT_EQ(server_->stats().token_requests - tokens_before, 1u);
    server_->clear_faults();
}
