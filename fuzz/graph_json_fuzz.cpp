// Fuzz target: Graph and identity-platform response handling (graph/api errors: error bodies,
// classification, Retry-After), Graph's timestamps (proxy/sync parse_graph_time) and the delta pages
// the IMAP sync reads (proxy/sync parse_delta_page: messages, flags, categories, removals, links). The
// folder tree JSON is parsed inside GraphSource::folders between requests, not reachable here.
//
// Input: [status byte] body. The body is parsed as a token error, a Graph error and a delta page; the
// first line is also a Retry-After value and a Graph timestamp.
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

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

    auto page = gb::sync::parse_delta_page(body);
    if (auto* p = std::get_if<gb::sync::DeltaPage>(&page)) {
        // What MailboxSync relies on: exactly one link, ids present.
        if (p->next_link.empty() == p->delta_link.empty()) __builtin_trap();
        for (const auto& m : p->items)
            if (m.graph_id.empty()) __builtin_trap();
    }
    return 0;
}
