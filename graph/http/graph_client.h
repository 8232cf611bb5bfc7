// Graph calls with the app's token: adds the bearer token, and after a 401 for a refused token gets
// one fresh token from the broker (shared by all callers) and retries once.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string_view>
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

    // Told about every HTTP exchange call() makes (metrics): method, the request path as given to call()
    // (without the Graph root), the response (status 0 = no answer) and how long it took. Set before use.
    using Observer = std::function<void(const std::string& method, const std::string& path, const Response& response,
                                        std::chrono::milliseconds elapsed)>;
    void set_observer(Observer observer) { observer_ = std::move(observer); }

private:
    Client& http_;
    auth::TokenBroker& broker_;
    std::string graph_url_;
    Observer observer_;
};

// A Graph path as a bounded metric label: ids, addresses and names become {id}, keeping Graph's own
// words ("/v1.0/users/a@b/mailFolders/AAMk=/messages/delta?$top=5" -> "/users/{id}/mailFolders/{id}/messages/delta").
std::string route_template(std::string_view path);

}  // namespace gb::http
