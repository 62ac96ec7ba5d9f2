#include "base/log.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <mutex>

namespace vcp::log {
namespace {

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::trace: return spdlog::level::trace;
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
    case Level::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> make() {
  auto l = std::make_shared<spdlog::logger>("vcp", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  l->set_pattern("%H:%M:%S.%e %^%L%$ [%t] %v");
  Level lv = Level::info;
  if (const char* env = std::getenv("VCP_LOG")) parse_level(env, &lv);
  l->set_level(to_spd(lv));
  l->flush_on(spdlog::level::warn);
  return l;
}

spdlog::logger& instance() {
  static std::shared_ptr<spdlog::logger> l = make();
  return *l;
}

}  // namespace

bool parse_level(const std::string& s, Level* out) {
  static const std::pair<const char*, Level> names[] = {{"trace", Level::trace}, {"debug", Level::debug},
                                                        {"info", Level::info},   {"warn", Level::warn},
                                                        {"error", Level::error}, {"off", Level::off}};
  for (auto& [n, l] : names) {
    if (s == n) {
      *out = l;
      return true;
    }
  }
  return false;
}

void set_level(Level l) { instance().set_level(to_spd(l)); }

Level level() {
  switch (instance().level()) {
    case spdlog::level::trace: return Level::trace;
    case spdlog::level::debug: return Level::debug;
    case spdlog::level::info: return Level::info;
    case spdlog::level::warn: return Level::warn;
    case spdlog::level::err: return Level::error;
    default: return Level::off;
  }
}

spdlog::logger& get() { return instance(); }

bool enabled(Level l) { return instance().should_log(to_spd(l)); }

void emit(Level l, fmt::string_view format, fmt::format_args args) {
  fmt::memory_buffer text;
  try {
    fmt::vformat_to(fmt::appender(text), format, args);
  } catch (const std::exception& e) {
    // Format strings are checked when compiled; one given as fmt::runtime() is not. A log
    // line must never throw into the code that logs: say what went wrong instead.
    text.clear();
    fmt::format_to(fmt::appender(text), "[log format error: {}] {}", e.what(), format);
  }
  instance().log(to_spd(l), spdlog::string_view_t(text.data(), text.size()));
}

}  // namespace vcp::log
