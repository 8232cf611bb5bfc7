#include "graph/http/token_transport.h"

#include <ctime>

#include "graph/api/errors.h"

namespace gb::http {

auth::TokenTransport make_token_transport(Client& client, long timeout_ms) {
    return [&client, timeout_ms](const auth::TokenHttpRequest& in) {
        Request req;
        req.method = "POST";
        req.url = in.url;
        req.headers = in.headers;
        req.body = in.body;
        req.timeout_ms = timeout_ms;
        Response res = client.perform(req);
        std::fill(req.body.begin(), req.body.end(), '\0');
        auth::TokenHttpResponse out;
        out.status = res.status;
        out.error = res.error;
        out.body = std::move(res.body);
        if (auto ra = res.header("retry-after")) out.retry_after = graph::parse_retry_after(*ra, std::time(nullptr));
        return out;
    };
}

}  // namespace gb::http
