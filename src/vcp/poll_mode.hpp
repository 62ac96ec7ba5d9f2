// How a queue thread waits for work (the paper's "dedicated hardware thread" made adjustable).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace vcp {

enum class PollMode : uint8_t {
  always,    // busy poll forever: lowest latency, burns its CPU
  adaptive,  // spin for a bounded time after the last work, then sleep on the kick eventfd
  never,     // sleep whenever there is nothing to do: every request costs a kick and a call
};

std::optional<PollMode> parse_poll_mode(const std::string& s);
const char* to_string(PollMode m);

}  // namespace vcp
