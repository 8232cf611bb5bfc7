// graphbridge: SMTP/IMAP/POP3 to Microsoft Graph. main() only hands argv to the CLI.
#include <iostream>
#include <string>
#include <vector>

#include "proxy/cli/cli.h"

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    try {
        return gb::cli::run(args, std::cin, std::cout, std::cerr);
    } catch (const std::exception& e) {
        std::cerr << "graphbridge: " << e.what() << "\n";
        return 1;
    }
}
