// Fuzz target: the socket-free SMTP engine (protocol/smtp).
//
// Input: [flags] [split seed] conversation bytes...
//   flags bit 0 loopback peer, 1 implicit TLS, 2 STARTTLS available, 3 AUTH disabled,
//         4 defer every backend answer (asynchronous backend), 5 small limits, 6 end with shutdown()
//         instead of connection_lost(), 7 end with timeout()
// The conversation is cut into segments at each "@@TLS@@\n"; between segments a requested STARTTLS
// handshake completes (tls_started()). Each segment is fed once whole with a synchronous backend and
// once in pieces (sizes from the seed) with the backend chosen by the flags; the engine promises
// identical replies and messages for any split and either backend, so a difference aborts.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "protocol/smtp/smtp_engine.h"

using namespace gb::protocol::smtp;

namespace {

class FuzzBackend : public SmtpBackend {
  public:
    bool defer = false;
    std::deque<Answer> queued;
    std::string body;
    std::vector<std::string> messages;
    std::string log;

    Answer authenticate(const Session&, const AuthRequest& r) override {
        log += "auth " + r.mechanism + " " + r.user + "\n";
        if (r.user == "throw") throw std::runtime_error("backend failure");
        if (r.user == "temp") return answer(Reply{454, "4.7.0", "Temporary authentication failure"});
        bool ok = r.user == "alice" && r.password.reveal() == "s3cret";
        return answer(ok ? Answer::accept() : Answer::refuse());
    }
    Answer mail_from(const Session&, const MailRequest& r) override {
        log += "mail " + r.reverse_path.to_string() + "\n";
        if (r.reverse_path.local == "throw") throw std::runtime_error("backend failure");
        if (r.reverse_path.local == "deny") return answer(Answer::refuse());
        if (r.reverse_path.local == "weird") return answer(Reply{999, "x.y", "odd\r\nline"});
        return answer(Answer::accept());
    }
    Answer rcpt_to(const Session&, const Address& a) override {
        log += "rcpt " + a.to_string() + "\n";
        if (a.local == "throw") throw std::runtime_error("backend failure");
        if (a.local.rfind("bad", 0) == 0) return answer(Answer::refuse());
        if (a.local == "later") return answer(Reply{450, "4.2.0", "Mailbox busy"});
        return answer(Answer::accept());
    }
    Answer data_begin(const Session& s) override {
        log += "data_begin\n";
        body.clear();
        if (s.transaction && s.transaction->reverse_path.local == "nodata") return answer(Answer::refuse());
        return answer(Answer::accept());
    }
    void data_chunk(std::string_view bytes) override { body.append(bytes); }
    Answer data_end(const Session& s) override {
        log += "data_end\n";
        if (s.transaction && s.transaction->reverse_path.local == "reject") return answer(Answer::refuse());
        messages.push_back(body);
        return answer(Reply{250, "2.0.0", "Ok: queued"});
    }
    void transaction_reset(const Session&) override { log += "reset\n"; }

  private:
    Answer answer(Answer a) {
        if (!defer) return a;
        queued.push_back(std::move(a));
        return Answer::pending();
    }
};

struct Outcome {
    std::string output;
    std::vector<std::string> messages;
    std::string log;
};

Outcome converse(std::string_view input, std::uint8_t flags, std::uint8_t seed, bool defer) {
    SmtpConfig config;
    config.hostname = "mx.fuzz";
    config.tls_available = flags & 4;
    config.auth_enabled = !(flags & 8);
    if (flags & 32) {
        config.limits.max_command_line = 64;
        config.limits.max_data_line = 80;
        config.limits.max_recipients = 3;
        config.limits.max_errors = 4;
        config.limits.max_auth_failures = 2;
        config.limits.max_message_size = 300;
        config.limits.max_held_input = 64 + 1024;
        config.limits.body_chunk = 7;
    }
    ConnectionInfo conn{static_cast<bool>(flags & 1), static_cast<bool>(flags & 2)};
    FuzzBackend be;
    be.defer = defer;
    SmtpEngine e(config, conn, be);
    Outcome o;
    o.output = e.take_output();
    gb::fuzz::Splitter split(seed, 97);
    const std::size_t bound = config.limits.max_held_input + config.limits.max_command_line + 2;

    auto settle = [&] {
        o.output += e.take_output();
        while (e.awaiting_backend()) {
            gb::fuzz::check(!be.queued.empty(), "smtp: engine awaits an answer the backend never deferred");
            Answer a = std::move(be.queued.front());
            be.queued.pop_front();
            e.resume(std::move(a));
            o.output += e.take_output();
        }
    };

    constexpr std::string_view kTls = "@@TLS@@\n";
    std::size_t pos = 0;
    while (pos < input.size()) {
        std::size_t cut = input.find(kTls, pos);
        std::size_t seg_end = cut == std::string_view::npos ? input.size() : cut;
        if (pos == seg_end) {  // a segment boundary
            if (e.wants_starttls()) {
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
            gb::fuzz::check(used <= piece.size(), "smtp: feed() took more than it was given");
            piece.remove_prefix(used);
            bool was_waiting = e.awaiting_backend();
            settle();
            gb::fuzz::check(used > 0 || was_waiting, "smtp: input refused while not waiting on the backend");
            gb::fuzz::check(e.buffered_input() <= bound, "smtp: buffered input over its bound",
                            std::to_string(e.buffered_input()));
        }
    }
    if (flags & 128)
        e.timeout();
    else if (flags & 64)
        e.shutdown();
    else
        e.connection_lost();
    o.output += e.take_output();
    if (e.wants_close()) o.output += "[CLOSE]";
    o.messages = std::move(be.messages);
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
    Outcome split = converse(conversation, flags, seed == 0 ? 1 : seed, flags & 16);
    if (gb::fuzz::verbose()) std::fprintf(stderr, "%s--- backend:\n%s", whole.output.c_str(), whole.log.c_str());
    if (whole.output != split.output)
        gb::fuzz::fail("smtp: replies differ between whole and split input",
                       "--- whole:\n" + whole.output + "\n--- split:\n" + split.output);
    gb::fuzz::check(whole.messages == split.messages, "smtp: accepted messages differ between whole and split input");
    gb::fuzz::check(whole.log == split.log, "smtp: backend calls differ between whole and split input",
                    "--- whole:\n" + whole.log + "\n--- split:\n" + split.log);
    return 0;
}
