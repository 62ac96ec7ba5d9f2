// `vcp bench`'s load generator against an engine that completes every request at once and
// records what it was asked: the read/write mix of randrw.
#include "tools/bench_load.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <string>
#include <vector>

namespace vcp::tools::bench {
namespace {

// Completes each request at once; after `limit` submits asks the job to stop.
class RecordingQueue : public EngineQueue {
 public:
  RecordingQueue(size_t limit, std::atomic<bool>* stop) : limit_(limit), stop_(stop) {}
  uint8_t* buffers(size_t len) override {
    mem_.assign(len, 0);
    return mem_.data();
  }
  int submit(bool write, uint64_t, uint8_t*, uint32_t, uint32_t tag) override {
    kinds_ += write ? 'W' : 'R';
    pending_.push_back(tag);
    if (kinds_.size() >= limit_) stop_->store(true);
    return 0;
  }
  int reap(Done* out, unsigned max, unsigned) override {
    unsigned n = 0;
    while (n < max && !pending_.empty()) {
      out[n++] = {pending_.back(), 0};
      pending_.pop_back();
    }
    return static_cast<int>(n);
  }
  const std::string& kinds() const { return kinds_; }

 private:
  size_t limit_;
  std::atomic<bool>* stop_;
  std::vector<uint8_t> mem_;
  std::vector<uint32_t> pending_;
  std::string kinds_;
};

// The reads (R) and writes (W) of a randrw job's first `n` requests, in order of issue.
std::string first_requests(uint64_t seed, size_t n, unsigned qd = 8) {
  std::atomic<bool> stop{false};
  RecordingQueue q(n, &stop);
  JobConfig c;
  c.pattern = Pattern::randrw;
  c.bs = 4096;
  c.qd = qd;
  c.region_len = 64 * 4096;
  c.seed = seed;
  JobResult r;
  EXPECT_TRUE(run_job(q, c, &stop, &r)) << r.message;
  return q.kinds().substr(0, n);
}

// `vcp bench` seeds each job with 0x5eed0000 + its number * 7919 + the time in seconds.
constexpr uint64_t kSeedBase = 0x5eed0000;
constexpr uint64_t kThatSecond = 1795923892;  // 2026-11-29 03:44:52 UTC

// Runs started a second apart differ: before, an even seed and the next one were the same
// seed (seed | 1) and made the same requests.
TEST(BenchLoad, RunsStartedInNeighbouringSecondsMixDifferently) {
  std::set<std::string> seen;
  for (uint64_t s = 0; s < 64; ++s) seen.insert(first_requests(kSeedBase + kThatSecond + s, 32));
  EXPECT_EQ(seen.size(), 64u);
}

// The run seeded at that second made its first 11 requests writes at a 50% mix, and a
// slow-link test run of 11 requests had nothing to verify; now its first requests mix.
TEST(BenchLoad, TheSeedThatMadeOnlyWritesMixes) {
  const std::string k = first_requests(kSeedBase + kThatSecond, 11);
  EXPECT_NE(k.find('R'), std::string::npos) << k;
  EXPECT_NE(k.find('W'), std::string::npos) << k;
}

// Over many seconds' seeds the first 8 requests (the ones issued at once at qd 8) are all of
// one kind about as often as a fair coin makes them (2 in 256), not more.
TEST(BenchLoad, TheFirstRequestsOfAMixAreNotBiased) {
  unsigned same = 0;
  const unsigned runs = 4000;
  for (uint64_t s = 0; s < runs; ++s) {
    const std::string k = first_requests(kSeedBase + kThatSecond + s, 8);
    same += k.find('R') == std::string::npos || k.find('W') == std::string::npos;
  }
  EXPECT_LE(same, runs * 2 / 256 * 2) << same << " of " << runs;  // twice a fair coin's rate at most
  unsigned writes = 0;
  for (uint64_t s = 0; s < runs; ++s)
    for (char c : first_requests(kSeedBase + kThatSecond + s, 1)) writes += c == 'W';
  EXPECT_GT(writes, runs * 45 / 100);
  EXPECT_LT(writes, runs * 55 / 100);
}

}  // namespace
}  // namespace vcp::tools::bench
