#include "graph/http/graph_client.h"

#include <cctype>
#include <set>
#include <string>
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
        auto started = std::chrono::steady_clock::now();
        out.response = http_.perform(r);
        if (observer_)
            observer_(r.method, request.url.substr(graph_url_.size()), out.response,
                      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started));
        if (out.response.status != 401 || attempt == 1) break;
        // The token was refused (expired early, revoked, signing key rolled): replace it once.
        out.retried_after_401 = true;
        token = broker_.refresh_after_rejection(access);
    }
    return out;
}

std::string route_template(std::string_view path) {
    static const std::set<std::string, std::less<>> kWords = {
        "users", "messages", "mailfolders", "childfolders", "attachments", "delta", "sendmail", "send", "move",
        "copy", "permanentdelete", "$value", "createuploadsession", "createreply", "createforward", "inbox",
        "sentitems", "drafts", "deleteditems", "junkemail", "archive", "outbox", "msgfolderroot", "me",
        "mailboxsettings", "$count", "$batch"};
    path = path.substr(0, path.find('?'));
    for (std::string_view root : {std::string_view("/v1.0/"), std::string_view("/beta/")})
        if (path.rfind(root, 0) == 0) {
            path.remove_prefix(root.size() - 1);
            break;
        }
    std::string out;
    std::size_t start = 0;
    while (start < path.size()) {
        std::size_t slash = path.find('/', start);
        if (slash == std::string_view::npos) slash = path.size();
        std::string_view seg = path.substr(start, slash - start);
        if (!seg.empty()) {
            std::string lower(seg);
            for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            out += '/';
            out += kWords.count(lower) ? std::string(seg) : std::string("{id}");
        }
        start = slash + 1;
    }
    return out.empty() ? "/" : out;
}

}  // namespace gb::http
