// `graphbridge queue`: look at and act on the outbound spool of a (running or stopped) bridge.
// Queue ids from the command line are validated against the spool's id alphabet before any use.
#include "proxy/cli/queue_cmd.h"

#include <fmt/format.h>

#include <ctime>
#include <filesystem>

#include "common/log.h"
#include "common/text.h"
#include "proxy/config/config.h"
#include "proxy/spool/spool.h"

namespace gb::cli {

int run_queue(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    std::string config_path = "/etc/graphbridge/graphbridge.toml";
    std::vector<std::string> words;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--config" && i + 1 < args.size()) config_path = args[++i];
        else words.push_back(args[i]);
    }
    bool ok_shape = !words.empty() && ((words[0] == "list" && words.size() == 1) ||
                                       ((words[0] == "retry" || words[0] == "delete") && words.size() == 2));
    if (!ok_shape) {
        err << "usage: graphbridge queue list | retry ID | delete ID [--config FILE]\n";
        return 2;
    }
    config::Config cfg;
    try {
        cfg = config::load(config_path);
    } catch (const config::ConfigError& e) {
        for (const auto& p : e.problems()) err << p.to_string() << "\n";
        return 1;
    }
    spool::Options o;
    o.root = (std::filesystem::path(cfg.state_dir) / "spool").string();
    o.exclusive = false;  // the bridge may be running
    try {
        spool::Spool sp(o);
        if (words[0] == "list") {
            auto live = sp.list();
            auto dead = sp.list_dead();
            std::int64_t now = std::time(nullptr);
            out << fmt::format("{:<18} {:>8} {:>9} {:>5} {:>4} {:<9} {:<21} {}\n", "ID", "AGE", "SIZE", "RCPTS",
                               "TRY", "STATUS", "NEXT ATTEMPT", "SENDER / LAST ERROR");
            for (const auto* list : {&live, &dead}) {
                for (const auto& e : *list) {
                    std::string next = e.state.next_attempt_ms ? utc_time(e.state.next_attempt_ms / 1000) : "now";
                    out << fmt::format("{:<18} {:>7}m {:>9} {:>5} {:>4} {:<9} {:<21} {}{}\n", e.id,
                                       (now - e.received_at) / 60, e.size, e.recipient_count, e.state.attempts,
                                       spool::status_name(e.state.status), next,
                                       e.sender.empty() ? "<>" : log::client_text(e.sender, 80),
                                       e.state.last_error.empty() ? "" : " / " + log::client_text(e.state.last_error, 120));
                }
            }
            out << fmt::format("{} queued, {} dead\n", live.size(), dead.size());
            return 0;
        }
        const std::string& id = words[1];
        if (!spool::valid_id(id)) {
            err << "graphbridge queue: '" << id.substr(0, 40) << "' is not a queue id\n";
            return 1;
        }
        auto e = words[0] == "retry" ? sp.retry_now(id) : sp.remove(id);
        if (e) {
            err << "graphbridge queue " << words[0] << ": " << e->message << "\n";
            return 1;
        }
        out << (words[0] == "retry" ? "scheduled for an immediate retry: " : "deleted: ") << id << "\n";
        return 0;
    } catch (const std::exception& e) {
        err << "graphbridge queue: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace gb::cli
