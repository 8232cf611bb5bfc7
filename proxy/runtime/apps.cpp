#include "proxy/runtime/apps.h"

#include <stdexcept>

namespace gb::runtime {

LoadedApp load_app(const config::AppConfig& app) {
    LoadedApp out;
    out.name = app.name;
    out.broker.app_name = app.name;
    out.broker.client_id = app.client_id;
    out.broker.tenant = app.tenant_id;
    out.broker.token_endpoint = app.token_endpoint;
    out.broker.scope = app.scope;
    if (app.certificate) {
        const auto& c = *app.certificate;
        auth::KeystoreRequest req;
        req.path = c.keystore;
        req.alias = c.alias;
        req.cert_path = c.cert_file;
        try {
            if (c.password.kind != SecretSource::Kind::None) req.password = load_secret(c.password);
            if (c.key_password.kind != SecretSource::Kind::None) req.key_password = load_secret(c.key_password);
        } catch (const std::exception& e) {
            throw std::runtime_error(std::string("app ") + app.name + ": keystore password: " + e.what());
        }
        auth::Credential cred = auth::load_keystore(req);
        out.warnings = cred.warnings;
        auth::CertificateCredential cc;
        cc.key = auth::PKey(EVP_PKEY_dup(cred.key.get()));
        if (!cc.key) throw std::runtime_error("app " + app.name + ": cannot copy the private key");
        cc.cert_der = auth::cert_to_der(cred.cert.get());
        cc.alg = c.algorithm == "PS256" ? auth::JwsAlg::PS256 : auth::JwsAlg::RS256;
        cc.thumbprint = c.thumbprint == "x5t#S256" ? auth::ThumbprintHeader::X5tS256 : auth::ThumbprintHeader::X5t;
        cc.assertion_lifetime = c.assertion_lifetime;
        cc.extra_claims_json = c.extra_claims_json;
        out.broker.certificate = std::move(cc);
        out.credential = std::move(cred);
    } else {
        try {
            out.broker.client_secret = load_secret(app.client_secret);
        } catch (const std::exception& e) {
            throw std::runtime_error(std::string("app ") + app.name + ": client secret: " + e.what());
        }
    }
    return out;
}

}  // namespace gb::runtime
