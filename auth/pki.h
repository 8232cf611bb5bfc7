// RSA keys and X.509 certificates on OpenSSL 3 (EVP only): generation (self-signed, CA, CA-signed server
// certificate), PEM/DER encoding, thumbprints, validity and key/certificate matching.
//
// Hostile input: PEM/DER text handed to the load functions (uploaded certificates, configured key files).
// Loaders return nullptr on anything they cannot parse; they never throw on bad input. Errors never
// carry key material.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace gb::auth {

struct PKeyDeleter {
    void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
struct X509Deleter {
    void operator()(X509* cert) const noexcept { X509_free(cert); }
};
using PKey = std::unique_ptr<EVP_PKEY, PKeyDeleter>;
using Cert = std::unique_ptr<X509, X509Deleter>;

// Thrown when OpenSSL fails at something that should not fail (key generation, signing a certificate,
// writing a file). The message names the operation and the OpenSSL reason, never key material.
class PkiError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// --- keys -------------------------------------------------------------------------------------------
PKey generate_rsa_key(int bits = 2048);
std::string private_key_to_pem(const EVP_PKEY* key);  // PKCS#8 "BEGIN PRIVATE KEY", unencrypted
std::string public_key_to_pem(const EVP_PKEY* key);   // SubjectPublicKeyInfo "BEGIN PUBLIC KEY"
std::string public_key_to_der(const EVP_PKEY* key);   // SubjectPublicKeyInfo DER
PKey private_key_from_pem(std::string_view pem);      // PKCS#8 or traditional RSA PEM; nullptr if invalid
PKey public_key_from_pem(std::string_view pem);       // "BEGIN PUBLIC KEY"; nullptr if invalid
int key_bits(const EVP_PKEY* key);
bool is_rsa_key(const EVP_PKEY* key);

// --- certificates -----------------------------------------------------------------------------------
struct CertSpec {
    std::string common_name;
    std::int64_t not_before = 0;         // unix seconds; 0 = now minus 5 minutes (tolerates small clock skew)
    int days = 365;                      // validity counted from not_before
    bool is_ca = false;                  // basicConstraints CA:TRUE + keyCertSign/cRLSign
    bool server_auth = false;            // extendedKeyUsage serverAuth + digitalSignature/keyEncipherment
    std::vector<std::string> dns_names;  // subjectAltName DNS entries
    std::vector<std::string> ip_addresses;  // subjectAltName IP entries ("127.0.0.1", "::1")
};

// Issue a certificate for subject_key. issuer_cert == nullptr means self-signed (issuer_key must then be
// subject_key). Serial: 128 random bits. Signature: sha256WithRSAEncryption.
Cert issue_certificate(const CertSpec& spec, EVP_PKEY* subject_key, const X509* issuer_cert,
                       EVP_PKEY* issuer_key);

// Convenience wrappers.
Cert make_self_signed_cert(EVP_PKEY* key, std::string_view common_name, int days = 365);
Cert make_ca_cert(EVP_PKEY* key, std::string_view common_name, int days = 3650);
// A TLS server certificate signed by the CA, SANs DNS:localhost, IP:127.0.0.1, IP:::1 by default.
Cert make_server_cert(EVP_PKEY* key, std::string_view common_name, int days, const X509* ca_cert,
                      EVP_PKEY* ca_key, std::vector<std::string> dns_names = {"localhost"},
                      std::vector<std::string> ip_addresses = {"127.0.0.1", "::1"});

std::string cert_to_pem(const X509* cert);
std::string cert_to_der(const X509* cert);
Cert cert_from_pem(std::string_view pem);  // first certificate in the text; nullptr if invalid
Cert cert_from_der(std::string_view der);  // nullptr if invalid or trailing garbage
Cert cert_from_pem_or_der(std::string_view data);
std::vector<Cert> certs_from_pem(std::string_view pem);  // all certificates (a chain file)

std::string cert_sha1_thumbprint(const X509* cert);    // raw 20 bytes of SHA-1(DER)
std::string cert_sha256_thumbprint(const X509* cert);  // raw 32 bytes of SHA-256(DER)
std::int64_t cert_not_before(const X509* cert);        // unix seconds
std::int64_t cert_not_after(const X509* cert);
std::string cert_common_name(const X509* cert);                     // subject CN, empty if none
std::vector<std::string> cert_subject_alt_names(const X509* cert);  // "DNS:localhost", "IP:::1", ...
std::string cert_serial_hex(const X509* cert);
PKey cert_public_key(const X509* cert);  // a new reference to the certificate's key
bool key_matches_cert(const EVP_PKEY* private_key, const X509* cert);
bool cert_is_ca(const X509* cert);
bool cert_signed_by(const X509* cert, const X509* issuer);  // signature check only (no chain/time policy)

// --- files ------------------------------------------------------------------------------------------
// Write atomically (temp file + rename) with the given mode; PkiError on failure.
void write_file(const std::filesystem::path& path, std::string_view content, unsigned mode = 0644);
std::string read_file(const std::filesystem::path& path);                            // PkiError if unreadable
void write_private_key_pem(const std::filesystem::path& path, const EVP_PKEY* key);  // PKCS#8, mode 0600
void write_cert_pem(const std::filesystem::path& path, const X509* cert);            // mode 0644
PKey load_private_key_pem(
    const std::filesystem::path& path);             // nullptr if unparsable, PkiError if unreadable
Cert load_cert(const std::filesystem::path& path);  // PEM or DER

}  // namespace gb::auth
