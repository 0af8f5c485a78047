// A C++ inference process of the device scenario: two threads record each inference's latency
// and confidence as one group into the device agent's recorder, attached by path.
//
//   c++ -std=c++17 producer.cpp $(pkg-config --cflags --libs edgetelemetry) -pthread
//   producer_cpp SEGMENT MODEL COUNT SECONDS
//
// Each of the two threads records COUNT inferences (two values each) spread over about
// SECONDS; at the end it detaches and prints "MODEL VALUES" (4 x COUNT).
#include <edgetelemetry.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace et {

struct Error : std::runtime_error {
    Error(int code, const std::string &what)
        : std::runtime_error(what + ": " + et_strerror(code)), code(code) {}
    int code;
};

inline void check(int rc, const std::string &what) {
    if (rc < 0) throw Error(rc, what);
}

// A handle on the device agent's shared recorder; detaches when destroyed (what it recorded
// stays in the segment for the agent).
class Attached {
  public:
    explicit Attached(const char *path) {
        et_recorder *rec = nullptr;
        check(et_recorder_attach(path, &rec), std::string("attach ") + path);
        rec_.reset(rec);
    }
    uint32_t series(const char *model, const char *metric, const char *unit) {
        uint32_t id = 0;
        check(et_series_add_unit(rec_.get(), model, "1.0", metric, nullptr, unit, &id),
              std::string("register ") + metric);
        return id;
    }
    // One inference's values, one ring entry; never throws, never loses a value.
    void record_group(const uint32_t *ids, const double *values, size_t n) noexcept {
        et_record_group(rec_.get(), ids, values, n);
    }

  private:
    struct Free {
        void operator()(et_recorder *rec) const { et_recorder_free(rec); }
    };
    std::unique_ptr<et_recorder, Free> rec_;
};

}  // namespace et

int main(int argc, char **argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s SEGMENT MODEL COUNT SECONDS\n", argv[0]);
        return 2;
    }
    const char *model = argv[2];
    const uint64_t count = std::strtoull(argv[3], nullptr, 10);
    const double seconds = std::atof(argv[4]);
    try {
        et::Attached rec(argv[1]);
        const uint32_t ids[2] = {rec.series(model, "latency", "ms"),
                                 rec.series(model, "confidence", nullptr)};
        auto worker = [&rec, &ids, count, seconds] {
            const uint64_t burst = (count + 99) / 100;
            const auto gap = std::chrono::duration<double>(seconds / 100);
            uint64_t done = 0;
            while (done < count) {
                for (uint64_t i = 0; i < burst && done < count; i++, done++) {
                    const double values[2] = {2.5, 0.75};
                    rec.record_group(ids, values, 2);
                }
                std::this_thread::sleep_for(gap);
            }
        };
        std::vector<std::thread> threads;
        for (int t = 0; t < 2; t++) threads.emplace_back(worker);
        for (auto &t : threads) t.join();
    } catch (const et::Error &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    std::printf("%s %llu\n", model, static_cast<unsigned long long>(4 * count));
    return 0;
}
