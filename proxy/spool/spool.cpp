// The durable outbound spool. Guarantees, file format and durability protocol: see spool.h.
// Hostile input here: entry and state files read back after a crash, and ids from the CLI.
#include "proxy/spool/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <future>
#include <stdexcept>
#include <unordered_set>

#include "auth/crypto.h"
#include "common/log.h"

namespace gb::spool {

// ---- constants and small helpers -----------------------------------------------------------------

namespace {

constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";  // Crockford base32
constexpr char kMagic[8] = {'G', 'B', 'S', 'P', 'O', 'O', 'L', '\n'};
constexpr char kEndMagic[8] = {'G', 'B', 'S', 'P', 'E', 'N', 'D', '\n'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderSize = 32;
constexpr std::size_t kTrailerSize = 56;  // body_len, env_len, sha256, end magic
constexpr std::size_t kDigestOffsetFromEnd = 40;
constexpr std::uint64_t kMaxEnvelope = 8u * 1024 * 1024;
constexpr std::size_t kMaxStateFile = 64 * 1024;
constexpr std::size_t kMaxErrorText = 1000;
constexpr std::size_t kHashChunk = 256 * 1024;

enum DirIndex { kTmp = 0, kQueue = 1, kState = 2, kDead = 3 };

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void put_u32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t get_u64(const char* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return v;
}
std::uint32_t get_u32(const char* p) {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return v;
}

Error make_error(int err, std::string what) {
    Error e;
    e.sys_errno = err;
    e.code = (err == ENOSPC || err == EDQUOT) ? Errc::NoSpace : err == ENOENT ? Errc::NotFound : Errc::Io;
    e.message = fmt::format("{}: {}", what, std::strerror(err));
    return e;
}

Error plain_error(Errc code, std::string what) {
    Error e;
    e.code = code;
    e.message = std::move(what);
    return e;
}

std::optional<Error> bad_id(std::string_view id) {
    if (valid_id(id)) return std::nullopt;
    return plain_error(Errc::InvalidId, "invalid queue id");
}

// Reads exactly n bytes at offset; false on error or short file.
bool pread_all(int fd, char* out, std::size_t n, std::uint64_t off) {
    while (n > 0) {
        ssize_t r = ::pread(fd, out, n, static_cast<off_t>(off));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        out += r;
        n -= static_cast<std::size_t>(r);
        off += static_cast<std::uint64_t>(r);
    }
    return true;
}

bool write_all_raw(int fd, const char* p, std::size_t n, const IoHooks& hooks, int* err) {
    while (n > 0) {
        long r = hooks.write ? hooks.write(fd, p, n) : static_cast<long>(::write(fd, p, n));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            *err = r == 0 ? EIO : errno;
            return false;
        }
        p += r;
        n -= static_cast<std::size_t>(r);
    }
    return true;
}

void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

bool is_hex_escape_needed(unsigned char c, bool key) {
    return c < 0x20 || c >= 0x7f || c == '%' || (key && (c == '=' || c == ' '));
}

void escape_into(std::string& out, std::string_view s, bool key) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (unsigned char c : s) {
        if (is_hex_escape_needed(c, key)) {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

std::optional<std::string> unescape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '%') {
            if (i + 2 >= s.size()) return std::nullopt;
            int hi = hex_value(s[i + 1]);
            int lo = hex_value(s[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c < 0x20 || c >= 0x7f) {
            return std::nullopt;  // the encoder never writes these raw
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    return out;
}

template <typename T>
bool parse_int(std::string_view s, T& out) {
    if (s.empty()) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

// Splits "key=value\n..." into unescaped pairs; nullopt on any malformed line.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_lines(std::string_view text) {
    std::vector<std::pair<std::string, std::string>> out;
    while (!text.empty()) {
        auto nl = text.find('\n');
        if (nl == std::string_view::npos) return std::nullopt;  // every line ends in \n
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        auto eq = line.find('=');
        if (eq == std::string_view::npos || eq == 0) return std::nullopt;
        auto k = unescape(line.substr(0, eq));
        auto v = unescape(line.substr(eq + 1));
        if (!k || !v) return std::nullopt;
        out.emplace_back(std::move(*k), std::move(*v));
    }
    return out;
}

// Layout of a verified (or structurally checked) entry file.
struct Layout {
    std::uint64_t file_size = 0;
    std::uint64_t body_len = 0;
    std::uint64_t env_len = 0;
};

// Checks structure (sizes, magics, version) and, when `full`, the SHA-256. Fills the envelope text.
std::optional<Error> check_entry(int fd, bool full, Layout& lay, std::string& env_text) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return make_error(errno, "fstat entry");
    auto corrupt = [](std::string what) { return plain_error(Errc::Corrupt, "corrupt entry: " + what); };
    if (st.st_size < static_cast<off_t>(kHeaderSize + kTrailerSize)) return corrupt("too short");
    lay.file_size = static_cast<std::uint64_t>(st.st_size);
    char header[kHeaderSize];
    char trailer[kTrailerSize];
    if (!pread_all(fd, header, sizeof header, 0)) return corrupt("header unreadable");
    if (!pread_all(fd, trailer, sizeof trailer, lay.file_size - kTrailerSize))
        return corrupt("trailer unreadable");
    if (std::memcmp(header, kMagic, 8) != 0) return corrupt("bad magic");
    if (get_u32(header + 8) != kVersion || get_u32(header + 12) != kHeaderSize) return corrupt("bad version");
    if (std::memcmp(trailer + 48, kEndMagic, 8) != 0) return corrupt("no end marker");
    lay.body_len = get_u64(trailer);
    lay.env_len = get_u64(trailer + 8);
    std::uint64_t payload = lay.file_size - kHeaderSize - kTrailerSize;
    if (lay.env_len > kMaxEnvelope || lay.env_len > payload || lay.body_len != payload - lay.env_len) {
        return corrupt("lengths do not match the file size");
    }
    env_text.resize(lay.env_len);
    if (!pread_all(fd, env_text.data(), env_text.size(), kHeaderSize + lay.body_len)) {
        return corrupt("envelope unreadable");
    }
    if (!full) return std::nullopt;

    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
        EVP_MD_CTX_free(ctx);
        return plain_error(Errc::Io, "sha256 init failed");
    }
    std::string chunk(kHashChunk, '\0');
    std::uint64_t end = lay.file_size - kDigestOffsetFromEnd;
    std::uint64_t off = 0;
    bool ok = true;
    while (off < end) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), end - off));
        if (!pread_all(fd, chunk.data(), n, off)) {
            ok = false;
            break;
        }
        EVP_DigestUpdate(ctx, chunk.data(), n);
        off += n;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!ok) return corrupt("body unreadable");
    if (mdlen != 32 || std::memcmp(md, trailer + 16, 32) != 0) return corrupt("digest mismatch");
    return std::nullopt;
}

