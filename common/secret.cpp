#include "common/secret.h"

#include <openssl/crypto.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace gb {

Secret::~Secret() {
    if (!value_.empty()) OPENSSL_cleanse(value_.data(), value_.size());
}

std::string SecretSource::describe() const {
    switch (kind) {
        case Kind::Env: return "environment variable " + name;
        case Kind::File: return "file " + name;
        case Kind::None: break;
    }
    return "no source";
}

Secret load_secret(const SecretSource& source) {
    switch (source.kind) {
        case SecretSource::Kind::Env: {
            const char* v = std::getenv(source.name.c_str());
            if (!v || !*v) throw std::runtime_error(source.describe() + " is not set or empty");
            return Secret(v);
        }
        case SecretSource::Kind::File: {
            std::ifstream in(source.name, std::ios::binary);
            if (!in) throw std::runtime_error(source.describe() + " cannot be read");
            std::ostringstream ss;
            ss << in.rdbuf();
            std::string v = ss.str();
            if (!v.empty() && v.back() == '\n') v.pop_back();
            if (!v.empty() && v.back() == '\r') v.pop_back();
            if (v.empty()) throw std::runtime_error(source.describe() + " is empty");
            return Secret(std::move(v));
        }
        case SecretSource::Kind::None: break;
    }
    throw std::runtime_error("no secret source configured");
}

}  // namespace gb
