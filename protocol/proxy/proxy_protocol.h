// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header a load balancer or
// reverse proxy sends first on a connection it forwards, naming the real client. Socket-free: parse()
// looks at the bytes received so far and says whether a complete, valid header is there.
//
// Strict by design (the header decides whose address relay policy sees): v1 only as "PROXY TCP4|TCP6
// <src> <dst> <sport> <dport>\r\n" or "PROXY UNKNOWN...\r\n" within 107 bytes, addresses that parse
// for their family, ports 0-65535 without leading zeros; v2 only version 2, command LOCAL or PROXY,
// TCP over IPv4 or IPv6 (or UNSPEC), a length that covers the addresses and at most kMaxV2Length bytes
// of TLVs (skipped). Anything else is Invalid and the connection must be closed: a listener that
// expects the header never falls back to reading the bytes as the protocol.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gb::protocol::proxy {

struct Header {
    int version = 0;     // 1 or 2
    bool local = false;  // no client named (v1 UNKNOWN, v2 LOCAL or UNSPEC): use the connection's own
    std::string source;  // the real client's IP as text ("192.0.2.7", "2001:db8::7"); "" when local
    std::string destination;
    std::uint16_t source_port = 0;
    std::uint16_t destination_port = 0;
};

enum class Status { NeedMore, Done, Invalid };

struct Result {
    Status status = Status::NeedMore;
    Header header;              // when Done
    std::size_t consumed = 0;   // when Done: bytes of the header; what follows belongs to the protocol
    std::string error;          // when Invalid: why, for the log
};

constexpr std::size_t kMaxV1Line = 107;   // the spec's bound, CRLF included
constexpr std::size_t kMaxV2Length = 4096;  // address block + TLVs we accept (the spec allows 65535)

// The header at the start of `received` (everything read from the connection so far).
Result parse(std::string_view received);

}  // namespace gb::protocol::proxy
