// `graphbridge cert new` makes the key pair and certificate for an app registration (PEM, .p12 and
// the .cer to upload); `graphbridge cert show` prints a keystore entry's thumbprints as the Azure
// portal, keytool and the JWT header show them.
#include "proxy/cli/cert.h"

#include <fmt/format.h>
#include <openssl/pkcs12.h>

#include <ctime>
#include <filesystem>
#include <map>

#include "auth/crypto.h"
#include "common/text.h"
#include "auth/keystore.h"
#include "auth/pki.h"
#include "common/secret.h"

namespace gb::cli {
namespace fs = std::filesystem;
namespace {


std::string colon_hex(std::string_view raw) {
    std::string hex = auth::hex_upper(raw), out;
    for (std::size_t i = 0; i < hex.size(); i += 2) {
        if (i) out.push_back(':');
        out.append(hex, i, 2);
    }
    return out;
}

void print_thumbprints(std::ostream& out, const X509* cert) {
    std::string sha1 = auth::cert_sha1_thumbprint(cert), sha256 = auth::cert_sha256_thumbprint(cert);
    out << fmt::format("  Thumbprint (Azure portal)  {}\n", auth::hex_upper(sha1));
    out << fmt::format("  SHA1 (keytool -list -v)    {}\n", colon_hex(sha1));
    out << fmt::format("  SHA256                     {}\n", colon_hex(sha256));
    out << fmt::format("  x5t (JWT header)           {}\n", auth::base64url_encode(sha1));
    out << fmt::format("  x5t#S256 (JWT header)      {}\n", auth::base64url_encode(sha256));
    out << fmt::format("  customKeyIdentifier        {}\n", auth::base64_encode(sha1));
}

struct Args {
    std::map<std::string, std::string> opts;
    std::vector<std::string> positional;
    std::string error;
};

Args parse(const std::vector<std::string>& args, std::size_t from, std::initializer_list<const char*> known) {
    Args a;
    for (std::size_t i = from; i < args.size(); ++i) {
        if (args[i].rfind("--", 0) != 0) {
            a.positional.push_back(args[i]);
            continue;
        }
        std::string name = args[i].substr(2);
        bool ok = false;
        for (const char* k : known) ok = ok || name == k;
        if (!ok) {
            a.error = "unknown option --" + name;
            return a;
        }
        if (i + 1 >= args.size()) {
            a.error = "option --" + name + " needs a value";
            return a;
        }
        a.opts[name] = args[++i];
    }
    return a;
}

std::string write_p12(const fs::path& path, EVP_PKEY* key, X509* cert, const std::string& name) {
    std::string password = auth::base64url_encode(auth::random_bytes(18));
    // OpenSSL 3 defaults: PBES2 with AES-256-CBC and PBKDF2-HMAC-SHA256, MAC HMAC-SHA256.
    PKCS12* p12 = PKCS12_create(password.c_str(), name.c_str(), key, cert, nullptr, 0, 0, 0, 0, 0);
    if (!p12) throw std::runtime_error("cannot build the .p12");
    unsigned char* der = nullptr;
    int len = i2d_PKCS12(p12, &der);
    PKCS12_free(p12);
    if (len <= 0) throw std::runtime_error("cannot encode the .p12");
    std::string bytes(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    auth::write_file(path, bytes, 0600);
    return password;
}

int cert_new(const Args& a, std::ostream& out, std::ostream& err) {
    if (!a.opts.count("out") || !a.positional.empty()) {
        err << "usage: graphbridge cert new --out DIR [--cn NAME] [--days N] [--bits 2048|3072|4096]\n";
        return 2;
    }
    fs::path dir = a.opts.at("out");
    std::string cn = a.opts.count("cn") ? a.opts.at("cn") : "graphbridge";
    int days = 730, bits = 2048;
    try {
        if (a.opts.count("days")) days = std::stoi(a.opts.at("days"));
        if (a.opts.count("bits")) bits = std::stoi(a.opts.at("bits"));
    } catch (...) {
        days = -1;
    }
    if (days < 1 || days > 3650 || (bits != 2048 && bits != 3072 && bits != 4096)) {
        err << "graphbridge cert new: --days must be 1-3650 and --bits 2048, 3072 or 4096\n";
        return 2;
    }
    if (cn.empty() || cn.size() > 64) {
        err << "graphbridge cert new: --cn must be 1-64 characters\n";
        return 2;
    }
    const char* names[] = {"graphbridge.pem", "graphbridge.key.pem", "graphbridge.cer", "graphbridge.crt.pem",
                           "graphbridge.p12", "graphbridge.p12.password"};
    for (const char* n : names) {
        if (fs::exists(dir / n)) {
            err << "graphbridge cert new: " << (dir / n).string()
                << " already exists; choose another --out directory (nothing was overwritten)\n";
            return 1;
        }
    }
    try {
        fs::create_directories(dir);
        auto key = auth::generate_rsa_key(bits);
        auto cert = auth::make_self_signed_cert(key.get(), cn, days);
        std::string key_pem = auth::private_key_to_pem(key.get()), cert_pem = auth::cert_to_pem(cert.get());
        auth::write_file(dir / "graphbridge.key.pem", key_pem, 0600);
        auth::write_file(dir / "graphbridge.crt.pem", cert_pem, 0644);
        auth::write_file(dir / "graphbridge.pem", key_pem + cert_pem, 0600);
        auth::write_file(dir / "graphbridge.cer", auth::cert_to_der(cert.get()), 0644);
        std::string pw = write_p12(dir / "graphbridge.p12", key.get(), cert.get(), "graphbridge");
        auth::write_file(dir / "graphbridge.p12.password", pw + "\n", 0600);
        std::fill(pw.begin(), pw.end(), '\0');

        out << fmt::format("Created an RSA {} key and a self-signed certificate CN={} in {}\n", bits, cn, dir.string());
        out << fmt::format("  valid {} to {}\n", utc_time(auth::cert_not_before(cert.get())),
                           utc_time(auth::cert_not_after(cert.get())));
        print_thumbprints(out, cert.get());
        out << "\nFiles:\n";
        out << "  graphbridge.cer            upload this under App registrations → Certificates & secrets\n";
        out << "  graphbridge.pem            key + certificate (0600): the keystore for graphbridge\n";
        out << "  graphbridge.p12            PKCS#12 (password in graphbridge.p12.password, 0600)\n";
        out << "  graphbridge.key.pem, graphbridge.crt.pem   the same key and certificate, separately\n";
        out << "\nConfig:\n  [app.NAME.certificate]\n  keystore = \"" << fs::absolute(dir / "graphbridge.pem").string()
            << "\"\n";
        return 0;
    } catch (const std::exception& e) {
        err << "graphbridge cert new: " << e.what() << "\n";
        return 1;
    }
}

int cert_show(const Args& a, std::ostream& out, std::ostream& err) {
    if (a.positional.size() != 1) {
        err << "usage: graphbridge cert show KEYSTORE [--alias A] [--password-env VAR | --password-file F] "
               "[--key-password-env VAR | --key-password-file F] [--cert-file F]\n";
        return 2;
    }
    auth::KeystoreRequest req;
    req.path = a.positional[0];
    if (a.opts.count("alias")) req.alias = a.opts.at("alias");
    if (a.opts.count("cert-file")) req.cert_path = a.opts.at("cert-file");
    try {
        auto secret = [&](const char* env_opt, const char* file_opt) -> std::optional<Secret> {
            if (a.opts.count(env_opt)) return load_secret({SecretSource::Kind::Env, a.opts.at(env_opt)});
            if (a.opts.count(file_opt)) return load_secret({SecretSource::Kind::File, a.opts.at(file_opt)});
            return std::nullopt;
        };
        req.password = secret("password-env", "password-file");
        req.key_password = secret("key-password-env", "key-password-file");
        auth::Credential c = auth::load_keystore(req);
        out << fmt::format("{} ({}), alias '{}'\n", req.path, auth::to_string(c.format), c.alias);
        out << fmt::format("  subject CN                 {}\n", auth::cert_common_name(c.cert.get()));
        out << fmt::format("  serial                     {}\n", auth::cert_serial_hex(c.cert.get()));
        std::int64_t left = (auth::cert_not_after(c.cert.get()) - std::time(nullptr)) / 86400;
        out << fmt::format("  valid                      {} to {} ({} days left)\n",
                           utc_time(auth::cert_not_before(c.cert.get())), utc_time(auth::cert_not_after(c.cert.get())), left);
        out << fmt::format("  key                        RSA {} bits\n", auth::key_bits(c.key.get()));
        print_thumbprints(out, c.cert.get());
        for (const auto& w : c.warnings) out << "  warning: " << w << "\n";
        return 0;
    } catch (const std::exception& e) {
        err << "graphbridge cert show: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace

int run_cert(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    if (args.empty() || (args[0] != "new" && args[0] != "show")) {
        err << "usage: graphbridge cert new --out DIR [--cn NAME] [--days N] | cert show KEYSTORE [--alias A]\n";
        return 2;
    }
    if (args[0] == "new") {
        Args a = parse(args, 1, {"out", "cn", "days", "bits"});
        if (!a.error.empty()) {
            err << "graphbridge cert new: " << a.error << "\n";
            return 2;
        }
        return cert_new(a, out, err);
    }
    Args a = parse(args, 1, {"alias", "password-env", "password-file", "key-password-env", "key-password-file",
                             "cert-file"});
    if (!a.error.empty()) {
        err << "graphbridge cert show: " << a.error << "\n";
        return 2;
    }
    return cert_show(a, out, err);
}

}  // namespace gb::cli
