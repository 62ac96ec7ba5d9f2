// base/log: what VCP_LOG_* writes, and that nothing below the level is formatted at all.
#include "base/log.hpp"

#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "../log_capture.hpp"

namespace vcp {
namespace {

// Counts how often it is formatted: an argument that must not be touched below the level.
struct Counted {
  int* formatted;
};

}  // namespace
}  // namespace vcp

template <>
struct fmt::formatter<vcp::Counted> : fmt::formatter<int> {
  auto format(const vcp::Counted& c, fmt::format_context& ctx) const {
    return fmt::formatter<int>::format(++*c.formatted, ctx);
  }
};

namespace vcp {
namespace {

TEST(Log, WritesTheFormattedMessageAtItsLevel) {
  std::ostringstream out;
  test::LogCapture capture(out);
  VCP_LOG_INFO("queue {}: {} requests, {:.1f} MiB, tag {:#x}", "vq0", 42, 1.5, 255u);
  VCP_LOG_WARN("refused: {}", std::string("a {brace} in a value is text"));
  VCP_LOG_ERROR("plain text with no arguments");
  const std::string s = out.str();
  EXPECT_NE(s.find("queue vq0: 42 requests, 1.5 MiB, tag 0xff"), std::string::npos) << s;
  EXPECT_NE(s.find("refused: a {brace} in a value is text"), std::string::npos) << s;
  EXPECT_NE(s.find("plain text with no arguments"), std::string::npos) << s;
}

TEST(Log, NothingBelowTheLevelIsFormatted) {
  std::ostringstream out;
  test::LogCapture capture(out);  // info at least
  const log::Level before = log::level();
  log::set_level(log::Level::warn);
  int formatted = 0;
  VCP_LOG_INFO("info {}", Counted{&formatted});
  VCP_LOG_DEBUG("debug {}", Counted{&formatted});
  EXPECT_EQ(formatted, 0);
  EXPECT_FALSE(log::enabled(log::Level::info));
  EXPECT_TRUE(log::enabled(log::Level::warn));
  VCP_LOG_WARN("warn {}", Counted{&formatted});
  EXPECT_EQ(formatted, 1);
  log::set_level(log::Level::debug);
  VCP_LOG_DEBUG("debug {}", Counted{&formatted});
  EXPECT_EQ(formatted, 2);
  log::set_level(before);
  const std::string s = out.str();
  EXPECT_EQ(s.find("info 1"), std::string::npos) << s;
  EXPECT_NE(s.find("warn 1"), std::string::npos) << s;
  EXPECT_NE(s.find("debug 2"), std::string::npos) << s;
}

TEST(Log, AFormatErrorIsLoggedNotThrown) {
  // A format string given at run time is not checked when compiled; a wrong one must not
  // throw into the caller (spdlog caught it before log.hpp stopped including it).
  std::ostringstream out;
  test::LogCapture capture(out);
  EXPECT_NO_THROW(VCP_LOG_WARN(fmt::runtime("two {} {} but one argument"), 1));
  const std::string s = out.str();
  EXPECT_NE(s.find("[log format error: "), std::string::npos) << s;
  EXPECT_NE(s.find("two {} {} but one argument"), std::string::npos) << s;
}

TEST(Log, ParsesLevelNames) {
  log::Level l = log::Level::info;
  EXPECT_TRUE(log::parse_level("debug", &l));
  EXPECT_EQ(l, log::Level::debug);
  EXPECT_TRUE(log::parse_level("off", &l));
  EXPECT_EQ(l, log::Level::off);
  EXPECT_FALSE(log::parse_level("verbose", &l));
  EXPECT_EQ(l, log::Level::off);
}

}  // namespace
}  // namespace vcp
