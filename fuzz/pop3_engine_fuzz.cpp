// Fuzz target: the socket-free POP3 engine (protocol/pop3) with a fake maildrop.
//
// Input: [flags] [split seed] conversation bytes...
//   flags bit 0 loopback peer, 1 implicit TLS, 2 STLS available, 3 defer every backend answer,
//         4 small limits, 5 maildrop with an invalid uid (the engine must refuse it),
//         6 end with shutdown(), 7 end with timeout()
// Segments are separated by "@@TLS@@\n"; between them a requested STLS handshake completes. Each
// segment is fed once whole with a synchronous backend and once in pieces with the backend chosen by
// the flags; the engine promises identical responses, so a difference aborts. Users: alice/s3cret
// logs in; "throw" makes the backend throw; "busy" gets a custom -ERR from open_maildrop.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "protocol/pop3/pop3_engine.h"

using namespace gb::protocol::pop3;

namespace {

const std::vector<std::string> kBodies = {
    "From: a@example.com\r\nSubject: one\r\n\r\nline 1\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n",
    "Subject: two\r\n\r\nb1\r\nb2\r\nb3\r\n",
    "Subject: bare\nX: y\r\rbody with bare LF\nand CR\r.\n.\r\nno final newline",
    "",
    "\r\n\r\n.\r\n",
    std::string(1100, 'x') + "\r\n" + std::string(2000, 'y'),  // long lines, several output chunks
};

class FuzzBackend : public Pop3Backend {
  public:
    bool defer = false;
    bool bad_uid = false;
    std::deque<Answer> queued;
    std::string log;

    Answer authenticate(const Session&, const AuthRequest& r) override {
        log += "auth " + r.mechanism + " " + r.user + "\n";
        if (r.user == "throw") throw std::runtime_error("backend failure");
        if (r.user == "temp") return answer(Answer::error("[SYS/TEMP] Try again later"));
        bool ok = (r.user == "alice" || r.user == "busy") && r.password.reveal() == "s3cret";
        return answer(ok ? Answer::accept() : Answer::refuse());
    }
    Answer open_maildrop(const Session& s) override {
        log += "open " + s.user + "\n";
        if (s.user == "busy") return answer(Answer::error("[IN-USE] busy\r\nInjected: line"));
        return answer(Answer::accept());
    }
    std::vector<MessageInfo> maildrop() override {
        log += "maildrop\n";
        std::vector<MessageInfo> infos;
        for (std::size_t i = 0; i < kBodies.size(); ++i)
            infos.push_back(MessageInfo{"uid-" + std::to_string(100 + i), kBodies[i].size()});
        if (bad_uid) infos.push_back(MessageInfo{"bad uid", 1});
        return infos;
    }
    Answer retrieve(const Session&, std::size_t index) override {
        log += "retrieve " + std::to_string(index) + "\n";
        if (index >= kBodies.size()) return answer(Answer::error("no such message"));
        prepared_ = kBodies[index];
        if (index == 1) throw std::runtime_error("backend failure");
        return answer(Answer::accept());
    }
    std::string take_message() override { return std::move(prepared_); }
    Answer commit_deletes(const Session&, const std::vector<std::size_t>& indexes) override {
        log += "commit";
        for (auto i : indexes) log += " " + std::to_string(i);
        log += "\n";
        return answer(Answer::accept());
    }

  private:
    Answer answer(Answer a) {
        if (!defer) return a;
        queued.push_back(std::move(a));
        return Answer::pending();
    }
    std::string prepared_;
};

struct Outcome {
    std::string output;
    std::string log;
};

Outcome converse(std::string_view input, std::uint8_t flags, std::uint8_t seed, bool defer) {
    Pop3Config config;
    config.hostname = "pop.fuzz";
    config.tls_available = flags & 4;
    if (flags & 16) {
        config.limits.max_command_line = 20;
        config.limits.max_auth_line = 40;
        config.limits.max_errors = 3;
        config.limits.max_auth_failures = 1;
        config.limits.output_chunk = 512;
    }
    ConnectionInfo conn{static_cast<bool>(flags & 1), static_cast<bool>(flags & 2)};
    FuzzBackend be;
    be.defer = defer;
    be.bad_uid = flags & 32;
    Pop3Engine e(config, conn, be);
    Outcome o;
    gb::fuzz::Splitter split(seed, 97);
    const std::size_t line_bound = std::max(config.limits.max_command_line, config.limits.max_auth_line) + 2;

    auto settle = [&] {
        for (;;) {
            if (e.has_output()) {
                std::string chunk = e.take_output();
                gb::fuzz::check(chunk.size() <= config.limits.output_chunk + 1024, "pop3: output chunk too big");
                o.output += chunk;
                continue;
            }
            if (!e.awaiting_backend()) return;
            gb::fuzz::check(!be.queued.empty(), "pop3: engine awaits an answer the backend never deferred");
            Answer a = std::move(be.queued.front());
            be.queued.pop_front();
            e.resume(std::move(a));
        }
    };
    settle();

    constexpr std::string_view kTls = "@@TLS@@\n";
    std::size_t pos = 0;
    while (pos < input.size()) {
        std::size_t cut = input.find(kTls, pos);
        std::size_t seg_end = cut == std::string_view::npos ? input.size() : cut;
        if (pos == seg_end) {
            if (e.wants_stls()) {
                e.tls_started();
                o.output += "[TLS]";
            }
            pos += kTls.size();
            continue;
        }
        std::string_view piece = input.substr(pos, split.next(seg_end - pos));
        pos += piece.size();
        while (!piece.empty()) {
            std::size_t used = e.feed(piece);
            gb::fuzz::check(used <= piece.size(), "pop3: feed() took more than it was given");
            piece.remove_prefix(used);
            bool busy = e.awaiting_backend() || e.has_output();
            settle();
            gb::fuzz::check(used > 0 || busy, "pop3: input refused while not busy");
            gb::fuzz::check(e.buffered_input() <= line_bound, "pop3: buffered input over its bound",
                            std::to_string(e.buffered_input()));
        }
    }
    if (flags & 128)
        e.timeout();
    else if (flags & 64)
        e.shutdown();
    else
        e.connection_lost();
    settle();
    if (e.wants_close()) o.output += "[CLOSE]";
    o.log = std::move(be.log);
    return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    gb::fuzz::Bytes in(data, size);
    std::uint8_t flags = in.byte();
    std::uint8_t seed = in.byte();
    std::string_view conversation = in.rest();
    if (conversation.size() > 64 * 1024) return 0;
    Outcome whole = converse(conversation, flags, 0, false);
    Outcome split = converse(conversation, flags, seed == 0 ? 1 : seed, flags & 8);
    if (gb::fuzz::verbose()) std::fprintf(stderr, "%s--- backend:\n%s", whole.output.c_str(), whole.log.c_str());
    if (whole.output != split.output)
        gb::fuzz::fail("pop3: responses differ between whole and split input",
                       "--- whole:\n" + whole.output + "\n--- split:\n" + split.output);
    gb::fuzz::check(whole.log == split.log, "pop3: backend calls differ between whole and split input",
                    "--- whole:\n" + whole.log + "\n--- split:\n" + split.log);
    return 0;
}
