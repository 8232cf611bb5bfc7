#include "proxy/runtime/tls.h"

#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "auth/pki.h"

namespace gb::runtime {
namespace fs = std::filesystem;

TlsMaterial load_or_create_tls(const config::Config& cfg) {
    TlsMaterial m;
    if (!cfg.tls.cert.empty()) {
        m.cert_chain_pem = auth::read_file(cfg.tls.cert);
        m.key_pem = auth::read_file(cfg.tls.key);
        m.cert_path = cfg.tls.cert;
        auto cert = auth::cert_from_pem(m.cert_chain_pem);
        auto key = auth::private_key_from_pem(m.key_pem);
        if (!cert) throw std::runtime_error(cfg.tls.cert + ": no PEM certificate");
        if (!key) throw std::runtime_error(cfg.tls.key + ": no unencrypted PEM private key");
        if (!auth::key_matches_cert(key.get(), cert.get()))
            throw std::runtime_error(cfg.tls.key + " does not belong to " + cfg.tls.cert);
        return m;
    }
    fs::path dir = fs::path(cfg.state_dir) / "tls";
    fs::path cert_path = dir / "server.pem", key_path = dir / "server.key.pem";
    if (!fs::exists(cert_path) || !fs::exists(key_path)) {
        fs::create_directories(dir);
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        std::vector<std::string> names = {"localhost"};
        if (host[0] && std::string(host) != "localhost") names.emplace_back(host);
        auto key = auth::generate_rsa_key(2048);
        auth::CertSpec spec;
        spec.common_name = names.back();
        spec.days = 3650;
        spec.server_auth = true;
        spec.dns_names = names;
        spec.ip_addresses = {"127.0.0.1", "::1"};
        auto cert = auth::issue_certificate(spec, key.get(), nullptr, key.get());
        auth::write_private_key_pem(key_path, key.get());
        auth::write_cert_pem(cert_path, cert.get());
        m.generated = true;
    }
    m.cert_chain_pem = auth::read_file(cert_path);
    m.key_pem = auth::read_file(key_path);
    m.cert_path = cert_path.string();
    return m;
}

}  // namespace gb::runtime