std::string encode_state(const DeliveryState& st) {
    std::string out = "GBSTATE1\n";
    out += fmt::format("attempts={}\nnext={}\nlast={}\nstatus={}\nerror=", st.attempts, st.next_attempt_ms,
                       st.last_attempt_ms, status_name(st.status));
    escape_into(out, std::string_view(st.last_error).substr(0, kMaxErrorText), false);
    out += "\n";
    if (!st.draft_id.empty()) {
        out += "draft=";
        escape_into(out, std::string_view(st.draft_id).substr(0, kMaxErrorText), false);
        out += "\n";
    }
    out += "sum=" + auth::hex_lower(auth::sha256(out)) + "\n";
    return out;
}

std::optional<DeliveryState> decode_state(std::string_view text) {
    constexpr std::string_view kHead = "GBSTATE1\n";
    if (text.substr(0, kHead.size()) != kHead) return std::nullopt;
    auto sum_pos = text.rfind("sum=");
    if (sum_pos == std::string_view::npos || sum_pos < kHead.size()) return std::nullopt;
    std::string_view body = text.substr(0, sum_pos);
    if (text.substr(sum_pos) != "sum=" + auth::hex_lower(auth::sha256(body)) + "\n") return std::nullopt;
    auto lines = parse_lines(body.substr(kHead.size()));
    if (!lines) return std::nullopt;
    DeliveryState st;
    for (auto& [k, v] : *lines) {
        if (k == "attempts") {
            if (!parse_int(v, st.attempts)) return std::nullopt;
        } else if (k == "next") {
            if (!parse_int(v, st.next_attempt_ms)) return std::nullopt;
        } else if (k == "last") {
            if (!parse_int(v, st.last_attempt_ms)) return std::nullopt;
        } else if (k == "status") {
            if (v == "queued")
                st.status = Status::Queued;
            else if (v == "deferred")
                st.status = Status::Deferred;
            else if (v == "dead")
                st.status = Status::Dead;
            else
                return std::nullopt;
        } else if (k == "error") {
            st.last_error = v;
        } else if (k == "draft") {
            st.draft_id = v;
        }
    }
    return st;
}

std::vector<std::string> read_dir_names(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return names;
    while (dirent* e = ::readdir(d)) {
        std::string_view n = e->d_name;
        if (n == "." || n == "..") continue;
        names.emplace_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

// rename(2) that never replaces an existing target; falls back to link+unlink where renameat2 is missing.
int rename_noreplace(const std::string& from, const std::string& to) {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    if (::link(from.c_str(), to.c_str()) != 0) return -1;
    ::unlink(from.c_str());
    return 0;
}

// Gives an O_TMPFILE inode its name; fails with EEXIST when the name is taken (never replaces).
int link_anonymous(int fd, const std::string& to) {
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, to.c_str(), AT_SYMLINK_FOLLOW) == 0) return 0;
    if (errno != ENOENT) return -1;  // no /proc: AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH)
    return ::linkat(fd, "", AT_FDCWD, to.c_str(), AT_EMPTY_PATH);
}

}  // namespace

// ---- public helpers ------------------------------------------------------------------------------

std::string_view errc_name(Errc e) {
    switch (e) {
        case Errc::NoSpace:
            return "no_space";
        case Errc::Io:
            return "io";
        case Errc::NotFound:
            return "not_found";
        case Errc::InvalidId:
            return "invalid_id";
        case Errc::Corrupt:
            return "corrupt";
        case Errc::Closed:
            return "closed";
        case Errc::Locked:
            return "locked";
    }
    return "unknown";
}

std::string_view status_name(Status s) {
    switch (s) {
        case Status::Queued:
            return "queued";
        case Status::Deferred:
            return "deferred";
        case Status::Dead:
            return "dead";
    }
    return "unknown";
}

bool valid_id(std::string_view id) {
    if (id.size() != kIdLength) return false;
    for (char c : id) {
        if (std::strchr(kAlphabet, c) == nullptr || c == '\0') return false;
    }
    return true;
}

std::string encode_envelope(const Envelope& env) {
    std::string out = "v=1\n";
    auto field = [&out](std::string_view k, std::string_view v) {
        out += k;
        out += '=';
        escape_into(out, v, false);
        out += '\n';
    };
    field("from", env.reverse_path);
    for (const auto& r : env.recipients) field("rcpt", r);
    field("login", env.login);
    field("relay_rule", env.relay_rule);
    field("mailbox", env.mailbox);
    field("app", env.app);
    field("received_at", std::to_string(env.received_at));
    field("client_ip", env.client_ip);
    field("helo", env.helo);
    field("tls", env.tls ? "1" : "0");
    field("size", std::to_string(env.size));
    for (const auto& [k, v] : env.extra) {
        out += "x.";
        escape_into(out, k, true);
        out += '=';
        escape_into(out, v, false);
        out += '\n';
    }
    return out;
}

