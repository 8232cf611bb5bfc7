// Graph delivery of prepared messages (see deliverer.h).
#include "graph/mail/deliverer.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <ctime>

#include "auth/crypto.h"
#include "common/text.h"
#include "graph/api/errors.h"

namespace gb::mail {

namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

std::string users_path(std::string_view mailbox) {
    return "/v1.0/users/" + url_encode(mailbox, "@");
}

void add_prefer(http::Request& r) {
    r.headers.emplace_back("Prefer", "IdType=\"ImmutableId\"");
}

std::optional<std::string> json_string(const std::string& body, const char* name) {
    rapidjson::Document d;
    d.Parse(body.data(), body.size());
    if (d.HasParseError() || !d.IsObject()) return std::nullopt;
    auto it = d.FindMember(name);
    if (it == d.MemberEnd() || !it->value.IsString()) return std::nullopt;
    return std::string(it->value.GetString(), it->value.GetStringLength());
}

std::optional<bool> json_bool(const std::string& body, const char* name) {
    rapidjson::Document d;
    d.Parse(body.data(), body.size());
    if (d.HasParseError() || !d.IsObject()) return std::nullopt;
    auto it = d.FindMember(name);
    if (it == d.MemberEnd() || !it->value.IsBool()) return std::nullopt;
    return it->value.GetBool();
}

// The ids of the drafts in a message list ({"value":[{"id":..,"isDraft":true},...]}); sent messages and
// anything malformed are left out.
std::vector<std::string> draft_ids(const std::string& body) {
    std::vector<std::string> out;
    rapidjson::Document d;
    d.Parse(body.data(), body.size());
    if (d.HasParseError() || !d.IsObject()) return out;
    auto value = d.FindMember("value");
    if (value == d.MemberEnd() || !value->value.IsArray()) return out;
    for (const auto& m : value->value.GetArray()) {
        if (!m.IsObject()) continue;
        auto id = m.FindMember("id");
        auto draft = m.FindMember("isDraft");
        if (id != m.MemberEnd() && id->value.IsString() && id->value.GetStringLength() > 0 &&
            draft != m.MemberEnd() && draft->value.IsBool() && draft->value.GetBool())
            out.emplace_back(id->value.GetString(), id->value.GetStringLength());
    }
    return out;
}

void write_recipients(Writer& w, const char* key, const std::vector<Address>& list) {
    w.Key(key);
    w.StartArray();
    for (const auto& a : list) {
        w.StartObject();
        w.Key("emailAddress");
        w.StartObject();
        if (!a.name.empty()) {
            w.Key("name");
            w.String(a.name.data(), static_cast<rapidjson::SizeType>(a.name.size()));
        }
        w.Key("address");
        w.String(a.address.data(), static_cast<rapidjson::SizeType>(a.address.size()));
        w.EndObject();
        w.EndObject();
    }
    w.EndArray();
}

void write_str(Writer& w, const char* key, std::string_view v) {
    w.Key(key);
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

}  // namespace

std::string DeliveryResult::enhanced_status() const {
    if (outcome == Outcome::Delivered) return "2.0.0";
    if (outcome == Outcome::Transient) return http_status == 0 ? "4.4.1" : "4.4.2";
    if (graph_code == "ErrorInvalidRecipients" || graph_code == "ErrorInvalidRecipient") return "5.1.1";
    if (graph_code == "ErrorSendAsDenied" || http_status == 403) return "5.7.1";
    if (http_status == 413 || graph_code == "ErrorMessageSizeExceeded") return "5.3.4";
    if (http_status == 404) return "5.1.0";
    return "5.0.0";
}

namespace {

// One failed call turned into a result.
DeliveryResult failure(const http::GraphResult& r, std::string step) {
    DeliveryResult out;
    out.step = std::move(step);
    const auto& resp = r.response;
    out.http_status = static_cast<int>(resp.status);
    out.request_id = resp.header("request-id").value_or("");
    if (r.token_error) {
        out.outcome = Outcome::Transient;
        out.detail = out.step + ": no access token: " + r.token_error->explanation;
        return out;
    }
    if (resp.status == 0) {
        out.outcome = Outcome::Transient;
        out.detail = out.step + ": " + (resp.error.empty() ? "transport failure" : resp.error);
        return out;
    }
    if (auto e = graph::parse_graph_error(resp.body)) {
        out.graph_code = e->code;
        out.graph_message = e->message;
        if (out.request_id.empty()) out.request_id = e->request_id;
    }
    if (auto ra = resp.header("retry-after"))
        out.retry_after = graph::parse_retry_after(*ra, static_cast<std::int64_t>(std::time(nullptr)));
    switch (graph::classify(static_cast<int>(resp.status), out.graph_code)) {
        case graph::FailureKind::Throttled:
        case graph::FailureKind::Transient:
        case graph::FailureKind::Auth:
            out.outcome = Outcome::Transient;
            break;
        case graph::FailureKind::Permanent:
            out.outcome = Outcome::Permanent;
            break;
    }
    out.detail = out.step + ": HTTP " + std::to_string(resp.status) +
                 (out.graph_code.empty() ? "" : " " + out.graph_code) +
                 (out.graph_message.empty() ? "" : ": " + out.graph_message);
    return out;
}

}  // namespace

Deliverer::Deliverer(http::GraphClient& graph, http::Client& upload_http, DeliveryOptions options)
    : graph_(graph), upload_(upload_http), options_(options) {}

DeliveryResult Deliverer::store_in_inbox(std::string_view mailbox, const std::string& mime) {
    http::Request r;
    r.method = "POST";
    r.url = users_path(mailbox) + "/mailFolders/inbox/messages";
    r.headers.emplace_back("Content-Type", "text/plain");
    add_prefer(r);
    r.body = auth::base64_encode(mime);
    r.timeout_ms = options_.timeout_ms;
    auto res = graph_.call(std::move(r));
    std::vector<std::string> ids;
    if (auto id = res.response.header("request-id")) ids.push_back(*id);
    if (res.response.status != 201) {
        auto out = failure(res, "store in inbox");
        out.request_ids = std::move(ids);
        return out;
    }
    DeliveryResult out;
    out.outcome = Outcome::Delivered;
    out.http_status = 201;
    out.request_ids = std::move(ids);
    return out;
}

std::optional<DeliveryResult> attach_file(const GraphCall& call, http::Client& upload, const std::string& msg,
                                          const Attachment& a, const DeliveryOptions& options,
                                          std::vector<std::string>& ids) {
    if (a.bytes.size() <= options.simple_attachment_max) {
        rapidjson::StringBuffer sb;
        Writer w(sb);
        w.StartObject();
        write_str(w, "@odata.type", "#microsoft.graph.fileAttachment");
        write_str(w, "name", a.name);
        write_str(w, "contentType", a.content_type);
        write_str(w, "contentBytes", auth::base64_encode(a.bytes));
        w.Key("isInline");
        w.Bool(a.is_inline);
        if (!a.content_id.empty()) write_str(w, "contentId", a.content_id);
        w.EndObject();
        http::Request r;
        r.method = "POST";
        r.url = msg + "/attachments";
        r.headers.emplace_back("Content-Type", "application/json");
        r.body = sb.GetString();
        auto res = call(std::move(r));
        if (res.response.status != 201)
            return failure(res, "add attachment '" + a.name + "'");
        return std::nullopt;
    }
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("AttachmentItem");
    w.StartObject();
    write_str(w, "attachmentType", "file");
    write_str(w, "name", a.name);
    w.Key("size");
    w.Uint64(a.bytes.size());
    write_str(w, "contentType", a.content_type);
    w.Key("isInline");
    w.Bool(a.is_inline);
    if (!a.content_id.empty()) write_str(w, "contentId", a.content_id);
    w.EndObject();
    w.EndObject();
    http::Request r;
    r.method = "POST";
    r.url = msg + "/attachments/createUploadSession";
    r.headers.emplace_back("Content-Type", "application/json");
    r.body = sb.GetString();
    auto res = call(std::move(r));
    if (res.response.status != 201 && res.response.status != 200)
        return failure(res, "create upload session for '" + a.name + "'");
    auto url = json_string(res.response.body, "uploadUrl");
    if (!url || url->empty()) {
        auto d = failure(res, "create upload session");
        d.outcome = Outcome::Transient;
        d.detail = "create upload session: no uploadUrl in the response";
        return d;
    }
    const std::size_t total = a.bytes.size();
    for (std::size_t off = 0; off < total;) {
        std::size_t len = std::min(options.upload_chunk, total - off);
        http::Request put;
        put.method = "PUT";
        put.url = *url;  // pre-authenticated: no Authorization header, URL used as given
        put.headers.emplace_back("Content-Type", "application/octet-stream");
        put.headers.emplace_back("Content-Range", "bytes " + std::to_string(off) + "-" +
                                                      std::to_string(off + len - 1) + "/" +
                                                      std::to_string(total));
        put.body = a.bytes.substr(off, len);
        put.timeout_ms = options.timeout_ms;
        http::GraphResult up;
        up.response = upload.perform(put);
        if (auto id = up.response.header("request-id")) ids.push_back(*id);
        bool last = off + len == total;
        long st = up.response.status;
        if (!(last ? (st == 201 || st == 200) : st == 200))
            return failure(up, "upload '" + a.name + "' at byte " + std::to_string(off));
        off += len;
    }
    return std::nullopt;
}

DeliveryResult Deliverer::deliver(const Prepared& message, const Drafts* drafts) {
    std::vector<std::string> ids;
    auto call = [&](http::Request r) {
        add_prefer(r);
        r.timeout_ms = options_.timeout_ms;
        auto res = graph_.call(std::move(r));
        if (auto id = res.response.header("request-id")) ids.push_back(*id);
        return res;
    };
    auto finish = [&](DeliveryResult d) {
        d.request_ids = ids;
        return d;
    };
    if (!message.ok()) {
        DeliveryResult d;
        d.outcome = Outcome::Permanent;
        d.step = "prepare";
        d.detail = message.error->message;
        return d;
    }
    const std::string base = users_path(message.mailbox);

    if (message.mode == Mode::Mime) {
        http::Request r;
        r.method = "POST";
        r.url = base + "/sendMail";
        r.headers.emplace_back("Content-Type", "text/plain");
        r.body = auth::base64_encode(message.mime);
        auto res = call(std::move(r));
        if (res.response.status != 202) return finish(failure(res, "sendMail"));
        DeliveryResult d;
        d.outcome = Outcome::Delivered;
        d.http_status = 202;
        d.step = "sendMail";
        return finish(d);
    }

    // Draft path. First the draft an interrupted attempt left (its id was recorded before the crash):
    // no longer a draft = that attempt's send went through; still a draft = delete it and start over;
    // gone = start over; unknown = try later (never risk sending twice or deleting a sent copy).
    // Whether a draft we made is still a draft (nullopt: could not tell), and the answer that said so.
    auto still_draft = [&](const std::string& path, http::GraphResult& answer) -> std::optional<bool> {
        http::Request q;
        q.method = "GET";
        q.url = path + "?$select=isDraft";
        answer = call(std::move(q));
        if (answer.response.status != 200) return std::nullopt;
        return json_bool(answer.response.body, "isDraft");
    };
    // Delivered although this attempt did not see the 202: the draft was sent (no longer a draft; with
    // immutable ids its id now names the Sent Items copy).
    auto sent_already = [&](std::string why) {
        DeliveryResult d;
        d.outcome = Outcome::Delivered;
        d.http_status = 202;
        d.step = "send draft";
        d.detail = std::move(why);
        return finish(d);
    };
    if (drafts && !drafts->previous.empty()) {
        const std::string old_msg = base + "/messages/" + url_encode(drafts->previous);
        http::GraphResult st;
        auto is_draft = still_draft(old_msg, st);
        if (is_draft && !*is_draft)
            return sent_already("sent by an earlier, interrupted attempt (its draft is no longer a draft)");
        if (is_draft && *is_draft) {
            http::Request r;
            r.method = "DELETE";
            r.url = old_msg;
            auto res = call(std::move(r));
            if (res.response.status != 204 && res.response.status != 200 && res.response.status != 404)
                return finish(failure(res, "delete the interrupted attempt's draft"));
        } else if (st.response.status != 404) {
            return finish(failure(st, "look up the interrupted attempt's draft"));
        }
    }
    if (drafts && drafts->previous.empty() && drafts->check_orphans && message.message_id_made) {
        http::Request q;
        q.method = "GET";
        q.url = base + "/mailFolders/drafts/messages?$select=id,isDraft&$top=10&$filter=" +
                url_encode(graph::internet_message_id_filter(message.message_id));
        auto found = call(std::move(q));
        if (found.response.status == 200) {
            for (const auto& id : draft_ids(found.response.body)) {
                http::Request r;
                r.method = "DELETE";
                r.url = base + "/messages/" + url_encode(id);
                auto res = call(std::move(r));
                if (res.response.status != 204 && res.response.status != 200 && res.response.status != 404)
                    return finish(failure(res, "delete a draft an interrupted attempt left"));
            }
        } else if (found.response.status == 0 || found.response.status == 429 || found.response.status >= 500) {
            return finish(failure(found, "look for drafts an interrupted attempt left"));
        }
        // Any other answer (a 400 for the filter): send anyway; at worst an orphan stays in Drafts.
    }
    std::string draft_id;
    {
        http::Request r;
        r.method = "POST";
        r.url = base + "/messages";
        r.headers.emplace_back("Content-Type", "text/plain");
        r.body = auth::base64_encode(message.mime);
        auto res = call(std::move(r));
        if (res.response.status != 201) return finish(failure(res, "create draft"));
        auto id = json_string(res.response.body, "id");
        if (!id || id->empty()) {
            auto d = failure(res, "create draft");
            d.outcome = Outcome::Transient;
            d.detail = "create draft: the 201 response carries no message id";
            return finish(d);
        }
        draft_id = *id;
        if (drafts && drafts->created) drafts->created(draft_id);
    }
    const std::string msg = base + "/messages/" + url_encode(draft_id);
    auto abandon = [&](DeliveryResult d) {
        http::Request r;
        r.method = "DELETE";
        r.url = msg;
        auto res = call(std::move(r));
        d.draft_deleted =
            res.response.status == 204 || res.response.status == 200 || res.response.status == 404;
        return finish(d);
    };

    if (message.patch_recipients) {
        rapidjson::StringBuffer sb;
        Writer w(sb);
        w.StartObject();
        write_recipients(w, "toRecipients", message.to);
        write_recipients(w, "ccRecipients", message.cc);
        write_recipients(w, "bccRecipients", message.bcc);
        w.EndObject();
        http::Request r;
        r.method = "PATCH";
        r.url = msg;
        r.headers.emplace_back("Content-Type", "application/json");
        r.body = sb.GetString();
        auto res = call(std::move(r));
        if (res.response.status != 200) return abandon(failure(res, "patch recipients"));
    }

    for (const auto& a : message.attachments)
        if (auto failed = attach_file(call, upload_, msg, a, options_, ids)) return abandon(*failed);

    http::Request r;
    r.method = "POST";
    r.url = msg + "/send";
    auto res = call(std::move(r));
    if (res.response.status != 202) {
        DeliveryResult failed = failure(res, "send draft");
        if (failed.outcome == Outcome::Permanent) return abandon(failed);
        // A timeout, a reset or a 5xx can come after Exchange took the message. Look at the draft before
        // anything else: sent (no longer a draft; its immutable id now names the Sent Items copy) means
        // delivered; still a draft means not sent; unknown means keep it and retry later (at least
        // once: a duplicate is possible, a loss is not). Deleting it blindly could delete the sent copy.
        http::GraphResult st;
        auto is_draft = still_draft(msg, st);
        if (is_draft && !*is_draft)
            return sent_already("sent despite " + failed.detail + " (the draft was no longer a draft)");
        if (is_draft && *is_draft) return abandon(failed);
        return finish(failed);
    }
    DeliveryResult d;
    d.outcome = Outcome::Delivered;
    d.http_status = 202;
    d.step = "send draft";
    return finish(d);
}

}  // namespace gb::mail
