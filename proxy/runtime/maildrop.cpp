#include "proxy/runtime/maildrop.h"

#include <fmt/format.h>

namespace gb::runtime {

namespace {

// Up to this many messages, LIST/STAT sizes are exact (bodies fetched at login, then cached); beyond it
// the size Exchange reports is used, to keep a login on a huge Inbox from downloading all of it.
constexpr std::size_t kExactSizeLimit = 500;

pop3::ProviderError to_provider(const sync::SourceError& e) {
    pop3::ProviderError p;
    p.kind = e.kind == sync::SourceError::Kind::NotFound ? pop3::ProviderError::Kind::Gone
                                                         : pop3::ProviderError::Kind::Temporary;
    p.detail = e.message;
    return p;
}

}  // namespace

pop3::ProviderResult<std::vector<pop3::MaildropEntry>> GraphMaildrop::list(const smtp::Account& account) {
    if (auto e = mail_.ensure_synced(account.mailbox)) return to_provider(*e);
    std::optional<sync::FolderRecord> inbox;
    for (auto& f : mail_.store().folders(account.mailbox))
        if (f.path == "INBOX") inbox = f;
    if (!inbox) return pop3::ProviderError{pop3::ProviderError::Kind::Temporary, "no Inbox folder"};
    if (auto e = mail_.ensure_synced(account.mailbox, inbox->folder_id)) return to_provider(*e);
    // A fresh look at the Inbox at login (POP3 clients poll by logging in).
    if (auto* box = mail_.mailbox(account.mailbox)) {
        if (auto e = box->sync_folder(inbox->folder_id); e && e->kind != sync::SourceError::Kind::Throttled)
            return to_provider(*e);
    }
    auto f = mail_.store().folder(account.mailbox, inbox->folder_id).value_or(*inbox);
    auto messages = mail_.store().messages(account.mailbox, f.folder_id);
    std::vector<pop3::MaildropEntry> out;
    for (const auto& m : messages) {
        pop3::MaildropEntry e;
        e.uid = fmt::format("{}.{}", f.uidvalidity, m.uid);
        e.ref = m.graph_id;
        if (auto d = mail_.store().derived(account.mailbox, m.graph_id)) {
            e.size = d->exact_size;
        } else if (messages.size() <= kExactSizeLimit) {
            // RFC 1939 wants exact sizes: fetch the body (it lands in the cache for the RETR that follows).
            auto body = mail_.body(account.mailbox, m.graph_id);
            e.size = body.index() == 0 ? std::get<std::string>(body).size() : m.size;
        } else {
            e.size = m.size;
        }
        out.push_back(std::move(e));
    }
    return out;
}

pop3::ProviderResult<std::string> GraphMaildrop::fetch(const smtp::Account& account, const pop3::MaildropEntry& entry) {
    auto r = mail_.body(account.mailbox, entry.ref);
    if (auto* e = std::get_if<sync::SourceError>(&r)) return to_provider(*e);
    return std::move(std::get<std::string>(r));
}

std::optional<pop3::ProviderError> GraphMaildrop::remove(const smtp::Account& account,
                                                         const std::vector<pop3::MaildropEntry>& entries) {
    for (const auto& e : entries) {
        auto err = mail_.move(account.mailbox, e.ref, "deleteditems");
        if (err && err->kind != sync::SourceError::Kind::NotFound) return to_provider(*err);
    }
    return std::nullopt;
}

}  // namespace gb::runtime
