// Fuzz target: the IMAP command engine (proxy/imap Session) over the real MailService, MailboxSync and
// SQLite store (in memory), with an in-memory mail source standing in for Graph. Where imap_parser
// covers the command reader, this covers what the commands do: sequence sets against real views,
// FETCH of real MIME (ENVELOPE, BODYSTRUCTURE, partial bodies), SEARCH, STORE/COPY/MOVE/EXPUNGE,
// APPEND, CREATE/RENAME/DELETE, CONDSTORE/QRESYNC, IDLE and the untagged updates between them.
//
// Input: [flags] [split seed] client bytes...
//   flags bit 0: log in first ("a LOGIN fuzz pw"), bit 1: SELECT INBOX first,
//         bit 2: the source fails every write (Transient), bit 3: mail arrives in INBOX between pieces
// The client bytes are fed in pieces (fuzz_util Splitter); after each piece every long job is stepped to
// its end. Invariants: output per command stays bounded, and after LOGOUT nothing more is written.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "auth/password.h"
#include "common/log.h"
#include "fuzz/fuzz_util.h"
#include "proxy/config/config.h"
#include "proxy/imap/session.h"
#include "proxy/smtp/policy.h"
#include "proxy/sync/body_cache.h"
#include "proxy/sync/mail_service.h"
#include "proxy/sync/state_store.h"

using namespace gb;

namespace {

const char* kMime[] = {
    "From: Alice <alice@example.com>\r\nTo: fuzz@x, \"B, C\" <bc@example.com>\r\nSubject: plain\r\n"
    "Message-ID: <m1@example.com>\r\nDate: Sun, 29 Nov 2026 07:00:00 +0000\r\n\r\nhello\r\nworld\r\n",
    "From: =?UTF-8?B?w6lsw6g=?= <e@example.com>\r\nSubject: multipart\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "text part\r\n--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "JVBERi0xLjQK\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b--\r\n",
    "Subject: bare LF\nX: y\n\nbody\n",
    "",
};

// Graph in memory: folders with messages; every change queued for the next delta round. Thread-safe
// like GraphSource (MailService runs a command's writes three at a time).
class MemorySource : public sync::MailSource {
public:
    std::recursive_mutex mu;
    bool fail_writes = false;
    int next_id = 100;
    std::vector<sync::RemoteFolder> tree = {{"F-in", "", "Inbox", "inbox"},      {"F-se", "", "Sent Items", "sentitems"},
                                            {"F-dr", "", "Drafts", "drafts"},    {"F-de", "", "Deleted Items", "deleteditems"},
                                            {"F-wo", "", "Work", ""},            {"F-su", "F-wo", "Sub", ""}};
    struct Msg {
        std::string folder;
        std::string mime;
        sync::RemoteMessage state;
    };
    std::map<std::string, Msg> messages;
    std::map<std::string, std::vector<sync::RemoteMessage>> pending;  // per folder, for the next delta

    MemorySource() {
        for (int i = 0; i < 6; ++i) add("F-in", kMime[i % 4], i % 3 == 0 ? std::uint32_t{sync::kSeen} : 0u);
        add("F-wo", kMime[1], sync::kFlagged);
    }
    std::string add(const std::string& folder, const std::string& mime, std::uint32_t flags) {
        std::string id = "M" + std::to_string(next_id++);
        Msg m{folder, mime, {}};
        m.state.graph_id = id;
        m.state.flags = flags;
        m.state.size = mime.size();
        m.state.internal_date = 1796000000 + next_id;
        messages[id] = m;
        pending[folder].push_back(m.state);
        return id;
    }
    void gone(const std::string& id) {
        auto it = messages.find(id);
        if (it == messages.end()) return;
        sync::RemoteMessage r;
        r.graph_id = id;
        r.removed = true;
        pending[it->second.folder].push_back(r);
        messages.erase(it);
    }
    std::optional<sync::SourceError> refuse() const {
        if (fail_writes) return sync::SourceError{sync::SourceError::Kind::Transient, "injected", {}};
        return std::nullopt;
    }
    std::string folder_id(const std::string& id_or_name) const {
        for (const auto& f : tree)
            if (f.id == id_or_name || f.well_known == id_or_name) return f.id;
        return "";
    }

