#include <gtest/gtest.h>

#include "graph/api/errors.h"

using namespace gb::graph;

TEST(GraphErrors, TokenErrorByCodesNotText) {
    auto e = parse_token_error(
        R"({"error":"invalid_client","error_description":"AADSTS700027: Client assertion failed signature validation.","error_codes":[700027],"trace_id":"t","correlation_id":"c"})");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->error, "invalid_client");
    EXPECT_TRUE(e->has_code(700027));
    EXPECT_FALSE(e->has_code(50012));
    EXPECT_EQ(e->trace_id, "t");
    EXPECT_FALSE(parse_token_error("<html>502</html>"));
    EXPECT_FALSE(parse_token_error(R"({"access_token":"x"})"));
}

TEST(GraphErrors, GraphErrorShape) {
    auto e = parse_graph_error(
        R"({"error":{"code":"ErrorSendAsDenied","message":"no","innerError":{"request-id":"r-1","date":"2026-01-01T00:00:00"}}})");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->code, "ErrorSendAsDenied");
    EXPECT_EQ(e->request_id, "r-1");
    EXPECT_FALSE(parse_graph_error(R"({"error":"x"})"));
    EXPECT_FALSE(parse_graph_error(""));
}

TEST(GraphErrors, Classification) {
    EXPECT_EQ(classify(429, ""), FailureKind::Throttled);
    EXPECT_EQ(classify(503, ""), FailureKind::Transient);
    EXPECT_EQ(classify(504, ""), FailureKind::Transient);
    EXPECT_EQ(classify(401, "InvalidAuthenticationToken"), FailureKind::Auth);
    EXPECT_EQ(classify(403, "ErrorSendAsDenied"), FailureKind::Permanent);
    // Missing consent or permission, or a scope leaving the mailbox out: an admin fixes it; mail waits.
    EXPECT_EQ(classify(403, "ErrorAccessDenied"), FailureKind::Auth);
    EXPECT_EQ(classify(403, "Authorization_RequestDenied"), FailureKind::Auth);
    EXPECT_EQ(classify(403, ""), FailureKind::Permanent);
    EXPECT_EQ(classify(400, "ErrorInvalidRecipients"), FailureKind::Permanent);
}

TEST(GraphErrors, RetryAfterSecondsAndDates) {
    EXPECT_EQ(parse_retry_after("7", 0), 7);
    EXPECT_EQ(parse_retry_after(" 120 ", 0), 120);
    EXPECT_FALSE(parse_retry_after("-3", 0));
    EXPECT_FALSE(parse_retry_after("soon", 0));
    EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111770), 7);
    EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111800), 0);
}
