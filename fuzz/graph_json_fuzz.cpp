// Fuzz target: Graph and identity-platform response handling (graph/api errors: error bodies,
// classification, Retry-After) and Graph's timestamps (proxy/sync parse_graph_time). The delta and
// folder JSON of proxy/sync/graph_source.cpp is parsed inside GraphSource, which talks to Graph only
// through the concrete libcurl client, so it is not reachable here without a network.
//
// Input: [status byte] body. The body is parsed as a token error and a Graph error; the first line
// is also a Retry-After value and a Graph timestamp.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "graph/api/errors.h"
#include "proxy/sync/graph_source.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    gb::fuzz::Bytes in(data, size);
    std::uint8_t status_byte = in.byte();
    std::string_view body = in.rest();
    if (body.size() > 256 * 1024) return 0;
    static const int kStatuses[] = {200, 400, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504};
    int status = kStatuses[status_byte % (sizeof kStatuses / sizeof kStatuses[0])];
    if (status_byte >= 200) status = status_byte * 3;  // odd statuses too

    if (auto te = gb::graph::parse_token_error(body)) {
        for (std::int64_t c : te->codes) (void)te->has_code(c);
        (void)te->has_code(700027);
    }
    if (auto ge = gb::graph::parse_graph_error(body))
        (void)gb::graph::classify(status, ge->code);
    (void)gb::graph::classify(status, "");

    std::size_t lf = body.find('\n');
    std::string_view first = lf == std::string_view::npos ? body : body.substr(0, lf);
    for (std::int64_t now : {std::int64_t{0}, std::int64_t{1796000000}, std::int64_t{-1}})
        (void)gb::graph::parse_retry_after(first, now);
    (void)gb::graph::parse_retry_after(body, 1796000000);
    (void)gb::sync::parse_graph_time(first);
    (void)gb::sync::parse_graph_time(body);
    return 0;
}
