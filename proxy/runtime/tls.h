// The certificate SMTP/IMAP/POP3 clients see: [tls] cert/key when configured, otherwise a key and a
// self-signed certificate generated once in state_dir/tls (SANs localhost, 127.0.0.1, ::1 and the
// host name), kept across restarts so clients that pinned it keep working.
#pragma once

#include <string>

#include "proxy/config/config.h"

namespace gb::runtime {

struct TlsMaterial {
    std::string cert_chain_pem;
    std::string key_pem;
    std::string cert_path;  // where it came from / was written
    bool generated = false;
};

// Throws std::runtime_error naming the file on failure.
TlsMaterial load_or_create_tls(const config::Config& cfg);

}  // namespace gb::runtime
