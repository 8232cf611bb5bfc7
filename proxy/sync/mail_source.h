// Where mailbox contents come from: Microsoft Graph in production (graph_source.h), a fake in unit tests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "proxy/sync/state_store.h"

namespace gb::sync {

struct RemoteFolder {
    std::string id;
    std::string parent_id;  // "" for children of the root (msgfolderroot)
    std::string name;
    std::string well_known;  // "inbox", "sentitems", "drafts", "deleteditems", "junkemail", "archive" or ""
};

struct DeltaPage {
    std::vector<RemoteMessage> items;
    std::string next_link;   // more pages in this round
    std::string delta_link;  // the round is complete; start the next one here
};

struct SourceError {
    enum class Kind {
        SyncStateLost,  // 410 / syncStateNotFound / resyncRequired: start a full round
        Throttled,      // 429 / 503 with Retry-After
        Transient,      // 5xx, network, token trouble
        NotFound,       // the folder or message is gone
        Permanent,      // 4xx that retrying will not fix (permissions, bad request)
    } kind = Kind::Transient;
    std::string message;
    std::optional<std::int64_t> retry_after;  // seconds
};

template <typename T>
using SourceResult = std::variant<T, SourceError>;

class MailSource {
public:
    virtual ~MailSource() = default;
    // The whole folder tree of a mailbox (mail folders only; search folders and hidden ones excluded).
    virtual SourceResult<std::vector<RemoteFolder>> folders(const std::string& mailbox) = 0;
    // One page of a folder's message delta. `link` is "" to start a new full round, else a next or delta
    // link returned earlier (used verbatim).
    virtual SourceResult<DeltaPage> delta(const std::string& mailbox, const std::string& folder_id,
                                          const std::string& link) = 0;
    // The message's MIME as Graph serves it ($value).
    virtual SourceResult<std::string> mime(const std::string& mailbox, const std::string& graph_id) = 0;
    // Moves a message to a folder (id or well-known name, e.g. "deleteditems"). A message already gone
    // is NotFound. Sources that cannot write say Permanent.
    virtual std::optional<SourceError> move(const std::string& mailbox, const std::string& graph_id,
                                            const std::string& destination) {
        (void)mailbox, (void)graph_id, (void)destination;
        return SourceError{SourceError::Kind::Permanent, "this source is read-only", {}};
    }
};

}  // namespace gb::sync
