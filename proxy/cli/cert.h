#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace gb::cli {

// `graphbridge cert new|show ...` (args start after "cert"); returns the exit status.
int run_cert(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace gb::cli
