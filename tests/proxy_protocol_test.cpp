// PROXY protocol v1/v2 parsing: valid headers from HAProxy's specification, every way a header can be
// incomplete (NeedMore at each prefix), and malformed ones refused (never read as SMTP/IMAP/POP3).
#include <gtest/gtest.h>

#include <string>

#include "protocol/proxy/proxy_protocol.h"

using namespace gb::protocol::proxy;

namespace {

std::string v2(unsigned char ver_cmd, unsigned char fam, const std::string& block) {
    std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
    h.push_back(static_cast<char>(ver_cmd));
    h.push_back(static_cast<char>(fam));
    h.push_back(static_cast<char>(block.size() >> 8));
    h.push_back(static_cast<char>(block.size() & 0xFF));
    return h + block;
}

std::string ipv4_block() {  // 192.0.2.7:51000 -> 10.0.0.1:25
    return std::string("\xC0\x00\x02\x07\x0A\x00\x00\x01\xC7\x38\x00\x19", 12);
}

}  // namespace

TEST(ProxyProtocol, V1Tcp4AndWhatFollowsIsLeftForTheProtocol) {
    std::string in = "PROXY TCP4 192.0.2.7 10.0.0.1 51000 25\r\nEHLO printer\r\n";
    auto r = parse(in);
    ASSERT_EQ(r.status, Status::Done) << r.error;
    EXPECT_EQ(r.header.version, 1);
    EXPECT_FALSE(r.header.local);
    EXPECT_EQ(r.header.source, "192.0.2.7");
    EXPECT_EQ(r.header.destination, "10.0.0.1");
    EXPECT_EQ(r.header.source_port, 51000);
    EXPECT_EQ(r.header.destination_port, 25);
    EXPECT_EQ(in.substr(r.consumed), "EHLO printer\r\n");
}

TEST(ProxyProtocol, V1Tcp6IsCanonicalisedAndUnknownMeansTheSocket) {
    auto r = parse("PROXY TCP6 2001:DB8:0:0::7 2001:db8::1 65535 0\r\n");
    ASSERT_EQ(r.status, Status::Done) << r.error;
    EXPECT_EQ(r.header.source, "2001:db8::7");
    EXPECT_EQ(r.header.source_port, 65535);
    EXPECT_EQ(r.header.destination_port, 0);
    for (const char* unknown : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"}) {
        auto u = parse(unknown);
        ASSERT_EQ(u.status, Status::Done) << unknown;
        EXPECT_TRUE(u.header.local);
        EXPECT_TRUE(u.header.source.empty());
    }
}

TEST(ProxyProtocol, EveryPrefixOfAValidHeaderNeedsMore) {
    for (const std::string& full : {std::string("PROXY TCP4 192.0.2.7 10.0.0.1 51000 25\r\n"), v2(0x21, 0x11, ipv4_block())}) {
        for (std::size_t n = 0; n < full.size(); ++n)
            EXPECT_EQ(parse(full.substr(0, n)).status, Status::NeedMore) << n;
        EXPECT_EQ(parse(full).status, Status::Done);
    }
}

