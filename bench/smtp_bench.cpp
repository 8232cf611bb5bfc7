// SMTP load client for the relay benchmark (bench/smtp.sh drives it against a sandbox + bridge).
//
// N concurrent connections send M messages in total through one SMTP listener. Each connection says
// EHLO once (and AUTH PLAIN when --auth-file is given), then loops MAIL FROM / RCPT TO / DATA / body / "."
// over the same connection, one command at a time (--pipeline sends MAIL+RCPT+DATA in one write, as RFC
// 2920 allows) until the shared budget of M messages is used up. Connections are set up first and all
// start sending together, so AUTH (scrypt on the server, one at a time) is not part of the measured window.
//
// Per message it records the time from just before the write that carries the end of data
// ("\r\n.\r\n", sent in the same write as the body) to the arrival of the final reply, and the queue id
// from "250 2.0.0 Ok: queued as <id>". Prints accepted msg/s and p50/p99/max of DATA-end -> 250, plus a
// RESULT line for scripts; --ids FILE writes "<queue id>\t<unix ms when the 250 arrived>" per message.
// Reports, never asserts (exit status 0 unless nothing could be sent at all).
//
// Usage: gb_smtp_bench [--host 127.0.0.1] [--port 1025] [--connections 100] [--messages 20000]
//                      [--size 10240] [--auth-file sandbox.json] [--from ADDR] [--rcpt ADDR]
//                      [--ids FILE] [--pipeline] [--rate MSG_PER_S]
// --rate paces the whole run open-loop (message k is sent at k/rate s, when a connection is free), to
// measure latencies below saturation; without it every connection sends as fast as it is answered.
#include <rapidjson/document.h>
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
    std::string host = "127.0.0.1";
    std::string port = "1025";
    int connections = 100;
    long messages = 20000;
    std::size_t size = 10240;
    std::string auth_file;
    std::string from = "bench@example.com";  // without AUTH: any sender (the loopback relay rule decides)
    std::string rcpt = "bob@sandbox.test";
    std::string ids_file;
    bool pipeline = false;
    double rate = 0;  // messages/s over all connections; 0 = as fast as the server answers
};

struct Account {
    std::string login, password, mailbox;
};

struct Sample {
    std::int64_t latency_us;
    std::int64_t unix_ms;  // when the 250 arrived
    std::string id;
};

