// In-memory mail store of the emulated Graph API (see mailstore.h).
#include "graph/sandbox/mailstore.h"

#include <algorithm>

#include "auth/crypto.h"
#include "common/ascii.h"
#include "graph/sandbox/http_types.h"

namespace gb::sandbox {

namespace {

using ascii::lower;

struct WellKnown {
    const char* name;
    const char* display;
};
constexpr WellKnown kWellKnown[] = {
    {"inbox", "Inbox"},          {"drafts", "Drafts"},
    {"sentitems", "Sent Items"}, {"deleteditems", "Deleted Items"},
    {"junkemail", "Junk Email"}, {"outbox", "Outbox"},
    {"archive", "Archive"},
};

}  // namespace

std::string MailStore::new_rest_id() {
    return "AAMkAGI2" + auth::base64url_encode(auth::random_bytes(66)) + "AAA=";
}
std::string MailStore::new_immutable_id() {
    return "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A" + auth::base64url_encode(auth::random_bytes(45)) + "AAA=";
}
std::string MailStore::new_folder_id() {
    return "AAMkAGI2AAEu" + auth::base64url_encode(auth::random_bytes(42)) + "AAA=";
}
std::string MailStore::new_change_key() {
    return "CQAAABYAAA" + auth::base64url_encode(auth::random_bytes(15));
}
std::string MailStore::new_attachment_id() {
    return "AAMkAGI2AAABEgAQ" + auth::base64url_encode(auth::random_bytes(48)) + "=";
}

MailboxData& MailStore::ensure_mailbox(std::string_view address) {
    std::string key = lower(address);
    auto it = boxes_.find(key);
    if (it != boxes_.end()) return it->second;
    MailboxData& box = boxes_[key];
    box.address = key;
    box.root_parent_id = new_folder_id();
    MailFolder& root =
        add_folder(box, "Top of Information Store", box.root_parent_id, "msgfolderroot", false);
    std::string root_id = root.id;
    for (const auto& wk : kWellKnown) add_folder(box, wk.display, root_id, wk.name, false);
    return box;
}

MailboxData* MailStore::mailbox(std::string_view address) {
    auto it = boxes_.find(lower(address));
    return it == boxes_.end() ? nullptr : &it->second;
}

const MailboxData* MailStore::mailbox(std::string_view address) const {
    auto it = boxes_.find(lower(address));
    return it == boxes_.end() ? nullptr : &it->second;
}

MailFolder* MailStore::find_folder(MailboxData& box, std::string_view id_or_name) {
    auto it = box.folders.find(std::string(id_or_name));
    if (it != box.folders.end()) return &it->second;
    for (auto& [id, f] : box.folders)
        if (!f.well_known.empty() && iequals(f.well_known, id_or_name)) return &f;
    return nullptr;
}

const MailFolder* MailStore::find_folder(const MailboxData& box, std::string_view id_or_name) {
    return find_folder(const_cast<MailboxData&>(box), id_or_name);
}

std::vector<const MailFolder*> MailStore::children(const MailboxData& box, std::string_view parent_id) {
    std::vector<const MailFolder*> out;
    for (const auto& id : box.folder_order) {
        auto it = box.folders.find(id);
        if (it != box.folders.end() && it->second.parent_id == parent_id) out.push_back(&it->second);
    }
    return out;
}

MailFolder& MailStore::add_folder(MailboxData& box, std::string display_name, std::string parent_id,
                                  std::string well_known, bool hidden) {
    MailFolder f;
    f.id = new_folder_id();
    f.display_name = std::move(display_name);
    f.parent_id = std::move(parent_id);
    f.well_known = std::move(well_known);
    f.is_hidden = hidden;
    box.folder_order.push_back(f.id);
    std::string id = f.id;
    return box.folders[id] = std::move(f);
}

void MailStore::remove_folder(MailboxData& box, const std::string& id) {
    std::vector<std::string> doomed{id};
    for (std::size_t i = 0; i < doomed.size() && i < 100000; ++i)
        for (const auto* child : children(box, doomed[i])) doomed.push_back(child->id);
    for (const auto& fid : doomed) {
        for (auto it = box.messages.begin(); it != box.messages.end();) {
            if (it->second.folder_id == fid) {
                box.rest_index.erase(it->second.rest_id);
                it = box.messages.erase(it);
            } else {
                ++it;
            }
        }
        box.tombstones.erase(fid);
        box.folders.erase(fid);
        box.folder_order.erase(std::remove(box.folder_order.begin(), box.folder_order.end(), fid),
                               box.folder_order.end());
    }
    ++box.counter;
}

StoredMessage* MailStore::find_message(MailboxData& box, std::string_view id) {
    std::string key(id);
    auto r = box.rest_index.find(key);
    if (r != box.rest_index.end()) key = r->second;
    auto it = box.messages.find(key);
    return it == box.messages.end() ? nullptr : &it->second;
}

StoredMessage& MailStore::insert(MailboxData& box, StoredMessage message, std::int64_t now) {
    message.immutable_id = new_immutable_id();
    message.rest_id = new_rest_id();
    message.change_key = new_change_key();
    message.created = now;
    message.modified = now;
    message.seq = ++box.counter;
    message.order = ++box.next_order;
    box.rest_index[message.rest_id] = message.immutable_id;
    std::string key = message.immutable_id;
    return box.messages[key] = std::move(message);
}

void MailStore::touch(MailboxData& box, StoredMessage& message, std::int64_t now) {
    message.change_key = new_change_key();
    message.modified = now;
    message.seq = ++box.counter;
}

void MailStore::move(MailboxData& box, StoredMessage& message, const std::string& folder_id,
                     std::int64_t now) {
    box.tombstones[message.folder_id].push_back(
        Tombstone{message.immutable_id, message.rest_id, ++box.counter});
    box.rest_index.erase(message.rest_id);
    message.rest_id = new_rest_id();
    box.rest_index[message.rest_id] = message.immutable_id;
    message.folder_id = folder_id;
    touch(box, message, now);
}

void MailStore::erase(MailboxData& box, const std::string& immutable_id) {
    auto it = box.messages.find(immutable_id);
    if (it == box.messages.end()) return;
    box.tombstones[it->second.folder_id].push_back(
        Tombstone{immutable_id, it->second.rest_id, ++box.counter});
    box.rest_index.erase(it->second.rest_id);
    box.messages.erase(it);
}

std::size_t MailStore::count(const MailboxData& box, std::string_view folder_id, bool unread_only) {
    std::size_t n = 0;
    for (const auto& [id, m] : box.messages)
        if (m.folder_id == folder_id && (!unread_only || !m.is_read)) ++n;
    return n;
}

}  // namespace gb::sandbox
