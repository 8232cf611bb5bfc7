#include "fuzz/fuzz_util.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <vector>

namespace gb::fuzz {

namespace {
std::vector<std::string>& scratch_dirs() {
    static std::vector<std::string> dirs;
    return dirs;
}
void remove_scratch() {
    std::error_code ec;
    for (const auto& d : scratch_dirs()) std::filesystem::remove_all(d, ec);
}
}  // namespace

std::string scratch_dir(const char* name) {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/gb-fuzz-" +
                      std::to_string(static_cast<long>(::getpid())) + "-" + name;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) fail("cannot create scratch directory", dir);
    scratch_dirs();  // constructed before the atexit handler is registered, so it outlives it
    static std::once_flag once;
    std::call_once(once, [] { std::atexit(remove_scratch); });
    scratch_dirs().push_back(dir);
    return dir;
}

void write_file(const std::string& path, std::string_view bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) fail("cannot write scratch file", path);
}

}  // namespace gb::fuzz
