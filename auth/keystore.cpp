// Keystore loading (see keystore.h): a native JKS reader (sun.security.provider.JavaKeyStore layout and
// the Sun KeyProtector), PKCS#12 through OpenSSL (legacy provider for RC2-40/3DES files) and PEM.
//
// Hostile input: the keystore file, the separate certificate file and the passwords. The JKS reader
// bounds-checks every length against the bytes left and locates the trailer before anything is decoded;
// entries are decoded only after the keyed SHA-1 integrity check passed. Buffers derived from passwords
// or holding decrypted key bytes are wiped with OPENSSL_cleanse. Messages never carry secrets.
#include "auth/keystore.h"

#include "auth/crypto.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <cstdlib>
#include <mutex>

namespace gb::auth {

KeystoreError::KeystoreError(Kind kind, const std::string& message)
    : std::runtime_error(message), kind_(kind) {}

std::string_view to_string(KeystoreFormat format) {
    switch (format) {
        case KeystoreFormat::Jks:
            return "JKS";
        case KeystoreFormat::Pkcs12:
            return "PKCS#12";
        case KeystoreFormat::Pem:
            return "PEM";
    }
    return "?";
}

std::string_view to_string(KeystoreError::Kind kind) {
    using K = KeystoreError::Kind;
    switch (kind) {
        case K::Unreadable:
            return "unreadable";
        case K::UnknownFormat:
            return "unknown format";
        case K::WrongPassword:
            return "wrong password";
        case K::NeedPassword:
            return "password needed";
        case K::NoSuchAlias:
            return "no such alias";
        case K::AmbiguousAlias:
            return "alias needed";
        case K::NoPrivateKey:
            return "no private key";
        case K::NoCertificate:
            return "no certificate";
        case K::NotRsa:
            return "not RSA";
        case K::KeyTooSmall:
            return "key too small";
        case K::Expired:
            return "expired";
        case K::NotYetValid:
            return "not yet valid";
        case K::KeyMismatch:
            return "key mismatch";
        case K::Corrupt:
            return "corrupt";
        case K::Unsupported:
            return "unsupported";
    }
    return "?";
}

std::string Credential::sha1_hex() const {
    return cert ? hex_upper(cert_sha1_thumbprint(cert.get())) : "";
}
std::string Credential::x5t() const {
    return cert ? base64url_encode(cert_sha1_thumbprint(cert.get())) : "";
}
std::string Credential::x5t_s256() const {
    return cert ? base64url_encode(cert_sha256_thumbprint(cert.get())) : "";
}

namespace {

using Kind = KeystoreError::Kind;

constexpr std::size_t kMaxFileSize = 16u << 20;
constexpr std::size_t kMaxJksEntries = 100000;
constexpr std::size_t kMaxChainLength = 64;
constexpr int kMaxSafeNesting = 4;
constexpr std::string_view kJksWhitener = "Mighty Aphrodite";
constexpr std::string_view kJksKeyProtectorOid = "1.3.6.1.4.1.42.2.17.1.1";
constexpr std::string_view kJceksKeyProtectorOid = "1.3.6.1.4.1.42.2.19.1";
constexpr std::string_view kPasswordFix = "check password_env/password_file";
constexpr std::string_view kNewCertFix =
    "make a new one with `graphbridge cert new` and upload its .cer to the app registration";

// --- small RAII types ---------------------------------------------------------------------------------
struct BioDeleter {
    void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct SigDeleter {
    void operator()(X509_SIG* s) const noexcept { X509_SIG_free(s); }
};
struct P8Deleter {
    void operator()(PKCS8_PRIV_KEY_INFO* p) const noexcept { PKCS8_PRIV_KEY_INFO_free(p); }
};
struct P12Deleter {
    void operator()(PKCS12* p) const noexcept { PKCS12_free(p); }
};
struct P7StackDeleter {
    void operator()(STACK_OF(PKCS7) * s) const noexcept { sk_PKCS7_pop_free(s, PKCS7_free); }
};
struct BagStackDeleter {
    void operator()(STACK_OF(PKCS12_SAFEBAG) * s) const noexcept {
        sk_PKCS12_SAFEBAG_pop_free(s, PKCS12_SAFEBAG_free);
    }
};
struct OsslFree {
    void operator()(char* p) const noexcept { OPENSSL_free(p); }
};
struct MdCtxDeleter {
    void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;

// Bytes derived from a password or holding decrypted key material: wiped on destruction.
class Wiped {
  public:
    Wiped() = default;
    explicit Wiped(std::size_t n) : bytes_(n) {}
    Wiped(const Wiped&) = delete;
    Wiped& operator=(const Wiped&) = delete;
    Wiped(Wiped&&) noexcept = default;
    ~Wiped() {
        if (!bytes_.empty()) OPENSSL_cleanse(bytes_.data(), bytes_.size());
    }
    void push(unsigned char c) { bytes_.push_back(c); }
    unsigned char* data() { return bytes_.data(); }
    const unsigned char* data() const { return bytes_.data(); }
    std::size_t size() const { return bytes_.size(); }
    std::string_view view() const { return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()}; }

  private:
    std::vector<unsigned char> bytes_;
};

std::string_view as_view(const unsigned char* p, std::size_t n) {
    return {reinterpret_cast<const char*>(p), n};
}

// --- messages -------------------------------------------------------------------------------------------
// File names, aliases and subjects come from the user or the hostile file: keep messages on one line.
std::string clean(std::string_view text, std::size_t max = 200) {
    std::string out;
    for (char c : text.substr(0, max)) {
        auto u = static_cast<unsigned char>(c);
        out += (u < 0x20 || u == 0x7f) ? '?' : c;
    }
    if (text.size() > max) out += "...";
    return out;
}

std::string in_quotes(std::string_view text) {
    return "'" + clean(text, 80) + "'";
}

[[noreturn]] void raise(Kind kind, const std::string& message) {
    ERR_clear_error();
    throw KeystoreError(kind, clean(message, 1000));
}

std::string ymd(std::int64_t t) {
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    if (gmtime_r(&tt, &tm) == nullptr) return "?";
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
    return buf;
}

std::string subject_of(const X509* cert) {
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio) return "?";
    if (X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) return "?";
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    if (len <= 0 || data == nullptr) return "";
    return clean(std::string_view(data, static_cast<std::size_t>(len)), 120);
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
        if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x + 32);
        if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y + 32);
        if (x != y) return false;
    }
    return true;
}

