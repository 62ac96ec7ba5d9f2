// The load generator behind `vcp bench`: jobs that keep a queue depth of reads and writes going
// against an I/O engine, time each request in a fixed-bucket histogram and, with verify, stamp
// every block they write and check every block they read.
//
// The engine is an interface so the same load can run through the channel (libvcp) or, later,
// straight against a BlockBackend in-process: only bench.cpp knows which.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace vcp::tools::bench {

// One queue of an engine, used by one job thread.
class EngineQueue {
 public:
  struct Done {
    uint32_t tag;
    int result;  // 0 or -errno
  };
  virtual ~EngineQueue() = default;
  // Memory for `len` bytes of I/O buffers (zero copy where the engine has shared memory).
  virtual uint8_t* buffers(size_t len) = 0;
  virtual int submit(bool write, uint64_t offset, uint8_t* buf, uint32_t len, uint32_t tag) = 0;
  // Waits until at least `min` requests finished; stores up to `max`. Count or -errno.
  virtual int reap(Done* out, unsigned max, unsigned min) = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual uint64_t capacity() const = 0;
  virtual uint32_t block_size() const = 0;
  virtual unsigned max_queues() const = 0;
  virtual std::unique_ptr<EngineQueue> open_queue(unsigned index) = 0;
};

enum class Pattern : uint8_t { read, write, randread, randwrite, randrw };
bool parse_pattern(const std::string& s, Pattern* out);
const char* to_string(Pattern p);

// Latency histogram: 16 linear sub-buckets per power of two (about 6% resolution), in ns.
class Histogram {
 public:
  static constexpr unsigned kBuckets = 1024;
  void add(uint64_t ns) { ++counts_[index(ns)]; }
  void merge(const Histogram& o);
  uint64_t count() const;
  // The value below which `q` (0..1) of the samples lie (a bucket's midpoint), in ns.
  uint64_t quantile(double q) const;
  static unsigned index(uint64_t ns);
  static uint64_t lower_bound(unsigned index);

 private:
  uint64_t counts_[kBuckets] = {};
};

struct JobConfig {
  Pattern pattern = Pattern::randread;
  uint32_t bs = 4096;
  unsigned qd = 32;
  // Completions reaped before issuing more (fio's iodepth_batch_complete_min): at most this
  // many of the qd slots wait empty; a channel client sleeps for the batch (one interrupt).
  unsigned batch = 1;
  uint64_t region_start = 0;  // bytes
  uint64_t region_len = 0;
  bool verify = false;
  unsigned read_percent = 50;  // randrw
  uint64_t seed = 1;
  int cpu = -1;
};

// What a job did; ios/bytes are read by the progress line while it runs (one writer).
struct JobResult {
  std::atomic<uint64_t> ios{0};
  std::atomic<uint64_t> bytes{0};
  uint64_t errors = 0;
  int first_error = 0;
  uint64_t verified_blocks = 0;
  bool verify_failed = false;
  std::string message;  // what failed verification, or why the job could not run
  Histogram hist;
};

// Runs until *stop becomes true, then reaps what is outstanding. The engine queue must be the
// job's own. Returns false when the job could not run at all (result->message says why).
bool run_job(EngineQueue& q, const JobConfig& cfg, const std::atomic<bool>* stop, JobResult* result);

}  // namespace vcp::tools::bench
