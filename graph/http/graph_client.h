// Graph calls with the app's token: adds the bearer token, and after a 401 for a refused token gets
// one fresh token from the broker (shared by all callers) and retries once.
#pragma once

#include <optional>
#include <string>

#include "auth/token_broker.h"
#include "graph/http/http_client.h"

namespace gb::http {

struct GraphResult {
    Response response;                              // the last response (status 0 if never sent)
    std::optional<auth::TokenFailure> token_error;  // set when no token could be had
    bool retried_after_401 = false;
};

class GraphClient {
public:
    // graph_url without /v1.0, e.g. "https://graph.microsoft.com". Both references must outlive this.
    GraphClient(Client& http, auth::TokenBroker& broker, std::string graph_url);

    // request.url is a path such as "/v1.0/users/x/mailFolders"; the Authorization header is added here.
    GraphResult call(Request request);

private:
    Client& http_;
    auth::TokenBroker& broker_;
    std::string graph_url_;
};

}  // namespace gb::http
