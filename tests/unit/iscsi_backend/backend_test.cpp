// IscsiBackend::grow() and resize_fd(), against a scripted target (scripted_target.hpp) that
// answers the probe sessions' commands from a thread of its own: make_iscsi and grow() run
// their probe sessions to the end before returning, so the target cannot be played step by
// step from the test's thread as session_test.cpp does.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <atomic>
#include <sstream>
#include <thread>

#include "../log_capture.hpp"
#include "backends/factories.hpp"
#include "scripted_target.hpp"

namespace vcp::backends::iscsi {
namespace {

using testing::ScriptedTarget;
namespace is = vcp::iscsi;

// One LUN of the given shape: every probe session is logged in; TEST UNIT READY and READ
// CAPACITY(16) are answered, every other command is refused (ILLEGAL REQUEST: no VPD pages, no
// MODE SENSE), a Logout is answered.
class ScriptedLun {
 public:
  ScriptedLun() : thread_([this] { serve(); }) {}
  ~ScriptedLun() {
    stop_ = true;
    thread_.join();
  }
  ScriptedLun(const ScriptedLun&) = delete;
  ScriptedLun& operator=(const ScriptedLun&) = delete;

  std::string url(const char* options = "?timeout=5&login_timeout=2") const {
    return "iscsi://127.0.0.1:" + std::to_string(target_.port()) + "/" + testing::kScriptedIqn + "/1" + options;
  }

  std::atomic<uint64_t> blocks{16384};
  std::atomic<uint32_t> block_size{512};
  std::atomic<uint8_t> physical_exponent{0};  // READ CAPACITY(16) byte 13
  std::atomic<bool> refuse_capacity{false};  // READ CAPACITY(16): MEDIUM ERROR
  // The next TEST UNIT READY gets a unit attention with this ASC/ASCQ (0: none).
  std::atomic<uint16_t> unit_attention{0};
  std::atomic<uint32_t> logins{0};
  std::atomic<uint32_t> logouts{0};

 private:
  void serve() {
    while (!stop_) {
      if (!target_.accept(100) || !target_.login()) continue;
      ++logins;
      while (!stop_) {
        auto r = target_.next(100);
        if (!r) {
          if (target_.eof()) break;
          continue;
        }
        if (auto* c = r->as<is::ScsiCommandPdu>()) {
          target_.saw_command(*c);
          answer(*c);
        } else if (auto* l = r->as<is::LogoutRequestPdu>()) {
          is::LogoutResponsePdu rs;
          rs.itt = l->itt;
          target_.stamp(rs);
          ++logouts;  // before the answer: the probe returns as soon as it has it
          target_.send(rs);
          break;
        }
      }
      target_.drop();
    }
  }
  void answer(const is::ScsiCommandPdu& c) {
    const uint8_t check = vcp::scsi::code(vcp::scsi::Status::check_condition);
    if (c.cdb[0] == vcp::scsi::op::kTestUnitReady) {
      if (uint16_t ua = unit_attention.exchange(0))
        target_.respond(c.itt, check, ScriptedTarget::sense(0x6, static_cast<uint8_t>(ua >> 8), static_cast<uint8_t>(ua)));
      else
        target_.respond(c.itt, 0);
    } else if (c.cdb[0] == vcp::scsi::op::kServiceActionIn16 && (c.cdb[1] & 0x1f) == vcp::scsi::sa::kReadCapacity16) {
      if (refuse_capacity) {
        target_.respond(c.itt, check, ScriptedTarget::sense(0x3, 0x11, 0x00));
        return;
      }
      std::vector<uint8_t> d(kReadCapacity16Length, 0);
      const uint64_t last = blocks - 1;
      for (int i = 0; i < 8; ++i) d[i] = static_cast<uint8_t>(last >> (56 - 8 * i));
      const uint32_t bs = block_size;
      for (int i = 0; i < 4; ++i) d[8 + i] = static_cast<uint8_t>(bs >> (24 - 8 * i));
      d[13] = physical_exponent;
      target_.data_in_good(c.itt, d);
    } else {
      target_.respond(c.itt, check, ScriptedTarget::sense(0x5, 0x20, 0x00));  // INVALID COMMAND OPERATION CODE
    }
  }

  ScriptedTarget target_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: it starts once the rest is built
};

std::unique_ptr<BlockBackend> open(const ScriptedLun& lun) {
  std::string error;
  auto b = make_iscsi(lun.url(), &error);
  EXPECT_TRUE(b) << error;
  return b;
}

bool readable(int efd) {
  uint64_t v = 0;
  return ::read(efd, &v, sizeof v) == sizeof v;
}

TEST(IscsiBackendInfo, ThePhysicalBlockIsTheTargets) {
  // A 512e LUN (exponent 3): 4 KiB physical blocks, passed on to the guest. An exponent that
  // would make them larger than 64 KiB is taken as 64 KiB.
  for (auto [exponent, physical] : {std::pair<uint8_t, uint32_t>{0, 512}, {3, 4096}, {15, 65536}}) {
    ScriptedLun lun;
    lun.physical_exponent = exponent;
    auto b = open(lun);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->info().block_size, 512u);
    EXPECT_EQ(b->info().physical_block_size, physical) << int(exponent);
  }
}

TEST(IscsiBackendGrow, TakesALargerCapacityAndKeepsItWhenTheLunShrinks) {
  ScriptedLun lun;
  auto b = open(lun);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->info().capacity_bytes, 8u << 20);
  const BackendInfo before = b->info();

