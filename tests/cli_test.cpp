// The graphbridge binary as an admin uses it: config check, passwd, and the sandbox command with a
// real curl against its token endpoint.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "auth/password.h"

namespace fs = std::filesystem;

namespace {

// Paths are compiled in, so the test never runs some other program of the same name from PATH.
std::string binary() { return GB_BINARY_PATH; }
std::string source_dir() { return GB_SOURCE_DIR_PATH; }

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct CliRun {
    int status = -1;
    std::string out, err;
};

CliRun run(const std::string& args, const std::string& input = "") {
    std::string dir = ::testing::TempDir();
    std::string in = dir + "/cli_in", out = dir + "/cli_out", err = dir + "/cli_err";
    std::ofstream(in) << input;
    std::string cmd = binary() + " " + args + " <" + in + " >" + out + " 2>" + err;
    int rc = std::system(cmd.c_str());
    CliRun r;
    r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

std::string example() { return source_dir() + "/conf/graphbridge.example.toml"; }

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

}  // namespace

TEST(Cli, ExampleConfigPasses) {
    CliRun r = run("config check " + example());
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find(": ok"), std::string::npos);
}

TEST(Cli, MisspeltKeyFailsNamingLineAndKey) {
    std::string text = slurp(example());
    auto pos = text.find("max_message_size");
    ASSERT_NE(pos, std::string::npos);
    int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(pos), '\n'));
    text.replace(pos, 16, "max_mesage_size");
    // Same directory, so the relative keystore path still resolves.
    std::string copy = source_dir() + "/conf/.misspelt-" + std::to_string(::getpid()) + ".toml";
    std::ofstream(copy) << text;
    CliRun r = run("config check " + copy);
    fs::remove(copy);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find(copy + ":" + std::to_string(line) + ": smtp.max_mesage_size: unknown key"), std::string::npos)
        << r.err;
}

TEST(Cli, PasswdPrintsAVerifiableHash) {
    CliRun r = run("passwd", "correct horse battery staple\n");
    ASSERT_EQ(r.status, 0) << r.err;
    auto start = r.out.find("\"$scrypt$");
    ASSERT_NE(start, std::string::npos) << r.out;
    std::string hash = r.out.substr(start + 1, r.out.rfind('"') - start - 1);
    EXPECT_TRUE(gb::auth::verify_password("correct horse battery staple", hash));
    EXPECT_FALSE(gb::auth::verify_password("correct horse battery stapler", hash));
    EXPECT_EQ(r.out.find("correct horse"), std::string::npos);  // the password is never echoed
    EXPECT_NE(run("passwd", "").status, 0);
}

TEST(Cli, UnknownCommandsAndOptionsFail) {
    EXPECT_EQ(run("frobnicate").status, 2);
    EXPECT_EQ(run("sandbox --colour blue").status, 2);
    EXPECT_EQ(run("config check").status, 2);
    EXPECT_EQ(run("--version").status, 0);
}

TEST(Cli, HelpAfterAnyCommandPrintsTheUsageAndRunsNothing) {
    for (const char* args : {"sandbox --help", "passwd --help", "cert new --help", "serve -h", "queue list --help"}) {
        auto r = run(args, "a-password-that-must-not-be-read\n");
        EXPECT_EQ(r.status, 0) << args << ": " << r.err;
        EXPECT_NE(r.out.find("sandbox [--dir DIR]"), std::string::npos) << args << ": " << r.out;
        EXPECT_EQ(r.out.find("password_hash = \"$scrypt"), std::string::npos) << args << ": passwd ran";
    }
}

