// Fuzz target: the keystore loaders (auth/keystore: JKS parsed natively, PKCS#12 and PEM through
// OpenSSL), format detection and alias listing. load_keystore() reads paths, so the input is written
// to scratch files in a per-process directory in $TMPDIR (default /tmp), reused for every input.
//
// Input: [flags] keystore bytes [ "@@CERT@@\n" separate certificate file bytes ]
//   flags bits 0-1 store password: "changeit", none, "", "wrong"; bit 2 key password "keypass";
//         bit 3 alias "test"; bit 4 use the separate certificate file (PEM)
// The seed corpus uses the password "changeit" throughout (throwaway keys, see docs/fuzzing.md).
// Promise checked: only KeystoreError ever leaves these functions.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "auth/keystore.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string dir = gb::fuzz::scratch_dir("keystore");
    static const std::string store_path = dir + "/keystore";
    static const std::string cert_path = dir + "/cert";

    gb::fuzz::Bytes in(data, size);
    std::uint8_t flags = in.byte();
    std::string_view rest = in.rest();
    if (rest.size() > 64 * 1024) return 0;
    constexpr std::string_view kCert = "@@CERT@@\n";
    std::size_t cut = rest.find(kCert);
    std::string_view store = cut == std::string_view::npos ? rest : rest.substr(0, cut);
    std::string_view cert = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + kCert.size());

    try {
        (void)gb::auth::detect_format(store);
    } catch (const gb::auth::KeystoreError&) {
    }

    gb::fuzz::write_file(store_path, store);
    gb::auth::KeystoreRequest req;
    req.path = store_path;
    switch (flags & 3) {
        case 0: req.password = gb::Secret("changeit"); break;
        case 1: break;
        case 2: req.password = gb::Secret(""); break;
        default: req.password = gb::Secret("wrong"); break;
    }
    if (flags & 4) req.key_password = gb::Secret("keypass");
    if (flags & 8) req.alias = "test";
    if (flags & 16) {
        gb::fuzz::write_file(cert_path, cert);
        req.cert_path = cert_path;
    }
    req.now = 1796000000;  // 2026-11-29: fixed, so results do not depend on the day

    try {
        (void)gb::auth::list_aliases(req);
    } catch (const gb::auth::KeystoreError&) {
    }
    try {
        gb::auth::Credential c = gb::auth::load_keystore(req);
        (void)c.sha1_hex();
        (void)c.x5t();
        (void)c.x5t_s256();
        if (gb::fuzz::verbose())
            std::fprintf(stderr, "loaded %s alias '%s' %s\n", std::string(gb::auth::to_string(c.format)).c_str(),
                         c.alias.c_str(), c.sha1_hex().c_str());
    } catch (const gb::auth::KeystoreError& e) {
        if (gb::fuzz::verbose()) std::fprintf(stderr, "KeystoreError: %s\n", e.what());
    }
    return 0;
}
