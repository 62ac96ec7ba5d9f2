// Per-queue counters, written by the queue thread only and read by anyone (relaxed: they are
// statistics, not synchronisation). Plain loads and stores, no read-modify-write on the data
// path: one writer makes that safe.
#pragma once

#include <atomic>
#include <cstdint>

namespace vcp {

struct QueueStats {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> bytes_written{0};
  std::atomic<uint64_t> io_errors{0};    // requests completed with IOERR
  std::atomic<uint64_t> unsupported{0};  // requests completed with UNSUPP
  std::atomic<uint64_t> bad_requests{0}; // malformed chains or requests, refused
  std::atomic<uint64_t> notifications{0};// call eventfd writes
  std::atomic<uint64_t> wakeups{0};      // returns from sleep
  std::atomic<uint64_t> kick_free{0};    // sleeps that did not ask the driver for a kick

  // From the owning thread, when a queue (re)starts: counts are per run of the queue.
  void clear() {
    for (auto* c : {&requests, &bytes_read, &bytes_written, &io_errors, &unsupported, &bad_requests, &notifications,
                    &wakeups, &kick_free})
      c->store(0, std::memory_order_relaxed);
  }

  static void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

}  // namespace vcp