TEST(ProxyProtocol, MalformedV1IsRefused) {
    for (const char* bad : {
             "EHLO x\r\n",                                          // no header at all
             "proxy TCP4 192.0.2.7 10.0.0.1 1 2\r\n",               // case matters
             "PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n",                 // a field missing
             "PROXY TCP4 192.0.2.7 10.0.0.1 1 2 3\r\n",             // one too many
             "PROXY TCP4 192.0.2.7 10.0.0.1 1 2 \r\n",              // trailing space
             "PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",              // double space
             "PROXY TCP4 192.0.2.777 10.0.0.1 1 2\r\n",             // not an IPv4 address
             "PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",             // IPv6 under TCP4
             "PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",            // IPv4 under TCP6
             "PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",           // port out of range
             "PROXY TCP4 192.0.2.7 10.0.0.1 025 2\r\n",             // leading zero
             "PROXY TCP4 192.0.2.7 10.0.0.1 -1 2\r\n",              // sign
             "PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",               // not TCP
             "PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",                 // bare LF
             "PROXY UNKNOWN\nEHLO x\r\n",                          // a bare LF before the CRLF (fuzzer)
             "PROXY UNKNOWN \x01\r\n",                              // a control byte
         }) {
        auto r = parse(bad);
        EXPECT_EQ(r.status, Status::Invalid) << bad;
        EXPECT_FALSE(r.error.empty()) << bad;
    }
    // No CRLF within the 107 bytes the specification allows: refused without waiting for more.
    EXPECT_EQ(parse("PROXY TCP6 " + std::string(120, 'f')).status, Status::Invalid);
    EXPECT_EQ(parse("PROXY TCP4 192.0.2.7 10.0.0.1 1 2" + std::string(80, ' ') + "\r\n").status, Status::Invalid);
}

TEST(ProxyProtocol, V2ProxyLocalAndTlvs) {
    auto r = parse(v2(0x21, 0x11, ipv4_block()) + "EHLO x\r\n");
    ASSERT_EQ(r.status, Status::Done) << r.error;
    EXPECT_EQ(r.header.version, 2);
    EXPECT_EQ(r.header.source, "192.0.2.7");
    EXPECT_EQ(r.header.source_port, 51000);
    EXPECT_EQ(r.header.destination, "10.0.0.1");
    EXPECT_EQ(r.header.destination_port, 25);
    EXPECT_EQ(r.consumed, 16u + 12u);

    std::string six(36, '\0');
    six[15] = 7;  // ::7
    six[31] = 1;  // ::1
    six[32] = '\x01';
    six[33] = '\x02';  // port 258
    auto r6 = parse(v2(0x21, 0x21, six + std::string("\x04\x00\x03" "abc", 6)));  // + a NOOP TLV
    ASSERT_EQ(r6.status, Status::Done) << r6.error;
    EXPECT_EQ(r6.header.source, "::7");
    EXPECT_EQ(r6.header.source_port, 258);
    EXPECT_EQ(r6.consumed, 16u + 42u);

    auto local = parse(v2(0x20, 0x00, ""));  // a health check from the balancer itself
    ASSERT_EQ(local.status, Status::Done);
    EXPECT_TRUE(local.header.local);
    auto unspec = parse(v2(0x21, 0x00, std::string(8, 'x')));
    ASSERT_EQ(unspec.status, Status::Done);
    EXPECT_TRUE(unspec.header.local);
    EXPECT_EQ(unspec.consumed, 24u);
}

TEST(ProxyProtocol, MalformedV2IsRefused) {
    EXPECT_EQ(parse(v2(0x11, 0x11, ipv4_block())).status, Status::Invalid);              // version 1 in a v2 frame
    EXPECT_EQ(parse(v2(0x22, 0x11, ipv4_block())).status, Status::Invalid);              // command 2
    EXPECT_EQ(parse(v2(0x21, 0x12, ipv4_block())).status, Status::Invalid);              // UDP
    EXPECT_EQ(parse(v2(0x21, 0x31, std::string(216, 'x'))).status, Status::Invalid);     // AF_UNIX
    EXPECT_EQ(parse(v2(0x21, 0x11, ipv4_block().substr(0, 8))).status, Status::Invalid); // block too short
    EXPECT_EQ(parse(v2(0x21, 0x21, std::string(20, '\0'))).status, Status::Invalid);     // IPv6 too short
    // A length beyond what we accept is refused at once, not buffered.
    std::string huge = v2(0x21, 0x11, ipv4_block());
    huge[14] = '\x20';
    huge[15] = '\x00';  // 8192
    EXPECT_EQ(parse(huge).status, Status::Invalid);
    // A signature that breaks off: not a PROXY header.
    EXPECT_EQ(parse(std::string("\r\n\r\nX", 5)).status, Status::Invalid);
}
