// POP3's view of an account's mailbox, over the sync engine: the Inbox as synced (UIDL =
// "<UIDVALIDITY>.<UID>", so it is stable across sessions and restarts and changes only if the folder's
// UIDVALIDITY does), bodies through the cache, and DELE at QUIT moving messages to Deleted Items (what
// Outlook's delete does; nothing is purged).
// Sizes: exact (RFC 1939) for Inboxes of up to 500 messages (bodies are fetched at login into the cache,
// where RETR finds them); above that, exact for messages already downloaded and the size Exchange reports
// (PidTagMessageSize, close but not exact) for the rest. RETR's "+OK n octets" is always exact.
#pragma once

#include "proxy/pop3/server.h"
#include "proxy/sync/mail_service.h"

namespace gb::runtime {

class GraphMaildrop final : public pop3::MaildropProvider {
public:
    explicit GraphMaildrop(sync::MailService& mail) : mail_(mail) {}
    pop3::ProviderResult<std::vector<pop3::MaildropEntry>> list(const smtp::Account& account) override;
    pop3::ProviderResult<std::string> fetch(const smtp::Account& account, const pop3::MaildropEntry& entry) override;
    std::optional<pop3::ProviderError> remove(const smtp::Account& account,
                                              const std::vector<pop3::MaildropEntry>& entries) override;

private:
    sync::MailService& mail_;
};

}  // namespace gb::runtime
