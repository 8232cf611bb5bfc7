// RFC 3464 bounce builder (see bounce.h).
#include "graph/mail/bounce.h"

#include "common/text.h"

#include <cstdio>
#include <ctime>
#include <string_view>

#include "auth/crypto.h"
#include "graph/mail/prepare.h"

namespace gb::mail {

namespace {

constexpr std::size_t kMaxOriginalHeaders = 64 * 1024;

// One printable ASCII line, at most `max` characters: CR/LF/controls become spaces, 8-bit becomes '?'.
std::string one_line(std::string_view s, std::size_t max = 400) {
    std::string out;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (out.size() >= max) break;
        if (c < 0x20 || c == 0x7f) {
            if (!out.empty() && out.back() != ' ') out.push_back(' ');
        } else {
            out.push_back(c >= 0x80 ? '?' : ch);
        }
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

std::string normalise_crlf(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 64);
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) out += '\r';
        if (s[i] == '\r' && (i + 1 >= s.size() || s[i + 1] != '\n')) {
            out += "\r\n";
            continue;
        }
        out += s[i];
    }
    return out;
}

// Fold a "Name: value" line at spaces so no line exceeds ~78 characters.
std::string fold(std::string line) {
    std::string out;
    while (line.size() > 78) {
        auto sp = line.rfind(' ', 76);
        if (sp == std::string::npos || sp < 10) break;
        out += line.substr(0, sp) + "\r\n ";
        line = line.substr(sp + 1);
    }
    return out + line + "\r\n";
}

}  // namespace

std::string make_bounce(const BounceInfo& info) {
    const std::int64_t now = info.now ? info.now : static_cast<std::int64_t>(std::time(nullptr));
    std::string notify = one_line(info.notify, 320);
    std::string domain =
        (notify.find('@') != std::string::npos) ? notify.substr(notify.rfind('@') + 1) : "localhost";
    std::string from = info.from.empty() ? "postmaster@" + domain : one_line(info.from, 320);

    // The original header block and subject, bounded.
    std::string headers, subject;
    if (auto block = scan_headers(info.original, 0, kMaxOriginalHeaders, 1000)) {
        headers = info.original.substr(0, block->fields_end);
        for (const auto& f : block->fields) {
            std::string name(f.name);
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (name == "subject" && subject.empty()) subject = one_line(f.raw_value(info.original), 200);
        }
    } else {
        headers = "X-Graphbridge-Note: the original header block exceeded the limits and is not included\r\n";
    }
    bool eight_bit = false;
    for (char c : headers) eight_bit = eight_bit || static_cast<unsigned char>(c) >= 0x80;
    while (!subject.empty() && subject.front() == ' ') subject.erase(0, 1);

    const std::string boundary = "=_gb_dsn_" + auth::hex_lower(auth::random_bytes(12));
    std::string graph_line;
    if (!info.graph_code.empty() || info.http_status)
        graph_line = "HTTP " + std::to_string(info.http_status) +
                     (info.graph_code.empty() ? "" : " " + info.graph_code) +
                     (info.graph_message.empty() ? "" : ": " + one_line(info.graph_message)) +
                     (info.request_id.empty() ? "" : " (request-id " + one_line(info.request_id, 100) + ")");

    std::string m;
    m += "From: Mail Delivery System <" + from + ">\r\n";
    m += "To: <" + notify + ">\r\n";
    m += fold("Subject: Undeliverable: " + (subject.empty() ? std::string("(no subject)") : subject));
    m += "Date: " + rfc5322_date(now) + "\r\n";
    m += "Message-ID: <" + auth::hex_lower(auth::random_bytes(16)) + "@" + domain + ">\r\n";
    m += "Auto-Submitted: auto-replied\r\n";
    m += "MIME-Version: 1.0\r\n";
    m += "Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"" + boundary + "\"\r\n";
    m += "\r\n";
    m += "This is a delivery status notification (RFC 3464).\r\n";

    // 1. Human-readable part.
    m += "\r\n--" + boundary + "\r\n";
    m += "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n";
    m += "Your message could not be delivered to the following recipient(s):\r\n\r\n";
    for (const auto& r : info.recipients) m += "    " + one_line(r, 320) + "\r\n";
    m += "\r\n";
    m += fold("Reason: " + (info.reason.empty() ? std::string("Microsoft Graph refused the message.")
                                                : one_line(info.reason)));
    if (!graph_line.empty()) m += fold("Microsoft Graph answered: " + graph_line);
    m += fold("Status: " + one_line(info.status, 16));
    m += "\r\nThe original message headers are attached.\r\n";

    // 2. Machine-readable part.
    m += "\r\n--" + boundary + "\r\n";
    m += "Content-Type: message/delivery-status\r\n\r\n";
    if (!info.original_envelope_id.empty())
        m += "Original-Envelope-Id: " + one_line(info.original_envelope_id, 100) + "\r\n";
    m += "Reporting-MTA: dns; " + one_line(info.reporting_mta, 255) + "\r\n";
    if (info.arrival) m += "Arrival-Date: " + rfc5322_date(info.arrival) + "\r\n";
    for (const auto& r : info.recipients) {
        m += "\r\n";
        m += "Final-Recipient: rfc822; " + one_line(r, 320) + "\r\n";
        m += "Action: failed\r\n";
        m += "Status: " + one_line(info.status, 16) + "\r\n";
        m +=
            fold("Diagnostic-Code: X-Graph; " +
                 (graph_line.empty() ? one_line(info.reason.empty() ? "refused" : info.reason) : graph_line));
        m += "Last-Attempt-Date: " + rfc5322_date(now) + "\r\n";
    }

    // 3. Original headers.
    m += "\r\n--" + boundary + "\r\n";
    m += "Content-Type: text/rfc822-headers\r\n";
    if (eight_bit) m += "Content-Transfer-Encoding: 8bit\r\n";
    m += "\r\n";
    std::string h = normalise_crlf(headers);
    // A header line that looks like our boundary cannot occur: the boundary carries 96 random bits.
    m += h;
    if (h.empty() || h.back() != '\n') m += "\r\n";
    m += "\r\n--" + boundary + "--\r\n";
    return m;
}

}  // namespace gb::mail
