// Metrics in the Prometheus text exposition format (version 0.0.4), for the admin endpoint's /metrics.
//
// Two kinds of values. Instruments owned by the registry (Counter, Gauge) are updated where things
// happen, lock-free (relaxed atomics); a family is created once and its labelled children looked up by
// label values. Collectors are callbacks run at scrape time for values that already live elsewhere
// (queue depth, sessions by state, cache statistics): they write samples through a Sink. render()
// groups samples by family with one HELP and TYPE line each, in registration order, escapes label
// values (backslash, quote, newline) and prints integers exactly.
//
// Names must match [a-zA-Z_:][a-zA-Z0-9_:]* and label names [a-zA-Z_][a-zA-Z0-9_]*; the registry
// checks at registration (a programming error throws std::invalid_argument), never at scrape time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace gb::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
public:
    void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
    std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> value_{0};
};

class Gauge {
public:
    void set(double v) { value_.store(v, std::memory_order_relaxed); }
    void add(double d);
    double value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0};
};

enum class Type { Counter, Gauge };

// Where a collector writes its samples at scrape time.
class Sink {
public:
    virtual ~Sink() = default;
    // One sample of a family declared with Registry::family(); unknown families are a programming error.
    virtual void sample(std::string_view family, const Labels& labels, double value) = 0;
};

class Registry {
public:
    // A family of instruments with these label names; child() gives the one for a set of label values.
    template <class Instrument>
    class Family {
    public:
        Instrument& child(const std::vector<std::string>& values);
        Instrument& child() { return child({}); }

    private:
        friend class Registry;
        std::vector<std::string> label_names_;
        std::mutex mutex_;
        std::map<std::vector<std::string>, std::unique_ptr<Instrument>> children_;
    };
    using CounterFamily = Family<Counter>;
    using GaugeFamily = Family<Gauge>;

    CounterFamily& counter(const std::string& name, const std::string& help, std::vector<std::string> label_names = {});
    GaugeFamily& gauge(const std::string& name, const std::string& help, std::vector<std::string> label_names = {});
    // A family whose samples a collector provides at scrape time.
    void family(const std::string& name, const std::string& help, Type type);
    void collector(std::function<void(Sink&)> collect);

    std::string render() const;

private:
    struct Entry {  // one family as rendered
        std::string name, help;
        Type type = Type::Counter;
        CounterFamily* counters = nullptr;
        GaugeFamily* gauges = nullptr;
    };
    Entry& add(const std::string& name, const std::string& help, Type type);

    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<Entry>> families_;
    std::vector<std::unique_ptr<CounterFamily>> counter_families_;
    std::vector<std::unique_ptr<GaugeFamily>> gauge_families_;
    std::vector<std::function<void(Sink&)>> collectors_;
};

// "1", "0.25", "+Inf", "NaN": the exposition format's number syntax; integers print exactly.
std::string format_value(double v);
// A label value escaped for the exposition format (\\, \", \n).
std::string escape_label(std::string_view v);

}  // namespace gb::metrics
