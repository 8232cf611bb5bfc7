// RSA key and X.509 certificate helpers on OpenSSL 3 EVP/X509 APIs (see pki.h).
//
// Hostile input: PEM/DER passed to the loaders; they parse with OpenSSL and return nullptr on failure.
#include "auth/pki.h"

#include "auth/crypto.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace gb::auth {
namespace {

struct BioDeleter {
    void operator()(BIO* b) const noexcept { BIO_free(b); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;

struct PKeyCtxDeleter {
    void operator()(EVP_PKEY_CTX* c) const noexcept { EVP_PKEY_CTX_free(c); }
};
struct BnDeleter {
    void operator()(BIGNUM* b) const noexcept { BN_free(b); }
};
struct ExtDeleter {
    void operator()(X509_EXTENSION* e) const noexcept { X509_EXTENSION_free(e); }
};
struct GeneralNamesDeleter {
    void operator()(GENERAL_NAMES* g) const noexcept { GENERAL_NAMES_free(g); }
};

// The OpenSSL error queue's last reason, for exception text (never contains key material).
[[noreturn]] void fail(std::string_view what) {
    unsigned long code = ERR_get_error();
    std::string msg(what);
    if (code != 0) {
        char buf[256];
        ERR_error_string_n(code, buf, sizeof buf);
        msg += ": ";
        msg += buf;
    }
    ERR_clear_error();
    throw PkiError(msg);
}

Bio mem_bio() {
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio) fail("BIO_new");
    return bio;
}

Bio read_bio(std::string_view data) {
    if (data.size() > static_cast<std::size_t>(INT_MAX)) return nullptr;
    return Bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string bio_contents(BIO* bio) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || data == nullptr) return {};
    return std::string(data, static_cast<std::size_t>(len));
}

std::int64_t asn1_time_to_unix(const ASN1_TIME* t) {
    struct tm tm {};
    if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    return static_cast<std::int64_t>(timegm(&tm));
}

void add_extension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
    std::unique_ptr<X509_EXTENSION, ExtDeleter> ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str()));
    if (!ext) fail("X509V3_EXT_conf_nid");
    if (X509_add_ext(cert, ext.get(), -1) != 1) fail("X509_add_ext");
}

void set_name(X509_NAME* name, std::string_view cn) {
    std::string value(cn.empty() ? std::string_view("graphbridge") : cn);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0) != 1)
        fail("X509_NAME_add_entry_by_txt");
}

}  // namespace

// --- keys -------------------------------------------------------------------------------------------

PKey generate_rsa_key(int bits) {
    if (bits < 1024 || bits > 16384) throw PkiError("generate_rsa_key: unsupported key size");
    std::unique_ptr<EVP_PKEY_CTX, PKeyCtxDeleter> ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
    if (!ctx) fail("EVP_PKEY_CTX_new_from_name(RSA)");
    if (EVP_PKEY_keygen_init(ctx.get()) != 1) fail("EVP_PKEY_keygen_init");
    if (EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), bits) != 1) fail("EVP_PKEY_CTX_set_rsa_keygen_bits");
    EVP_PKEY* raw = nullptr;
    if (EVP_PKEY_generate(ctx.get(), &raw) != 1) fail("EVP_PKEY_generate");
    return PKey(raw);
}

std::string private_key_to_pem(const EVP_PKEY* key) {
    Bio bio = mem_bio();
    if (PEM_write_bio_PKCS8PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        fail("PEM_write_bio_PKCS8PrivateKey");
    return bio_contents(bio.get());
}

std::string public_key_to_pem(const EVP_PKEY* key) {
    Bio bio = mem_bio();
    if (PEM_write_bio_PUBKEY(bio.get(), key) != 1) fail("PEM_write_bio_PUBKEY");
    return bio_contents(bio.get());
}

std::string public_key_to_der(const EVP_PKEY* key) {
    unsigned char* out = nullptr;
    int len = i2d_PUBKEY(key, &out);
    if (len <= 0) fail("i2d_PUBKEY");
    std::string der(reinterpret_cast<char*>(out), static_cast<std::size_t>(len));
    OPENSSL_free(out);
    return der;
}

PKey private_key_from_pem(std::string_view pem) {
    Bio bio = read_bio(pem);
    if (!bio) return nullptr;
    // An empty passphrase callback: encrypted keys are refused instead of prompting on the terminal.
    auto no_pass = [](char*, int, int, void*) -> int { return 0; };
    PKey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_pass, nullptr));
    ERR_clear_error();
    return key;
}

PKey public_key_from_pem(std::string_view pem) {
    Bio bio = read_bio(pem);
    if (!bio) return nullptr;
    PKey key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    ERR_clear_error();
    return key;
}

int key_bits(const EVP_PKEY* key) {
    return key ? EVP_PKEY_get_bits(key) : 0;
}