    sync::SourceResult<std::vector<sync::RemoteFolder>> folders(const std::string&) override {
        std::lock_guard g(mu); return tree; }
    sync::SourceResult<sync::DeltaPage> delta(const std::string&, const std::string& folder,
                                              const std::string& link) override {
        std::lock_guard g(mu);
        sync::DeltaPage p;
        p.delta_link = "delta";
        if (link.empty()) {  // a full round: everything there now
            pending.erase(folder);
            for (const auto& [id, m] : messages)
                if (m.folder == folder) p.items.push_back(m.state);
        } else {
            p.items = std::move(pending[folder]);
            pending.erase(folder);
        }
        return p;
    }
    sync::SourceResult<std::string> mime(const std::string&, const std::string& id) override {
        std::lock_guard g(mu);
        auto it = messages.find(id);
        if (it == messages.end()) return sync::SourceError{sync::SourceError::Kind::NotFound, "gone", {}};
        return it->second.mime;
    }
    sync::SourceResult<std::string> move(const std::string&, const std::string& id, const std::string& dest) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return *e;
        auto it = messages.find(id);
        std::string to = folder_id(dest);
        if (it == messages.end() || to.empty()) return sync::SourceError{sync::SourceError::Kind::NotFound, "gone", {}};
        Msg m = it->second;
        gone(id);
        m.folder = to;
        messages[id] = m;
        pending[to].push_back(m.state);
        return id;
    }
    sync::SourceResult<std::string> copy(const std::string&, const std::string& id, const std::string& dest) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return *e;
        auto it = messages.find(id);
        std::string to = folder_id(dest);
        if (it == messages.end() || to.empty()) return sync::SourceError{sync::SourceError::Kind::NotFound, "gone", {}};
        return add(to, it->second.mime, it->second.state.flags);
    }
    std::optional<sync::SourceError> update(const std::string&, const std::string& id, const Patch& p) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return e;
        auto it = messages.find(id);
        if (it == messages.end()) return sync::SourceError{sync::SourceError::Kind::NotFound, "gone", {}};
        auto& s = it->second.state;
        if (p.read) s.flags = *p.read ? s.flags | sync::kSeen : s.flags & ~sync::kSeen;
        if (p.flagged) s.flags = *p.flagged ? s.flags | sync::kFlagged : s.flags & ~sync::kFlagged;
        if (p.categories) s.keywords = *p.categories;
        pending[it->second.folder].push_back(s);
        return std::nullopt;
    }
    std::optional<sync::SourceError> remove(const std::string&, const std::string& id, bool) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return e;
        if (!messages.count(id)) return sync::SourceError{sync::SourceError::Kind::NotFound, "gone", {}};
        gone(id);
        return std::nullopt;
    }
    sync::SourceResult<sync::RemoteMessage> create(const std::string&, const std::string& folder, const std::string& body,
                                                   bool, const std::vector<mail::Attachment>&) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return *e;
        std::string to = folder_id(folder);
        if (to.empty()) return sync::SourceError{sync::SourceError::Kind::NotFound, "no folder", {}};
        return messages[add(to, body, 0)].state;
    }
    sync::SourceResult<std::string> find_by_message_id(const std::string&, const std::string&, const std::string&) override {
        std::lock_guard g(mu);
        return sync::SourceError{sync::SourceError::Kind::NotFound, "none", {}};
    }
    sync::SourceResult<sync::RemoteFolder> create_folder(const std::string&, const std::string& parent,
                                                         const std::string& name) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return *e;
        if (tree.size() > 64) return sync::SourceError{sync::SourceError::Kind::Permanent, "too many", {}};
        sync::RemoteFolder f{"F" + std::to_string(next_id++), parent, name, ""};
        tree.push_back(f);
        return f;
    }
    std::optional<sync::SourceError> rename_folder(const std::string&, const std::string& id, const std::string& name) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return e;
        for (auto& f : tree)
            if (f.id == id) f.name = name;
        return std::nullopt;
    }
    std::optional<sync::SourceError> move_folder(const std::string&, const std::string& id, const std::string& parent) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return e;
        for (auto& f : tree)
            if (f.id == id) f.parent_id = parent;
        return std::nullopt;
    }
    std::optional<sync::SourceError> delete_folder(const std::string&, const std::string& id) override {
        std::lock_guard g(mu);
        if (auto e = refuse()) return e;
        std::erase_if(tree, [&](const sync::RemoteFolder& f) { return f.id == id; });
        std::erase_if(messages, [&](const auto& kv) { return kv.second.folder == id; });
        return std::nullopt;
    }
};

