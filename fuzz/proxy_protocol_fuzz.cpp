// Fuzz target: the PROXY protocol v1/v2 header parser (protocol/proxy).
//
// Input: the bytes a listener receives first. Invariants: a Done header consumed no more than was given
// and only its own bytes (parsing exactly that prefix gives the same header; more input after it changes
// nothing); it names a client unless it is local; Invalid carries a reason; and a Done/Invalid verdict
// never turns into NeedMore when more bytes arrive.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "protocol/proxy/proxy_protocol.h"

using namespace gb::protocol::proxy;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string in(reinterpret_cast<const char*>(data), size);
    Result r = parse(in);
    std::string more = in + "EHLO x\r\n";
    Result r2 = parse(more);
    switch (r.status) {
        case Status::Done: {
            if (r.consumed == 0 || r.consumed > in.size()) gb::fuzz::fail("consumed outside the input");
            Result exact = parse(in.substr(0, r.consumed));
            if (exact.status != Status::Done || exact.consumed != r.consumed || exact.header.source != r.header.source ||
                exact.header.source_port != r.header.source_port)
                gb::fuzz::fail("the header depends on bytes after it");
            if (r2.status != Status::Done || r2.consumed != r.consumed) gb::fuzz::fail("more input changed a header");
            if (!r.header.local && r.header.source.empty()) gb::fuzz::fail("a non-local header without a client");
            if (r.header.local && !r.header.source.empty()) gb::fuzz::fail("a local header naming a client");
            break;
        }
        case Status::Invalid:
            if (r.error.empty()) gb::fuzz::fail("Invalid without a reason");
            if (r2.status != Status::Invalid) gb::fuzz::fail("more input made an invalid header acceptable");
            break;
        case Status::NeedMore:
            if (in.size() > 16 + kMaxV2Length) gb::fuzz::fail("buffering beyond the largest header");
            break;
    }
    return 0;
}
