// The monotonic clock. now_ns()/now_ms() read CLOCK_MONOTONIC (vDSO, no system call): for
// timeouts and measured durations. coarse_now_ms() reads the last tick (cheaper, a tick's
// resolution): plenty for timers and log rate limits.
#pragma once

#include <time.h>

#include <cstdint>

namespace vcp {

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

inline uint64_t now_ms() { return now_ns() / 1'000'000u; }

inline uint64_t coarse_now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

}  // namespace vcp
