// A provisioned sandbox tenant served over HTTPS on an ephemeral loopback port, for integration
// tests. The state directory is removed on destruction.
#pragma once

#include <memory>
#include <string>

#include "graph/sandbox/provision.h"
#include "graph/sandbox/server.h"

namespace gb::test {

class TestSandbox {
public:
    explicit TestSandbox(const std::string& name, sandbox::SandboxOptions options = {});
    ~TestSandbox();
    TestSandbox(const TestSandbox&) = delete;
    TestSandbox& operator=(const TestSandbox&) = delete;

    const std::string& dir() const { return dir_; }             // parent; the tenant lives in dir()/tenant
    std::string tenant_dir() const { return dir_ + "/tenant"; }
    std::string ca() const { return tenant_dir() + "/ca.pem"; }
    std::string base() const;  // https://127.0.0.1:PORT
    std::string token_url() const;
    const sandbox::SandboxSetup& setup() const { return setup_; }
    const sandbox::App& app() const { return setup_.tenant.apps.front(); }
    sandbox::SandboxServer& server() { return *server_; }

private:
    std::string dir_;
    sandbox::SandboxSetup setup_;
    std::unique_ptr<sandbox::SandboxServer> server_;
};

}  // namespace gb::test
