#include "graph/http/graph_client.h"

#include <variant>

namespace gb::http {

GraphClient::GraphClient(Client& http, auth::TokenBroker& broker, std::string graph_url)
    : http_(http), broker_(broker), graph_url_(std::move(graph_url)) {
    while (!graph_url_.empty() && graph_url_.back() == '/') graph_url_.pop_back();
}

GraphResult GraphClient::call(Request request) {
    GraphResult out;
    request.url = graph_url_ + request.url;
    auto token = broker_.get();
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (auto* f = std::get_if<auth::TokenFailure>(&token)) {
            out.token_error = *f;
            return out;
        }
        const std::string& access = std::get<auth::Token>(token).access_token;
        Request r = request;
        r.headers.emplace_back("Authorization", "Bearer " + access);
        out.response = http_.perform(r);
        if (out.response.status != 401 || attempt == 1) break;
        // The token was refused (expired early, revoked, signing key rolled): replace it once.
        out.retried_after_401 = true;
        token = broker_.refresh_after_rejection(access);
    }
    return out;
}

}  // namespace gb::http
