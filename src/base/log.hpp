// One logging facility for the whole project (spdlog underneath).
//
// A VCP logs with its name and queue: make a Logger with that tag once, off the data path.
// Nothing on the per-request path logs unless the level is debug or trace (VCP_LOG_DEBUG
// checks the level before formatting anything).
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>
#include <string>

namespace vcp::log {

enum class Level { trace, debug, info, warn, error, off };

// Sets the global level; also read from VCP_LOG=trace|debug|info|warn|error|off at first use.
void set_level(Level l);
Level level();
bool parse_level(const std::string& s, Level* out);

// The process-wide logger (stderr, with a time stamp and the tag).
spdlog::logger& get();

// For an event a misbehaving peer can repeat without bound (a refused request, a failed
// command): whether its n-th occurrence (counting from 1) is logged. The first 16 are, then one
// in 1000, so the log says what happens without being flooded by it.
constexpr bool thin(uint64_t n) { return n <= 16 || n % 1000 == 0; }

}  // namespace vcp::log

#define VCP_LOG_ERROR(...) ::vcp::log::get().error(__VA_ARGS__)
#define VCP_LOG_WARN(...) ::vcp::log::get().warn(__VA_ARGS__)
#define VCP_LOG_INFO(...) ::vcp::log::get().info(__VA_ARGS__)
#define VCP_LOG_DEBUG(...)                                                        \
  do {                                                                            \
    if (::vcp::log::get().should_log(spdlog::level::debug)) ::vcp::log::get().debug(__VA_ARGS__); \
  } while (0)