std::optional<Envelope> decode_envelope(std::string_view text) {
    if (text.size() > kMaxEnvelope) return std::nullopt;
    auto lines = parse_lines(text);
    if (!lines || lines->empty() || (*lines)[0] != std::pair<std::string, std::string>{"v", "1"}) {
        return std::nullopt;
    }
    Envelope env;
    for (std::size_t i = 1; i < lines->size(); ++i) {
        auto& [k, v] = (*lines)[i];
        if (k == "from")
            env.reverse_path = std::move(v);
        else if (k == "rcpt")
            env.recipients.push_back(std::move(v));
        else if (k == "login")
            env.login = std::move(v);
        else if (k == "relay_rule")
            env.relay_rule = std::move(v);
        else if (k == "mailbox")
            env.mailbox = std::move(v);
        else if (k == "app")
            env.app = std::move(v);
        else if (k == "client_ip")
            env.client_ip = std::move(v);
        else if (k == "helo")
            env.helo = std::move(v);
        else if (k == "received_at") {
            if (!parse_int(v, env.received_at)) return std::nullopt;
        } else if (k == "size") {
            if (!parse_int(v, env.size)) return std::nullopt;
        } else if (k == "tls") {
            if (v != "0" && v != "1") return std::nullopt;
            env.tls = v == "1";
        } else if (k.rfind("x.", 0) == 0) {
            env.extra.emplace_back(k.substr(2), std::move(v));
        }
        // Unknown keys are ignored: a newer writer may add fields.
    }
    return env;
}

// ---- BodyReader ----------------------------------------------------------------------------------

BodyReader::BodyReader(BodyReader&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), offset_(o.offset_), size_(o.size_), pos_(o.pos_) {}

BodyReader& BodyReader::operator=(BodyReader&& o) noexcept {
    if (this != &o) {
        close_fd(fd_);
        fd_ = std::exchange(o.fd_, -1);
        offset_ = o.offset_;
        size_ = o.size_;
        pos_ = o.pos_;
    }
    return *this;
}

BodyReader::~BodyReader() {
    close_fd(fd_);
}

std::int64_t BodyReader::read(char* out, std::size_t cap) {
    if (fd_ < 0) return -1;
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(cap, size_ - pos_));
    if (n == 0) return 0;
    for (;;) {
        ssize_t r = ::pread(fd_, out, n, static_cast<off_t>(offset_ + pos_));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;  // 0 here means the file shrank: an error, not the end
        pos_ += static_cast<std::uint64_t>(r);
        return r;
    }
}

std::optional<std::string> BodyReader::read_all(std::size_t max) {
    if (fd_ < 0 || size_ > max) return std::nullopt;
    std::string out(static_cast<std::size_t>(size_ - pos_), '\0');
    if (!pread_all(fd_, out.data(), out.size(), offset_ + pos_)) return std::nullopt;
    pos_ = size_;
    return out;
}

// ---- group-commit operation ----------------------------------------------------------------------

struct Spool::Op {
    struct Step {
        enum Kind { Rename, RenameNoReplace, Unlink } kind;
        std::string from;  // path renamed or unlinked
        std::string to;
        int from_dir;
        int to_dir;
        bool missing_ok;
    };
    int sync_fd = -1;      // data to flush before the steps (owned)
    std::string sync_tmp;  // its temp path, unlinked when the op fails
    bool is_commit = false;
    std::string id;  // commit: the id (may change on a rename clash)
    std::string committed_path;
    std::uint64_t bytes = 0;
    std::vector<Step> steps;
    unsigned dirs = 0;  // directories touched (bit per DirIndex)
    std::optional<Error> error;
    SpoolWriter::Done commit_done;
    Spool::Done done;
};

// ---- SpoolWriter ---------------------------------------------------------------------------------

SpoolWriter::SpoolWriter(SpoolWriter&& o) noexcept {
    *this = std::move(o);
}

SpoolWriter& SpoolWriter::operator=(SpoolWriter&& o) noexcept {
    if (this != &o) {
        abort();
        spool_ = std::exchange(o.spool_, nullptr);
        fd_ = std::exchange(o.fd_, -1);
        id_ = std::move(o.id_);
        tmp_path_ = std::move(o.tmp_path_);
        buf_ = std::move(o.buf_);
        buf_cap_ = o.buf_cap_;
        body_len_ = o.body_len_;
        file_len_ = o.file_len_;
        sha_ = std::exchange(o.sha_, nullptr);
        error_ = std::move(o.error_);
    }
    return *this;
}

SpoolWriter::~SpoolWriter() {
    abort();
}

void SpoolWriter::fail(Errc code, int err, std::string what) {
    if (error_) return;
    error_ = err ? make_error(err, std::move(what)) : plain_error(code, std::move(what));
}

bool SpoolWriter::flush_buffer() {
    if (buf_.empty() || error_) return !error_;
    int err = 0;
    if (!write_all_raw(fd_, buf_.data(), buf_.size(), spool_->opts_.hooks, &err)) {
        fail(Errc::Io, err, "write temp file");
        return false;
    }
    file_len_ += buf_.size();
    buf_.clear();
    return true;
}

bool SpoolWriter::append(std::string_view bytes) {
    if (!spool_ || fd_ < 0) {
        fail(Errc::Closed, 0, "writer not open");
        return false;
    }
    if (error_) return false;
    EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(sha_), bytes.data(), bytes.size());
    body_len_ += bytes.size();
    if (buf_.size() + bytes.size() <= buf_cap_) {
        buf_.append(bytes);
        return true;
    }
    if (!flush_buffer()) return false;
    if (bytes.size() < buf_cap_) {
        buf_.append(bytes);
        return true;
    }
    int err = 0;
    if (!write_all_raw(fd_, bytes.data(), bytes.size(), spool_->opts_.hooks, &err)) {
        fail(Errc::Io, err, "write temp file");
        return false;
    }
    file_len_ += bytes.size();
    return true;
}

void SpoolWriter::close_and_unlink() {
    if (fd_ >= 0) {
        close_fd(fd_);
        if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());  // an O_TMPFILE inode goes with its fd
    }
    if (sha_) EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(sha_));
    sha_ = nullptr;
    buf_.clear();
    buf_.shrink_to_fit();
}

