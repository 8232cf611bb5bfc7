#pragma once

#include <iosfwd>
#include <string>

namespace gb::cli {

// `graphbridge check --config FILE`; returns the exit status (0 = every step ok).
int run_check(const std::string& config_path, std::ostream& out, std::ostream& err);

}  // namespace gb::cli
