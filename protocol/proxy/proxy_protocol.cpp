#include "protocol/proxy/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace gb::protocol::proxy {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr unsigned char kV2Signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

Result invalid(std::string why) {
    Result r;
    r.status = Status::Invalid;
    r.error = std::move(why);
    return r;
}

// An address in the family's text form; "" when it does not parse. The text is re-rendered from the
// binary form, so what reaches the logs and the relay policy is canonical.
std::string ip_text(std::string_view text, int family) {
    if (text.empty() || text.size() > INET6_ADDRSTRLEN) return "";
    char in[INET6_ADDRSTRLEN + 1] = {};
    std::memcpy(in, text.data(), text.size());
    unsigned char bin[sizeof(in6_addr)];
    if (::inet_pton(family, in, bin) != 1) return "";
    char out[INET6_ADDRSTRLEN] = {};
    if (!::inet_ntop(family, bin, out, sizeof out)) return "";
    return out;
}

std::string ip_from_bytes(const unsigned char* p, int family) {
    char out[INET6_ADDRSTRLEN] = {};
    if (!::inet_ntop(family, p, out, sizeof out)) return "";
    return out;
}

bool parse_port(std::string_view s, std::uint16_t& out) {
    if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
    unsigned v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v > 65535) return false;
    out = static_cast<std::uint16_t>(v);
    return true;
}

Result parse_v1(std::string_view in) {
    std::size_t crlf = in.find("\r\n");
    // Printable ASCII only up to the CRLF (a bare CR or LF, NUL, anything else: refused at once, so the
    // verdict never depends on bytes after the header).
    std::size_t end = crlf == std::string_view::npos ? in.size() : crlf;
    for (std::size_t i = 0; i < end; ++i) {
        auto c = static_cast<unsigned char>(in[i]);
        if (c == '\r' && crlf == std::string_view::npos && i + 1 == in.size()) break;  // CR of a CRLF to come
        if (c < 0x20 || c > 0x7E) return invalid("PROXY v1 line with a control or non-ASCII byte");
    }
    if (crlf == std::string_view::npos) {
        if (in.size() >= kMaxV1Line) return invalid("PROXY v1 line longer than 107 bytes");
        return Result{};
    }
    if (crlf + 2 > kMaxV1Line) return invalid("PROXY v1 line longer than 107 bytes");
    std::string_view line = in.substr(kV1Prefix.size(), crlf - kV1Prefix.size());
    Result r;
    r.status = Status::Done;
    r.consumed = crlf + 2;
    r.header.version = 1;
    if (line == "UNKNOWN" || line.rfind("UNKNOWN ", 0) == 0) {  // the proxy could not tell: use the socket
        r.header.local = true;
        return r;
    }
    std::string_view parts[6];
    std::size_t n = 0, start = 0;
    while (n < 6) {  // a sixth field (or a trailing space) makes it malformed
        std::size_t sp = line.find(' ', start);
        parts[n++] = line.substr(start, sp == std::string_view::npos ? std::string_view::npos : sp - start);
        if (sp == std::string_view::npos) break;
        start = sp + 1;
    }
    if (n != 5) return invalid("PROXY v1: expected 'TCP4|TCP6 src dst sport dport'");
    int family = parts[0] == "TCP4" ? AF_INET : parts[0] == "TCP6" ? AF_INET6 : 0;
    if (!family) return invalid("PROXY v1: unknown protocol '" + std::string(parts[0].substr(0, 16)) + "'");
    r.header.source = ip_text(parts[1], family);
    r.header.destination = ip_text(parts[2], family);
    if (r.header.source.empty() || r.header.destination.empty())
        return invalid("PROXY v1: an address is not " + std::string(parts[0]));
    if (!parse_port(parts[3], r.header.source_port) || !parse_port(parts[4], r.header.destination_port))
        return invalid("PROXY v1: a port is not 0-65535");
    return r;
}

Result parse_v2(std::string_view in) {
    if (in.size() < 16) return Result{};
    auto byte = [&](std::size_t i) { return static_cast<unsigned char>(in[i]); };
    unsigned ver = byte(12) >> 4, cmd = byte(12) & 0x0F;
    if (ver != 2) return invalid("PROXY v2: version " + std::to_string(ver));
    if (cmd > 1) return invalid("PROXY v2: unknown command " + std::to_string(cmd));
    std::size_t len = (static_cast<std::size_t>(byte(14)) << 8) | byte(15);
    if (len > kMaxV2Length) return invalid("PROXY v2: header of " + std::to_string(len) + " bytes");
    if (in.size() < 16 + len) return Result{};
    Result r;
    r.status = Status::Done;
    r.consumed = 16 + len;
    r.header.version = 2;
    unsigned fam = byte(13);
    if (cmd == 0 || fam == 0x00) {  // LOCAL (health checks) or UNSPEC: the connection's own address
        r.header.local = true;
        return r;
    }
    const auto* p = reinterpret_cast<const unsigned char*>(in.data()) + 16;
    if (fam == 0x11) {  // TCP over IPv4
        if (len < 12) return invalid("PROXY v2: IPv4 address block too short");
        r.header.source = ip_from_bytes(p, AF_INET);
        r.header.destination = ip_from_bytes(p + 4, AF_INET);
        r.header.source_port = static_cast<std::uint16_t>((p[8] << 8) | p[9]);
        r.header.destination_port = static_cast<std::uint16_t>((p[10] << 8) | p[11]);
    } else if (fam == 0x21) {  // TCP over IPv6
        if (len < 36) return invalid("PROXY v2: IPv6 address block too short");
        r.header.source = ip_from_bytes(p, AF_INET6);
        r.header.destination = ip_from_bytes(p + 16, AF_INET6);
        r.header.source_port = static_cast<std::uint16_t>((p[32] << 8) | p[33]);
        r.header.destination_port = static_cast<std::uint16_t>((p[34] << 8) | p[35]);
    } else {
        return invalid("PROXY v2: not TCP over IPv4/IPv6 (family byte " + std::to_string(fam) + ")");
    }
    if (r.header.source.empty() || r.header.destination.empty()) return invalid("PROXY v2: bad address");
    return r;
}

}  // namespace

Result parse(std::string_view in) {
    // v2 first: its signature starts with CR LF, which no v1 header does.
    std::size_t sig = std::min(in.size(), sizeof kV2Signature);
    if (sig > 0 && std::memcmp(in.data(), kV2Signature, sig) == 0)
        return sig < sizeof kV2Signature ? Result{} : parse_v2(in);
    std::size_t pre = std::min(in.size(), kV1Prefix.size());
    if (in.substr(0, pre) != kV1Prefix.substr(0, pre)) return invalid("no PROXY protocol header");
    if (pre < kV1Prefix.size()) return Result{};
    return parse_v1(in);
}

}  // namespace gb::protocol::proxy
