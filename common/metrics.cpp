#include "common/metrics.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace gb::metrics {
namespace {

bool valid_name(std::string_view n, bool label) {
    if (n.empty()) return false;
    for (std::size_t i = 0; i < n.size(); ++i) {
        char c = n[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
    }
    return !(label && n.substr(0, 2) == "__");  // reserved
}

void write_labels(std::string& out, const std::vector<std::string>& names, const std::vector<std::string>& values) {
    if (names.empty()) return;
    out += '{';
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i) out += ',';
        out += names[i];
        out += "=\"";
        out += escape_label(i < values.size() ? values[i] : std::string());
        out += '"';
    }
    out += '}';
}

}  // namespace

void Gauge::add(double d) {
    double cur = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
    }
}

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<std::int64_t>(v));
    return fmt::format("{}", v);
}

std::string escape_label(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

template <class Instrument>
Instrument& Registry::Family<Instrument>::child(const std::vector<std::string>& values) {
    if (values.size() != label_names_.size()) throw std::invalid_argument("metrics: wrong number of label values");
    std::lock_guard lock(mutex_);
    auto& slot = children_[values];
    if (!slot) slot = std::make_unique<Instrument>();
    return *slot;
}
template class Registry::Family<Counter>;
template class Registry::Family<Gauge>;

Registry::Entry& Registry::add(const std::string& name, const std::string& help, Type type) {
    if (!valid_name(name, false)) throw std::invalid_argument("metrics: bad name '" + name + "'");
    for (const auto& f : families_)
        if (f->name == name) throw std::invalid_argument("metrics: '" + name + "' registered twice");
    families_.push_back(std::make_unique<Entry>());
    Entry& f = *families_.back();
    f.name = name;
    f.help = help;
    f.type = type;
    return f;
}

Registry::CounterFamily& Registry::counter(const std::string& name, const std::string& help,
                                           std::vector<std::string> label_names) {
    for (const auto& l : label_names)
        if (!valid_name(l, true)) throw std::invalid_argument("metrics: bad label name '" + l + "'");
    std::lock_guard lock(mutex_);
    Entry& f = add(name, help, Type::Counter);
    counter_families_.push_back(std::make_unique<CounterFamily>());
    f.counters = counter_families_.back().get();
    f.counters->label_names_ = std::move(label_names);
    return *f.counters;
}

Registry::GaugeFamily& Registry::gauge(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names) {
    for (const auto& l : label_names)
        if (!valid_name(l, true)) throw std::invalid_argument("metrics: bad label name '" + l + "'");
    std::lock_guard lock(mutex_);
    Entry& f = add(name, help, Type::Gauge);
    gauge_families_.push_back(std::make_unique<GaugeFamily>());
    f.gauges = gauge_families_.back().get();
    f.gauges->label_names_ = std::move(label_names);
    return *f.gauges;
}

void Registry::family(const std::string& name, const std::string& help, Type type) {
    std::lock_guard lock(mutex_);
    add(name, help, type);
}

void Registry::collector(std::function<void(Sink&)> collect) {
    std::lock_guard lock(mutex_);
    collectors_.push_back(std::move(collect));
}

std::string Registry::render() const {
    std::lock_guard lock(mutex_);
    // Scrape-time samples first, grouped by family name.
    struct Collected : Sink {
        std::map<std::string, std::vector<std::pair<Labels, double>>, std::less<>> by_family;
        void sample(std::string_view family, const Labels& labels, double value) override {
            by_family[std::string(family)].emplace_back(labels, value);
        }
    } collected;
    for (const auto& c : collectors_) c(collected);

    std::string out;
    for (const auto& f : families_) {
        out += "# HELP " + f->name + " ";
        for (char c : f->help) out += c == '\n' ? std::string("\\n") : c == '\\' ? std::string("\\\\") : std::string(1, c);
        out += "\n# TYPE " + f->name + (f->type == Type::Counter ? " counter\n" : " gauge\n");
        auto line = [&](const std::vector<std::string>& names, const std::vector<std::string>& values, double v) {
            out += f->name;
            write_labels(out, names, values);
            out += ' ';
            out += format_value(v);
            out += '\n';
        };
        if (f->counters) {
            std::lock_guard l(f->counters->mutex_);
            for (const auto& [values, c] : f->counters->children_)
                line(f->counters->label_names_, values, static_cast<double>(c->value()));
        } else if (f->gauges) {
            std::lock_guard l(f->gauges->mutex_);
            for (const auto& [values, g] : f->gauges->children_) line(f->gauges->label_names_, values, g->value());
        } else if (auto it = collected.by_family.find(f->name); it != collected.by_family.end()) {
            for (const auto& [labels, v] : it->second) {
                std::vector<std::string> names, values;
                for (const auto& [k, val] : labels) {
                    names.push_back(k);
                    values.push_back(val);
                }
                line(names, values, v);
            }
        }
    }
    return out;
}

}  // namespace gb::metrics
