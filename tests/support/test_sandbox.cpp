#include "tests/support/test_sandbox.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace gb::test {

TestSandbox::TestSandbox(const std::string& name, sandbox::SandboxOptions options)
    : dir_(::testing::TempDir() + "/gb_" + name + "_" + std::to_string(::getpid())) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    setup_ = sandbox::provision(tenant_dir(), 0);
    server_ = std::make_unique<sandbox::SandboxServer>(setup_.tenant, std::move(options), setup_.credentials);
    server_->start("127.0.0.1", 0);
}

TestSandbox::~TestSandbox() {
    server_->stop();
    server_.reset();
    std::filesystem::remove_all(dir_);
}

std::string TestSandbox::base() const { return "https://127.0.0.1:" + std::to_string(server_->port()); }

std::string TestSandbox::token_url() const {
    return base() + "/" + setup_.tenant.tenant_id + "/oauth2/v2.0/token";
}

}  // namespace gb::test
