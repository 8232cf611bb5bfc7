// Emulated Microsoft Graph v1.0 mail API for the mailboxes the sandbox hosts (GRAPH-FACTS section B).
//
// Socket-free: the HTTPS front end authenticates the bearer token, applies throttling and fault
// injection, then calls handle() with the request and the validated token. Upload-session PUTs go to
// handle_upload() (they carry no Authorization header, as in Outlook).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <string_view>

#include "graph/sandbox/http_types.h"
#include "graph/sandbox/identity.h"
#include "graph/sandbox/tenant.h"

namespace gb::sandbox {

class GraphApi {
public:
    // `tenant` is read live (mailboxes added later are served) and must outlive the GraphApi. Thread-safe:
    // one mutex serialises every call.
    GraphApi(const Tenant& tenant, const SandboxOptions& options, Clock clock);
    ~GraphApi();
    GraphApi(const GraphApi&) = delete;
    GraphApi& operator=(const GraphApi&) = delete;

    // Any request whose path starts with /v1.0/ . The token is already validated (signature, expiry).
    HttpResponse handle(const HttpRequest& request, const AccessToken& token);

    // PUT to an upload URL handed out by createUploadSession (path starts with /upload/).
    HttpResponse handle_upload(const HttpRequest& request);

    // The mailbox a /v1.0/users/{id}/... request addresses (lower-case address), or "" if none.
    // Used by the front end for per-mailbox throttling.
    std::string mailbox_of(const HttpRequest& request) const;

    // The request's route for the front end's request log: the path after /v1.0/users/{user} (after
    // /v1.0 for other paths), literal segments lower-cased, every id in an id position (after
    // messages, mailFolders, childFolders, attachments) replaced by "{id}" unless it is a well-known
    // folder name or a literal such as "delta". E.g. "/mailfolders/{id}/messages/delta",
    // "/mailfolders/inbox/messages", "/messages/{id}/move". Bytes outside printable ASCII are
    // percent-escaped and the result is capped at 1024 bytes, so it is safe to echo.
    static std::string route_of(const HttpRequest& request);

    // Expire every delta token issued so far (next use answers 410 syncStateNotFound): fault tests.
    void expire_delta_tokens();

    // Test hook ("as if it arrived, or was filed in Outlook"): stores `mime` as a received, non-draft
    // message in a folder (well-known name or id) of a hosted mailbox. Returns the immutable id, or an
    // error text ("no such mailbox", "no such folder", "invalid MIME").
    std::variant<std::string, std::string> inject_message(std::string_view mailbox, std::string_view folder,
                                                          const std::string& mime, bool is_read,
                                                          std::int64_t received = 0);

    // Test hook: number of messages in a mailbox folder by well-known name (e.g. "inbox", "sentitems").
    std::size_t count_messages(std::string_view mailbox, std::string_view well_known_folder) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gb::sandbox
