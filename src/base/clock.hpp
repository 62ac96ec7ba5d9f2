// The monotonic clock in milliseconds, coarse (the last tick: no system call on most machines):
// plenty for timers and log rate limits.
#pragma once

#include <time.h>

#include <cstdint>

namespace vcp {

inline uint64_t coarse_now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

}  // namespace vcp