std::string join_aliases(const std::vector<std::string>& aliases) {
    std::string out;
    for (std::size_t i = 0; i < aliases.size() && i < 10; ++i) {
        if (!out.empty()) out += ", ";
        out += aliases[i].empty() ? std::string("(unnamed)") : in_quotes(aliases[i]);
    }
    if (aliases.size() > 10) out += ", ...";
    return out.empty() ? "none" : out;
}

std::string for_alias(std::string_view alias) {
    return alias.empty() ? "" : " for alias " + in_quotes(alias);
}

// --- files ------------------------------------------------------------------------------------------------
std::string read_whole(const std::string& path, std::string_view what) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) {
        int err = errno;
        raise(Kind::Unreadable, clean(path) + ": cannot read " + std::string(what) + " (" +
                                    std::strerror(err) + "): check the path and the file's permissions");
    }
    std::string out;
    char buf[65536];
    for (;;) {
        std::size_t n = std::fread(buf, 1, sizeof buf, f.get());
        out.append(buf, n);
        if (out.size() > kMaxFileSize)
            raise(Kind::Corrupt, clean(path) + ": " + std::string(what) +
                                     " is larger than 16 MiB: point to the " + "keystore file itself");
        if (n < sizeof buf) break;
    }
    if (std::ferror(f.get())) {
        int err = errno;
        raise(Kind::Unreadable, clean(path) + ": cannot read " + std::string(what) + " (" +
                                    std::strerror(err) + "): check the path and the file's permissions");
    }
    return out;
}

// --- digests ----------------------------------------------------------------------------------------------
using Sha1 = std::array<unsigned char, 20>;

Sha1 sha1_parts(std::initializer_list<std::string_view> parts) {
    Sha1 out{};
    std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
    unsigned int len = 0;
    bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha1(), nullptr) == 1;
    for (auto p : parts) ok = ok && EVP_DigestUpdate(ctx.get(), p.data(), p.size()) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx.get(), out.data(), &len) == 1 && len == out.size();
    if (!ok) raise(Kind::Unsupported, "SHA-1 is unavailable in this OpenSSL build: the JKS format needs it");
    return out;
}

// Java's password chars as UTF-16BE (what JavaKeyStore and KeyProtector hash). The secret arrives as
// UTF-8; bytes that are not valid UTF-8 are taken as Latin-1, as a Java with an ISO-8859-1 default would.
Wiped utf16be_password(std::string_view utf8) {
    Wiped out;
    auto put = [&out](std::uint32_t unit) {
        out.push(static_cast<unsigned char>(unit >> 8));
        out.push(static_cast<unsigned char>(unit & 0xff));
    };
    auto put_cp = [&put](std::uint32_t cp) {
        if (cp >= 0x10000) {
            cp -= 0x10000;
            put(0xD800 + (cp >> 10));
            put(0xDC00 + (cp & 0x3ff));
        } else {
            put(cp);
        }
    };
    Wiped decoded;  // code points, 4 bytes each, only committed when the whole input is valid UTF-8
    bool valid = true;
    for (std::size_t i = 0; i < utf8.size() && valid;) {
        auto b0 = static_cast<unsigned char>(utf8[i]);
        std::size_t n = b0 < 0x80           ? 1
                        : (b0 >> 5) == 0x6  ? 2
                        : (b0 >> 4) == 0xe  ? 3
                        : (b0 >> 3) == 0x1e ? 4
                                            : 0;
        if (n == 0 || utf8.size() - i < n) {
            valid = false;
            break;
        }
        std::uint32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1fu) : n == 3 ? (b0 & 0x0fu) : (b0 & 0x07u);
        for (std::size_t k = 1; k < n; ++k) {
            auto b = static_cast<unsigned char>(utf8[i + k]);
            if ((b & 0xc0) != 0x80) valid = false;
            cp = (cp << 6) | (b & 0x3fu);
        }
        static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) valid = false;
        for (int s = 24; s >= 0; s -= 8) decoded.push(static_cast<unsigned char>(cp >> s));
        i += n;
    }
    if (valid) {
        for (std::size_t i = 0; i + 4 <= decoded.size(); i += 4) {
            const unsigned char* d = decoded.data() + i;
            put_cp((std::uint32_t{d[0]} << 24) | (std::uint32_t{d[1]} << 16) | (std::uint32_t{d[2]} << 8) |
                   d[3]);
        }
    } else {
        for (char c : utf8) put(static_cast<unsigned char>(c));
    }
    return out;
}

// --- certificates -----------------------------------------------------------------------------------------
Cert parse_der_cert(std::string_view der) {
    if (der.size() > static_cast<std::size_t>(LONG_MAX)) return nullptr;
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    Cert cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (cert && p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) return nullptr;
    return cert;
}

// Orders the issuers of leaf from pool (leaf's issuer first). With keep_rest, certificates that are not
// on the issuer path follow in their original order.
std::vector<Cert> order_chain(const X509* leaf, std::vector<Cert> pool, bool keep_rest) {
    std::vector<Cert> chain;
    const X509* current = leaf;
    while (current != nullptr &&
           X509_NAME_cmp(X509_get_subject_name(current), X509_get_issuer_name(current)) != 0) {
        const X509* next = nullptr;
        for (auto& c : pool) {
            if (c && X509_NAME_cmp(X509_get_subject_name(c.get()), X509_get_issuer_name(current)) == 0) {
                chain.push_back(std::move(c));
                next = chain.back().get();
                break;
            }
        }
        current = next;
        if (chain.size() > kMaxChainLength) break;
    }
    if (keep_rest)
        for (auto& c : pool)
            if (c) chain.push_back(std::move(c));
    return chain;
}

// --- format detection -------------------------------------------------------------------------------------
std::unique_ptr<PKCS12, P12Deleter> parse_pkcs12(std::string_view bytes) {
    if (bytes.size() > static_cast<std::size_t>(LONG_MAX)) return nullptr;
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::unique_ptr<PKCS12, P12Deleter> p12(d2i_PKCS12(nullptr, &p, static_cast<long>(bytes.size())));
    ERR_clear_error();
    return p12;
}

