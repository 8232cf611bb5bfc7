#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace gb::cli {

// `graphbridge queue list | retry ID | delete ID [--config FILE]` (args start after "queue").
int run_queue(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace gb::cli
