// Keystore loading for the app certificate credential: Java KeyStore (JKS, parsed natively), PKCS#12
// (.p12/.pfx, modern PBES2/AES and legacy RC2-40/3DES through OpenSSL 3's legacy provider) and PEM
// (PKCS#1 or PKCS#8 key, encrypted or not, certificate in the same or a separate file). The format is
// chosen by content, never by file name. After loading, the credential is checked the way Entra ID will
// judge it: RSA, 2048+ bits, key matching the certificate, certificate valid now (a warning when it
// expires within 30 days).
//
// Hostile input: the keystore file, the separate certificate file and the passwords. Every length in
// the file is bounds-checked; JKS integrity is verified before any entry is decoded. Error messages are
// one line, name the file and alias and the fix, and never contain a password or key material.
#pragma once

#include "auth/pki.h"
#include "common/secret.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace gb::auth {

enum class KeystoreFormat { Jks, Pkcs12, Pem };
std::string_view to_string(KeystoreFormat format);  // "JKS", "PKCS#12", "PEM"

inline constexpr int kKeystoreExpiryWarningDays = 30;
inline constexpr int kKeystoreMinRsaBits = 2048;

struct KeystoreRequest {
    std::string path;
    std::optional<gb::Secret> password;      // store password (PEM: the key's password)
    std::optional<gb::Secret> key_password;  // JKS: the key entry's password; defaults to password
    std::string alias;                       // empty: the keystore must hold exactly one key entry
    std::string cert_path;                   // PEM: separate certificate file (PEM or DER), optional
    std::int64_t now = 0;                    // unix seconds for the validity check; 0 = time(nullptr)
};

struct Credential {
    KeystoreFormat format = KeystoreFormat::Pem;
    std::string alias;                  // the entry's alias / friendlyName ("" for PEM)
    PKey key;                           // RSA private key
    Cert cert;                          // the leaf certificate matching key
    std::vector<Cert> chain;            // issuers after the leaf, leaf's issuer first when known
    std::vector<std::string> warnings;  // e.g. "certificate 'CN=x' expires in 12 days ..."

    std::string sha1_hex() const;  // 40 upper-case hex digits, as the Azure portal shows the thumbprint
    std::string x5t() const;       // base64url(SHA-1(DER)), no padding
    std::string x5t_s256() const;  // base64url(SHA-256(DER)), no padding
};

class KeystoreError : public std::runtime_error {
  public:
    enum class Kind {
        Unreadable,      // the file cannot be read
        UnknownFormat,   // not JKS, PKCS#12 or PEM
        WrongPassword,   // store or key password wrong (or, for JKS, the file was modified)
        NeedPassword,    // encrypted, and no password was given
        NoSuchAlias,     // the requested alias is not in the keystore
        AmbiguousAlias,  // several key entries and no alias given
        NoPrivateKey,    // no private key (entry), e.g. a truststore or a bare certificate
        NoCertificate,   // a private key without any certificate (PEM without cert_path)
        NotRsa,          // EC/EdDSA/DSA key: Entra ID app certificates must be RSA
        KeyTooSmall,     // RSA below 2048 bits
        Expired,         // certificate notAfter is in the past
        NotYetValid,     // certificate notBefore is in the future
        KeyMismatch,     // the private key does not belong to the certificate
        Corrupt,         // truncated or malformed file
        Unsupported,     // JCEKS, unknown key protector, algorithm OpenSSL cannot do here
    };
    KeystoreError(Kind kind, const std::string& message);
    Kind kind() const noexcept { return kind_; }

  private:
    Kind kind_;
};
std::string_view to_string(KeystoreError::Kind kind);

// Loads and checks the credential; throws KeystoreError.
Credential load_keystore(const KeystoreRequest& request);

// The format by content: JKS magic FEEDFEED; a DER structure OpenSSL parses as PKCS#12; "-----BEGIN"
// text. Throws KeystoreError: Unsupported for JCEKS (magic CECECECE, with the conversion command),
// UnknownFormat otherwise.
KeystoreFormat detect_format(std::string_view bytes);

// The aliases of the key entries (JKS: lower-case as keytool stores them; PKCS#12: friendlyNames, ""
// for an unnamed key). PEM: one "" entry per private key. Needs the store password for JKS/PKCS#12
// (integrity is verified first); throws KeystoreError.
std::vector<std::string> list_aliases(const KeystoreRequest& request);

}  // namespace gb::auth