KeystoreFormat detect(std::string_view bytes, const std::string& label) {
    auto starts = [&bytes](std::string_view magic) { return bytes.substr(0, magic.size()) == magic; };
    if (starts("\xfe\xed\xfe\xed")) return KeystoreFormat::Jks;
    if (starts("\xce\xce\xce\xce"))
        raise(Kind::Unsupported,
              label + ": JCEKS keystores are not supported: convert it with `keytool -importkeystore " +
                  "-srckeystore " + label + " -srcstoretype JCEKS -destkeystore " +
                  std::filesystem::path(label).replace_extension(".p12").string() +
                  " -deststoretype PKCS12` and point keystore at the .p12");
    if (!bytes.empty() && bytes[0] == '\x30') {
        if (parse_pkcs12(bytes)) return KeystoreFormat::Pkcs12;
        if (parse_der_cert(bytes))
            raise(Kind::NoPrivateKey,
                  label + ": this is a DER certificate without its private key: point keystore " +
                      "at the .p12/.jks/.pem that holds the key (the certificate can go in cert_file)");
        raise(Kind::UnknownFormat, label +
                                       ": DER data that is not a PKCS#12 keystore: use a .p12/.pfx, a JKS " +
                                       "keystore or a PEM private key");
    }
    if (bytes.find("-----BEGIN ") != std::string_view::npos) return KeystoreFormat::Pem;
    raise(Kind::UnknownFormat, label + ": not a JKS, PKCS#12 or PEM keystore: point keystore at the .jks, " +
                                   ".p12/.pfx or .pem file that holds the private key");
}

// --- JKS --------------------------------------------------------------------------------------------------
struct JksEntry {
    std::uint32_t tag = 0;  // 1 private key, 2 trusted certificate
    std::string alias;
    std::string_view protected_key;                                    // tag 1: DER EncryptedPrivateKeyInfo
    std::vector<std::pair<std::string_view, std::string_view>> certs;  // (type, DER); type "" in version 1
};

class JksReader {
  public:
    JksReader(std::string_view data, const std::string& label) : data_(data), label_(label) {}

