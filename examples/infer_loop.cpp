// The C++ side of the SDK: the same C header, wrapped in a few lines of RAII.
//
//   make -C examples run
//   c++ -std=c++17 infer_loop.cpp $(pkg-config --cflags --libs edgetelemetry) -pthread
//   c++ -std=c++17 infer_loop.cpp -DET_DISABLE -pthread     telemetry compiled out
//
// Worker threads run a stand-in model; a ScopedTimer records each inference's latency when
// it goes out of scope.  The main thread closes windows while they run and, at the end,
// checks that every record is in a window or counted as dropped (exit status 0 only then).
//
// Usage: infer_loop_cpp [inferences per worker (20000)] [workers (2)]
#include <edgetelemetry.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace et {

// A negative return code as an exception (set-up only: recording never throws).
struct Error : std::runtime_error {
    Error(int code, const char *what)
        : std::runtime_error(std::string(what) + ": " + et_strerror(code)), code(code) {}
    int code;
};

inline void check(int rc, const char *what) {
    if (rc < 0) throw Error(rc, what);
}

struct RecorderFree {
    void operator()(et_recorder *rec) const { et_recorder_free(rec); }
};
struct WindowFree {
    void operator()(et_window *w) const { et_window_free(w); }
};
using WindowPtr = std::unique_ptr<et_window, WindowFree>;

// Owns one recorder; the collector thread stops when it is destroyed.
class Recorder {
  public:
    explicit Recorder(const et_config &cfg) {
        et_recorder *rec = nullptr;
        check(et_recorder_new(&cfg, &rec), "et_recorder_new");
        rec_.reset(rec);
    }
    uint32_t series(const char *model, const char *version, const char *metric) {
        uint32_t id = 0;
        check(et_series_add(rec_.get(), model, version, metric, nullptr, &id), "et_series_add");
        return id;
    }
    void start_collector(std::chrono::nanoseconds period) {
        check(et_collector_start(rec_.get(), static_cast<uint64_t>(period.count())),
              "et_collector_start");
    }
    // Never throws, never loses the value: a full ring is drained by this thread first (one
    // bounded wait); the one drop left, from a signal handler, is counted in the window.
    void record(uint32_t id, double value) noexcept { et_record(rec_.get(), id, value); }
    WindowPtr close_window() {
        et_window *w = nullptr;
        check(et_window_close(rec_.get(), &w), "et_window_close");
        return WindowPtr(w);
    }

  private:
    std::unique_ptr<et_recorder, RecorderFree> rec_;
};

// Records the time between its construction and its destruction, in milliseconds.
class ScopedTimer {
  public:
    ScopedTimer(Recorder &rec, uint32_t id) : rec_(rec), id_(id) {
        ET_INSTRUMENT(start_ = std::chrono::steady_clock::now();)
    }
    ~ScopedTimer() {
        ET_INSTRUMENT(rec_.record(id_, std::chrono::duration<double, std::milli>(
                                           std::chrono::steady_clock::now() - start_)
                                           .count());)
    }
    ScopedTimer(const ScopedTimer &) = delete;
    ScopedTimer &operator=(const ScopedTimer &) = delete;

  private:
    [[maybe_unused]] Recorder &rec_;
    [[maybe_unused]] uint32_t id_;
    [[maybe_unused]] std::chrono::steady_clock::time_point start_{};
};

}  // namespace et

