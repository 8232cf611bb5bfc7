// Config validation: every problem names file, line and dotted key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "proxy/config/config.h"

using namespace gb::config;

namespace {

class ConfigTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = ::testing::TempDir() + "/gbcfg_" + std::to_string(::getpid()) + "_" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name();
        std::filesystem::create_directories(dir_);
        std::ofstream(dir_ + "/app.pem") << "not parsed here\n";
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string write(const std::string& text) {
        std::string path = dir_ + "/graphbridge.toml";
        std::ofstream(path) << text;
        return path;
    }
    // Loads and returns the problems (empty when valid).
    std::vector<Problem> problems(const std::string& text) {
        try {
            load(write(text));
            return {};
        } catch (const ConfigError& e) {
            return e.problems();
        }
    }
    std::string dir_;
};

const char* kValid = R"(state_dir = "/var/lib/graphbridge"

[app.contoso]
tenant_id = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"

[app.contoso.certificate]
keystore = "app.pem"
password_env = "KS_PASSWORD"

[[account]]
login = "scanner"
password_hash = "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
app = "contoso"
mailbox = "scanner@contoso.com"

[[relay]]
networks = ["127.0.0.1/32", "192.168.10.0/24"]
app = "contoso"
mailbox = "scanner@contoso.com"

[smtp]
listen = ["127.0.0.1:2525"]
max_message_size = "35MB"

[log]
level = "debug"
format = "json"
)";

}  // namespace