    std::uint32_t u16() { return static_cast<std::uint32_t>(be(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(be(4)); }
    std::uint64_t u64() { return be(8); }
    std::string_view bytes(std::size_t n) {
        need(n);
        auto out = data_.substr(pos_, n);
        pos_ += n;
        return out;
    }
    std::string_view utf() { return bytes(u16()); }
    std::size_t pos() const { return pos_; }
    std::size_t remaining() const { return data_.size() - pos_; }

    [[noreturn]] void corrupt(std::string_view why) const {
        raise(Kind::Corrupt, label_ + ": damaged JKS keystore (" + std::string(why) + " at byte " +
                                 std::to_string(pos_) +
                                 "): restore it from a backup or export it again with keytool");
    }

  private:
    void need(std::size_t n) const {
        if (remaining() < n) corrupt("truncated");
    }
    std::uint64_t be(std::size_t n) {
        need(n);
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(data_[pos_ + i]);
        pos_ += n;
        return v;
    }

    std::string_view data_;
    std::size_t pos_ = 0;
    const std::string& label_;
};

// Parses the structure (no decoding of any entry) and then verifies the keyed SHA-1 trailer.
std::vector<JksEntry> read_jks(std::string_view data, const std::string& label,
                               const std::optional<Secret>& password) {
    JksReader r(data, label);
    if (r.u32() != 0xFEEDFEEDu) r.corrupt("bad magic");
    std::uint32_t version = r.u32();
    if (version != 1 && version != 2) r.corrupt("unknown version " + std::to_string(version));
    std::uint32_t count = r.u32();
    if (count > kMaxJksEntries) r.corrupt("implausible entry count");
    std::vector<JksEntry> entries;
    for (std::uint32_t i = 0; i < count; ++i) {
        JksEntry e;
        e.tag = r.u32();
        if (e.tag != 1 && e.tag != 2) {
            if (e.tag == 3)
                raise(Kind::Unsupported,
                      label + ": the keystore holds a secret-key entry, which JKS cannot; it is " +
                          "probably JCEKS: convert it with `keytool -importkeystore` to PKCS12");
            r.corrupt("unknown entry tag");
        }
        e.alias = std::string(r.utf());
        (void)r.u64();  // creation date
        auto read_cert = [&r, version, &e] {
            std::string_view type = version == 2 ? r.utf() : std::string_view{};
            std::string_view der = r.bytes(r.u32());
            e.certs.emplace_back(type, der);
        };
        if (e.tag == 1) {
            e.protected_key = r.bytes(r.u32());
            std::uint32_t chain = r.u32();
            if (chain > kMaxChainLength) r.corrupt("implausible certificate chain length");
            for (std::uint32_t k = 0; k < chain; ++k) read_cert();
        } else {
            read_cert();
        }
        entries.push_back(std::move(e));
    }
    if (r.remaining() < 20) r.corrupt("truncated integrity trailer");
    if (r.remaining() > 20) r.corrupt("unexpected bytes after the entries");
    if (!password)
        raise(Kind::NeedPassword,
              label + ": a JKS keystore needs its store password (for the integrity check and " +
                  "the key): set password_env or password_file");
    std::size_t body = r.pos();
    Wiped pwd16 = utf16be_password(password->reveal());
    Sha1 mac = sha1_parts({pwd16.view(), kJksWhitener, data.substr(0, body)});
    bool ok = constant_time_equal(as_view(mac.data(), mac.size()), data.substr(body, 20));
    OPENSSL_cleanse(mac.data(), mac.size());
    if (!ok)
        raise(Kind::WrongPassword, label +
                                       ": wrong keystore password, or the file was modified (keyed SHA-1 " +
                                       "integrity check failed): " + std::string(kPasswordFix));
    return entries;
}

// Sun KeyProtector: salt(20) || E || check(20); keystream D1 = SHA1(pwd16||salt), Dn = SHA1(pwd16||Dn-1).
PKey recover_jks_key(std::string_view blob, const Secret& key_password, bool explicit_key_password,
                     const std::string& label, const std::string& alias) {
    auto corrupt = [&](std::string_view why) {
        raise(Kind::Corrupt, label + ": damaged JKS key entry" + for_alias(alias) + " (" + std::string(why) +
                                 "): restore the keystore from a backup or export it again with keytool");
    };
    if (blob.size() > static_cast<std::size_t>(LONG_MAX)) corrupt("too large");
    const auto* p = reinterpret_cast<const unsigned char*>(blob.data());
    std::unique_ptr<X509_SIG, SigDeleter> sig(d2i_X509_SIG(nullptr, &p, static_cast<long>(blob.size())));
    if (!sig) corrupt("EncryptedPrivateKeyInfo does not parse");
    const X509_ALGOR* alg = nullptr;
    const ASN1_OCTET_STRING* enc = nullptr;
    X509_SIG_get0(sig.get(), &alg, &enc);
    const ASN1_OBJECT* obj = nullptr;
    X509_ALGOR_get0(&obj, nullptr, nullptr, alg);
    char oid[128] = {};
    if (obj == nullptr || OBJ_obj2txt(oid, sizeof oid, obj, 1) <= 0) corrupt("no protection algorithm");
    if (std::string_view(oid) == kJceksKeyProtectorOid)
        raise(Kind::Unsupported,
              label + ": key" + for_alias(alias) + " is protected with the JCEKS algorithm: " +
                  "convert the keystore with `keytool -importkeystore -deststoretype PKCS12`");
    if (std::string_view(oid) != kJksKeyProtectorOid)
        raise(Kind::Unsupported, label + ": key" + for_alias(alias) + " uses protection algorithm " +
                                     clean(oid, 60) +
                                     ", not the JKS key protector: convert the keystore to PKCS12 with " +
                                     "`keytool -importkeystore -deststoretype PKCS12`");
    if (enc == nullptr || ASN1_STRING_length(enc) < 41) corrupt("protected key too short");
    const unsigned char* data = ASN1_STRING_get0_data(enc);
    auto len = static_cast<std::size_t>(ASN1_STRING_length(enc));
    std::string_view salt = as_view(data, 20);
    std::string_view check = as_view(data + len - 20, 20);
    std::size_t n = len - 40;

    Wiped pwd16 = utf16be_password(key_password.reveal());
    Wiped plain(n);
    Sha1 block = sha1_parts({pwd16.view(), salt});
    for (std::size_t i = 0, k = 0; i < n; ++i, ++k) {
        if (k == block.size()) {
            block = sha1_parts({pwd16.view(), as_view(block.data(), block.size())});
            k = 0;
        }
        plain.data()[i] = static_cast<unsigned char>(data[20 + i] ^ block[k]);
    }
    Sha1 digest = sha1_parts({pwd16.view(), plain.view()});
    bool ok = constant_time_equal(as_view(digest.data(), digest.size()), check);
    OPENSSL_cleanse(block.data(), block.size());
    OPENSSL_cleanse(digest.data(), digest.size());
    if (!ok) {
        if (explicit_key_password)
            raise(Kind::WrongPassword,
                  label + ": wrong key password" + for_alias(alias) +
                      " (the store password was right): check key_password_env/key_password_file");
        raise(Kind::WrongPassword, label + ": wrong key password" + for_alias(alias) +
                                       " (it differs from the store password): set key_password_env or " +
                                       "key_password_file to the key's password");
    }
    const unsigned char* q = plain.data();
    std::unique_ptr<PKCS8_PRIV_KEY_INFO, P8Deleter> p8(
        d2i_PKCS8_PRIV_KEY_INFO(nullptr, &q, static_cast<long>(n)));
    if (!p8) corrupt("decrypted key is not PKCS#8");
    PKey key(EVP_PKCS82PKEY(p8.get()));
    if (!key)
        raise(Kind::Unsupported, label + ": key" + for_alias(alias) + " has a type OpenSSL cannot read: " +
                                     "make an RSA 2048+ key (keytool -keyalg RSA -keysize 2048)");
    return key;
}

Cert decode_jks_cert(const std::pair<std::string_view, std::string_view>& c, const std::string& label,
                     const std::string& alias) {
    if (!c.first.empty() && c.first != "X.509")
        raise(Kind::Unsupported, label + ": entry" + for_alias(alias) + " holds a " + in_quotes(c.first) +
                                     " certificate: only X.509 certificates are supported");
    Cert cert = parse_der_cert(c.second);
    if (!cert)
        raise(Kind::Corrupt, label + ": certificate" + for_alias(alias) +
                                 " does not parse: restore the keystore " +
                                 "from a backup or export it again with keytool");
    return cert;
}

Credential load_jks(std::string_view data, const KeystoreRequest& req, const std::string& label) {
    std::vector<JksEntry> entries = read_jks(data, label, req.password);
    std::vector<std::string> key_aliases;
    for (const auto& e : entries)
        if (e.tag == 1) key_aliases.push_back(e.alias);

    const JksEntry* chosen = nullptr;
    if (!req.alias.empty()) {
        for (const auto& e : entries)
            if (iequals(e.alias, req.alias)) chosen = &e;
        if (chosen == nullptr)
            raise(Kind::NoSuchAlias, label + ": no entry with alias " + in_quotes(req.alias) +
                                         " (key entries: " + join_aliases(key_aliases) + "): fix alias");
        if (chosen->tag != 1)
            raise(Kind::NoPrivateKey,
                  label + ": alias " + in_quotes(req.alias) + " is a trusted certificate, not a " +
                      "private key entry (key entries: " + join_aliases(key_aliases) + "): fix alias");
    } else {
        if (key_aliases.empty())
            raise(Kind::NoPrivateKey, label + ": the keystore has no private key entry (only trusted " +
                                          "certificates): point keystore at the file with the app's key");
        if (key_aliases.size() > 1)
            raise(Kind::AmbiguousAlias, label + ": the keystore has " + std::to_string(key_aliases.size()) +
                                            " key entries (" + join_aliases(key_aliases) + "): set alias");
        for (const auto& e : entries)
            if (e.tag == 1) chosen = &e;
    }
    if (chosen == nullptr)
        raise(Kind::NoPrivateKey, label + ": no private key entry: point keystore at the key");
    if (chosen->certs.empty())
        raise(Kind::NoCertificate, label + ": key entry" + for_alias(chosen->alias) + " has no certificate " +
                                       "chain: re-create it with keytool -genkeypair");

    Credential cred;
    cred.format = KeystoreFormat::Jks;
    cred.alias = chosen->alias;
    const Secret& key_pw = req.key_password ? *req.key_password : *req.password;
    cred.key =
        recover_jks_key(chosen->protected_key, key_pw, req.key_password.has_value(), label, chosen->alias);
    cred.cert = decode_jks_cert(chosen->certs.front(), label, chosen->alias);
    for (std::size_t i = 1; i < chosen->certs.size(); ++i)
        cred.chain.push_back(decode_jks_cert(chosen->certs[i], label, chosen->alias));
    return cred;
}

// --- PKCS#12 ----------------------------------------------------------------------------------------------
struct Providers {
    bool legacy = false;
    bool fallback = false;
};

OSSL_PROVIDER* g_legacy_provider = nullptr;
OSSL_PROVIDER* g_default_provider = nullptr;

const Providers& providers() {
    static std::once_flag once;
    static Providers loaded;
    std::call_once(once, [] {
        // Loading any provider explicitly stops OpenSSL from auto-loading "default": load both. They stay
        // loaded until exit, where they are unloaded (before OpenSSL's own cleanup, which was registered
        // earlier) so that leak checkers see a clean process.
        g_legacy_provider = OSSL_PROVIDER_load(nullptr, "legacy");
        g_default_provider = OSSL_PROVIDER_load(nullptr, "default");
        loaded.legacy = g_legacy_provider != nullptr;
        loaded.fallback = g_default_provider != nullptr;
        ERR_clear_error();
        std::atexit([] {
            if (g_legacy_provider) OSSL_PROVIDER_unload(g_legacy_provider);
            if (g_default_provider) OSSL_PROVIDER_unload(g_default_provider);
            g_legacy_provider = g_default_provider = nullptr;
        });
    });
    return loaded;
}

// Drains the error queue; true if it says an algorithm is unavailable (rather than a bad password).
bool errors_say_unsupported() {
    bool unsupported = false;
    for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
        int lib = ERR_GET_LIB(e), reason = ERR_GET_REASON(e);
        if (reason == ERR_R_UNSUPPORTED || reason == ERR_R_FETCH_FAILED) unsupported = true;
        if (lib == ERR_LIB_EVP &&
            (reason == EVP_R_UNSUPPORTED_ALGORITHM || reason == EVP_R_UNSUPPORTED_CIPHER ||
             reason == EVP_R_UNSUPPORTED_KEY_DERIVATION_FUNCTION || reason == EVP_R_UNSUPPORTED_PRF ||
             reason == EVP_R_UNKNOWN_CIPHER || reason == EVP_R_UNKNOWN_DIGEST))
            unsupported = true;
        if (lib == ERR_LIB_PKCS12 && reason == PKCS12_R_UNKNOWN_DIGEST_ALGORITHM) unsupported = true;
    }
    return unsupported;
}

[[noreturn]] void p12_unsupported(const std::string& label, std::string_view what) {
    std::string hint =
        providers().legacy
            ? "re-export it with modern algorithms: `keytool -importkeystore -srckeystore " + label +
                  " -srcstoretype PKCS12 -destkeystore new.p12 -deststoretype PKCS12`"
            : "the OpenSSL legacy provider (legacy.so, needed for RC2-40/3DES files from old JDKs " +
                  std::string("and Windows) could not be loaded: install it or set OPENSSL_MODULES, ") +
                  "or re-export the file with `keytool -importkeystore -deststoretype PKCS12`";
    raise(Kind::Unsupported,
          label + ": " + std::string(what) + " uses an algorithm OpenSSL cannot use here: " + hint);
}

struct P12Key {
    PKey key;
    std::string name;
    std::string key_id;
};
struct P12Cert {
    Cert cert;
    std::string name;
    std::string key_id;
};
struct P12Contents {
    std::vector<P12Key> keys;
    std::vector<P12Cert> certs;
};

std::string bag_name(const PKCS12_SAFEBAG* bag) {
    const ASN1_TYPE* t = PKCS12_SAFEBAG_get0_attr(bag, NID_friendlyName);
    if (t == nullptr || t->type != V_ASN1_BMPSTRING || t->value.bmpstring == nullptr) return "";
    std::unique_ptr<char, OsslFree> utf8(
        OPENSSL_uni2utf8(ASN1_STRING_get0_data(t->value.bmpstring), ASN1_STRING_length(t->value.bmpstring)));
    return utf8 ? std::string(utf8.get()) : "";
}

std::string bag_key_id(const PKCS12_SAFEBAG* bag) {
    const ASN1_TYPE* t = PKCS12_SAFEBAG_get0_attr(bag, NID_localKeyID);
    if (t == nullptr || t->type != V_ASN1_OCTET_STRING || t->value.octet_string == nullptr) return "";
    return std::string(as_view(ASN1_STRING_get0_data(t->value.octet_string),
                               static_cast<std::size_t>(ASN1_STRING_length(t->value.octet_string))));
}

struct P12Pass {
    const char* ptr = nullptr;
    int len = 0;
};

void read_bags(const STACK_OF(PKCS12_SAFEBAG) * bags, const P12Pass& pass, bool mac_checked,
               const std::string& label, P12Contents& out, int depth) {
    if (depth > kMaxSafeNesting)
        raise(Kind::Corrupt, label + ": PKCS#12 safe contents nested too deeply: export the keystore again");
    // A key bag, plain or decrypted: RSA or not is checked later; unreadable types are refused here.
    auto add_key = [&](const PKCS8_PRIV_KEY_INFO* p8, const PKCS12_SAFEBAG* bag) {
        PKey key(p8 != nullptr ? EVP_PKCS82PKEY(p8) : nullptr);
        if (!key)
            raise(Kind::Unsupported, label + ": a private key in the PKCS#12 file has a type OpenSSL cannot " +
                                         "read: make an RSA 2048+ key");
        out.keys.push_back({std::move(key), bag_name(bag), bag_key_id(bag)});
    };
    for (int i = 0; i < sk_PKCS12_SAFEBAG_num(bags); ++i) {
        const PKCS12_SAFEBAG* bag = sk_PKCS12_SAFEBAG_value(bags, i);
        switch (PKCS12_SAFEBAG_get_nid(bag)) {
            case NID_keyBag: {
                add_key(PKCS12_SAFEBAG_get0_p8inf(bag), bag);
                break;
            }
            case NID_pkcs8ShroudedKeyBag: {
                std::unique_ptr<PKCS8_PRIV_KEY_INFO, P8Deleter> p8(
                    PKCS12_decrypt_skey(bag, pass.ptr, pass.len));
                if (!p8) {
                    if (errors_say_unsupported()) p12_unsupported(label, "the private key");
                    if (mac_checked)
                        raise(Kind::Corrupt, label +
                                                 ": the PKCS#12 private key does not decrypt although the " +
                                                 "password is right: export the keystore again");
                    raise(Kind::WrongPassword, label +
                                                   ": wrong keystore password (the private key does not " +
                                                   "decrypt): " + std::string(kPasswordFix));
                }
                add_key(p8.get(), bag);
                break;
            }
            case NID_certBag: {
                if (PKCS12_SAFEBAG_get_bag_nid(bag) != NID_x509Certificate) break;  // SDSI certificates etc.
                Cert cert(PKCS12_SAFEBAG_get1_cert(bag));
                if (!cert)
                    raise(Kind::Corrupt,
                          label + ": a certificate in the PKCS#12 file does not parse: export the " +
                              "keystore again");
                out.certs.push_back({std::move(cert), bag_name(bag), bag_key_id(bag)});
                break;
            }
            case NID_safeContentsBag:
                read_bags(PKCS12_SAFEBAG_get0_safes(bag), pass, mac_checked, label, out, depth + 1);
                break;
            default:  // CRLs, secret bags: not needed
                break;
        }
    }
}

P12Contents read_pkcs12(std::string_view data, const std::optional<Secret>& password,
                        const std::string& label) {
    (void)providers();
    auto p12 = parse_pkcs12(data);
    if (!p12) raise(Kind::Corrupt, label + ": damaged PKCS#12 file: export the keystore again");

    P12Pass pass;
    if (password) {
        if (password->size() > static_cast<std::size_t>(INT_MAX / 4))
            raise(Kind::WrongPassword,
                  label + ": the password is implausibly long: " + std::string(kPasswordFix));
        pass = {password->reveal().data(), static_cast<int>(password->size())};
    }
    bool mac_checked = false;
    if (PKCS12_mac_present(p12.get())) {
        if (password) {
            if (PKCS12_verify_mac(p12.get(), pass.ptr, pass.len) != 1) {
                if (errors_say_unsupported()) p12_unsupported(label, "the integrity check (MAC)");
                raise(Kind::WrongPassword, label + ": wrong keystore password (PKCS#12 MAC check failed): " +
                                               std::string(kPasswordFix));
            }
        } else if (PKCS12_verify_mac(p12.get(), "", 0) == 1) {
            pass = {"", 0};
        } else if (PKCS12_verify_mac(p12.get(), nullptr, 0) == 1) {
            pass = {nullptr, 0};
        } else {
            if (errors_say_unsupported()) p12_unsupported(label, "the integrity check (MAC)");
            raise(Kind::NeedPassword,
                  label + ": the PKCS#12 keystore is password-protected: set password_env or " +
                      "password_file");
        }
        mac_checked = true;
    }
    ERR_clear_error();

    P12Contents out;
    std::unique_ptr<STACK_OF(PKCS7), P7StackDeleter> safes(PKCS12_unpack_authsafes(p12.get()));
    if (!safes)
        raise(Kind::Corrupt, label + ": damaged PKCS#12 file (no contents): export the keystore again");
    for (int i = 0; i < sk_PKCS7_num(safes.get()); ++i) {
        PKCS7* p7 = sk_PKCS7_value(safes.get(), i);
        std::unique_ptr<STACK_OF(PKCS12_SAFEBAG), BagStackDeleter> bags;
        if (PKCS7_type_is_data(p7)) {
            bags.reset(PKCS12_unpack_p7data(p7));
        } else if (PKCS7_type_is_encrypted(p7)) {
            bags.reset(PKCS12_unpack_p7encdata(p7, pass.ptr, pass.len));
            if (!bags) {
                if (errors_say_unsupported()) p12_unsupported(label, "the certificate section");
                if (!mac_checked && !password)
                    raise(Kind::NeedPassword,
                          label + ": the PKCS#12 keystore is encrypted: set password_env or " +
                              "password_file");
                if (!mac_checked)
                    raise(Kind::WrongPassword,
                          label + ": wrong keystore password (the contents do not decrypt): " +
                              std::string(kPasswordFix));
            }
        } else {
            continue;  // enveloped (public-key) privacy mode: not used by keytool/OpenSSL/Windows exports
        }
        if (!bags) raise(Kind::Corrupt, label + ": damaged PKCS#12 contents: export the keystore again");
        read_bags(bags.get(), pass, mac_checked, label, out, 0);
    }
    return out;
}

Credential load_p12(std::string_view data, const KeystoreRequest& req, const std::string& label) {
    P12Contents c = read_pkcs12(data, req.password, label);
    std::vector<std::string> names;
    for (const auto& k : c.keys) names.push_back(k.name);

    P12Key* chosen = nullptr;
    if (!req.alias.empty()) {
        for (auto& k : c.keys)
            if (iequals(k.name, req.alias)) chosen = &k;
        if (chosen == nullptr) {
            for (const auto& cert : c.certs)
                if (iequals(cert.name, req.alias))
                    raise(Kind::NoPrivateKey,
                          label + ": alias " + in_quotes(req.alias) + " is a certificate without " +
                              "a private key (key entries: " + join_aliases(names) + "): fix alias");
            raise(Kind::NoSuchAlias, label + ": no key entry with alias " + in_quotes(req.alias) +
                                         " (key entries: " + join_aliases(names) + "): fix alias" +
                                         (names.size() == 1 ? " or leave it empty" : ""));
        }
    } else {
        if (c.keys.empty())
            raise(Kind::NoPrivateKey, label + ": the PKCS#12 file has no private key (only certificates): " +
                                          "export the key together with the certificate");
        if (c.keys.size() > 1)
            raise(Kind::AmbiguousAlias, label + ": the PKCS#12 file has " + std::to_string(c.keys.size()) +
                                            " private keys (" + join_aliases(names) + "): set alias");
        chosen = &c.keys.front();
    }

    Credential cred;
    cred.format = KeystoreFormat::Pkcs12;
    cred.alias = chosen->name;
    cred.key = std::move(chosen->key);
    // The leaf: same localKeyID, else the certificate whose public key matches.
    std::size_t leaf = c.certs.size();
    for (std::size_t i = 0; i < c.certs.size() && leaf == c.certs.size(); ++i)
        if (!chosen->key_id.empty() && c.certs[i].key_id == chosen->key_id) leaf = i;
    for (std::size_t i = 0; i < c.certs.size() && leaf == c.certs.size(); ++i)
        if (key_matches_cert(cred.key.get(), c.certs[i].cert.get())) leaf = i;
    ERR_clear_error();
    if (leaf == c.certs.size()) {
        if (c.certs.empty())
            raise(Kind::NoCertificate,
                  label + ": the PKCS#12 file has a private key but no certificate: export " +
                      "the key together with its certificate");
        raise(Kind::KeyMismatch, label + ": no certificate in the PKCS#12 file matches the private key" +
                                     for_alias(cred.alias) +
                                     ": export the key together with its own certificate");
    }
    cred.cert = std::move(c.certs[leaf].cert);
    std::vector<Cert> pool;
    for (auto& pc : c.certs)
        if (pc.cert) pool.push_back(std::move(pc.cert));
    cred.chain = order_chain(cred.cert.get(), std::move(pool), false);
    return cred;
}

// --- PEM --------------------------------------------------------------------------------------------------
struct PemBlock {
    std::string label;
    std::string_view text;  // from -----BEGIN to the end of the -----END line
};

std::vector<PemBlock> pem_blocks(std::string_view text) {
    std::vector<PemBlock> out;
    std::size_t pos = 0;
    constexpr std::string_view kBegin = "-----BEGIN ";
    while ((pos = text.find(kBegin, pos)) != std::string_view::npos) {
        std::size_t label_start = pos + kBegin.size();
        std::size_t label_end = text.find("-----", label_start);
        if (label_end == std::string_view::npos || label_end - label_start > 64) break;
        std::string label(text.substr(label_start, label_end - label_start));
        std::string end_marker = "-----END " + label + "-----";
        std::size_t end = text.find(end_marker, label_end);
        if (end == std::string_view::npos) break;
        end += end_marker.size();
        out.push_back({label, text.substr(pos, end - pos)});
        pos = end;
        if (out.size() > 1000) break;
    }
    return out;
}

bool is_key_label(std::string_view label) {
    constexpr std::string_view kSuffix = "PRIVATE KEY";
    return label.size() >= kSuffix.size() && label.substr(label.size() - kSuffix.size()) == kSuffix;
}
bool is_cert_label(std::string_view label) {
    return label == "CERTIFICATE" || label == "X509 CERTIFICATE" || label == "TRUSTED CERTIFICATE";
}

Bio block_bio(std::string_view text) {
    Bio bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    if (!bio) raise(Kind::Unsupported, "out of memory reading a PEM block");
    return bio;
}

struct PemPassState {
    const Secret* password = nullptr;
    bool asked = false;
    bool missing = false;
};

int pem_password_cb(char* buf, int size, int /*rwflag*/, void* u) {
    auto* state = static_cast<PemPassState*>(u);
    state->asked = true;
    if (state->password == nullptr) {
        state->missing = true;
        return -1;
    }
    std::string_view pw = state->password->reveal();
    if (size < 0 || pw.size() > static_cast<std::size_t>(size)) return -1;
    std::memcpy(buf, pw.data(), pw.size());
    return static_cast<int>(pw.size());
}

std::vector<Cert> certs_from_blocks(const std::vector<PemBlock>& blocks, const std::string& label) {
    std::vector<Cert> out;
    for (const auto& b : blocks) {
        if (!is_cert_label(b.label)) continue;
        Bio bio = block_bio(b.text);
        Cert cert(b.label == "TRUSTED CERTIFICATE"
                      ? PEM_read_bio_X509_AUX(bio.get(), nullptr, nullptr, nullptr)
                      : PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
        if (!cert)
            raise(Kind::Corrupt, label + ": a certificate in the PEM file does not parse: export it again");
        out.push_back(std::move(cert));
    }
    return out;
}

Credential load_pem(std::string_view data, const KeystoreRequest& req, const std::string& label) {
    std::vector<PemBlock> blocks = pem_blocks(data);
    const PemBlock* key_block = nullptr;
    for (const auto& b : blocks)
        if (is_key_label(b.label) && key_block == nullptr) key_block = &b;
    std::vector<Cert> certs = certs_from_blocks(blocks, label);
    if (key_block == nullptr) {
        if (!certs.empty())
            raise(Kind::NoPrivateKey,
                  label + ": the PEM file has certificates but no private key: point keystore " +
                      "at the key file (and cert_file at the certificate)");
        raise(Kind::NoPrivateKey,
              label + ": the PEM file has no private key: point keystore at the key file");
    }

    PemPassState state;
    const std::optional<Secret>& pw = req.key_password ? req.key_password : req.password;
    if (pw) state.password = &*pw;
    Bio bio = block_bio(key_block->text);
    ERR_clear_error();
    PKey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, &pem_password_cb, &state));
    if (!key) {
        bool unsupported = errors_say_unsupported();
        if (state.missing)
            raise(Kind::NeedPassword,
                  label + ": the private key is encrypted: set password_env or password_file");
        if (state.asked)
            raise(Kind::WrongPassword, label +
                                           ": wrong password for the encrypted private key (it does not " +
                                           "decrypt): " + std::string(kPasswordFix));
        if (unsupported)
            raise(Kind::Unsupported,
                  label + ": the private key (" + clean(key_block->label, 40) + ") uses an " +
                      "algorithm OpenSSL cannot use here: convert it with `openssl pkcs8 -topk8`");
        raise(Kind::Corrupt, label + ": the private key (" + clean(key_block->label, 40) +
                                 ") does not parse: " + "export it again");
    }
    ERR_clear_error();

