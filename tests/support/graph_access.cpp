#include "tests/support/graph_access.h"

#include "auth/pki.h"
#include "graph/http/token_transport.h"

namespace gb::test {

namespace {

http::ClientOptions client_options(const TestSandbox& sb) {
    http::ClientOptions o;
    o.ca_file = sb.ca();
    return o;
}

auth::TokenBrokerConfig broker_config(const TestSandbox& sb) {
    auth::TokenBrokerConfig c;
    c.app_name = "sandbox";
    c.client_id = sb.app().client_id;
    c.tenant = sb.setup().tenant.tenant_id;
    c.token_endpoint = sb.token_url();
    c.scope = sb.base() + "/.default";
    auth::CertificateCredential cred;
    cred.key = auth::load_private_key_pem(sb.tenant_dir() + "/app.pem");
    cred.cert_der = auth::cert_to_der(auth::load_cert(sb.tenant_dir() + "/app.pem").get());
    c.certificate = std::move(cred);
    return c;
}

}  // namespace

GraphAccess::GraphAccess(const TestSandbox& sandbox)
    : client(client_options(sandbox)),
      broker(broker_config(sandbox), http::make_token_transport(client)),
      graph(client, broker, sandbox.base()) {}

}  // namespace gb::test