TEST_F(ConfigTest, ValidConfigLoadsWithResolvedDefaults) {
    Config c = load(write(kValid));
    ASSERT_EQ(c.apps.size(), 1u);
    const AppConfig& app = c.apps.at("contoso");
    EXPECT_EQ(app.token_endpoint, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
    EXPECT_EQ(app.scope, "https://graph.microsoft.com/.default");
    ASSERT_TRUE(app.certificate);
    EXPECT_EQ(app.certificate->keystore, dir_ + "/app.pem");  // relative to the config file
    EXPECT_EQ(app.certificate->password.kind, gb::SecretSource::Kind::Env);
    EXPECT_EQ(app.certificate->algorithm, "RS256");
    ASSERT_EQ(c.accounts.size(), 1u);
    EXPECT_EQ(c.accounts[0].send_as, std::vector<std::string>{"scanner@contoso.com"});
    ASSERT_EQ(c.relays.size(), 1u);
    EXPECT_TRUE(c.relays[0].networks[1].contains("192.168.10.77"));
    EXPECT_FALSE(c.relays[0].networks[1].contains("192.168.11.1"));
    EXPECT_EQ(c.smtp.listen[0].to_string(), "127.0.0.1:2525");
    EXPECT_EQ(c.smtp.max_message_size, 35'000'000u);
    EXPECT_EQ(c.imap.listen[0].to_string(), "127.0.0.1:1143");  // default, loopback
    EXPECT_TRUE(c.imap.listen[0].is_loopback());
    EXPECT_EQ(c.log_level, gb::log::Level::Debug);
    EXPECT_EQ(c.log_format, gb::log::Format::Json);
}

TEST_F(ConfigTest, NationalCloudSetsBothHosts) {
    std::string text = kValid;
    text.insert(text.find("[app.contoso.certificate]"), "cloud = \"usgov\"\n");
    Config c = load(write(text));
    EXPECT_EQ(c.apps.at("contoso").token_endpoint,
              "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token");
    EXPECT_EQ(c.apps.at("contoso").scope, "https://graph.microsoft.us/.default");
}

TEST_F(ConfigTest, MisspeltKeyNamesLineAndKey) {
    std::string text = kValid;
    text.replace(text.find("max_message_size"), 16, "max_mesage_size");
    auto p = problems(text);
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(p[0].key, "smtp.max_mesage_size");
    EXPECT_EQ(p[0].line, 24u);
    EXPECT_EQ(p[0].message, "unknown key");
    EXPECT_NE(p[0].to_string().find("graphbridge.toml:24: smtp.max_mesage_size: unknown key"), std::string::npos);
}

TEST_F(ConfigTest, UnknownKeyInNestedAndArrayTables) {
    std::string text = kValid;
    text.replace(text.find("password_env"), 12, "pasword_env");
    text.replace(text.find("mailbox = \"scanner@contoso.com\"\n\n[[relay]]"), 7, "mailbx");
    auto p = problems(text);
    ASSERT_GE(p.size(), 2u);
    bool nested = false, array = false;
    for (const auto& x : p) {
        if (x.key == "app.contoso.certificate.pasword_env" && x.line == 9) nested = true;
        if (x.key == "account[0].mailbx" && x.line == 15) array = true;
    }
    EXPECT_TRUE(nested);
    EXPECT_TRUE(array);
}

TEST_F(ConfigTest, WrongTypesAndMissingKeys) {
    std::string text = kValid;
    text.replace(text.find("login = \"scanner\""), 17, "login = 42");
    text.replace(text.find("client_id = \"11111111-2222-3333-4444-555555555555\"\n"), 51, "");
    auto p = problems(text);
    bool type = false, missing = false;
    for (const auto& x : p) {
        if (x.key == "account[0].login" && x.message == "must be a string, not an integer") type = true;
        if (x.key == "app.contoso.client_id" && x.message == "required key is missing") missing = true;
    }
    EXPECT_TRUE(type);
    EXPECT_TRUE(missing);
}

TEST_F(ConfigTest, BadListenAddressesAndNetworks) {
    std::string text = kValid;
    text.replace(text.find("127.0.0.1:2525"), 14, "localhost:99999");
    text.replace(text.find("192.168.10.0/24"), 15, "192.168.10.5/24");
    auto p = problems(text);
    ASSERT_EQ(p.size(), 2u) << p[0].to_string();
    EXPECT_EQ(p[0].key, "relay[0].networks");
    EXPECT_EQ(p[1].key, "smtp.listen");
    EXPECT_EQ(p[1].line, 23u);
}

TEST_F(ConfigTest, UnreadableKeystoreIsReported) {
    std::string text = kValid;
    text.replace(text.find("\"app.pem\""), 9, "\"/nonexistent/app.jks\"");
    auto p = problems(text);
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(p[0].key, "app.contoso.certificate.keystore");
    EXPECT_EQ(p[0].line, 8u);
    EXPECT_NE(p[0].message.find("/nonexistent/app.jks"), std::string::npos);
}

TEST_F(ConfigTest, CredentialRulesAndReferences) {
    std::string text = kValid;
    text.insert(text.find("[app.contoso.certificate]"), "client_secret_env = \"X\"\n");
    text.replace(text.find("app = \"contoso\"\nmailbox = \"scanner@contoso.com\"\n\n[[relay]]"), 15, "app = \"fabrikam\"");
    auto p = problems(text);
    bool both = false, ref = false;
    for (const auto& x : p) {
        if (x.key == "app.contoso.certificate" && x.message.find("not both") != std::string::npos) both = true;
        if (x.key == "account[0].app" && x.message.find("fabrikam") != std::string::npos) ref = true;
    }
    EXPECT_TRUE(both);
    EXPECT_TRUE(ref);
}

TEST_F(ConfigTest, DuplicateListenersAndSyntaxErrors) {
    std::string text = kValid;
    text += "\n[imap]\nlisten = [\"127.0.0.1:2525\"]\n";
    auto p = problems(text);
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(p[0].key, "imap.listen");
    auto syntax = problems("state_dir = \"/x\"\n[smtp\nlisten = 1\n");
    ASSERT_EQ(syntax.size(), 1u);
    EXPECT_EQ(syntax[0].line, 2u);
}

TEST(ConfigParsers, Values) {
    EXPECT_EQ(parse_size("150MB"), 150'000'000u);
    EXPECT_EQ(parse_size("35 MiB"), 35u * 1024 * 1024);
    EXPECT_EQ(parse_size("1024"), 1024u);
    EXPECT_FALSE(parse_size("lots"));
    EXPECT_FALSE(parse_size("10XB"));
    EXPECT_EQ(parse_duration("5d"), 5 * 86400);
    EXPECT_EQ(parse_duration("15m"), 900);
    EXPECT_EQ(parse_duration("90"), 90);
    EXPECT_EQ(parse_duration("12 h"), 12 * 3600);
    EXPECT_FALSE(parse_duration("soon"));
    EXPECT_FALSE(parse_duration("3w"));
    EXPECT_TRUE(parse_listen("[::1]:25"));
    EXPECT_TRUE(parse_listen("[::1]:25")->is_loopback());
    EXPECT_FALSE(parse_listen("0.0.0.0:25")->is_loopback());
    EXPECT_FALSE(parse_listen("127.0.0.1"));
    EXPECT_FALSE(parse_listen("example.com:25"));
    EXPECT_FALSE(parse_listen("127.0.0.1:0"));
    EXPECT_TRUE(is_guid("11111111-2222-3333-4444-555555555555"));
    EXPECT_FALSE(is_guid("11111111-2222-3333-4444-55555555555g"));
    EXPECT_TRUE(is_domain("contoso.onmicrosoft.com"));
    EXPECT_FALSE(is_domain("-bad.com"));
    EXPECT_TRUE(is_email("a.b+c@contoso.com"));
    EXPECT_FALSE(is_email("a b@contoso.com"));
    auto v6 = parse_network("fd00::/8");
    ASSERT_TRUE(v6);
    EXPECT_TRUE(v6->contains("fd12::1"));
    EXPECT_FALSE(v6->contains("fe80::1"));
    EXPECT_FALSE(v6->contains("10.0.0.1"));
}

TEST_F(ConfigTest, FromPolicyAndQueueSettings) {
    Config defaults = load(write(kValid));
    EXPECT_EQ(defaults.smtp.from_policy, "rewrite");
    EXPECT_EQ(defaults.queue.lifetime_s, 5 * 86400);
    EXPECT_EQ(defaults.queue.per_mailbox, 4);

    std::string text = kValid;
    text.insert(text.find("[log]"), "[queue]\nlifetime = \"2d\"\nretry_initial = \"10s\"\nretry_max = \"20m\"\n"
                                    "workers = 4\nper_mailbox = 2\n\n");
    text.insert(text.find("max_message_size"), "from_policy = \"reject\"\n");
    Config c = load(write(text));
    EXPECT_EQ(c.smtp.from_policy, "reject");
    EXPECT_EQ(c.queue.lifetime_s, 2 * 86400);
    EXPECT_EQ(c.queue.retry_initial_s, 10);
    EXPECT_EQ(c.queue.retry_max_s, 1200);
    EXPECT_EQ(c.queue.workers, 4);
    EXPECT_EQ(c.queue.per_mailbox, 2);

    std::string bad = kValid;
    bad.insert(bad.find("[log]"), "[queue]\nlifetime = \"forever\"\nper_mailbox = 8\n\n");
    bad.insert(bad.find("max_message_size"), "from_policy = \"spoof\"\n");
    auto p = problems(bad);
    ASSERT_EQ(p.size(), 3u);
    std::string all;
    for (const auto& x : p) all += x.to_string() + "\n";
    EXPECT_NE(all.find("smtp.from_policy: must be"), std::string::npos) << all;
    EXPECT_NE(all.find("queue.lifetime: must be a duration"), std::string::npos) << all;
    EXPECT_NE(all.find("queue.per_mailbox: must be between 1 and 4"), std::string::npos) << all;
}

TEST_F(ConfigTest, GraphTimeout) {
    EXPECT_EQ(load(write(kValid)).graph.timeout_ms, 120000);
    std::string text = kValid;
    text.insert(text.find("[log]"), "[graph]\ntimeout = \"3s\"\n\n");
    EXPECT_EQ(load(write(text)).graph.timeout_ms, 3000);
    for (const char* bad : {"\"0s\"", "\"2h\"", "\"soon\"", "true"}) {
        std::string t = kValid;
        t.insert(t.find("[log]"), std::string("[graph]\ntimeout = ") + bad + "\n\n");
        auto p = problems(t);
        ASSERT_EQ(p.size(), 1u) << bad;
        EXPECT_EQ(p[0].key, "graph.timeout") << bad;
    }
}

TEST_F(ConfigTest, ShutdownTimeout) {
    EXPECT_EQ(load(write(kValid)).shutdown_timeout_ms, 30000);
    EXPECT_EQ(load(write("shutdown_timeout = \"5s\"\n" + std::string(kValid))).shutdown_timeout_ms, 5000);
    EXPECT_EQ(load(write("shutdown_timeout = 0\n" + std::string(kValid))).shutdown_timeout_ms, 0);
    for (const char* bad : {"\"-1s\"", "\"2h\"", "\"soon\"", "true"}) {
        auto p = problems(std::string("shutdown_timeout = ") + bad + "\n" + kValid);
        ASSERT_EQ(p.size(), 1u) << bad;
        EXPECT_EQ(p[0].key, "shutdown_timeout") << bad;
    }
}

TEST_F(ConfigTest, ProxyProtocolListenersNeedTrustedSources) {
    std::string text = kValid;
    text.insert(text.find("[log]"), "[imap]\nlisten = [\"127.0.0.1:1143\", \"0.0.0.0:2143\"]\n"
                                    "proxy_protocol = [\"0.0.0.0:2143\"]\nproxy_trusted = [\"10.0.0.5/32\", \"fd00::/8\"]\n\n");
    Config c = load(write(text));
    ASSERT_EQ(c.imap.proxy_protocol.size(), 1u);
    EXPECT_EQ(c.imap.proxy_protocol[0].to_string(), "0.0.0.0:2143");
    ASSERT_EQ(c.imap.proxy_trusted.size(), 2u);
    EXPECT_TRUE(c.imap.proxy_trusted[0].contains("10.0.0.5"));
    EXPECT_FALSE(c.imap.proxy_trusted[0].contains("10.0.0.6"));
    EXPECT_TRUE(c.smtp.proxy_protocol.empty());  // opt-in per listener
    EXPECT_EQ(c.smtp.max_connections, 0u);        // the server's default

    auto one = [&](const std::string& section) {
        std::string t = kValid;
        t.insert(t.find("[log]"), section);
        auto p = problems(t);
        std::string all;
        for (const auto& x : p) all += x.to_string() + "\n";
        return all;
    };
    EXPECT_NE(one("[imap]\nmax_connections = 0\n\n").find("imap.max_connections: must be between"), std::string::npos);
    {
        std::string t = kValid;
        t.insert(t.find("[log]"), "[pop3]\nmax_connections = 5000\n\n");
        EXPECT_EQ(load(write(t)).pop3.max_connections, 5000u);
    }
    EXPECT_NE(one("[pop3]\nproxy_protocol = [\"0.0.0.0:2110\"]\nproxy_trusted = [\"10.0.0.5/32\"]\n\n")
                  .find("pop3.proxy_protocol: 0.0.0.0:2110 is not one of this section's listen"),
              std::string::npos);
    EXPECT_NE(one("[imap]\nlisten = [\"0.0.0.0:2143\"]\nproxy_protocol = [\"0.0.0.0:2143\"]\n\n")
                  .find("imap.proxy_trusted: required with proxy_protocol"),
              std::string::npos);
    EXPECT_NE(one("[imap]\nlisten = [\"0.0.0.0:2143\"]\nproxy_protocol = [\"0.0.0.0:2143\"]\n"
                  "proxy_trusted = [\"balancer\"]\n\n")
                  .find("imap.proxy_trusted: 'balancer' is not a network"),
              std::string::npos);
}

TEST_F(ConfigTest, ImapTrashExpunge) {
    EXPECT_EQ(load(write(kValid)).imap.trash_expunge, "permanent");
    std::string text = kValid;
    text.insert(text.find("[log]"), "[imap]\ntrash_expunge = \"recoverable\"\n\n");
    EXPECT_EQ(load(write(text)).imap.trash_expunge, "recoverable");
    std::string bad = kValid;
    bad.insert(bad.find("[log]"), "[imap]\ntrash_expunge = \"shred\"\n\n");
    auto p = problems(bad);
    ASSERT_EQ(p.size(), 1u);
    EXPECT_NE(p[0].to_string().find("imap.trash_expunge: must be"), std::string::npos) << p[0].to_string();
}

TEST_F(ConfigTest, KeyPasswordCertFileAndExtraClaims) {
    std::ofstream(dir_ + "/app.cer") << "cert\n";
    std::string text = kValid;
    text.insert(text.find("\n[[account]]"),
                "key_password_env = \"KEY_PW\"\ncert_file = \"app.cer\"\n[app.contoso.certificate.claims]\n"
                "purpose = \"graph \\\"bridge\\\"\"\nversion = 2\n");
    Config c = load(write(text));
    const auto& cert = *c.apps.at("contoso").certificate;
    EXPECT_EQ(cert.key_password.kind, gb::SecretSource::Kind::Env);
    EXPECT_EQ(cert.key_password.name, "KEY_PW");
    EXPECT_EQ(cert.cert_file, dir_ + "/app.cer");
    EXPECT_EQ(cert.extra_claims_json, R"({"purpose":"graph \"bridge\"","version":2})");

    std::string bad = kValid;
    bad.insert(bad.find("\n[[account]]"), "[app.contoso.certificate.claims]\naud = \"elsewhere\"\nlist = [1]\n");
    auto p = problems(bad);
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(p[0].key, "app.contoso.certificate.claims.aud");
    EXPECT_EQ(p[1].key, "app.contoso.certificate.claims.list");
}
