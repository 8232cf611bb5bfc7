// MailSource over Microsoft Graph (GRAPH-FACTS B.4-B.8):
// - folders: GET /mailFolders (root children) and .../childFolders for every folder with children,
//   well-known folders resolved once by name (inbox, sentitems, drafts, deleteditems, junkemail,
//   archive); search folders are skipped;
// - delta: GET /mailFolders/{id}/messages/delta with one $select carrying everything IMAP needs (flags,
//   dates) and the MAPI size and last-verb properties expanded, so no per-message GET is ever needed;
//   next/delta links are followed verbatim but only on the configured Graph origin (the token is never
//   sent anywhere else);
// - mime: GET /messages/{id}/$value;
// - writes (IMAP): PATCH /messages/{id} with only the changed properties (isRead, flag, categories,
//   Integer 0x1081), POST .../move and .../copy, DELETE or POST .../permanentDelete, POST
//   /mailFolders/{id}/messages (MIME as base64 text/plain -> a draft; JSON -> any message), and the
//   folder calls (POST childFolders, PATCH displayName, POST /mailFolders/{id}/move, DELETE).
// Every request carries Prefer: IdType="ImmutableId" (ids survive moves between folders).
#pragma once

#include <string>

#include "graph/http/graph_client.h"
#include "proxy/sync/mail_source.h"

namespace gb::sync {

class GraphSource final : public MailSource {
public:
    // graph_url as configured (without /v1.0). `page_size` is sent as Prefer: odata.maxpagesize.
    // `upload` (plain HTTPS, no token) carries upload-session ranges; without it a create with attachments
    // over the one-request size fails as Permanent.
    GraphSource(http::GraphClient& graph, std::string graph_url, int page_size = 500, http::Client* upload = nullptr);

    SourceResult<std::vector<RemoteFolder>> folders(const std::string& mailbox) override;
    SourceResult<DeltaPage> delta(const std::string& mailbox, const std::string& folder_id,
                                  const std::string& link) override;
    SourceResult<std::string> mime(const std::string& mailbox, const std::string& graph_id) override;
    SourceResult<std::string> move(const std::string& mailbox, const std::string& graph_id,
                                   const std::string& destination) override;
    SourceResult<std::string> copy(const std::string& mailbox, const std::string& graph_id,
                                   const std::string& destination) override;
    std::optional<SourceError> update(const std::string& mailbox, const std::string& graph_id,
                                      const Patch& patch) override;
    std::optional<SourceError> remove(const std::string& mailbox, const std::string& graph_id,
                                      bool permanent) override;
    SourceResult<RemoteMessage> create(const std::string& mailbox, const std::string& folder_id,
                                       const std::string& body, bool mime,
                                       const std::vector<mail::Attachment>& attachments) override;
    SourceResult<std::string> find_by_message_id(const std::string& mailbox, const std::string& folder_id,
                                                 const std::string& message_id) override;
    SourceResult<RemoteFolder> create_folder(const std::string& mailbox, const std::string& parent_id,
                                             const std::string& name) override;
    std::optional<SourceError> rename_folder(const std::string& mailbox, const std::string& folder_id,
                                             const std::string& name) override;
    std::optional<SourceError> move_folder(const std::string& mailbox, const std::string& folder_id,
                                           const std::string& parent_id) override;
    std::optional<SourceError> delete_folder(const std::string& mailbox, const std::string& folder_id) override;

    // How long one Graph request may take ([graph] timeout); default 120 s.
    void set_timeout_ms(long ms) { timeout_ms_ = ms; }

    // The first delta request of a round (exposed for tests).
    std::string initial_delta_path(const std::string& mailbox, const std::string& folder_id) const;

private:
    http::GraphResult get(const std::string& path_or_link, bool json = true);
    // A write: `body` is JSON unless content_type says otherwise ("" = no body).
    http::GraphResult send(const std::string& method, const std::string& path, std::string body,
                           const char* content_type = "application/json");
    std::string user_path(const std::string& mailbox) const;
    SourceError error_of(const http::GraphResult& r) const;

    http::GraphClient& graph_;
    std::string graph_url_;
    int page_size_;
    http::Client* upload_;
    long timeout_ms_ = 120000;
};

// One page of a messages/delta response: the items (removals included), exactly one of nextLink and
// deltaLink; a Transient error for anything else. (GraphSource::delta's parser, exposed for the fuzzer.)
SourceResult<DeltaPage> parse_delta_page(std::string_view body);

// "2026-11-29T07:00:00Z" (with optional fraction and offset) -> unix seconds; nullopt if malformed.
std::optional<std::int64_t> parse_graph_time(std::string_view text);

}  // namespace gb::sync