struct Fixture {
    config::Config cfg;
    std::unique_ptr<smtp::Policy> policy;
    std::unique_ptr<sync::BodyCache> cache;
    Fixture() {
        // Quiet unless GB_FUZZ_TRACE is set (then the whole conversation goes to stderr, with the logs).
        if (!std::getenv("GB_FUZZ_TRACE")) log::Logger::instance().configure(log::Level::Error, log::Format::Text);
        config::AccountConfig a;
        a.login = "fuzz";
        a.password_hash = auth::hash_password("pw", auth::ScryptParams{10, 1, 1});  // the cheapest accepted
        a.app = "app";
        a.mailbox = "fuzz@x";
        a.send_as = {"fuzz@x"};
        cfg.accounts.push_back(a);
        policy = std::make_unique<smtp::Policy>(cfg);
        auto dir = std::filesystem::temp_directory_path() / "gb_fuzz_imap_cache";
        std::filesystem::create_directories(dir);
        cache = std::make_unique<sync::BodyCache>(dir.string(), 8 << 20);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 64 * 1024) return 0;
    static Fixture fx;
    fuzz::Bytes in(data, size);
    std::uint8_t flags = in.byte();
    fuzz::Splitter split(in.byte(), 96);
    std::string_view client = in.rest();

    MemorySource source;
    source.fail_writes = flags & 4;
    auto store = sync::open_sqlite_store(":memory:");
    sync::MailServiceOptions mo;
    sync::MailService mail(*store, *fx.cache, mo);  // not started: no background polls, deterministic
    mail.add_mailbox("fuzz@x", source);
    sync::SentRegistry sent;

    imap::SessionServices services;
    services.policy = fx.policy.get();
    services.mail = &mail;
    services.sent = &sent;
    imap::SessionConfig config;
    config.loopback = true;
    config.client_ip = "127.0.0.1";
    imap::Session session(services, config);

    std::size_t total = 0;
    bool closed = false;
    const bool trace = std::getenv("GB_FUZZ_TRACE") != nullptr;
    auto take = [&] {
        std::string out = session.take_output();
        if (trace) std::fwrite(out.data(), 1, out.size(), stderr);
        return out;
    };
    auto drain = [&] {
        for (int guard = 0; session.busy() && guard < 100000; ++guard) {
            session.step();
            total += take().size();
        }
        std::string out = take();
        if (closed && !out.empty()) fuzz::fail("output after the connection was to be closed", out.substr(0, 200));
        total += out.size();
        if (session.wants_close()) closed = true;
    };
    auto feed = [&](std::string_view bytes) {
        if (closed) return;
        if (trace) std::fprintf(stderr, "C: %.*s\n", static_cast<int>(bytes.size()), bytes.data());
        session.feed(bytes);
        drain();
    };
    drain();  // the greeting
    if (flags & 1) feed("a LOGIN fuzz pw\r\n");
    if (flags & 2) feed("b SELECT INBOX\r\n");
    std::size_t pos = 0;
    int piece = 0;
    while (pos < client.size() && !closed) {
        std::size_t n = split.next(client.size() - pos);
        feed(client.substr(pos, n));
        pos += n;
        if ((flags & 8) && ++piece % 4 == 0) {
            {
                std::lock_guard g(source.mu);
                source.add("F-in", kMime[piece % 4], 0);
            }
            mail.poke("fuzz@x");
        }
    }
    // Bounded output: 64 KiB of input and eight small messages cannot justify more than this.
    if (total > 64u * 1024 * 1024) fuzz::fail("output out of proportion to the input");
    return 0;
}