bool is_rsa_key(const EVP_PKEY* key) {
    return key && EVP_PKEY_is_a(key, "RSA");
}

// --- certificates -----------------------------------------------------------------------------------

Cert issue_certificate(const CertSpec& spec, EVP_PKEY* subject_key, const X509* issuer_cert,
                       EVP_PKEY* issuer_key) {
    if (subject_key == nullptr || issuer_key == nullptr) throw PkiError("issue_certificate: missing key");
    Cert cert(X509_new());
    if (!cert) fail("X509_new");
    if (X509_set_version(cert.get(), X509_VERSION_3) != 1) fail("X509_set_version");

    // 128-bit random positive serial.
    std::string serial = random_bytes(16);
    serial[0] = static_cast<char>(serial[0] & 0x7F);
    if (serial[0] == 0) serial[0] = 0x01;
    std::unique_ptr<BIGNUM, BnDeleter> bn(BN_bin2bn(reinterpret_cast<const unsigned char*>(serial.data()),
                                                    static_cast<int>(serial.size()), nullptr));
    if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()))) fail("serial number");

    std::int64_t not_before =
        spec.not_before != 0 ? spec.not_before : static_cast<std::int64_t>(std::time(nullptr)) - 300;
    std::int64_t not_after = not_before + static_cast<std::int64_t>(spec.days) * 86400;
    if (!ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(not_before)) ||
        !ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(not_after)))
        fail("ASN1_TIME_set");

    set_name(X509_get_subject_name(cert.get()), spec.common_name);
    const X509* issuer = issuer_cert != nullptr ? issuer_cert : cert.get();
    if (X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer)) != 1) fail("X509_set_issuer_name");
    if (X509_set_pubkey(cert.get(), subject_key) != 1) fail("X509_set_pubkey");

    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, const_cast<X509*>(issuer), cert.get(), nullptr, nullptr, 0);
    if (spec.is_ca) {
        add_extension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE");
        add_extension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
    } else {
        add_extension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
        add_extension(
            cert.get(), &ctx, NID_key_usage,
            spec.server_auth ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature");
    }
    if (spec.server_auth) add_extension(cert.get(), &ctx, NID_ext_key_usage, "serverAuth");
    add_extension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
    if (issuer_cert != nullptr) add_extension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");

    std::string san;
    for (const auto& dns : spec.dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + dns;
    for (const auto& ip : spec.ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
    if (!san.empty()) add_extension(cert.get(), &ctx, NID_subject_alt_name, san);

    if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) fail("X509_sign");
    return cert;
}

Cert make_self_signed_cert(EVP_PKEY* key, std::string_view common_name, int days) {
    CertSpec spec;
    spec.common_name = std::string(common_name);
    spec.days = days;
    return issue_certificate(spec, key, nullptr, key);
}

Cert make_ca_cert(EVP_PKEY* key, std::string_view common_name, int days) {
    CertSpec spec;
    spec.common_name = std::string(common_name);
    spec.days = days;
    spec.is_ca = true;
    return issue_certificate(spec, key, nullptr, key);
}

Cert make_server_cert(EVP_PKEY* key, std::string_view common_name, int days, const X509* ca_cert,
                      EVP_PKEY* ca_key, std::vector<std::string> dns_names,
                      std::vector<std::string> ip_addresses) {
    if (ca_cert == nullptr) throw PkiError("make_server_cert: missing CA certificate");
    CertSpec spec;
    spec.common_name = std::string(common_name);
    spec.days = days;
    spec.server_auth = true;
    spec.dns_names = std::move(dns_names);
    spec.ip_addresses = std::move(ip_addresses);
    return issue_certificate(spec, key, ca_cert, ca_key);
}

std::string cert_to_pem(const X509* cert) {
    Bio bio = mem_bio();
    if (PEM_write_bio_X509(bio.get(), cert) != 1) fail("PEM_write_bio_X509");
    return bio_contents(bio.get());
}

std::string cert_to_der(const X509* cert) {
    unsigned char* out = nullptr;
    int len = i2d_X509(cert, &out);
    if (len <= 0) fail("i2d_X509");
    std::string der(reinterpret_cast<char*>(out), static_cast<std::size_t>(len));
    OPENSSL_free(out);
    return der;
}

Cert cert_from_pem(std::string_view pem) {
    Bio bio = read_bio(pem);
    if (!bio) return nullptr;
    Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    ERR_clear_error();
    return cert;
}

Cert cert_from_der(std::string_view der) {
    if (der.empty() || der.size() > static_cast<std::size_t>(LONG_MAX)) return nullptr;
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    const unsigned char* start = p;
    Cert cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    ERR_clear_error();
    if (!cert || static_cast<std::size_t>(p - start) != der.size()) return nullptr;
    return cert;
}

Cert cert_from_pem_or_der(std::string_view data) {
    if (data.find("-----BEGIN") != std::string_view::npos) return cert_from_pem(data);
    return cert_from_der(data);
}

std::vector<Cert> certs_from_pem(std::string_view pem) {
    std::vector<Cert> out;
    Bio bio = read_bio(pem);
    if (!bio) return out;
    while (X509* raw = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(raw);
    ERR_clear_error();
    return out;
}

std::string cert_sha1_thumbprint(const X509* cert) {
    return sha1(cert_to_der(cert));
}
std::string cert_sha256_thumbprint(const X509* cert) {
    return sha256(cert_to_der(cert));
}
std::int64_t cert_not_before(const X509* cert) {
    return asn1_time_to_unix(X509_get0_notBefore(cert));
}
std::int64_t cert_not_after(const X509* cert) {
    return asn1_time_to_unix(X509_get0_notAfter(cert));
}

std::string cert_common_name(const X509* cert) {
    const X509_NAME* name = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx < 0) return {};
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    if (data == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                       static_cast<std::size_t>(ASN1_STRING_length(data)));
}

std::vector<std::string> cert_subject_alt_names(const X509* cert) {
    std::vector<std::string> out;
    std::unique_ptr<GENERAL_NAMES, GeneralNamesDeleter> names(
        static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
        if (gn->type == GEN_DNS) {
            const ASN1_IA5STRING* s = gn->d.dNSName;
            out.push_back("DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                               static_cast<std::size_t>(ASN1_STRING_length(s))));
        } else if (gn->type == GEN_IPADD) {
            const ASN1_OCTET_STRING* s = gn->d.iPAddress;
            char buf[INET6_ADDRSTRLEN] = {};
            int len = ASN1_STRING_length(s);
            int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
            if (family != 0 && inet_ntop(family, ASN1_STRING_get0_data(s), buf, sizeof buf) != nullptr)
                out.push_back(std::string("IP:") + buf);
        }
    }
    return out;
}

std::string cert_serial_hex(const X509* cert) {
    std::unique_ptr<BIGNUM, BnDeleter> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
    if (!bn) return {};
    char* hex = BN_bn2hex(bn.get());
    if (hex == nullptr) return {};
    std::string out(hex);
    OPENSSL_free(hex);
    return out;
}

PKey cert_public_key(const X509* cert) {
    EVP_PKEY* key = X509_get0_pubkey(cert);
    if (key == nullptr || EVP_PKEY_up_ref(key) != 1) {
        ERR_clear_error();
        return nullptr;
    }
    return PKey(key);
}

bool key_matches_cert(const EVP_PKEY* private_key, const X509* cert) {
    if (private_key == nullptr || cert == nullptr) return false;
    bool ok = X509_check_private_key(cert, private_key) == 1;
    ERR_clear_error();
    return ok;
}

bool cert_is_ca(const X509* cert) {
    // X509_check_ca only caches extension data; the certificate itself is not changed.
    return X509_check_ca(const_cast<X509*>(cert)) >= 1;
}

bool cert_signed_by(const X509* cert, const X509* issuer) {
    EVP_PKEY* key = X509_get0_pubkey(issuer);
    if (key == nullptr) return false;
    bool ok = X509_verify(const_cast<X509*>(cert), key) == 1;
    ERR_clear_error();
    return ok;
}

// --- files ------------------------------------------------------------------------------------------

void write_file(const std::filesystem::path& path, std::string_view content, unsigned mode) {
    std::filesystem::path tmp = path;
    tmp += ".tmp" + hex_lower(random_bytes(4));
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, static_cast<mode_t>(mode));
    if (fd < 0) throw PkiError("cannot create " + tmp.string() + ": " + std::strerror(errno));
    // The umask may have narrowed the mode; for keys that only helps, for certs set it explicitly.
    (void)::fchmod(fd, static_cast<mode_t>(mode));
    std::size_t done = 0;
    while (done < content.size()) {
        ssize_t n = ::write(fd, content.data() + done, content.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw PkiError("cannot write " + tmp.string() + ": " + std::strerror(err));
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(tmp.c_str());
        throw PkiError("cannot write " + tmp.string());
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        throw PkiError("cannot rename to " + path.string() + ": " + std::strerror(err));
    }
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw PkiError("cannot read " + path.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_private_key_pem(const std::filesystem::path& path, const EVP_PKEY* key) {
    std::string pem = private_key_to_pem(key);
    write_file(path, pem, 0600);
    OPENSSL_cleanse(pem.data(), pem.size());
}

void write_cert_pem(const std::filesystem::path& path, const X509* cert) {
    write_file(path, cert_to_pem(cert), 0644);
}

PKey load_private_key_pem(const std::filesystem::path& path) {
    std::string pem = read_file(path);
    PKey key = private_key_from_pem(pem);
    OPENSSL_cleanse(pem.data(), pem.size());
    return key;
}

Cert load_cert(const std::filesystem::path& path) {
    return cert_from_pem_or_der(read_file(path));
}

}  // namespace gb::auth