void SpoolWriter::abort() {
    close_and_unlink();
    spool_ = nullptr;
}

void SpoolWriter::commit(Envelope envelope, Done done) {
    if (!spool_ || fd_ < 0) {
        CommitResult r;
        r.error = error_ ? *error_ : plain_error(Errc::Closed, "writer not open");
        abort();
        done(std::move(r));
        return;
    }
    if (!error_) {
        envelope.size = body_len_;
        std::string tail = encode_envelope(envelope);
        std::uint64_t env_len = tail.size();
        put_u64(tail, body_len_);
        put_u64(tail, env_len);
        auto* ctx = static_cast<EVP_MD_CTX*>(sha_);
        EVP_DigestUpdate(ctx, tail.data(), tail.size());
        unsigned char md[32];
        unsigned int mdlen = 0;
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        tail.append(reinterpret_cast<const char*>(md), 32);
        tail.append(kEndMagic, 8);
        if (buf_.size() + tail.size() > buf_cap_) flush_buffer();
        buf_ += tail;
        flush_buffer();
    }
    if (error_) {
        CommitResult r;
        r.error = *error_;
        abort();
        done(std::move(r));
        return;
    }
    auto op = std::make_unique<Spool::Op>();
    op->is_commit = true;
    op->id = id_;
    op->sync_fd = std::exchange(fd_, -1);
    op->sync_tmp = tmp_path_;
    op->bytes = file_len_;
    op->commit_done = std::move(done);
    Spool* spool = spool_;
    abort();  // fd already handed over: frees the digest and buffer only
    spool->submit(std::move(op));
}

CommitResult SpoolWriter::commit_sync(Envelope envelope) {
    std::promise<CommitResult> p;
    auto f = p.get_future();
    commit(std::move(envelope), [&p](CommitResult r) { p.set_value(std::move(r)); });
    return f.get();
}

// ---- Spool ---------------------------------------------------------------------------------------

Spool::Spool(Options options) : opts_(std::move(options)) {
    if (opts_.root.empty()) throw std::runtime_error("spool: empty root directory");
    if (opts_.write_buffer < 4096) opts_.write_buffer = 4096;
    if (opts_.max_batch == 0) opts_.max_batch = 1;
    tmp_dir_ = opts_.root + "/tmp";
    queue_dir_ = opts_.root + "/queue";
    state_dir_ = opts_.root + "/state";
    dead_dir_ = opts_.root + "/dead";
    corrupt_dir_ = opts_.root + "/corrupt";
    kick_dir_ = opts_.root + "/kick";
    auto fail = [this](const std::string& what) {
        int err = errno;
        for (int& fd : dir_fds_) close_fd(fd);
        close_fd(lock_fd_);
        close_fd(root_fd_);
        throw std::runtime_error(fmt::format("spool: {}: {}", what, std::strerror(err)));
    };
    for (const std::string* d :
         {&opts_.root, &tmp_dir_, &queue_dir_, &state_dir_, &dead_dir_, &corrupt_dir_, &kick_dir_}) {
        if (::mkdir(d->c_str(), 0700) != 0 && errno != EEXIST) fail("mkdir " + *d);
    }
    root_fd_ = ::open(opts_.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd_ < 0) fail("open " + opts_.root);
    const std::string* dirs[4] = {&tmp_dir_, &queue_dir_, &state_dir_, &dead_dir_};
    for (int i = 0; i < 4; ++i) {
        dir_fds_[i] = ::open(dirs[i]->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fds_[i] < 0) fail("open " + *dirs[i]);
    }
    // Make the directories themselves durable (first start).
    ::fsync(root_fd_);
    if (opts_.exclusive) {
        std::string lock = opts_.root + "/lock";
        lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (lock_fd_ < 0) fail("open " + lock);
        if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) fail("lock " + lock + " (another graphbridge serve?)");
    }
    std::string seed = auth::random_bytes(8);
    std::uint64_t s = 0;
    std::memcpy(&s, seed.data(), 8);
    rng_.store(s);
    committer_ = std::thread([this] { committer_loop(); });
}

