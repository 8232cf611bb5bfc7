// The session's view of its selected folder: the message list the client's sequence numbers refer to
// (it changes only when the client is told: EXISTS, EXPUNGE), and the changes waiting to be told.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "proxy/imap/session.h"
#include "proxy/sync/state_store.h"

namespace gb::imap {

struct Session::Selected {
    sync::FolderRecord folder;
    // The client's view: sequence number = index + 1, ascending UIDs. Normally the folder's shared
    // snapshot; a private copy only while expunges are held back (messages gone remotely that the client
    // has not been told about yet).
    std::shared_ptr<const std::vector<sync::MessageRecord>> view;
    const std::vector<sync::MessageRecord>& messages() const { return *view; }
    bool read_only = true;
    int listener_id = 0;
    int watch_id = 0;
};

struct Session::FetchItem {
    enum class Kind { Flags, InternalDate, Size, Envelope, BodyStructure, Body, Uid, ModSeq, Section } kind;
    std::string label;                            // response item name, e.g. "BODY[HEADER]" or "RFC822"
    std::optional<mail::imap::Section> section;  // Kind::Section
    bool peek = true;
    std::optional<std::pair<std::uint64_t, std::uint64_t>> partial;  // <origin.count>
};

// "1:3,7" for ascending UIDs (COPYUID, VANISHED, MODIFIED).
std::string uid_set_text(const std::vector<std::uint32_t>& ascending);

// "\Seen \Flagged $Forwarded Keyword" for FETCH FLAGS (keywords that are not IMAP atoms are left out).
std::string flag_list(const sync::MessageRecord& m);

}  // namespace gb::imap
