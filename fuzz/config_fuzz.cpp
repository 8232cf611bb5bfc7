// Fuzz target: the TOML configuration loader (proxy/config). config::load() reads a path, so the input
// is written to a per-process scratch directory in $TMPDIR (default /tmp), reused for every input,
// next to small placeholder files the seed configs name (app.pem, app.jks, secret.txt, ca.pem,
// cert.pem, key.pem): the loader checks that referenced files are readable. Each
// line of the input is also given to the value parsers (listen addresses, networks, sizes, durations,
// GUIDs, domains, e-mail addresses).
// Promise checked: load() throws nothing but ConfigError.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fuzz/fuzz_util.h"
#include "proxy/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string path = [] {
        std::string dir = gb::fuzz::scratch_dir("config");
        for (const char* f : {"app.pem", "app.jks", "secret.txt", "ca.pem", "cert.pem", "key.pem"})
            gb::fuzz::write_file(dir + "/" + f, "placeholder\n");
        return dir + "/graphbridge.toml";
    }();
    if (size > 64 * 1024) return 0;
    std::string_view text(reinterpret_cast<const char*>(data), size);

    std::size_t pos = 0;
    for (int lines = 0; pos <= text.size() && lines < 64; ++lines) {
        std::size_t lf = text.find('\n', pos);
        std::string line(text.substr(pos, lf == std::string_view::npos ? std::string_view::npos : lf - pos));
        (void)gb::config::parse_listen(line);
        (void)gb::config::parse_network(line);
        (void)gb::config::parse_size(line);
        (void)gb::config::parse_duration(line);
        (void)gb::config::is_guid(line);
        (void)gb::config::is_domain(line);
        (void)gb::config::is_email(line);
        if (lf == std::string_view::npos) break;
        pos = lf + 1;
    }

    gb::fuzz::write_file(path, text);
    try {
        gb::config::Config cfg = gb::config::load(path);
        if (gb::fuzz::verbose()) std::fprintf(stderr, "loaded: %zu apps\n", cfg.apps.size());
    } catch (const gb::config::ConfigError& e) {
        if (gb::fuzz::verbose()) std::fprintf(stderr, "ConfigError: %s\n", e.what());
    }
    return 0;
}
