// First-run provisioning of `graphbridge sandbox`: a CA and a loopback server certificate, the token
// signing key, an app registration with a certificate (and a client secret), a few mailboxes, local
// accounts with generated passwords, and a complete commented bridge config. Later runs load it.
//
// Layout of DIR (keys 0600):
//   ca.pem ca.key.pem server.pem server.key.pem token-signing.key.pem   the emulated tenant's PKI
//   app.pem (key + certificate) app.cer (DER, what you would upload)     the app's credential
//   client-secret, client-secret-expired                                 the app's secret values (the second
//                                                                        expired in 2020)
//   sandbox.json                                                         tenant, app and account facts
//   graphbridge.toml                                                     the bridge config
//   state/                                                               the bridge's state_dir
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "graph/sandbox/server.h"
#include "graph/sandbox/tenant.h"

namespace gb::sandbox {

struct LocalAccount {
    std::string login;
    std::string password;  // generated; printed for the user, stored 0600 in sandbox.json
    std::string mailbox;
};

struct SandboxSetup {
    std::string dir;
    std::uint16_t port = 9443;
    Tenant tenant;
    ServerCredentials credentials;
    std::vector<LocalAccount> accounts;
    std::string config_path;
    bool created = false;  // true on first run
};

// Creates DIR's contents on first run (port is recorded then); loads them afterwards.
// Throws std::runtime_error naming the file on failure.
SandboxSetup provision(const std::string& dir, std::uint16_t port);

}  // namespace gb::sandbox