Spool::~Spool() {
    {
        std::lock_guard lk(mutex_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (committer_.joinable()) committer_.join();
    for (int& fd : dir_fds_) close_fd(fd);
    close_fd(lock_fd_);
    close_fd(root_fd_);
}

std::string Spool::new_id() {
    std::uint64_t ms = static_cast<std::uint64_t>(now_ms()) & ((1ull << 45) - 1);
    std::uint64_t c = counter_.fetch_add(1) & ((1ull << 20) - 1);
    // splitmix64 step for the random part
    std::uint64_t z = rng_.fetch_add(0x9E3779B97F4A7C15ull) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::uint64_t r = z & ((1ull << 15) - 1);
    std::string id(kIdLength, '0');
    for (int i = 0; i < 9; ++i) id[static_cast<std::size_t>(i)] = kAlphabet[(ms >> (5 * (8 - i))) & 31];
    for (int i = 0; i < 4; ++i) id[static_cast<std::size_t>(9 + i)] = kAlphabet[(c >> (5 * (3 - i))) & 31];
    for (int i = 0; i < 3; ++i) id[static_cast<std::size_t>(13 + i)] = kAlphabet[(r >> (5 * (2 - i))) & 31];
    return id;
}

SpoolWriter Spool::begin() {
    SpoolWriter w;
    w.spool_ = this;
    w.buf_cap_ = opts_.write_buffer;
    // Preferred: an unnamed O_TMPFILE inode in tmp/. Creating it takes no directory lock (100 sessions
    // creating named files in one directory spin on its lock), and a crash frees it by itself.
    w.id_ = new_id();
    if (opts_.use_o_tmpfile) w.fd_ = ::open(tmp_dir_.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (opts_.use_o_tmpfile && w.fd_ < 0 && errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL &&
        errno != ENOENT) {
        w.fail(Errc::Io, errno, "create temp file in " + tmp_dir_);
        return w;
    }
    for (int attempt = 0; attempt < 8 && w.fd_ < 0; ++attempt) {
        w.id_ = new_id();
        w.tmp_path_ = tmp_dir_ + "/" + w.id_;
        w.fd_ = ::open(w.tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (w.fd_ < 0) w.tmp_path_.clear();
        if (w.fd_ < 0 && errno != EEXIST) {
            w.fail(Errc::Io, errno, "create " + w.tmp_path_);
            return w;
        }
    }
    if (w.fd_ < 0) {
        w.fail(Errc::Io, EEXIST, "create temp file");
        return w;
    }
    auto* ctx = EVP_MD_CTX_new();
    w.sha_ = ctx;
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
        w.fail(Errc::Io, 0, "sha256 init failed");
        return w;
    }
    std::string header(kMagic, 8);
    put_u32(header, kVersion);
    put_u32(header, kHeaderSize);
    header.append(16, '\0');
    EVP_DigestUpdate(ctx, header.data(), header.size());
    w.buf_.reserve(w.buf_cap_);
    w.buf_ = std::move(header);
    return w;
}

// ---- committer -----------------------------------------------------------------------------------

void Spool::submit(std::unique_ptr<Op> op) {
    {
        std::lock_guard lk(mutex_);
        if (!stopping_) {
            pending_.push_back(std::move(op));
            cv_.notify_one();
            return;
        }
    }
    // Shut down: fail without touching the disk.
    op->error = plain_error(Errc::Closed, "spool is shut down");
    close_fd(op->sync_fd);
    if (!op->sync_tmp.empty()) ::unlink(op->sync_tmp.c_str());
    if (op->is_commit) {
        CommitResult r;
        r.error = op->error;
        op->commit_done(std::move(r));
    } else if (op->done) {
        op->done(op->error);
    }
}

std::optional<Error> Spool::submit_and_wait(std::unique_ptr<Op> op, std::unique_lock<std::mutex>* release) {
    std::promise<std::optional<Error>> p;
    auto f = p.get_future();
    op->done = [&p](std::optional<Error> e) { p.set_value(std::move(e)); };
    submit(std::move(op));
    if (release) release->unlock();  // queued under the caller's lock; wait for the batch without it
    return f.get();
}

void Spool::committer_loop() {
    std::vector<std::unique_ptr<Op>> batch;
    for (;;) {
        {
            std::unique_lock lk(mutex_);
            cv_.wait(lk, [this] { return stopping_ || !pending_.empty(); });
            if (pending_.empty()) return;  // stopping and drained
            while (!pending_.empty() && batch.size() < opts_.max_batch) {
                batch.push_back(std::move(pending_.front()));
                pending_.pop_front();
            }
        }
        run_batch(batch);
        batch.clear();
    }
}

void Spool::run_batch(std::vector<std::unique_ptr<Op>>& batch) {
    const IoHooks& h = opts_.hooks;
    std::uint64_t flushes = 0;
    std::uint64_t dir_fsyncs = 0;
    using Clock = std::chrono::steady_clock;
    auto us_since = [](Clock::time_point t) {
        return static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
    };
    auto t_data = Clock::now();

    // 1. Data of every new file in the batch.
    std::vector<Op*> syncing;
    for (auto& op : batch) {
        if (op->sync_fd >= 0 && !op->error) syncing.push_back(op.get());
    }
    if (!syncing.empty()) {
        if (opts_.sync == Sync::Syncfs) {
            int r = h.syncfs ? h.syncfs(root_fd_) : ::syncfs(root_fd_);
            int err = errno;
            ++flushes;
            if (r != 0) {
                for (Op* op : syncing) op->error = make_error(err, "syncfs " + opts_.root);
            }
        } else {
            for (Op* op : syncing) ::sync_file_range(op->sync_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
            for (Op* op : syncing) {
                int r = h.fdatasync ? h.fdatasync(op->sync_fd) : ::fdatasync(op->sync_fd);
                int err = errno;
                ++flushes;
                if (r != 0) op->error = make_error(err, "fdatasync " + op->sync_tmp);
            }
        }
    }

    std::uint64_t data_us = us_since(t_data);
    auto t_steps = Clock::now();

    // 2. Renames and unlinks, in submission order.
    unsigned touched = 0;
    for (auto& op : batch) {
        if (op->error) continue;
        if (op->is_commit) {
            for (int attempt = 0;; ++attempt) {
                std::string to = queue_dir_ + "/" + op->id;
                if (op->sync_tmp.empty() ? link_anonymous(op->sync_fd, to) == 0
                                         : rename_noreplace(op->sync_tmp, to) == 0) {
                    op->committed_path = to;
                    op->sync_tmp.clear();
                    op->dirs |= 1u << kQueue;
                    break;
                }
                if (errno != EEXIST || attempt >= 8) {
                    op->error = make_error(errno, "rename into " + queue_dir_);
                    break;
                }
                op->id = new_id();  // another process took this id: pick a fresh one
            }
        }
        for (const auto& s : op->steps) {
            if (op->error) break;
            int r = 0;
            if (s.kind == Op::Step::Unlink)
                r = ::unlink(s.from.c_str());
            else if (s.kind == Op::Step::Rename)
                r = ::rename(s.from.c_str(), s.to.c_str());
            else
                r = rename_noreplace(s.from, s.to);
            if (r != 0 && !(errno == ENOENT && s.missing_ok)) {
                op->error =
                    make_error(errno, s.kind == Op::Step::Unlink ? "unlink " + s.from : "rename " + s.from);
                break;
            }
            if (r == 0) {
                op->dirs |= 1u << s.from_dir;
                if (s.kind != Op::Step::Unlink) op->dirs |= 1u << s.to_dir;
                if (&s == &op->steps.front() && s.from == op->sync_tmp) op->sync_tmp.clear();
            }
        }
        touched |= op->dirs;
    }

    std::uint64_t steps_us = us_since(t_steps);
    auto t_dirs = Clock::now();

    // 3. One fsync per directory touched (tmp/ is not synced: leftovers there are deleted on recover).
    for (int d = kQueue; d <= kDead; ++d) {
        if (!(touched & (1u << d))) continue;
        int r = h.fsync_dir ? h.fsync_dir(dir_fds_[d]) : ::fsync(dir_fds_[d]);
        int err = errno;
        ++flushes;
        ++dir_fsyncs;
        if (r != 0) {
            for (auto& op : batch) {
                if (!op->error && (op->dirs & (1u << d))) op->error = make_error(err, "fsync directory");
            }
        }
    }

    std::uint64_t dirs_us = us_since(t_dirs);

    // 4. Clean up failures, count, report.
    std::uint64_t commits = 0, failed = 0, bytes = 0;
    for (auto& op : batch) {
        close_fd(op->sync_fd);
        if (op->error) {
            if (!op->sync_tmp.empty()) ::unlink(op->sync_tmp.c_str());
            if (!op->committed_path.empty()) ::unlink(op->committed_path.c_str());  // never half-acknowledged
        }
        if (op->is_commit) {
            if (op->error)
                ++failed;
            else {
                ++commits;
                bytes += op->bytes;
            }
        }
    }
    {
        std::lock_guard lk(stats_mutex_);
        stats_.commits += commits;
        stats_.failed_commits += failed;
        stats_.bytes += bytes;
        stats_.flushes += flushes;
        stats_.dir_fsyncs += dir_fsyncs;
        stats_.data_sync_us += data_us;
        stats_.rename_us += steps_us;
        stats_.dir_sync_us += dirs_us;
        if (flushes > 0) ++stats_.batches;
    }
    for (auto& op : batch) {
        if (op->is_commit) {
            CommitResult r;
            if (op->error)
                r.error = std::move(op->error);
            else
                r.id = op->id;
            op->commit_done(std::move(r));
        } else if (op->done) {
            op->done(std::move(op->error));
        }
    }
}

Stats Spool::stats() const {
    std::lock_guard lk(stats_mutex_);
    return stats_;
}

// ---- state files ---------------------------------------------------------------------------------

std::optional<DeliveryState> Spool::read_state(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    std::string text(kMaxStateFile + 1, '\0');
    std::size_t got = 0;
    for (;;) {
        ssize_t r = ::read(fd, text.data() + got, text.size() - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += static_cast<std::size_t>(r);
        if (got == text.size()) break;
    }
    ::close(fd);
    if (got > kMaxStateFile) return std::nullopt;
    text.resize(got);
    auto st = decode_state(text);
    if (!st) log::warn("spool", "ignoring unreadable delivery state", {{"path", log::client_text(path)}});
    return st;
}

// Writes the state to a fresh temp file and attaches it to `op` as the data to flush.
std::optional<Error> Spool::write_state_tmp(const std::string& id, const DeliveryState& st, Op& op) {
    std::string path = fmt::format("{}/{}.{}.st", tmp_dir_, id, counter_.fetch_add(1));
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return make_error(errno, "create " + path);
    std::string text = encode_state(st);
    int err = 0;
    if (!write_all_raw(fd, text.data(), text.size(), opts_.hooks, &err)) {
        ::close(fd);
        ::unlink(path.c_str());
        return make_error(err, "write " + path);
    }
    op.sync_fd = fd;
    op.sync_tmp = path;
    return std::nullopt;
}

std::optional<Error> Spool::update_state(std::string_view id_sv, const std::function<void(DeliveryState&)>& f,
                                         std::unique_ptr<Op>& op) {
    if (auto e = bad_id(id_sv)) return e;
    std::string id(id_sv);
    if (::access((queue_dir_ + "/" + id).c_str(), F_OK) != 0) return make_error(errno, "entry " + id);
    DeliveryState st = read_state(state_dir_ + "/" + id).value_or(DeliveryState{});
    f(st);
    op = std::make_unique<Op>();
    if (auto e = write_state_tmp(id, st, *op)) return e;
    op->steps.push_back({Op::Step::Rename, op->sync_tmp, state_dir_ + "/" + id, kTmp, kState, false});
    return std::nullopt;
}

void Spool::mark_attempt_async(std::string_view id, std::string_view error, std::int64_t next_attempt_ms,
                               Done d) {
    std::unique_ptr<Op> op;
    std::unique_lock lk(state_mutex_);  // read-modify-write and submission order are one step
    auto e = update_state(
        id,
        [&](DeliveryState& st) {
            ++st.attempts;
            st.last_attempt_ms = now_ms();
            st.next_attempt_ms = next_attempt_ms;
            st.last_error = std::string(error.substr(0, kMaxErrorText));
            st.status = Status::Deferred;
        },
        op);
    if (e) {
        lk.unlock();
        d(std::move(e));
        return;
    }
    op->done = std::move(d);
    submit(std::move(op));
}

std::optional<Error> Spool::set_draft(std::string_view id, std::string_view draft_id) {
    std::unique_ptr<Op> op;
    std::unique_lock lk(state_mutex_);
    auto e = update_state(id, [&](DeliveryState& st) { st.draft_id = std::string(draft_id); }, op);
    if (e) return e;
    std::promise<std::optional<Error>> p;
    auto f = p.get_future();
    op->done = [&p](std::optional<Error> err) { p.set_value(std::move(err)); };
    submit(std::move(op));
    lk.unlock();
    return f.get();
}

std::optional<Error> Spool::mark_attempt(std::string_view id, std::string_view error,
                                         std::int64_t next_attempt_ms) {
    std::promise<std::optional<Error>> p;
    auto f = p.get_future();
    mark_attempt_async(id, error, next_attempt_ms,
                       [&p](std::optional<Error> e) { p.set_value(std::move(e)); });
    return f.get();
}

void Spool::complete_async(std::string_view id_sv, Done d) {
    if (auto e = bad_id(id_sv)) {
        d(std::move(e));
        return;
    }
    std::string id(id_sv);
    auto op = std::make_unique<Op>();
    op->steps.push_back({Op::Step::Unlink, queue_dir_ + "/" + id, "", kQueue, kQueue, false});
    op->steps.push_back({Op::Step::Unlink, state_dir_ + "/" + id, "", kState, kState, true});
    op->done = std::move(d);
    std::lock_guard lk(state_mutex_);
    submit(std::move(op));
}

std::optional<Error> Spool::complete(std::string_view id) {
    std::promise<std::optional<Error>> p;
    auto f = p.get_future();
    complete_async(id, [&p](std::optional<Error> e) { p.set_value(std::move(e)); });
    return f.get();
}

std::optional<Error> Spool::fail(std::string_view id_sv, std::string_view reason) {
    std::unique_ptr<Op> op;
    std::unique_lock lk(state_mutex_);
    auto e = update_state(
        id_sv,
        [&](DeliveryState& st) {
            st.last_error = std::string(reason.substr(0, kMaxErrorText));
            st.status = Status::Dead;
            st.next_attempt_ms = 0;
        },
        op);
    if (e) return e;
    std::string id(id_sv);
    // State first: a crash in between leaves the entry in queue/ with its old state (it is retried).
    op->steps.clear();
    op->steps.push_back(
        {Op::Step::Rename, op->sync_tmp, dead_dir_ + "/" + id + ".state", kTmp, kDead, false});
    op->steps.push_back(
        {Op::Step::Rename, queue_dir_ + "/" + id, dead_dir_ + "/" + id, kQueue, kDead, false});
    op->steps.push_back({Op::Step::Unlink, state_dir_ + "/" + id, "", kState, kState, true});
    return submit_and_wait(std::move(op), &lk);
}

std::optional<Error> Spool::retry_now(std::string_view id_sv) {
    if (auto e = bad_id(id_sv)) return e;
    std::string id(id_sv);
    std::unique_lock lk(state_mutex_);
    std::unique_ptr<Op> op;
    if (::access((queue_dir_ + "/" + id).c_str(), F_OK) == 0) {
        auto e = update_state(
            id, [](DeliveryState& st) { st.next_attempt_ms = 0; }, op);
        if (e) return e;
    } else if (::access((dead_dir_ + "/" + id).c_str(), F_OK) == 0) {
        DeliveryState st = read_state(dead_dir_ + "/" + id + ".state").value_or(DeliveryState{});
        st.attempts = 0;
        st.next_attempt_ms = 0;
        st.status = Status::Queued;
        op = std::make_unique<Op>();
        if (auto e = write_state_tmp(id, st, *op)) return e;
        op->steps.push_back({Op::Step::Rename, op->sync_tmp, state_dir_ + "/" + id, kTmp, kState, false});
        op->steps.push_back(
            {Op::Step::RenameNoReplace, dead_dir_ + "/" + id, queue_dir_ + "/" + id, kDead, kQueue, false});
        op->steps.push_back({Op::Step::Unlink, dead_dir_ + "/" + id + ".state", "", kDead, kDead, true});
    } else {
        return plain_error(Errc::NotFound, "no such queue entry");
    }
    if (auto e = submit_and_wait(std::move(op), &lk)) return e;
    // Tell a running delivery side (another process, usually) to look at the entry now. Best effort and not
    // durable: after a crash, recover() schedules the entry from its state file anyway.
    int fd = ::open((kick_dir_ + "/" + id).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
    return std::nullopt;
}

std::vector<std::string> Spool::take_kicks() {
    std::vector<std::string> ids;
    DIR* dir = ::opendir(kick_dir_.c_str());
    if (!dir) return ids;
    while (dirent* e = ::readdir(dir)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        ::unlink((kick_dir_ + "/" + name).c_str());
        if (valid_id(name) && ids.size() < 10000) ids.push_back(std::move(name));
    }
    ::closedir(dir);
    return ids;
}

std::optional<Error> Spool::remove(std::string_view id_sv) {
    if (auto e = bad_id(id_sv)) return e;
    std::string id(id_sv);
    auto op = std::make_unique<Op>();
    if (::access((queue_dir_ + "/" + id).c_str(), F_OK) == 0) {
        op->steps.push_back({Op::Step::Unlink, queue_dir_ + "/" + id, "", kQueue, kQueue, false});
        op->steps.push_back({Op::Step::Unlink, state_dir_ + "/" + id, "", kState, kState, true});
    } else if (::access((dead_dir_ + "/" + id).c_str(), F_OK) == 0) {
        op->steps.push_back({Op::Step::Unlink, dead_dir_ + "/" + id, "", kDead, kDead, false});
        op->steps.push_back({Op::Step::Unlink, dead_dir_ + "/" + id + ".state", "", kDead, kDead, true});
    } else {
        return plain_error(Errc::NotFound, "no such queue entry");
    }
    std::unique_lock lk(state_mutex_);
    return submit_and_wait(std::move(op), &lk);
}

// ---- reading -------------------------------------------------------------------------------------

std::optional<EntryInfo> Spool::read_info(const std::string& dir, const std::string& id, bool dead) {
    int fd = ::open((dir + "/" + id).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    Layout lay;
    std::string env_text;
    auto err = check_entry(fd, false, lay, env_text);
    ::close(fd);
    if (err) return std::nullopt;
    auto env = decode_envelope(env_text);
    if (!env) return std::nullopt;
    EntryInfo info;
    info.id = id;
    info.size = lay.body_len;
    info.sender = env->reverse_path;
    info.recipient_count = env->recipients.size();
    info.received_at = env->received_at;
    std::string sp = dead ? dead_dir_ + "/" + id + ".state" : state_dir_ + "/" + id;
    info.state = read_state(sp).value_or(DeliveryState{});
    if (dead) info.state.status = Status::Dead;
    return info;
}

std::vector<EntryInfo> Spool::list_dir(const std::string& dir, bool dead) {
    std::vector<EntryInfo> out;
    for (const auto& name : read_dir_names(dir)) {
        if (!valid_id(name)) continue;
        if (auto info = read_info(dir, name, dead)) out.push_back(std::move(*info));
    }
    return out;
}

std::vector<EntryInfo> Spool::list() {
    return list_dir(queue_dir_, false);
}
std::vector<EntryInfo> Spool::list_dead() {
    return list_dir(dead_dir_, true);
}

std::optional<Error> Spool::verify(std::string_view id_sv) {
    if (auto e = bad_id(id_sv)) return e;
    std::string path = queue_dir_ + "/" + std::string(id_sv);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error(errno, "open entry");
    Layout lay;
    std::string env_text;
    auto err = check_entry(fd, true, lay, env_text);
    ::close(fd);
    if (!err && !decode_envelope(env_text)) err = plain_error(Errc::Corrupt, "corrupt entry: envelope");
    return err;
}

std::optional<LoadedEntry> Spool::load(std::string_view id_sv, std::optional<Error>* error) {
    auto fail = [error](Error e) -> std::optional<LoadedEntry> {
        if (error) *error = std::move(e);
        return std::nullopt;
    };
    if (auto e = bad_id(id_sv)) return fail(*e);
    std::string id(id_sv);
    int fd = ::open((queue_dir_ + "/" + id).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(make_error(errno, "open entry " + id));
    Layout lay;
    std::string env_text;
    if (auto e = check_entry(fd, opts_.verify_on_load, lay, env_text)) {
        ::close(fd);
        return fail(*e);
    }
    auto env = decode_envelope(env_text);
    if (!env) {
        ::close(fd);
        return fail(plain_error(Errc::Corrupt, "corrupt entry: envelope"));
    }
    LoadedEntry out;
    out.id = id;
    out.envelope = std::move(*env);
    out.state = read_state(state_dir_ + "/" + id).value_or(DeliveryState{});
    out.body.fd_ = fd;
    out.body.offset_ = kHeaderSize;
    out.body.size_ = lay.body_len;
    return out;
}

bool Spool::expired(const EntryInfo& e, std::int64_t now_unix_s) const {
    auto lifetime = std::chrono::duration_cast<std::chrono::seconds>(opts_.max_lifetime).count();
    return now_unix_s - e.received_at > lifetime;
}

// ---- recovery ------------------------------------------------------------------------------------

std::vector<EntryInfo> Spool::recover(std::optional<Error>* error) {
    std::vector<EntryInfo> out;
    if (lock_fd_ < 0) {
        if (error) *error = plain_error(Errc::Locked, "recover() needs the exclusive spool lock");
        return out;
    }
    // 1. Temp files were never acknowledged.
    std::size_t removed_tmp = 0;
    for (const auto& name : read_dir_names(tmp_dir_)) {
        if (::unlink((tmp_dir_ + "/" + name).c_str()) == 0) ++removed_tmp;
    }
    if (removed_tmp > 0) ::fsync(dir_fds_[kTmp]);

    // 2. Verify every entry; quarantine what fails.
    auto quarantine = [this](const std::string& from, const std::string& name) {
        std::string to = corrupt_dir_ + "/" + name;
        for (int i = 1; rename_noreplace(from, to) != 0; ++i) {
            if (errno != EEXIST || i > 1000) {
                log::error("spool", "cannot quarantine", {{"path", log::client_text(from)}});
                return;
            }
            to = fmt::format("{}/{}.{}", corrupt_dir_, name, i);
        }
    };
    bool moved = false;
    std::unordered_set<std::string> good;
    for (const auto& name : read_dir_names(queue_dir_)) {
        std::string path = queue_dir_ + "/" + name;
        std::optional<Error> bad;
        Layout lay;
        std::string env_text;
        std::optional<Envelope> env;
        if (!valid_id(name)) {
            bad = plain_error(Errc::Corrupt, "not a queue id");
        } else {
            int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) {
                bad = make_error(errno, "open");
            } else {
                bad = check_entry(fd, true, lay, env_text);
                ::close(fd);
                if (!bad && !(env = decode_envelope(env_text)))
                    bad = plain_error(Errc::Corrupt, "bad envelope");
            }
        }
        if (bad) {
            log::warn("spool", "quarantined corrupt spool entry",
                      {{"entry", log::client_text(name, 64)}, {"reason", bad->message}});
            quarantine(path, name);
            if (valid_id(name) && ::access((state_dir_ + "/" + name).c_str(), F_OK) == 0) {
                quarantine(state_dir_ + "/" + name, name + ".state");
            }
            moved = true;
            continue;
        }
        good.insert(name);
        EntryInfo info;
        info.id = name;
        info.size = lay.body_len;
        info.sender = env->reverse_path;
        info.recipient_count = env->recipients.size();
        info.received_at = env->received_at;
        info.state = read_state(state_dir_ + "/" + name).value_or(DeliveryState{});
        out.push_back(std::move(info));
    }

    // 3. State without an entry (completed, or a crash mid-operation) is dropped.
    bool state_changed = false;
    for (const auto& name : read_dir_names(state_dir_)) {
        if (good.count(name) == 0) {
            ::unlink((state_dir_ + "/" + name).c_str());
            state_changed = true;
        }
    }
    for (const auto& name : read_dir_names(dead_dir_)) {
        constexpr std::string_view kSuffix = ".state";
        if (name.size() == kIdLength + kSuffix.size() && name.ends_with(kSuffix) &&
            ::access((dead_dir_ + "/" + name.substr(0, kIdLength)).c_str(), F_OK) != 0) {
            ::unlink((dead_dir_ + "/" + name).c_str());
            ::fsync(dir_fds_[kDead]);
        }
    }
    if (moved) {
        ::fsync(dir_fds_[kQueue]);
        int cfd = ::open(corrupt_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cfd >= 0) {
            ::fsync(cfd);
            ::close(cfd);
        }
    }
    if (moved || state_changed) ::fsync(dir_fds_[kState]);
    if (removed_tmp > 0 || moved) {
        log::info("spool", "recovered spool",
                  {{"pending", static_cast<std::uint64_t>(out.size())},
                   {"temp_removed", static_cast<std::uint64_t>(removed_tmp)}});
    }
    return out;  // read_dir_names sorted: queue (id) order
}

}  // namespace gb::spool