TEST(Cli, SandboxStartsAnswersCurlAndStopsOnCtrlC) {
    std::string dir = ::testing::TempDir() + "/gb_cli_sandbox_" + std::to_string(::getpid());
    fs::remove_all(dir);
    std::string out = dir + ".out";
    int port = free_port();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        FILE* f = std::freopen(out.c_str(), "w", stdout);
        (void)f;
        std::string bin = binary(), p = std::to_string(port);
        ::execl(bin.c_str(), bin.c_str(), "sandbox", "--dir", dir.c_str(), "--port", p.c_str(), nullptr);
        ::_exit(127);
    }
    std::string printed;
    for (int i = 0; i < 600 && printed.find("Press Ctrl-C") == std::string::npos; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        printed = slurp(out);
    }
    ASSERT_NE(printed.find("Press Ctrl-C"), std::string::npos) << printed;
    EXPECT_NE(printed.find("token endpoint  https://127.0.0.1:" + std::to_string(port)), std::string::npos);
    EXPECT_NE(printed.find("alice"), std::string::npos);
    EXPECT_TRUE(fs::exists(dir + "/graphbridge.toml"));

    // The generated config is valid.
    CliRun check = run("config check " + dir + "/graphbridge.toml");
    EXPECT_EQ(check.status, 0) << check.err;

    // A forged assertion, with the real curl, gets the identity platform's error JSON.
    auto tenant_pos = printed.find("tenant id       ");
    std::string tenant = printed.substr(tenant_pos + 16, 36);
    auto client_pos = printed.find("client id       ");
    std::string client = printed.substr(client_pos + 16, 36);
    std::string curl_out = dir + ".curl";
    std::string cmd = "curl -s --cacert " + dir + "/ca.pem https://127.0.0.1:" + std::to_string(port) + "/" + tenant +
                      "/oauth2/v2.0/token -d grant_type=client_credentials -d client_id=" + client +
                      " --data-urlencode scope=https://127.0.0.1:" + std::to_string(port) + "/.default"
                      " -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                      " -d client_assertion=eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsIng1dCI6ImhPQmNIWmk4NDZWQ0hTSmJGQXMyNkdvOVZUUSJ9.eyJhdWQiOiJmb3JnZWQiLCJpc3MiOiJmb3JnZWQiLCJzdWIiOiJmb3JnZWQiLCJqdGkiOiIxIiwiZXhwIjo0MTAyNDQ0ODAwfQ.bm90LWEtc2lnbmF0dXJl"
                      " >" + curl_out;
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    std::string body = slurp(curl_out);
    EXPECT_NE(body.find("\"error\":\"invalid_client\""), std::string::npos) << body;
    EXPECT_NE(body.find("AADSTS"), std::string::npos) << body;
    EXPECT_NE(body.find("\"error_codes\":[700027]"), std::string::npos) << body;

    // The bridge runs too: a message over SMTP reaches the envelope recipients through Graph.
    auto smtp_pos = printed.find("SMTP on 127.0.0.1:");
    ASSERT_NE(smtp_pos, std::string::npos) << printed;
    int smtp_port = std::atoi(printed.c_str() + smtp_pos + 18);
    std::string e2e_out = dir + ".e2e";
    std::string e2e = "python3 " + source_dir() + "/tests/integration/e2e_relay.py " + dir + " " +
                      std::to_string(port) + " " + std::to_string(smtp_port) + " >" + e2e_out + " 2>&1";
    EXPECT_EQ(std::system(e2e.c_str()), 0) << slurp(e2e_out);
    std::string result = slurp(e2e_out);
    EXPECT_NE(result.find("\"bob\": 1"), std::string::npos) << result;
    EXPECT_NE(result.find("\"scanner\": 1"), std::string::npos) << result;  // envelope-only: Bcc
    EXPECT_NE(result.find("\"bob_has_bcc_header\": false"), std::string::npos) << result;
    EXPECT_NE(result.find("\"bob_qp_intact\": true"), std::string::npos) << result;
    EXPECT_NE(result.find("\"spoof_code\": 553"), std::string::npos) << result;
    fs::remove(e2e_out);

    ::kill(pid, SIGINT);
    int status = 0;
    pid_t done = 0;
    for (int i = 0; i < 200 && done == 0; ++i) {
        done = ::waitpid(pid, &status, WNOHANG);
        if (done == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (done == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        FAIL() << "sandbox did not stop on SIGINT";
    }
    EXPECT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    fs::remove_all(dir);
    fs::remove(out);
    fs::remove(curl_out);
}

TEST(Cli, CertNewWritesWhatThePortalAndJavaNeedAndCertShowAgrees) {
    std::string dir = ::testing::TempDir() + "/gb_cert_new_" + std::to_string(::getpid());
    fs::remove_all(dir);
    CliRun made = run("cert new --out " + dir + " --cn scanner-app --days 400");
    ASSERT_EQ(made.status, 0) << made.err;
    for (const char* f : {"graphbridge.pem", "graphbridge.cer", "graphbridge.p12", "graphbridge.p12.password"})
        EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
    auto perms = fs::status(dir + "/graphbridge.pem").permissions();
    EXPECT_EQ(perms & (fs::perms::group_all | fs::perms::others_all), fs::perms::none);

    // The printed portal thumbprint is openssl's SHA-1 fingerprint of the .cer to upload.
    std::string fp_file = dir + "/fp";
    ASSERT_EQ(std::system(("openssl x509 -inform DER -in " + dir + "/graphbridge.cer -noout -fingerprint -sha1 | "
                           "cut -d= -f2 | tr -d ':\\n' >" + fp_file).c_str()),
              0);
    std::string fp = slurp(fp_file);
    ASSERT_EQ(fp.size(), 40u);
    EXPECT_NE(made.out.find("Thumbprint (Azure portal)  " + fp), std::string::npos) << made.out;

    // cert show on the .p12 finds the same certificate.
    CliRun shown = run("cert show " + dir + "/graphbridge.p12 --password-file " + dir + "/graphbridge.p12.password");
    ASSERT_EQ(shown.status, 0) << shown.err;
    EXPECT_NE(shown.out.find(fp), std::string::npos) << shown.out;
    EXPECT_NE(shown.out.find("subject CN                 scanner-app"), std::string::npos) << shown.out;

    // Java reads the .p12 too (platform guides use keytool).
    if (std::system("command -v keytool >/dev/null 2>&1") == 0) {
        std::string cmd = "keytool -list -keystore " + dir + "/graphbridge.p12 -storetype PKCS12 -storepass \"$(cat " +
                          dir + "/graphbridge.p12.password)\" >/dev/null 2>&1";
        EXPECT_EQ(std::system(cmd.c_str()), 0);
    }

    // Never overwrites, and a wrong password is a one-line error.
    EXPECT_EQ(run("cert new --out " + dir).status, 1);
    std::ofstream(dir + "/wrong") << "nope";
    CliRun wrong = run("cert show " + dir + "/graphbridge.p12 --password-file " + dir + "/wrong");
    EXPECT_EQ(wrong.status, 1);
    EXPECT_EQ(std::count(wrong.err.begin(), wrong.err.end(), '\n'), 1) << wrong.err;
    fs::remove_all(dir);
}
