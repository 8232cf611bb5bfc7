// Replays fuzz inputs without libFuzzer: runs LLVMFuzzerTestOneInput over every file in the
// directories (or files) given as arguments. Only a crash (or a missing argument path) fails it;
// this is how every normal and sanitizer CI run replays the seed corpora (ctest -R fuzz_replay).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace fs = std::filesystem;

namespace {

bool run_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "fuzz_replay: cannot read %s\n", p.c_str());
        return false;
    }
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "fuzz_replay: %s (%zu bytes)\n", p.c_str(), bytes.size());
    // A copy in its own allocation, so ASan sees reads past the end.
    std::vector<std::uint8_t> data(bytes.begin(), bytes.end());
    LLVMFuzzerTestOneInput(data.empty() ? nullptr : data.data(), data.size());
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    std::size_t count = 0;
    for (int i = 1; i < argc; ++i) {
        fs::path arg(argv[i]);
        std::error_code ec;
        if (fs::is_directory(arg, ec)) {
            std::vector<fs::path> files;
            for (const auto& e : fs::recursive_directory_iterator(arg))
                if (e.is_regular_file()) files.push_back(e.path());
            std::sort(files.begin(), files.end());
            for (const auto& f : files) count += run_file(f) ? 1 : 0;
        } else if (fs::is_regular_file(arg, ec)) {
            count += run_file(arg) ? 1 : 0;
        } else {
            std::fprintf(stderr, "fuzz_replay: no such file or directory: %s\n", argv[i]);
            return 2;
        }
    }
    std::printf("fuzz_replay: %zu inputs replayed, no crash\n", count);
    return 0;
}
