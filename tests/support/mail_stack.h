// The IMAP engine tests' mail stack: a MailService over a fresh SQLite store and body cache in a per-test
// directory (removed afterwards), polling slowly (tests sync explicitly) and IDLE folders fast.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "proxy/sync/mail_service.h"

namespace gb::test {

struct MailStack {
    MailStack(const std::string& prefix, const std::string& mailbox, sync::MailSource& source) {
        dir = ::testing::TempDir() + "/" + prefix + "_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name();
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
        store = sync::open_sqlite_store(dir + "/state.db");
        cache = std::make_unique<sync::BodyCache>(dir + "/cache", 64 << 20);
        sync::MailServiceOptions mo;
        mo.poll_interval = std::chrono::milliseconds(60000);
        mo.idle_poll_interval = std::chrono::milliseconds(300);
        mail = std::make_unique<sync::MailService>(*store, *cache, mo);
        mail->add_mailbox(mailbox, source);
        mail->start();
    }
    ~MailStack() {
        mail->stop();
        mail.reset();
        cache.reset();
        store.reset();
        std::filesystem::remove_all(dir);
    }
    MailStack(const MailStack&) = delete;
    MailStack& operator=(const MailStack&) = delete;

    std::string dir;
    std::unique_ptr<sync::StateStore> store;
    std::unique_ptr<sync::BodyCache> cache;
    std::unique_ptr<sync::MailService> mail;
};

}  // namespace gb::test