    if (!req.cert_path.empty()) {
        std::string cert_label = clean(req.cert_path);
        std::string cert_data = read_whole(req.cert_path, "certificate file");
        std::vector<Cert> more;
        if (cert_data.find("-----BEGIN ") != std::string::npos) {
            more = certs_from_blocks(pem_blocks(cert_data), cert_label);
        } else if (Cert der = parse_der_cert(cert_data)) {
            more.push_back(std::move(der));
        }
        if (more.empty())
            raise(Kind::Corrupt, cert_label +
                                     ": no certificate in cert_file (expected PEM or DER X.509): point " +
                                     "cert_file at the .cer/.crt/.pem certificate");
        // Certificates from cert_file come first: they are the ones asked for explicitly.
        for (auto& c : certs) more.push_back(std::move(c));
        certs = std::move(more);
    }

    Credential cred;
    cred.format = KeystoreFormat::Pem;
    cred.key = std::move(key);
    if (certs.empty())
        raise(Kind::NoCertificate, label +
                                       ": the PEM file has a private key but no certificate: set cert_file " +
                                       "to the certificate (.cer/.crt/.pem) or append it to the key file");
    std::size_t leaf = certs.size();
    for (std::size_t i = 0; i < certs.size() && leaf == certs.size(); ++i)
        if (key_matches_cert(cred.key.get(), certs[i].get())) leaf = i;
    ERR_clear_error();
    if (leaf == certs.size()) {
        std::string which = req.cert_path.empty() ? label : clean(req.cert_path);
        raise(Kind::KeyMismatch, label + ": the private key does not match certificate '" +
                                     subject_of(certs[0].get()) + "' (" + which +
                                     "): use the certificate issued for this key");
    }
    cred.cert = std::move(certs[leaf]);
    cred.chain = order_chain(cred.cert.get(), std::move(certs), true);
    return cred;
}

