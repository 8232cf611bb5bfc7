// The `graphbridge` command line (PRODUCT.md "Commands"). main() only calls run().
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace gb::cli {

// Runs one command; returns the process exit status. Output goes to out/err.
int run(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace gb::cli
