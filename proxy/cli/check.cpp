// `graphbridge check --config FILE`: the connectivity test an admin runs after setup. For each app:
// credential loaded -> thumbprints and validity -> token obtained -> each configured mailbox reachable
// -> send and read permissions present. Each step prints ok or FAILED with the cause and the fix.
#include "proxy/cli/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <set>

#include "auth/crypto.h"
#include "common/text.h"
#include "graph/api/errors.h"
#include "graph/http/http_client.h"
#include "graph/http/token_transport.h"
#include "proxy/config/config.h"
#include "proxy/runtime/apps.h"

namespace gb::cli {
namespace {


struct Reporter {
    std::ostream& out;
    int ok = 0, failed = 0;
    void pass(const std::string& step, const std::string& detail) {
        ++ok;
        out << fmt::format("  [ok]     {}: {}\n", step, detail);
    }
    void fail(const std::string& step, const std::string& detail) {
        ++failed;
        out << fmt::format("  [FAILED] {}: {}\n", step, detail);
    }
    void note(const std::string& text) { out << "           " << text << "\n"; }
};

bool has_role(const std::vector<std::string>& roles, std::string_view r) {
    return std::find(roles.begin(), roles.end(), r) != roles.end();
}

}  // namespace

int run_check(const std::string& config_path, std::ostream& out, std::ostream& err) {
    config::Config cfg;
    try {
        cfg = config::load(config_path);
    } catch (const config::ConfigError& e) {
        for (const auto& p : e.problems()) err << p.to_string() << "\n";
        return 1;
    }
    out << "graphbridge check: " << config_path << "\n";
    bool wants_read = !cfg.imap.listen.empty() || !cfg.imap.tls_listen.empty() || !cfg.pop3.listen.empty() ||
                      !cfg.pop3.tls_listen.empty();
    Reporter r{out};
    for (const auto& [name, app] : cfg.apps) {
        out << fmt::format("\napp {} (client {}, tenant {})\n", name, app.client_id, app.tenant_id);
        // Mailboxes this app serves.
        std::set<std::string> mailboxes;
        for (const auto& a : cfg.accounts)
            if (a.app == name) mailboxes.insert(a.mailbox);
        for (const auto& rl : cfg.relays)
            if (rl.app == name) mailboxes.insert(rl.mailbox);

        // 1. Credential.
        runtime::LoadedApp loaded;
        try {
            loaded = runtime::load_app(app);
        } catch (const std::exception& e) {
            r.fail("credential", e.what());
            continue;
        }
        if (loaded.credential) {
            const auto& c = *loaded.credential;
            std::int64_t not_after = auth::cert_not_after(c.cert.get());
            std::int64_t days = (not_after - std::time(nullptr)) / 86400;
            r.pass("credential", fmt::format("{} ({}), alias '{}', RSA {} bits", app.certificate->keystore,
                                             auth::to_string(c.format), c.alias,
                                             auth::key_bits(c.key.get())));
            r.note(fmt::format("thumbprint (SHA-1, as the portal shows it) {}", c.sha1_hex()));
            r.note(fmt::format("SHA-256 {}", auth::hex_upper(auth::cert_sha256_thumbprint(c.cert.get()))));
            r.note(fmt::format("valid {} to {} ({} days left); the assertion uses {} with {}",
                               utc_time(auth::cert_not_before(c.cert.get())), utc_time(not_after), days,
                               app.certificate->algorithm, app.certificate->thumbprint));
            for (const auto& w : loaded.warnings) r.note("warning: " + w);
        } else {
            r.pass("credential", "client secret from " + app.client_secret.describe());
        }

        // 2. Token.
        http::ClientOptions options;
        options.ca_file = app.ca_file;
        std::unique_ptr<http::Client> client;
        try {
            client = std::make_unique<http::Client>(options);
        } catch (const std::exception& e) {
            r.fail("token", e.what());
            continue;
        }
        auth::TokenBroker broker(std::move(loaded.broker), http::make_token_transport(*client, 20000));
        auto result = broker.get();
        if (auto* f = std::get_if<auth::TokenFailure>(&result)) {
            r.fail("token", f->explanation);
            continue;
        }
        const auto& token = std::get<auth::Token>(result);
        r.pass("token", fmt::format("from {}, expires {} (in {} min)", app.token_endpoint, utc_time(token.expires_at),
                                    (token.expires_at - std::time(nullptr)) / 60));
        std::string roles;
        for (const auto& ro : token.roles) roles += (roles.empty() ? "" : ", ") + ro;
        r.note("roles: " + (roles.empty() ? std::string("(none)") : roles));

        // 3. Permissions, from the token's roles.
        const std::string consent_fix =
            "grant admin consent for the Microsoft Graph application permissions (App registrations → API "
            "permissions → Grant admin consent)";
        if (token.roles.empty()) {
            r.fail("permissions", "the token carries no application roles: admin consent is missing: " + consent_fix);
        } else {
            if (has_role(token.roles, "Mail.Send")) r.pass("send permission", "Mail.Send granted");
            else r.fail("send permission", "Mail.Send is not granted: add the application permission Mail.Send and " + consent_fix);
            if (has_role(token.roles, "Mail.ReadWrite")) r.pass("read permission", "Mail.ReadWrite granted");
            else if (wants_read)
                r.fail("read permission", "Mail.ReadWrite is not granted but IMAP/POP3 listeners are configured: add "
                                          "the application permission Mail.ReadWrite and " + consent_fix);
            else r.note("Mail.ReadWrite not granted (only needed for IMAP/POP3)");
        }

        // 4. Each mailbox, with a cheap Graph call.
        for (const auto& mb : mailboxes) {
            http::Request req;
            req.url = app.graph_url + "/v1.0/users/" + url_encode(mb, "@") + "/mailFolders/inbox?$select=id";
            req.headers = {{"Authorization", "Bearer " + token.access_token}, {"Accept", "application/json"}};
            req.timeout_ms = 20000;
            http::Response res = client->perform(req);
            std::string step = "mailbox " + mb;
            if (res.status == 200) {
                r.pass(step, "reachable (GET /users/{id}/mailFolders/inbox)");
                continue;
            }
            auto ge = graph::parse_graph_error(res.body);
            std::string code = ge ? ge->code : "";
            if (res.status == 0) r.fail(step, "cannot reach Graph at " + app.graph_url + ": " + res.error);
            else if (res.status == 404 || code == "ErrorInvalidUser" || code == "MailboxNotEnabledForRESTAPI")
                r.fail(step, "no such mailbox in tenant " + app.tenant_id + " (" + code + "): check the address in the config");
            else if ((res.status == 401 || res.status == 403) && token.roles.empty())
                r.fail(step, "Graph refused the token because it has no roles: " + consent_fix);
            else if (res.status == 403 && !has_role(token.roles, "Mail.ReadWrite") && !has_role(token.roles, "Mail.Read"))
                // Mail.Send alone lets the app send but not read: nothing cheaper than a message tests it.
                r.note(step + ": not checked: reading it needs Mail.ReadWrite, and Mail.Send alone cannot be tested "
                              "without sending (swaks through the bridge does)");
            else if (res.status == 403)
                r.fail(step, "access denied (" + code + "): an application access policy or RBAC for Applications "
                             "scope excludes this mailbox; add it to the scope (Test-ServicePrincipalAuthorization)");
            else if (res.status == 401)
                r.fail(step, "Graph rejected the token (" + code + "): check that graph_url and scope are the same cloud");
            else r.fail(step, fmt::format("HTTP {} {}", res.status, code));
        }
    }
    out << fmt::format("\n{} ok, {} failed\n", r.ok, r.failed);
    return r.failed == 0 ? 0 : 1;
}

}  // namespace gb::cli
