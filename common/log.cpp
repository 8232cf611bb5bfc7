#include "common/log.h"

#include <fmt/format.h>

#include <cctype>
#include <chrono>
#include <ctime>
#include <iostream>
#include <vector>

namespace gb::log {
namespace {

std::string iso_time(std::int64_t unix_ms) {
    std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(unix_ms % 1000));
}

void json_escape(std::string& out, std::string_view s) {
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c >= 0x7f) {
                    out += fmt::format("\\u{:04x}", c);
                } else {
                    out.push_back(static_cast<char>(c));
                }
        }
    }
}

// Text format: bare when safe, else quoted with escapes.
void text_value(std::string& out, std::string_view v) {
    bool bare = !v.empty();
    for (unsigned char c : v) {
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) {
            bare = false;
            break;
        }
    }
    if (bare) {
        out.append(v);
        return;
    }
    out.push_back('"');
    for (unsigned char c : v) {
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(c));
        } else if (c < 0x20 || c >= 0x7f) {
            out += fmt::format("\\x{:02x}", c);
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    out.push_back('"');
}

bool istarts(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::toupper(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
    return true;
}

}  // namespace

bool parse_level(std::string_view s, Level& out) {
    if (s == "error") out = Level::Error;
    else if (s == "warn") out = Level::Warn;
    else if (s == "info") out = Level::Info;
    else if (s == "debug") out = Level::Debug;
    else return false;
    return true;
}

bool parse_format(std::string_view s, Format& out) {
    if (s == "text") out = Format::Text;
    else if (s == "json") out = Format::Json;
    else return false;
    return true;
}

std::string_view level_name(Level l) {
    switch (l) {
        case Level::Error: return "error";
        case Level::Warn: return "warn";
        case Level::Info: return "info";
        case Level::Debug: return "debug";
    }
    return "?";
}

Logger& Logger::instance() {
    static Logger logger;
    return logger;
}

void Logger::configure(Level level, Format format) {
    std::lock_guard lock(mutex_);
    level_ = level;
    format_ = format;
}

void Logger::set_stream(std::ostream* out) {
    std::lock_guard lock(mutex_);
    out_ = out;
}

std::string Logger::format_line(Level l, std::string_view component, const Context* ctx,
                                std::string_view message, std::initializer_list<Field> fields,
                                std::int64_t unix_ms) const {
    std::string line;
    if (format_ == Format::Json) {
        line = "{\"ts\":\"" + iso_time(unix_ms) + "\",\"level\":\"" + std::string(level_name(l)) + "\"";
        line += ",\"component\":\"";
        json_escape(line, component);
        line += "\"";
        if (ctx && !ctx->conn_id.empty()) {
            line += ",\"conn\":\"";
            json_escape(line, ctx->conn_id);
            line += "\"";
        }
        if (ctx && !ctx->queue_id.empty()) {
            line += ",\"queue\":\"";
            json_escape(line, ctx->queue_id);
            line += "\"";
        }
        line += ",\"msg\":\"";
        json_escape(line, message);
        line += "\"";
        for (const auto& f : fields) {
            line += ",\"";
            json_escape(line, f.key);
            line += "\":\"";
            json_escape(line, f.value);
            line += "\"";
        }
        line += "}";
    } else {
        line = iso_time(unix_ms) + " " + std::string(level_name(l)) + " ";
        line.append(component);
        if (ctx && !ctx->conn_id.empty()) line += " [" + ctx->conn_id + "]";
        if (ctx && !ctx->queue_id.empty()) line += " [" + ctx->queue_id + "]";
        line += ": ";
        for (unsigned char c : message) {
            if (c < 0x20 || c == 0x7f) line += fmt::format("\\x{:02x}", c);
            else line.push_back(static_cast<char>(c));
        }
        for (const auto& f : fields) {
            line.push_back(' ');
            line.append(f.key);
            line.push_back('=');
            text_value(line, f.value);
        }
    }
    return line;
}

void Logger::write(Level l, std::string_view component, const Context* ctx, std::string_view message,
                   std::initializer_list<Field> fields) {
    if (!enabled(l)) return;
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    std::lock_guard lock(mutex_);
    std::string line = format_line(l, component, ctx, message, fields, now);
    line.push_back('\n');
    std::ostream& os = out_ ? *out_ : std::cerr;
    os << line;
    os.flush();
}

std::string client_text(std::string_view text, std::size_t max) {
    std::string out;
    bool cut = text.size() > max;
    if (cut) text = text.substr(0, max);
    for (unsigned char c : text) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c < 0x20 || c >= 0x7f) out += fmt::format("\\x{:02x}", c);
        else out.push_back(static_cast<char>(c));
    }
    if (cut) out += "...";
    return out;
}

std::string redact_command(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    std::vector<std::string_view> words;
    for (std::string_view rest = line; !rest.empty();) {
        auto sp = rest.find(' ');
        if (sp != 0) words.push_back(rest.substr(0, sp));
        rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
    }
    auto verb_is = [](std::string_view w, std::string_view v) { return w.size() == v.size() && istarts(w, v); };
    auto sensitive = [&](std::string_view w) {
        return verb_is(w, "AUTH") || verb_is(w, "AUTHENTICATE") || verb_is(w, "LOGIN") || verb_is(w, "PASS");
    };
    std::size_t verb = words.size();
    if (!words.empty() && sensitive(words[0])) verb = 0;
    else if (words.size() > 1 && sensitive(words[1])) verb = 1;  // IMAP: "tag LOGIN ..."
    if (verb == words.size()) return client_text(line);
    std::string out;
    for (std::size_t i = 0; i <= verb; ++i) {
        if (i) out.push_back(' ');
        out.append(words[i]);
    }
    std::size_t kept = verb + 1;
    bool is_auth = verb_is(words[verb], "AUTH") || verb_is(words[verb], "AUTHENTICATE");
    if (is_auth && kept < words.size()) {
        out += " ";
        out.append(words[kept]);  // the mechanism name
        ++kept;
    }
    if (kept < words.size()) out += " [redacted]";
    return client_text(out);
}

void error(std::string_view c, std::string_view m, std::initializer_list<Field> f) {
    Logger::instance().write(Level::Error, c, nullptr, m, f);
}
void warn(std::string_view c, std::string_view m, std::initializer_list<Field> f) {
    Logger::instance().write(Level::Warn, c, nullptr, m, f);
}
void info(std::string_view c, std::string_view m, std::initializer_list<Field> f) {
    Logger::instance().write(Level::Info, c, nullptr, m, f);
}
void debug(std::string_view c, std::string_view m, std::initializer_list<Field> f) {
    Logger::instance().write(Level::Debug, c, nullptr, m, f);
}

}  // namespace gb::log
