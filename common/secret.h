// A secret value (client secret, keystore password, account password) that cannot be formatted.
//
// There is no operator<<, no fmt::formatter and no implicit conversion: the only way to the bytes is
// reveal(), which is greppable. The buffer is wiped on destruction.
#pragma once

#include <string>
#include <string_view>

namespace gb {

class Secret {
public:
    Secret() = default;
    explicit Secret(std::string value) : value_(std::move(value)) {}
    Secret(const Secret&) = default;
    Secret& operator=(const Secret&) = default;
    Secret(Secret&&) noexcept = default;
    Secret& operator=(Secret&&) noexcept = default;
    ~Secret();

    bool empty() const { return value_.empty(); }
    std::size_t size() const { return value_.size(); }
    // The only accessor. Never pass the result to a logger.
    std::string_view reveal() const { return value_; }

private:
    std::string value_;
};

// Where a secret came from, for messages ("environment variable CONTOSO_SECRET"): never the value.
struct SecretSource {
    enum class Kind { None, Env, File } kind = Kind::None;
    std::string name;  // variable name or file path
    std::string describe() const;
};

// Reads a secret from its source. Files: whole content with one trailing newline removed.
// Throws std::runtime_error naming the source (never the value) when it is unset or unreadable.
Secret load_secret(const SecretSource& source);

}  // namespace gb

