// App-only Graph access to a TestSandbox, as the bridge has it: an HTTPS client trusting the sandbox
// CA, a token broker with the app's certificate credential (the tenant's app.pem) and a GraphClient on
// the sandbox's base URL. Must not outlive the sandbox.
#pragma once

#include "auth/token_broker.h"
#include "graph/http/graph_client.h"
#include "graph/http/http_client.h"
#include "tests/support/test_sandbox.h"

namespace gb::test {

struct GraphAccess {
    explicit GraphAccess(const TestSandbox& sandbox);
    GraphAccess(const GraphAccess&) = delete;
    GraphAccess& operator=(const GraphAccess&) = delete;

    http::Client client;
    auth::TokenBroker broker;
    http::GraphClient graph;
};

}  // namespace gb::test
