// SMTP access policy: send_as per account, relay networks, no open relay, AUTH throttling.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "auth/password.h"
#include "proxy/smtp/policy.h"

using namespace gb;
using namespace gb::smtp;

namespace {

config::Config make_config() {
    std::string dir = ::testing::TempDir() + "/gb_policy_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/app.pem") << "x";
    std::string hash = auth::hash_password("printer-pass");
    std::ofstream(dir + "/c.toml") << "state_dir = \"/tmp/x\"\n[app.a]\ntenant_id = \"contoso.onmicrosoft.com\"\n"
                                      "client_id = \"11111111-2222-3333-4444-555555555555\"\n"
                                      "[app.a.certificate]\nkeystore = \"app.pem\"\n"
                                      "[[account]]\nlogin = \"scanner\"\npassword_hash = \"" << hash << "\"\n"
                                      "app = \"a\"\nmailbox = \"Scanner@contoso.com\"\n"
                                      "send_as = [\"scanner@contoso.com\", \"NoReply@contoso.com\"]\n"
                                      "[[relay]]\nnetworks = [\"192.168.10.0/24\", \"fd00::/8\"]\napp = \"a\"\n"
                                      "mailbox = \"printer@contoso.com\"\n";
    auto cfg = config::load(dir + "/c.toml");
    std::filesystem::remove_all(dir);
    return cfg;
}

const config::Config& cfg() {
    static config::Config c = make_config();
    return c;
}

}  // namespace

TEST(SmtpPolicy, AuthenticatesOnlyWithTheRightPassword) {
    Policy p(cfg());
    auto ok = p.authenticate("scanner", Secret("printer-pass"));
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->mailbox, "scanner@contoso.com");
    EXPECT_FALSE(p.authenticate("scanner", Secret("printer-pass ")));
    EXPECT_FALSE(p.authenticate("Scanner", Secret("printer-pass")));  // logins are exact
    EXPECT_FALSE(p.authenticate("nobody", Secret("printer-pass")));
}

TEST(SmtpPolicy, AccountsSendOnlyAsTheirSendAsAddresses) {
    Policy p(cfg());
    auto acc = p.authenticate("scanner", Secret("printer-pass"));
    auto d = p.mail_from(acc, "10.0.0.9", "noreply@CONTOSO.com");
    EXPECT_TRUE(d.ok);
    ASSERT_TRUE(d.identity);
    EXPECT_EQ(d.identity->mailbox, "scanner@contoso.com");  // the Graph mailbox is the account's
    EXPECT_EQ(d.identity->kind, SenderIdentity::Kind::Account);
    auto ceo = p.mail_from(acc, "10.0.0.9", "ceo@contoso.com");
    EXPECT_FALSE(ceo.ok);
    EXPECT_EQ(ceo.code, 553);
    EXPECT_EQ(ceo.enhanced, "5.7.1");
    EXPECT_TRUE(p.mail_from(acc, "10.0.0.9", "").ok);  // <> sends as the mailbox
}

TEST(SmtpPolicy, RelayNetworksSendAsTheirMailboxOnlyAndEveryoneElseIsRefused) {
    Policy p(cfg());
    auto relay = p.mail_from(std::nullopt, "192.168.10.77", "anything@printer.local");
    ASSERT_TRUE(relay.ok);
    EXPECT_EQ(relay.identity->mailbox, "printer@contoso.com");
    EXPECT_EQ(relay.identity->kind, SenderIdentity::Kind::Relay);
    EXPECT_TRUE(p.mail_from(std::nullopt, "fd12::5", "x@y.z").ok);
    for (const char* stranger : {"192.168.11.1", "10.0.0.1", "127.0.0.1", "::1", "not-an-ip"}) {
        auto d = p.mail_from(std::nullopt, stranger, "scanner@contoso.com");
        EXPECT_FALSE(d.ok) << stranger;
        EXPECT_EQ(d.code, 530) << stranger;
    }
}