// --- checks
// -------------------------------------------------------------------------------------------------
void check_credential(Credential& cred, const std::string& label, std::int64_t now) {
    std::string where = label + (cred.alias.empty() ? "" : " (alias " + in_quotes(cred.alias) + ")");
    std::string subject = "'" + subject_of(cred.cert.get()) + "'";
    if (!is_rsa_key(cred.key.get())) {
        const char* type = EVP_PKEY_get0_type_name(cred.key.get());
        raise(Kind::NotRsa, where + ": the key is " + clean(type != nullptr ? type : "not RSA", 20) +
                                ", but Entra ID app certificates must be RSA: make an RSA 2048+ key " +
                                "(`graphbridge cert new`, or keytool -keyalg RSA -keysize 2048)");
    }
    int bits = key_bits(cred.key.get());
    if (bits < kKeystoreMinRsaBits)
        raise(Kind::KeyTooSmall, where + ": the RSA key has " + std::to_string(bits) +
                                     " bits, Entra ID needs " +
                                     "at least 2048: make an RSA 2048+ key with `graphbridge cert new`");
    if (!key_matches_cert(cred.key.get(), cred.cert.get())) {
        ERR_clear_error();
        raise(Kind::KeyMismatch, where + ": the private key does not match certificate " + subject +
                                     ": use the certificate issued for this key, or " +
                                     std::string(kNewCertFix));
    }
    std::int64_t not_before = cert_not_before(cred.cert.get());
    std::int64_t not_after = cert_not_after(cred.cert.get());
    if (now > not_after)
        raise(Kind::Expired, where + ": certificate " + subject + " expired on " + ymd(not_after) + ": " +
                                 std::string(kNewCertFix));
    if (now < not_before)
        raise(Kind::NotYetValid, where + ": certificate " + subject + " is not valid before " +
                                     ymd(not_before) + ": check the system clock, or wait until then");
    constexpr std::int64_t kDay = 86400;
    if (not_after - now < kKeystoreExpiryWarningDays * kDay) {
        std::int64_t days = (not_after - now) / kDay;
        cred.warnings.push_back(where + ": certificate " + subject + " expires in " + std::to_string(days) +
                                (days == 1 ? " day" : " days") + " on " + ymd(not_after) + ": " +
                                std::string(kNewCertFix) + " before then");
    }
}