  std::ostringstream log;
  vcp::test::LogCapture capture(log);
  bool shrunk = true;
  EXPECT_EQ(b->grow(&shrunk), 8u << 20) << "the same size";
  EXPECT_FALSE(shrunk);

  lun.blocks = 32768;
  EXPECT_EQ(b->grow(&shrunk), 16u << 20);
  EXPECT_FALSE(shrunk);
  EXPECT_EQ(b->info().capacity_bytes, 16u << 20);
  EXPECT_NE(log.str().find("/1: grown from 8388608 to 16777216 bytes"), std::string::npos) << log.str();
  // Nothing else changed.
  EXPECT_EQ(b->info().block_size, before.block_size);
  EXPECT_EQ(b->info().description, before.description);
  EXPECT_EQ(b->info().read_only, before.read_only);

  lun.blocks = 8192;
  EXPECT_EQ(b->grow(&shrunk), 16u << 20);
  EXPECT_TRUE(shrunk);
  EXPECT_EQ(b->info().capacity_bytes, 16u << 20);
  EXPECT_NE(log.str().find("shrunk from 16777216 to 4194304 bytes"), std::string::npos) << log.str();
  EXPECT_EQ(b->grow(), 16u << 20) << "without shrunk";

  // Each probe logged in and out (the start-up one and four for grow()).
  EXPECT_EQ(lun.logins, 5u);
  EXPECT_EQ(lun.logouts, 5u);
}

TEST(IscsiBackendGrow, ABlockSizeChangeKeepsTheCapacity) {
  ScriptedLun lun;
  auto b = open(lun);
  ASSERT_TRUE(b);
  std::ostringstream log;
  vcp::test::LogCapture capture(log);
  lun.block_size = 4096;  // and 64 MiB: larger, but not servable
  bool shrunk = true;
  EXPECT_EQ(b->grow(&shrunk), 8u << 20);
  EXPECT_FALSE(shrunk);
  EXPECT_EQ(b->info().capacity_bytes, 8u << 20);
  EXPECT_EQ(b->info().block_size, 512u);
  EXPECT_NE(log.str().find("block size changed from 512 to 4096"), std::string::npos) << log.str();
}

// A probe that cannot read the capacity (refused; nothing listening) keeps the capacity, says
// why, and returns within the login timeout.
TEST(IscsiBackendGrow, AFailedProbeKeepsTheCapacity) {
  auto lun = std::make_unique<ScriptedLun>();
  auto b = open(*lun);
  ASSERT_TRUE(b);
  std::ostringstream log;
  vcp::test::LogCapture capture(log);
  lun->blocks = 32768;
  lun->refuse_capacity = true;
  bool shrunk = true;
  EXPECT_EQ(b->grow(&shrunk), 8u << 20);
  EXPECT_FALSE(shrunk);
  EXPECT_NE(log.str().find("capacity not read again, 8388608 bytes kept (SIGHUP to vcp serve tries again): READ "
                           "CAPACITY(16)"),
            std::string::npos)
      << log.str();

  lun.reset();  // the listener closes: connections are refused
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(b->grow(&shrunk), 8u << 20);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(b->info().capacity_bytes, 8u << 20);
  EXPECT_NE(log.str().rfind("capacity not read again"), log.str().find("capacity not read again")) << log.str();
}

// resize_fd() is a non-blocking eventfd; the unit attention a probe takes (its TEST UNIT READY
// exists to take it) does not signal it: grow() reads the capacity anyway.
TEST(IscsiBackendGrow, TheProbesOwnUnitAttentionIsNotSignalled) {
  ScriptedLun lun;
  auto b = open(lun);
  ASSERT_TRUE(b);
  const int efd = b->resize_fd();
  ASSERT_GE(efd, 0);
  EXPECT_TRUE(fcntl(efd, F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(fcntl(efd, F_GETFD) & FD_CLOEXEC);
  EXPECT_FALSE(readable(efd));
  lun.blocks = 32768;
  lun.unit_attention = 0x2a09;
  EXPECT_EQ(b->grow(), 16u << 20);
  EXPECT_EQ(lun.unit_attention, 0u) << "the probe met the unit attention";
  EXPECT_FALSE(readable(efd));
}

}  // namespace
}  // namespace vcp::backends::iscsi
