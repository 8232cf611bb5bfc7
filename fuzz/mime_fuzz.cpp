// Fuzz target: MIME handling. The IMAP message side (graph/mail imap_message: MessageIndex, ENVELOPE,
// BODY / BODYSTRUCTURE, BODY[section] bytes, header fields, SEARCH text), the SMTP relay's header
// rewriting (mail::prepare) and the IMAP APPEND JSON create (mail::build_import_json).
//
// Input: [flags] section specs separated by ';' up to the first LF, then the message.
//   flags bit 0 small MessageIndex limits, bits 1-2 From policy (Keep, Rewrite, Reject),
//         bit 3 tiny Graph request size (prepare's Large mode, import's upload list), bit 4 read,
//         bit 5 flagged + draft, bit 6 tiny max_json
// Checked promises: nothing throws, import JSON is valid UTF-8 JSON, section bytes lie within the
// message, partial() never returns more than asked.
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <variant>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "graph/mail/imap_message.h"
#include "graph/mail/import_json.h"
#include "graph/mail/prepare.h"

namespace imap = gb::mail::imap;

namespace {

std::vector<std::string> split_specs(std::string_view line) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (out.size() < 8) {
        std::size_t semi = line.find(';', pos);
        out.emplace_back(line.substr(pos, semi == std::string_view::npos ? std::string_view::npos : semi - pos));
        if (semi == std::string_view::npos) break;
        pos = semi + 1;
    }
    return out;
}

void check_json(const std::string& json) {
    rapidjson::Document d;
    d.Parse<rapidjson::kParseValidateEncodingFlag>(json.c_str(), json.size());
    if (d.HasParseError())
        gb::fuzz::fail("mime: build_import_json produced invalid JSON",
                       std::string(rapidjson::GetParseError_En(d.GetParseError())) + " at " +
                           std::to_string(d.GetErrorOffset()) + ": " + json.substr(0, 2000));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // GMime's one-time setup outside any input, so it never looks like a per-input leak.
    (void)gb::mail::parse_address_list("a@b.test", 10);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    gb::fuzz::Bytes in(data, size);
    std::uint8_t flags = in.byte();
    std::string_view rest = in.rest();
    if (rest.size() > 256 * 1024) return 0;
    std::size_t lf = rest.find('\n');
    std::string_view spec_line = lf == std::string_view::npos ? rest : rest.substr(0, lf);
    std::string_view message = lf == std::string_view::npos ? std::string_view() : rest.substr(lf + 1);

    // --- IMAP FETCH data -----------------------------------------------------------------------
    std::string raw = imap::normalize_crlf(message);
    imap::Limits limits;
    if (flags & 1) {
        limits.max_depth = 3;
        limits.max_parts = 8;
        limits.max_header_lines = 5;
    }
    imap::MessageIndex index = imap::MessageIndex::build(raw, limits);
    gb::fuzz::check(!index.parts().empty(), "mime: MessageIndex without a root part");
    for (const auto& p : index.parts()) {
        gb::fuzz::check(p.header_begin <= p.header_end && p.header_end <= raw.size() &&
                            p.body_begin <= p.body_end && p.body_end <= raw.size(),
                        "mime: part byte range outside the message");
    }
    (void)imap::envelope(index, raw);
    (void)imap::bodystructure(index, raw, true);
    (void)imap::bodystructure(index, raw, false);
    for (const std::string& spec : split_specs(spec_line)) {
        auto section = imap::parse_section(spec);
        if (!section) continue;
        (void)index.find(section->part);
        std::string bytes = imap::section_bytes(index, raw, *section);
        std::uint64_t origin = spec.size() % 7;
        std::uint64_t count = 1 + spec.size() % 13;
        std::string part = imap::partial(bytes, origin, count);
        gb::fuzz::check(part.size() <= count, "mime: partial() longer than asked");
        (void)imap::section_label(*section);
        (void)imap::section_label(*section, origin);
    }
    for (const char* name : {"Subject", "From", "Message-ID", "content-type", ""})
        (void)imap::header_field(raw, name);
    std::string text = imap::text_for_search(index, raw, 64 * 1024);
    gb::fuzz::check(text.size() <= 64 * 1024, "mime: text_for_search() over max_bytes");

    // --- SMTP relay: prepare() with a fixed envelope ---------------------------------------------
    std::string mime(message);
    gb::mail::Envelope env;
    env.mailbox = "scanner@sandbox.test";
    env.reverse_path = "scanner@sandbox.test";
    env.recipients = {"bob@sandbox.test", "Alice@Sandbox.Test", "carol@other.test"};
    gb::mail::PreparePolicy policy;
    switch ((flags >> 1) & 3) {
        case 0: policy.from_policy = gb::mail::FromPolicy::Keep; break;
        case 1: policy.from_policy = gb::mail::FromPolicy::Reject; break;
        default: policy.from_policy = gb::mail::FromPolicy::Rewrite; break;
    }
    if (flags & 8) {
        policy.max_request_body = 600;
        policy.min_detach = 16;
    }
    policy.now = 1796000000;
    gb::mail::Prepared prepared = gb::mail::prepare(mime, env, policy);
    if (prepared.ok()) {
        std::size_t attached = 0;
        for (const auto& a : prepared.attachments) attached += a.bytes.size();
        (void)attached;
        (void)gb::mail::scan_headers(prepared.mime, 0, policy.max_header_block, policy.max_header_fields);
    }

    // --- IMAP APPEND: the JSON create -------------------------------------------------------------
    gb::mail::ImportOptions options;
    options.read = flags & 16;
    options.flagged = flags & 32;
    options.draft = flags & 32;
    options.last_verb = (flags & 16) ? std::optional<int>(102) : std::nullopt;
    options.categories = {"Red \"category\"", "$label1"};
    options.received = 1796000000;
    if (flags & 8) options.max_inline_attachment = 64;
    if (flags & 64) options.max_json = 2000;
    auto result = gb::mail::build_import_json(message, options);
    if (const auto* ok = std::get_if<gb::mail::ImportJson>(&result)) check_json(ok->json);
    if (gb::fuzz::verbose()) {
        std::fprintf(stderr, "BODYSTRUCTURE %s\nprepare: %s\nimport: %s\n",
                     imap::bodystructure(index, raw, true).c_str(),
                     prepared.ok() ? "ok" : prepared.error->message.c_str(),
                     std::holds_alternative<gb::mail::ImportJson>(result)
                         ? std::get<gb::mail::ImportJson>(result).json.substr(0, 300).c_str()
                         : std::get<gb::mail::ImportError>(result).message.c_str());
    }
    return 0;
}
