// Logging: one line per event, text or JSON, with level, component, connection id and queue id.
//
// Client-supplied text must go through client_text() (truncated and escaped) before it reaches a
// field. Secrets cannot be logged: gb::Secret has no conversion to string_view. AUTH payloads are
// removed from protocol lines by redact_command().
#pragma once

#include <cstdint>
#include <initializer_list>
#include <atomic>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace gb::log {

enum class Level { Error = 0, Warn = 1, Info = 2, Debug = 3 };
enum class Format { Text, Json };

bool parse_level(std::string_view s, Level& out);
bool parse_format(std::string_view s, Format& out);
std::string_view level_name(Level l);

struct Field {
    std::string_view key;
    std::string value;
    Field(std::string_view k, std::string_view v) : key(k), value(v) {}
    Field(std::string_view k, const char* v) : key(k), value(v) {}
    Field(std::string_view k, std::int64_t v) : key(k), value(std::to_string(v)) {}
    Field(std::string_view k, int v) : key(k), value(std::to_string(v)) {}
    Field(std::string_view k, std::uint64_t v) : key(k), value(std::to_string(v)) {}
};

// Identifies the connection / queued message a line belongs to ("" = none).
struct Context {
    std::string conn_id;
    std::string queue_id;
};

class Logger {
public:
    static Logger& instance();

    void configure(Level level, Format format);
    void set_stream(std::ostream* out);  // default std::cerr; tests capture
    bool enabled(Level l) const { return static_cast<int>(l) <= static_cast<int>(level_.load()); }
    Level level() const { return level_; }

    void write(Level l, std::string_view component, const Context* ctx, std::string_view message,
               std::initializer_list<Field> fields = {});

    // Formats one line without writing it (used by write and by tests).
    std::string format_line(Level l, std::string_view component, const Context* ctx, std::string_view message,
                            std::initializer_list<Field> fields, std::int64_t unix_ms) const;

private:
    // Atomic: a reload (SIGHUP) changes them while other threads log.
    std::atomic<Level> level_{Level::Info};
    std::atomic<Format> format_{Format::Text};
    std::ostream* out_ = nullptr;
    std::mutex mutex_;
};

// Escape control characters and non-ASCII bytes (\xNN), quote and backslash; cut to max bytes with "...".
std::string client_text(std::string_view text, std::size_t max = 200);

// A protocol command line safe to log: AUTH/AUTHENTICATE/LOGIN/PASS arguments replaced by "[redacted]".
std::string redact_command(std::string_view line);

void error(std::string_view component, std::string_view message, std::initializer_list<Field> f = {});
void warn(std::string_view component, std::string_view message, std::initializer_list<Field> f = {});
void info(std::string_view component, std::string_view message, std::initializer_list<Field> f = {});
void debug(std::string_view component, std::string_view message, std::initializer_list<Field> f = {});

}  // namespace gb::log
