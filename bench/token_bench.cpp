// The cost of what every Graph call pays for its token: signing a client assertion (once per token
// request) and a cached token lookup (once per Graph request), including under contention.
#include <benchmark/benchmark.h>

#include "auth/jwt.h"
#include "auth/pki.h"
#include "auth/token_broker.h"

using namespace gb::auth;

namespace {

PKey& key() {
    static PKey k = generate_rsa_key(2048);
    return k;
}
const std::string& cert_der() {
    static std::string der = cert_to_der(make_self_signed_cert(key().get(), "bench", 30).get());
    return der;
}

void sign_assertion(benchmark::State& state, JwsAlg alg, ThumbprintHeader tp) {
    ClientAssertionParams p;
    p.client_id = "11111111-2222-3333-4444-555555555555";
    p.audience = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
    p.cert_der = cert_der();
    p.alg = alg;
    p.thumbprint = tp;
    p.now = 1'800'000'000;
    for (auto _ : state) benchmark::DoNotOptimize(make_client_assertion(p, key().get()));
}

void BM_SignAssertionRS256(benchmark::State& s) { sign_assertion(s, JwsAlg::RS256, ThumbprintHeader::X5t); }
void BM_SignAssertionPS256(benchmark::State& s) { sign_assertion(s, JwsAlg::PS256, ThumbprintHeader::X5tS256); }

TokenBroker& broker() {
    static TokenBroker b = [] {
        TokenBrokerConfig c;
        c.client_id = "11111111-2222-3333-4444-555555555555";
        c.token_endpoint = "https://login.example/t/oauth2/v2.0/token";
        c.scope = "https://graph.microsoft.com/.default";
        c.client_secret = gb::Secret("x");
        return TokenBroker(std::move(c), [](const TokenHttpRequest&) {
            // Entra access tokens are about 1.5 KB; the cached lookup copies one.
            TokenHttpResponse r;
            r.status = 200;
            r.body = R"({"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0eXAiOiJKV1QifQ.)" +
                     std::string(1400, 'x') + R"(.c2ln"})";
            return r;
        });
    }();
    return b;
}

void BM_CachedTokenLookup(benchmark::State& state) {
    broker().get();  // warm
    for (auto _ : state) benchmark::DoNotOptimize(broker().get());
}

}  // namespace

BENCHMARK(BM_SignAssertionRS256)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SignAssertionPS256)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CachedTokenLookup)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_CachedTokenLookup)->Threads(2)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_CachedTokenLookup)->Threads(8)->Unit(benchmark::kNanosecond);
BENCHMARK_MAIN();