TEST(SmtpPolicy, ReloadAppliesToLaterDecisionsAndEndsChangedAccounts) {
    Policy p(cfg());
    auto scanner = p.authenticate("scanner", Secret("printer-pass"));
    ASSERT_TRUE(scanner);
    EXPECT_TRUE(p.still_valid(*scanner));

    // Same account with a narrower send-as list, a second account, the relay network moved.
    config::Config next = cfg();
    next.accounts[0].send_as = {"scanner@contoso.com"};
    config::AccountConfig fax = next.accounts[0];
    fax.login = "fax";
    fax.mailbox = "Fax@contoso.com";
    fax.send_as = {"fax@contoso.com"};
    next.accounts.push_back(fax);
    next.relays[0].networks = {*config::parse_network("10.9.0.0/16")};
    p.reload(next);

    EXPECT_TRUE(p.still_valid(*scanner));  // only its send-as list changed: the session goes on
    EXPECT_TRUE(p.mail_from(scanner, "10.0.0.9", "scanner@contoso.com").ok);
    auto noreply = p.mail_from(scanner, "10.0.0.9", "noreply@contoso.com");  // taken away by the reload
    EXPECT_FALSE(noreply.ok);
    EXPECT_EQ(noreply.code, 553);
    EXPECT_TRUE(p.authenticate("fax", Secret("printer-pass")));
    EXPECT_EQ(p.accounts().size(), 2u);
    EXPECT_FALSE(p.mail_from(std::nullopt, "192.168.10.77", "x@y.z").ok);  // the old relay network
    auto moved = p.mail_from(std::nullopt, "10.9.3.4", "x@y.z");
    ASSERT_TRUE(moved.ok);
    EXPECT_EQ(moved.identity->mailbox, "printer@contoso.com");

    // A new password (or a removal) ends what the old login allowed.
    config::Config rehashed = next;
    rehashed.accounts[0].password_hash = auth::hash_password("new-pass-2");
    p.reload(rehashed);
    EXPECT_FALSE(p.still_valid(*scanner));
    auto refused = p.mail_from(scanner, "10.0.0.9", "scanner@contoso.com");
    EXPECT_FALSE(refused.ok);
    EXPECT_EQ(refused.code, 530);
    EXPECT_FALSE(p.authenticate("scanner", Secret("printer-pass")));
    EXPECT_TRUE(p.authenticate("scanner", Secret("new-pass-2")));
    config::Config removed = next;
    removed.accounts.erase(removed.accounts.begin());
    p.reload(removed);
    auto fax_login = p.authenticate("fax", Secret("printer-pass"));
    ASSERT_TRUE(fax_login);
    EXPECT_TRUE(p.still_valid(*fax_login));
    EXPECT_FALSE(p.authenticate("scanner", Secret("new-pass-2")));
}

TEST(AuthThrottle, GrowingDelaysPerAddressAndBoundedMemory) {
    AuthThrottle::Options o;
    o.free_failures = 2;
    o.max_tracked = 100;
    AuthThrottle t(o);
    auto now = AuthThrottle::Clock::now();
    using ms = std::chrono::milliseconds;
    EXPECT_EQ(t.delay_for("1.2.3.4", now), ms(0));
    t.record_failure("1.2.3.4", now);
    t.record_failure("1.2.3.4", now);
    EXPECT_EQ(t.delay_for("1.2.3.4", now), ms(1000));
    t.record_failure("1.2.3.4", now);
    EXPECT_EQ(t.delay_for("1.2.3.4", now), ms(2000));
    for (int i = 0; i < 30; ++i) t.record_failure("1.2.3.4", now);
    EXPECT_EQ(t.delay_for("1.2.3.4", now), ms(30000));  // capped
    EXPECT_EQ(t.delay_for("5.6.7.8", now), ms(0));     // other addresses are not affected
    // The window passes: forgiven.
    EXPECT_EQ(t.delay_for("1.2.3.4", now + std::chrono::seconds(601)), ms(0));
    // A success forgives a typo, but not an address already delayed: a guesser with one valid account
    // of its own must not reset its counter by logging into it between guesses.
    t.record_failure("8.8.8.8", now);
    t.record_success("8.8.8.8");
    t.record_failure("8.8.8.8", now);
    EXPECT_EQ(t.delay_for("8.8.8.8", now), ms(0));
    t.record_failure("9.9.9.9", now);
    t.record_failure("9.9.9.9", now);
    t.record_failure("9.9.9.9", now);
    t.record_success("9.9.9.9");
    EXPECT_EQ(t.delay_for("9.9.9.9", now), ms(2000));
    EXPECT_EQ(t.delay_for("9.9.9.9", now + std::chrono::seconds(601)), ms(0));
    for (int i = 0; i < 1000; ++i) t.record_failure("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256), now);
    EXPECT_LE(t.tracked(), 100u);
}