namespace {

constexpr int kInputs = 128, kHidden = 128, kClasses = 10;

struct Model {
    std::vector<float> w1 = std::vector<float>(kHidden * kInputs);
    std::vector<float> w2 = std::vector<float>(kClasses * kHidden);
    Model() {
        uint32_t x = 12345;
        auto next = [&x] {
            x = x * 1103515245u + 12345u;
            return static_cast<float>((x >> 8) % 2001) / 4000.0f - 0.25f;
        };
        for (auto &w : w1) w = next();
        for (auto &w : w2) w = next();
    }
    double run(const float *input) const {
        float hidden[kHidden], logits[kClasses], top = -INFINITY;
        for (int h = 0; h < kHidden; h++) {
            float acc = 0.0f;
            for (int i = 0; i < kInputs; i++) acc += w1[h * kInputs + i] * input[i];
            hidden[h] = acc > 0.0f ? acc : 0.0f;
        }
        for (int c = 0; c < kClasses; c++) {
            float acc = 0.0f;
            for (int h = 0; h < kHidden; h++) acc += w2[c * kHidden + h] * hidden[h];
            logits[c] = acc;
            top = acc > top ? acc : top;
        }
        double sum = 0.0;
        for (float l : logits) sum += std::exp(static_cast<double>(l - top));
        return 1.0 / sum;
    }
};

struct Totals {
    uint64_t kept = 0, dropped = 0, windows = 0;
};

void tally(const et::WindowPtr &w, Totals &t, bool print) {
    if (!w) return;  // compiled out
    t.windows++;
    for (uint32_t i = 0; i < et_window_series_count(w.get()); i++) {
        const char *model, *version, *metric, *dimension;
        et_series_stats st;
        et_window_series_names(w.get(), i, &model, &version, &metric, &dimension);
        et_window_series_stats(w.get(), i, &st);
        uint64_t dropped = 0;
        for (uint64_t d : st.dropped) dropped += d;
        t.kept += st.count;
        t.dropped += dropped;
        if (print && st.count)
            std::printf("window %3llu  %s %s %-13s n=%-6llu mean=%-9.4g max=%-9.4g dropped=%llu\n",
                        static_cast<unsigned long long>(et_window_seq(w.get())), model, version,
                        metric, static_cast<unsigned long long>(st.count),
                        st.sum / static_cast<double>(st.count), st.max,
                        static_cast<unsigned long long>(dropped));
    }
}

}  // namespace

int main(int argc, char **argv) try {
    const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
    const int workers = argc > 2 ? std::atoi(argv[2]) : 2;
    if (iterations <= 0 || workers <= 0 || workers > 64) {
        std::fprintf(stderr, "usage: %s [inferences per worker > 0] [workers 1..64]\n", argv[0]);
        return 2;
    }
    et_config cfg;
    et_config_default(&cfg);
    cfg.max_threads = static_cast<uint32_t>(workers);
    cfg.ring_capacity = 8192;
    et::Recorder rec(cfg);
    const uint32_t latency = rec.series("yolov8n", "2.1", "latency-ms");
    const uint32_t confidence = rec.series("yolov8n", "2.1", "confidence");
    rec.start_collector(std::chrono::milliseconds(2));

    const Model model;
    std::atomic<uint64_t> made{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < workers; t++)
        threads.emplace_back([&, t] {
            uint32_t x = 7u + static_cast<uint32_t>(t);
            float input[kInputs];
            for (long n = 0; n < iterations; n++) {
                for (float &v : input) {
                    x = x * 1664525u + 1013904223u;
                    v = static_cast<float>(x >> 9) / static_cast<float>(1u << 23);
                }
                double p;
                {
                    et::ScopedTimer timer(rec, latency);
                    p = model.run(input);
                }
                rec.record(confidence, p);
                made.fetch_add(2, std::memory_order_relaxed);
            }
        });

    Totals totals;
    const auto start = std::chrono::steady_clock::now();
    const uint64_t target = static_cast<uint64_t>(iterations) * workers * 2;
    while (made.load() < target) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        tally(rec.close_window(), totals, true);
    }
    for (auto &t : threads) t.join();
    tally(rec.close_window(), totals, true);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

#if defined(ET_DISABLE)
    std::printf("infer_loop_cpp: telemetry compiled out (ET_DISABLE): %llu inferences in %.3f s\n",
                static_cast<unsigned long long>(made.load() / 2), seconds);
    return 0;
#else
    const bool exact = totals.kept + totals.dropped == made.load();
    std::printf("infer_loop_cpp: %s: %llu records made, %llu in %llu windows, %llu dropped "
                "(counted), %.3f s\n",
                exact ? "ok" : "MISMATCH", static_cast<unsigned long long>(made.load()),
                static_cast<unsigned long long>(totals.kept),
                static_cast<unsigned long long>(totals.windows),
                static_cast<unsigned long long>(totals.dropped), seconds);
    return exact ? 0 : 1;
#endif
} catch (const et::Error &e) {
    std::fprintf(stderr, "infer_loop_cpp: %s\n", e.what());
    return 1;
}