std::int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string base64(std::string_view in) {
    static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        auto n = (std::uint32_t(std::uint8_t(in[i])) << 16) | (std::uint32_t(std::uint8_t(in[i + 1])) << 8) |
                 std::uint8_t(in[i + 2]);
        out += tbl[(n >> 18) & 63];
        out += tbl[(n >> 12) & 63];
        out += tbl[(n >> 6) & 63];
        out += tbl[n & 63];
    }
    if (i < in.size()) {
        std::uint32_t n = std::uint32_t(std::uint8_t(in[i])) << 16;
        if (i + 1 < in.size()) n |= std::uint32_t(std::uint8_t(in[i + 1])) << 8;
        out += tbl[(n >> 18) & 63];
        out += tbl[(n >> 12) & 63];
        out += i + 1 < in.size() ? tbl[(n >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::vector<Account> load_accounts(const std::string& path) {
    std::ifstream f(path);
    if (!f) throw std::runtime_error("cannot read " + path);
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    rapidjson::Document doc;
    doc.Parse(text.data(), text.size());
    if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("accounts") || !doc["accounts"].IsArray())
        throw std::runtime_error(path + ": expected an object with an \"accounts\" array");
    std::vector<Account> out;
    for (const auto& a : doc["accounts"].GetArray()) {
        if (!a.IsObject() || !a.HasMember("login") || !a.HasMember("password") || !a.HasMember("mailbox") ||
            !a["login"].IsString() || !a["password"].IsString() || !a["mailbox"].IsString())
            continue;
        out.push_back({a["login"].GetString(), a["password"].GetString(), a["mailbox"].GetString()});
    }
    if (out.empty()) throw std::runtime_error(path + ": no accounts");
    return out;
}

std::string make_headers(const std::string& from, const std::string& rcpt, long k, std::int64_t run) {
    return "From: <" + from + ">\r\nTo: <" + rcpt + ">\r\nSubject: bench message " + std::to_string(k) +
           "\r\nMessage-ID: <" + std::to_string(k) + "." + std::to_string(run) +
           "@bench.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n";
}

// Everything the connections share; the io_context runs on one thread, so no locking.
struct Shared {
    Options opt;
    std::vector<Account> accounts;
    std::string filler;  // body lines after the headers, ends with CRLF
    long next = 0;       // next message number to hand out
    int not_ready = 0;   // connections still setting up
    std::unique_ptr<asio::steady_timer> go;  // cancelled when every connection is ready
    Clock::time_point t_start, t_end;
    std::int64_t start_unix_ms = 0;
    std::vector<Sample> samples;
    long refused = 0;      // 4xx/5xx replies in a transaction
    int failed_conns = 0;  // connections that could not connect / EHLO / AUTH, or broke mid-run
    std::vector<std::string> errors;
    void error(std::string e) {
        if (errors.size() < 10) errors.push_back(std::move(e));
    }
};

struct Reply {
    int code;  // 0: connection broken
    std::string text;
};

class Session {
public:
    Session(Shared& sh, tcp::socket s, int index) : sh_(sh), sock_(std::move(s)), index_(index) {}

    awaitable<void> run() {
        bool ok = co_await setup();
        if (!ok) ++sh_.failed_conns;
        if (--sh_.not_ready == 0) release();
        if (sh_.not_ready > 0) {
            boost::system::error_code ec;
            co_await sh_.go->async_wait(asio::redirect_error(use_awaitable, ec));
        }
        if (!ok) co_return;
        bool sent = co_await send_loop();
        if (!sent) {
            ++sh_.failed_conns;
            co_return;
        }
        std::string quit = "QUIT\r\n";
        Reply bye = co_await command(quit);
        (void)bye;
        boost::system::error_code ec;
        sock_.shutdown(tcp::socket::shutdown_both, ec);
        sock_.close(ec);
    }

private:
    void release() {
        sh_.t_start = Clock::now();
        sh_.start_unix_ms = unix_ms_now();
        sh_.go->cancel();
    }

    // Reads one (possibly multi-line) reply; code 0 on a broken connection.
    awaitable<Reply> reply() {
        for (;;) {
            boost::system::error_code ec;
            std::size_t n = co_await asio::async_read_until(sock_, asio::dynamic_buffer(in_), "\r\n",
                                                            asio::redirect_error(use_awaitable, ec));
            if (ec) co_return Reply{0, ec.message()};
            std::string line = in_.substr(0, n - 2);
            in_.erase(0, n);
            if (line.size() < 3) co_return Reply{0, "short reply: " + line};
            if (line.size() > 3 && line[3] == '-') continue;
            co_return Reply{std::atoi(line.substr(0, 3).c_str()), line};
        }
    }

    // Up to three pieces in one gather write. (GCC 12 miscompiles some coroutine expressions: braced lists
    // as co_await arguments, `co_return co_await`, co_await inside conditions; hence the plain statements.)
    awaitable<bool> write(const std::string* a, const std::string* b = nullptr, const std::string* c = nullptr) {
        std::vector<asio::const_buffer> bufs;
        for (const std::string* p : {a, b, c})
            if (p) bufs.push_back(asio::buffer(*p));
        boost::system::error_code ec;
        co_await asio::async_write(sock_, bufs, asio::redirect_error(use_awaitable, ec));
        if (ec) sh_.error("write: " + ec.message());
        co_return !ec;
    }

    awaitable<Reply> command(const std::string& line) {
        bool ok = co_await write(&line);
        if (!ok) co_return Reply{0, "write failed"};
        Reply r = co_await reply();
        co_return r;
    }

    awaitable<bool> expect(const std::string& line, int code) {
        Reply r = co_await command(line);
        if (r.code != code) {
            sh_.error("expected " + std::to_string(code) + ", got: " + r.text);
            co_return false;
        }
        co_return true;
    }

    awaitable<bool> setup() {
        Reply greeting = co_await reply();
        if (greeting.code != 220) {
            sh_.error("greeting: " + greeting.text);
            co_return false;
        }
        std::string ehlo = "EHLO bench.example\r\n";
        bool ok = co_await expect(ehlo, 250);
        if (!ok) co_return false;
        if (!sh_.accounts.empty()) {
            const Account& a = sh_.accounts[static_cast<std::size_t>(index_) % sh_.accounts.size()];
            from_ = a.mailbox;
            std::string creds;
            creds.push_back('\0');
            creds += a.login;
            creds.push_back('\0');
            creds += a.password;
            std::string auth = "AUTH PLAIN " + base64(creds) + "\r\n";
            ok = co_await expect(auth, 235);
            if (!ok) co_return false;
        } else {
            from_ = sh_.opt.from;
        }
        co_return true;
    }

    awaitable<bool> send_loop() {
        const std::string mail = "MAIL FROM:<" + from_ + ">\r\n";
        const std::string rcpt = "RCPT TO:<" + sh_.opt.rcpt + ">\r\n";
        static const std::string data = "DATA\r\n";
        static const std::string dot = ".\r\n";
        while (sh_.next < sh_.opt.messages) {
            long k = sh_.next++;
            if (sh_.opt.rate > 0) {
                // Open-loop pacing: message k starts at k / rate seconds (or when a connection is free).
                auto due = sh_.t_start + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(static_cast<double>(k) / sh_.opt.rate));
                if (due > Clock::now()) {
                    asio::steady_timer pace(sock_.get_executor(), due);
                    boost::system::error_code ec;
                    co_await pace.async_wait(asio::redirect_error(use_awaitable, ec));
                }
            }
            bool ok = true;
            std::string why;
            if (sh_.opt.pipeline) {
                bool written = co_await write(&mail, &rcpt, &data);
                if (!written) co_return false;
                for (int i = 0; i < 3; ++i) {
                    int want = i < 2 ? 250 : 354;
                    Reply r = co_await reply();
                    if (r.code == 0) co_return false;
                    if (r.code != want && ok) {
                        ok = false;
                        why = r.text;
                    }
                }
            } else {
                for (int i = 0; i < 3; ++i) {
                    const std::string& line = i == 0 ? mail : i == 1 ? rcpt : data;
                    int want = i < 2 ? 250 : 354;
                    Reply r = co_await command(line);
                    if (r.code == 0) co_return false;
                    if (r.code != want) {
                        ok = false;
                        why = r.text;
                        break;
                    }
                }
            }
            if (!ok) {
                // A refused transaction (after DATA's 354 was refused, DATA never started): reset and go on.
                ++sh_.refused;
                sh_.error("message " + std::to_string(k) + ": " + why);
                std::string rset = "RSET\r\n";
                Reply r = co_await command(rset);
                if (r.code != 250) co_return false;
                continue;
            }
            std::string headers = make_headers(from_, sh_.opt.rcpt, k, sh_.start_unix_ms);
            auto t0 = Clock::now();
            bool written = co_await write(&headers, &sh_.filler, &dot);
            if (!written) co_return false;
            Reply r = co_await reply();
            auto t1 = Clock::now();
            if (r.code == 0) {
                sh_.error("after end of data: " + r.text);
                co_return false;
            }
            if (r.code != 250) {
                ++sh_.refused;
                sh_.error("message " + std::to_string(k) + ": " + r.text);
                continue;
            }
            std::string id;
            if (auto p = r.text.find("queued as "); p != std::string::npos) id = r.text.substr(p + 10);
            while (!id.empty() && id.back() == ' ') id.pop_back();
            sh_.samples.push_back(
                {std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count(), unix_ms_now(), std::move(id)});
            sh_.t_end = t1;
        }
        co_return true;
    }

    Shared& sh_;
    tcp::socket sock_;
    int index_;
    std::string in_;
    std::string from_;
};

awaitable<void> start_session(Shared& sh, tcp::resolver::results_type endpoints, int index) {
    auto ex = co_await asio::this_coro::executor;
    tcp::socket s(ex);
    boost::system::error_code ec;
    co_await asio::async_connect(s, endpoints, asio::redirect_error(use_awaitable, ec));
    if (ec) {
        sh.error("connect: " + ec.message());
        ++sh.failed_conns;
        if (--sh.not_ready == 0) {
            sh.t_start = Clock::now();
            sh.start_unix_ms = unix_ms_now();
            sh.go->cancel();
        }
        co_return;
    }
    s.set_option(tcp::no_delay(true), ec);
    auto session = std::make_shared<Session>(sh, std::move(s), index);
    co_await session->run();
}

// Body after the headers: lines of at most 76 characters + CRLF, `size` bytes in all. No line starts
// with '.', so no dot-stuffing is needed.
std::string make_filler(std::size_t size) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    std::string out;
    out.reserve(size + 80);
    std::size_t n = 0;
    while (out.size() + 3 <= size) {
        std::size_t len = std::min<std::size_t>(76, size - out.size() - 2);
        for (std::size_t i = 0; i < len; ++i) out.push_back(alphabet[(n++ * 7) % (sizeof alphabet - 1)]);
        out += "\r\n";
    }
    if (out.empty()) out = "x\r\n";
    return out;
}