std::string label_of(const KeystoreRequest& req) {
    return req.path.empty() ? "keystore" : clean(req.path);
}

}  // namespace

KeystoreFormat detect_format(std::string_view bytes) {
    return detect(bytes, "keystore");
}

Credential load_keystore(const KeystoreRequest& req) {
    std::string label = label_of(req);
    if (req.path.empty()) raise(Kind::Unreadable, "no keystore file configured: set keystore");
    std::string data = read_whole(req.path, "keystore");
    Credential cred;
    switch (detect(data, label)) {
        case KeystoreFormat::Jks:
            cred = load_jks(data, req, label);
            break;
        case KeystoreFormat::Pkcs12:
            cred = load_p12(data, req, label);
            break;
        case KeystoreFormat::Pem:
            cred = load_pem(data, req, label);
            break;
    }
    check_credential(cred, label, req.now != 0 ? req.now : static_cast<std::int64_t>(std::time(nullptr)));
    return cred;
}

std::vector<std::string> list_aliases(const KeystoreRequest& req) {
    std::string label = label_of(req);
    std::string data = read_whole(req.path, "keystore");
    std::vector<std::string> out;
    switch (detect(data, label)) {
        case KeystoreFormat::Jks:
            for (const auto& e : read_jks(data, label, req.password))
                if (e.tag == 1) out.push_back(e.alias);
            break;
        case KeystoreFormat::Pkcs12:
            for (const auto& k : read_pkcs12(data, req.password, label).keys) out.push_back(k.name);
            break;
        case KeystoreFormat::Pem:
            for (const auto& b : pem_blocks(data))
                if (is_key_label(b.label)) out.emplace_back();
            break;
    }
    return out;
}

}  // namespace gb::auth
