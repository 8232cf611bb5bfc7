// Connects the token broker (auth/) to the libcurl client: POSTs the form to the token endpoint.
#pragma once

#include "auth/token_broker.h"
#include "graph/http/http_client.h"

namespace gb::http {

// The client must outlive the returned transport.
auth::TokenTransport make_token_transport(Client& client, long timeout_ms = 30000);

}  // namespace gb::http
