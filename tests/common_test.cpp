#include <gtest/gtest.h>

#include <thread>

#include <sstream>

#include "common/metrics.h"
#include "common/log.h"
#include "common/secret.h"

using namespace gb;

TEST(Log, TextLineCarriesLevelComponentIdsAndFields) {
    auto& logger = log::Logger::instance();
    logger.configure(log::Level::Info, log::Format::Text);
    log::Context ctx{"C7", "Q42"};
    std::string line = logger.format_line(log::Level::Warn, "smtp", &ctx, "rejected", {{"ip", "10.0.0.1"}, {"why", "bad input"}},
                                          1'700'000'000'123);
    EXPECT_EQ(line, "2023-11-14T22:13:20.123Z warn smtp [C7] [Q42]: rejected ip=10.0.0.1 why=\"bad input\"");
}

TEST(Log, JsonLineIsEscaped) {
    auto& logger = log::Logger::instance();
    logger.configure(log::Level::Info, log::Format::Json);
    log::Context ctx{"C1", ""};
    std::string line = logger.format_line(log::Level::Info, "imap", &ctx, "say \"hi\"\n", {{"k", "a\x01"}}, 0);
    EXPECT_EQ(line, R"({"ts":"1970-01-01T00:00:00.000Z","level":"info","component":"imap","conn":"C1","msg":"say \"hi\"\n","k":"a\u0001"})");
    logger.configure(log::Level::Info, log::Format::Text);
}

TEST(Log, LevelsFilter) {
    std::ostringstream out;
    auto& logger = log::Logger::instance();
    logger.set_stream(&out);
    logger.configure(log::Level::Warn, log::Format::Text);
    log::info("x", "hidden");
    log::warn("x", "shown");
    logger.configure(log::Level::Debug, log::Format::Text);
    log::debug("x", "debug shown");
    logger.set_stream(nullptr);
    logger.configure(log::Level::Info, log::Format::Text);
    EXPECT_EQ(out.str().find("hidden"), std::string::npos);
    EXPECT_NE(out.str().find("shown"), std::string::npos);
    EXPECT_NE(out.str().find("debug shown"), std::string::npos);
}

TEST(Log, ClientTextTruncatedAndEscaped) {
    EXPECT_EQ(log::client_text("a\r\nb\x7f\"", 100), "a\\x0d\\x0ab\\x7f\\\"");
    std::string long_text(500, 'x');
    std::string cut = log::client_text(long_text, 10);
    EXPECT_EQ(cut, "xxxxxxxxxx...");
}

TEST(Log, RedactsAuthPayloads) {
    EXPECT_EQ(log::redact_command("AUTH PLAIN AHVzZXIAcGFzcw==\r\n"), "AUTH PLAIN [redacted]");
    EXPECT_EQ(log::redact_command("auth login dXNlcg=="), "auth login [redacted]");
    EXPECT_EQ(log::redact_command("a1 LOGIN alice s3cret"), "a1 LOGIN [redacted]");
    EXPECT_EQ(log::redact_command("a2 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA=="), "a2 AUTHENTICATE PLAIN [redacted]");
    EXPECT_EQ(log::redact_command("PASS hunter2"), "PASS [redacted]");
    EXPECT_EQ(log::redact_command("MAIL FROM:<a@b.c>"), "MAIL FROM:<a@b.c>");
    // A word that merely starts like a verb is not redacted.
    EXPECT_EQ(log::redact_command("a3 LOGINX foo"), "a3 LOGINX foo");
}

TEST(Secret, LoadsFromEnvAndFileWithoutLeakingInErrors) {
    ::setenv("GB_TEST_SECRET", "s3cr3t-value", 1);
    Secret s = load_secret({SecretSource::Kind::Env, "GB_TEST_SECRET"});
    EXPECT_EQ(s.reveal(), "s3cr3t-value");
    ::unsetenv("GB_TEST_SECRET");
    try {
        load_secret({SecretSource::Kind::Env, "GB_TEST_SECRET"});
        FAIL() << "expected an error";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("GB_TEST_SECRET"), std::string::npos);
    }
    std::string path = ::testing::TempDir() + "/secret.txt";
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs("file-secret\n", f);
    std::fclose(f);
    EXPECT_EQ(load_secret({SecretSource::Kind::File, path}).reveal(), "file-secret");
    EXPECT_THROW(load_secret({SecretSource::Kind::File, path + ".missing"}), std::runtime_error);
}

