// One logging facility for the whole project (spdlog underneath).
//
// A VCP logs with its name and queue: make a Logger with that tag once, off the data path.
// Nothing on the per-request path logs unless the level is debug or trace (VCP_LOG_DEBUG
// checks the level before formatting anything).
//
// This header stays light: it holds fmt's core (format strings checked at compile time) and no
// spdlog. Every VCP_LOG_* call compiles to a level check and a call with the arguments packed;
// the formatting and spdlog's machinery live in log.cpp once (spdlog's header and its per-call
// templates were most of the compile time of every file that logs).
#pragma once

#include <fmt/core.h>

#include <cstdint>
#include <string>

namespace spdlog {
class logger;
}

namespace vcp::log {

enum class Level { trace, debug, info, warn, error, off };

// Sets the global level; also read from VCP_LOG=trace|debug|info|warn|error|off at first use.
void set_level(Level l);
Level level();
bool parse_level(const std::string& s, Level* out);

// The process-wide logger (stderr, with a time stamp and the tag), for those that add sinks.
spdlog::logger& get();

// Whether a message at this level goes anywhere now.
bool enabled(Level l);
// Formats and logs one message (callers checked enabled(l)).
void emit(Level l, fmt::string_view format, fmt::format_args args);

template <typename... Args>
inline void write(Level l, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(l)) emit(l, format, fmt::make_format_args(args...));
}

// For an event a misbehaving peer can repeat without bound (a refused request, a failed
// command): whether its n-th occurrence (counting from 1) is logged. The first 16 are, then one
// in 1000, so the log says what happens without being flooded by it.
constexpr bool thin(uint64_t n) { return n <= 16 || n % 1000 == 0; }

}  // namespace vcp::log

#define VCP_LOG_ERROR(...) ::vcp::log::write(::vcp::log::Level::error, __VA_ARGS__)
#define VCP_LOG_WARN(...) ::vcp::log::write(::vcp::log::Level::warn, __VA_ARGS__)
#define VCP_LOG_INFO(...) ::vcp::log::write(::vcp::log::Level::info, __VA_ARGS__)
#define VCP_LOG_DEBUG(...) ::vcp::log::write(::vcp::log::Level::debug, __VA_ARGS__)
