// MailSource over Microsoft Graph (GRAPH-FACTS B.4-B.8):
// - folders: GET /mailFolders (root children) and .../childFolders for every folder with children,
//   well-known folders resolved once by name (inbox, sentitems, drafts, deleteditems, junkemail,
//   archive); search folders are skipped;
// - delta: GET /mailFolders/{id}/messages/delta with one $select carrying everything IMAP needs (flags,
//   dates) and the MAPI size and last-verb properties expanded, so no per-message GET is ever needed;
//   next/delta links are followed verbatim but only on the configured Graph origin (the token is never
//   sent anywhere else);
// - mime: GET /messages/{id}/$value.
// Every request carries Prefer: IdType="ImmutableId" (ids survive moves between folders).
#pragma once

#include <string>

#include "graph/http/graph_client.h"
#include "proxy/sync/mail_source.h"

namespace gb::sync {

class GraphSource final : public MailSource {
public:
    // graph_url as configured (without /v1.0). `page_size` is sent as Prefer: odata.maxpagesize.
    GraphSource(http::GraphClient& graph, std::string graph_url, int page_size = 500);

    SourceResult<std::vector<RemoteFolder>> folders(const std::string& mailbox) override;
    SourceResult<DeltaPage> delta(const std::string& mailbox, const std::string& folder_id,
                                  const std::string& link) override;
    SourceResult<std::string> mime(const std::string& mailbox, const std::string& graph_id) override;
    std::optional<SourceError> move(const std::string& mailbox, const std::string& graph_id,
                                    const std::string& destination) override;

    // The first delta request of a round (exposed for tests).
    std::string initial_delta_path(const std::string& mailbox, const std::string& folder_id) const;

private:
    http::GraphResult get(const std::string& path_or_link, bool json = true);
    SourceError error_of(const http::GraphResult& r) const;

    http::GraphClient& graph_;
    std::string graph_url_;
    int page_size_;
};

// "2026-11-29T07:00:00Z" (with optional fraction and offset) -> unix seconds; nullopt if malformed.
std::optional<std::int64_t> parse_graph_time(std::string_view text);

}  // namespace gb::sync