// gb::Secret must not be streamable or convertible to text: checked at compile time.
template <typename T>
concept Streamable = requires(std::ostream& os, const T& t) { os << t; };
static_assert(!Streamable<gb::Secret>);
static_assert(!std::is_convertible_v<gb::Secret, std::string_view>);
static_assert(!std::is_convertible_v<gb::Secret, std::string>);

#include "common/text.h"

TEST(Text, UrlEncodeAndDates) {
    EXPECT_EQ(gb::url_encode("a b/c@d.e~"), "a%20b%2Fc%40d.e~");
    EXPECT_EQ(gb::url_encode("a b@d", "@"), "a%20b@d");
    EXPECT_EQ(gb::utc_time(1'700'000'000), "2023-11-14 22:13:20Z");
    EXPECT_EQ(gb::rfc5322_date(1'700'000'000), "Tue, 14 Nov 2023 22:13:20 +0000");
    EXPECT_EQ(gb::rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
}

// ---- metrics (Prometheus text format) -------------------------------------------------------------------


TEST(Metrics, RendersFamiliesWithHelpTypeAndEscapedLabels) {
    gb::metrics::Registry r;
    auto& requests = r.counter("graphbridge_graph_requests_total", "Graph requests by route and status.",
                               {"route", "status"});
    requests.child({"/users/{id}/sendMail", "202"}).inc(3);
    requests.child({"/users/{id}/sendMail", "429"}).inc();
    auto& depth = r.gauge("graphbridge_queue_depth", "Messages waiting in the spool.");
    depth.child().set(7);
    r.family("graphbridge_sessions", "Open sessions by protocol.", gb::metrics::Type::Gauge);
    r.collector([](gb::metrics::Sink& s) {
        s.sample("graphbridge_sessions", {{"protocol", "imap"}}, 2);
        s.sample("graphbridge_sessions", {{"protocol", "we\"ird\\\n"}}, 0.5);
    });
    std::string text = r.render();
    EXPECT_EQ(text,
              "# HELP graphbridge_graph_requests_total Graph requests by route and status.\n"
              "# TYPE graphbridge_graph_requests_total counter\n"
              "graphbridge_graph_requests_total{route=\"/users/{id}/sendMail\",status=\"202\"} 3\n"
              "graphbridge_graph_requests_total{route=\"/users/{id}/sendMail\",status=\"429\"} 1\n"
              "# HELP graphbridge_queue_depth Messages waiting in the spool.\n"
              "# TYPE graphbridge_queue_depth gauge\n"
              "graphbridge_queue_depth 7\n"
              "# HELP graphbridge_sessions Open sessions by protocol.\n"
              "# TYPE graphbridge_sessions gauge\n"
              "graphbridge_sessions{protocol=\"imap\"} 2\n"
              "graphbridge_sessions{protocol=\"we\\\"ird\\\\\\n\"} 0.5\n");
}

TEST(Metrics, NamesAreCheckedAtRegistrationAndCountersAreExactUnderContention) {
    gb::metrics::Registry r;
    EXPECT_THROW(r.counter("bad name", "x"), std::invalid_argument);
    EXPECT_THROW(r.counter("ok_total", "x", {"__reserved"}), std::invalid_argument);
    EXPECT_THROW(r.counter("9lives", "x"), std::invalid_argument);
    auto& c = r.counter("ok_total", "x", {"k"});
    EXPECT_THROW(r.gauge("ok_total", "again"), std::invalid_argument);
    EXPECT_THROW(c.child({"a", "b"}), std::invalid_argument);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&c, t] {
            for (int i = 0; i < 100000; ++i) c.child({t % 2 ? "odd" : "even"}).inc();
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(c.child({"odd"}).value() + c.child({"even"}).value(), 800000u);
    EXPECT_NE(r.render().find("ok_total{k=\"odd\"} 400000\n"), std::string::npos);
    EXPECT_EQ(gb::metrics::format_value(0.25), "0.25");
    EXPECT_EQ(gb::metrics::format_value(1.0 / 0.0), "+Inf");
}
