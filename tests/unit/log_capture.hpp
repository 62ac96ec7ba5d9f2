// For tests that check what is logged: while a LogCapture lives, the process-wide log also goes
// to `out`, at info level at least (whatever VCP_LOG says); both are restored after.
#pragma once

#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include <memory>
#include <sstream>

#include "base/log.hpp"

namespace vcp::test {

struct LogCapture {
  explicit LogCapture(std::ostringstream& out) : level(vcp::log::level()) {
    if (level > vcp::log::Level::info) vcp::log::set_level(vcp::log::Level::info);
    vcp::log::get().sinks().push_back(std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  }
  ~LogCapture() {
    vcp::log::get().sinks().pop_back();
    vcp::log::set_level(level);
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  vcp::log::Level level;
};

}  // namespace vcp::test