double pct(const std::vector<std::int64_t>& sorted, double p) {
    if (sorted.empty()) return 0;
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
    return static_cast<double>(sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1]);
}

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "%s\nusage: gb_smtp_bench [--host H] [--port P] [--connections N] [--messages M] [--size BYTES]\n"
                 "                     [--auth-file sandbox.json] [--from ADDR] [--rcpt ADDR] [--ids FILE] [--pipeline]\n"
                 "                     [--rate MSG_PER_S]\n",
                 why);
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(("missing value for " + a).c_str());
            return argv[++i];
        };
        if (a == "--host") o.host = value();
        else if (a == "--port") o.port = value();
        else if (a == "--connections") o.connections = std::atoi(value().c_str());
        else if (a == "--messages") o.messages = std::atol(value().c_str());
        else if (a == "--size") o.size = static_cast<std::size_t>(std::atol(value().c_str()));
        else if (a == "--auth-file") o.auth_file = value();
        else if (a == "--from") o.from = value();
        else if (a == "--rcpt") o.rcpt = value();
        else if (a == "--ids") o.ids_file = value();
        else if (a == "--pipeline") o.pipeline = true;
        else if (a == "--rate") o.rate = std::atof(value().c_str());
        else if (a == "-h" || a == "--help") usage("SMTP load client (bench/smtp.sh)");
        else usage(("unknown option " + a).c_str());
    }
    if (o.connections < 1 || o.messages < 1) usage("--connections and --messages must be positive");
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    Shared sh;
    sh.opt = parse(argc, argv);
    try {
        if (!sh.opt.auth_file.empty()) sh.accounts = load_accounts(sh.opt.auth_file);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "gb_smtp_bench: %s\n", e.what());
        return 2;
    }
    {
        // The whole message (headers + body, without the final ".") is --size bytes.
        std::size_t hdr = make_headers(sh.opt.from, sh.opt.rcpt, sh.opt.messages, unix_ms_now()).size();
        sh.filler = make_filler(sh.opt.size > hdr + 3 ? sh.opt.size - hdr : 3);
    }
    sh.samples.reserve(static_cast<std::size_t>(sh.opt.messages));
    sh.not_ready = sh.opt.connections;

    asio::io_context io(1);
    sh.go = std::make_unique<asio::steady_timer>(io, asio::steady_timer::time_point::max());
    tcp::resolver resolver(io);
    boost::system::error_code ec;
    auto endpoints = resolver.resolve(sh.opt.host, sh.opt.port, ec);
    if (ec) {
        std::fprintf(stderr, "gb_smtp_bench: resolve %s:%s: %s\n", sh.opt.host.c_str(), sh.opt.port.c_str(),
                     ec.message().c_str());
        return 2;
    }
    auto t_setup = Clock::now();
    for (int i = 0; i < sh.opt.connections; ++i) asio::co_spawn(io, start_session(sh, endpoints, i), asio::detached);
    io.run();
    sh.go.reset();  // before the io_context goes
    double setup_s = std::chrono::duration<double>(sh.t_start - t_setup).count();

    std::vector<std::int64_t> lat;
    lat.reserve(sh.samples.size());
    for (const auto& s : sh.samples) lat.push_back(s.latency_us);
    std::sort(lat.begin(), lat.end());
    double elapsed = sh.samples.empty() ? 0 : std::chrono::duration<double>(sh.t_end - sh.t_start).count();
    double rate = elapsed > 0 ? static_cast<double>(sh.samples.size()) / elapsed : 0;
    double p50 = pct(lat, 50) / 1000, p99 = pct(lat, 99) / 1000, pmax = lat.empty() ? 0 : double(lat.back()) / 1000;
    double mean = 0;
    for (auto v : lat) mean += static_cast<double>(v);
    mean = lat.empty() ? 0 : mean / static_cast<double>(lat.size()) / 1000;

    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;

    if (sh.opt.rate > 0) std::printf("paced            %.0f msg/s offered\n", sh.opt.rate);
    std::printf("connections      %d (%s, %s), setup %.2f s, %d failed\n", sh.opt.connections,
                sh.accounts.empty() ? "no AUTH, loopback relay" : "AUTH PLAIN, accounts round-robin",
                sh.opt.pipeline ? "pipelined MAIL/RCPT/DATA" : "one command at a time", setup_s, sh.failed_conns);
    std::printf("messages         %zu accepted, %ld refused, %zu bytes each\n", sh.samples.size(), sh.refused,
                sh.filler.size() +
                    make_headers(sh.accounts.empty() ? sh.opt.from : sh.accounts[0].mailbox, sh.opt.rcpt, 0, sh.start_unix_ms).size());
    std::printf("elapsed          %.3f s (client CPU %.2f s)\n", elapsed, cpu);
    std::printf("accepted         %.0f msg/s\n", rate);
    std::printf("DATA-end -> 250  p50 %.2f ms  p99 %.2f ms  max %.2f ms  mean %.2f ms\n", p50, p99, pmax, mean);
    for (const auto& e : sh.errors) std::printf("error: %s\n", e.c_str());
    std::printf("RESULT accepted=%zu refused=%ld failed_connections=%d start_unix_ms=%lld elapsed_s=%.3f "
                "msg_per_s=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f client_cpu_s=%.2f\n",
                sh.samples.size(), sh.refused, sh.failed_conns, static_cast<long long>(sh.start_unix_ms), elapsed,
                rate, p50, p99, pmax, cpu);

    if (!sh.opt.ids_file.empty()) {
        std::FILE* f = std::fopen(sh.opt.ids_file.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "gb_smtp_bench: cannot write %s\n", sh.opt.ids_file.c_str());
            return 2;
        }
        for (const auto& s : sh.samples) std::fprintf(f, "%s\t%lld\n", s.id.c_str(), static_cast<long long>(s.unix_ms));
        std::fclose(f);
    }
    return sh.samples.empty() ? 1 : 0;
}
