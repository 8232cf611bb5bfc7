// Turns a configured app registration into what the token broker needs: the credential loaded from
// its keystore (or its client secret) and the resolved endpoints.
#pragma once

#include <string>
#include <vector>

#include "auth/keystore.h"
#include "auth/token_broker.h"
#include "proxy/config/config.h"

namespace gb::runtime {

struct LoadedApp {
    std::string name;
    auth::TokenBrokerConfig broker;
    std::optional<auth::Credential> credential;  // certificate apps
    std::vector<std::string> warnings;           // e.g. the certificate expires soon
};

// Loads secrets and keystores. Throws auth::KeystoreError or std::runtime_error with a one-line
// message naming the problem and the fix (never a secret).
LoadedApp load_app(const config::AppConfig& app);

}  // namespace gb::runtime
