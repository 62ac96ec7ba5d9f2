// Live migration against a real BlkDevice: with VHOST_F_LOG_ALL and a log from SET_LOG_BASE,
// every guest page the queue thread writes is marked (data of reads, status bytes, the used
// ring when its ring asks for it), none it only reads, and nothing once logging is off.
#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "raw_frontend.hpp"

namespace vcp::client::test {
namespace {

// A log the way QEMU makes it: a sealed memfd, mapped here to read the marks.
struct Log {
  explicit Log(size_t bytes) : size(bytes) {
    fd.reset(memfd_create("dirty-log", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd || ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) return;
    (void)fcntl(fd.get(), F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (m != MAP_FAILED) bits = static_cast<uint8_t*>(m);
  }
  ~Log() {
    if (bits) munmap(bits, size);
  }
  // Pages marked, by the offset into RawFrontend's memory of their first byte; clears them as
  // QEMU does when it collects.
  std::vector<uint64_t> take() {
    std::vector<uint64_t> out;
    for (uint64_t page = 0; page < size * 8; ++page) {
      if (!((__atomic_load_n(&bits[page / 8], __ATOMIC_ACQUIRE) >> (page % 8)) & 1)) continue;
      out.push_back(page * 4096 - RawFrontend::kGpa);
    }
    std::memset(bits, 0, size);
    return out;
  }
  // The used ring is marked just after used->idx moves (after the write, as it must be), so a
  // test that saw a completion may be a moment early: collects until `want` is there (5 s at
  // most) and returns everything collected.
  std::vector<uint64_t> take_until(const std::vector<uint64_t>& want) {
    std::vector<uint64_t> got;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      for (uint64_t p : take())
        if (std::find(got.begin(), got.end(), p) == got.end()) got.push_back(p);
      std::sort(got.begin(), got.end());
      if (std::includes(got.begin(), got.end(), want.begin(), want.end()) ||
          std::chrono::steady_clock::now() > deadline)
        return got;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  UniqueFd fd;
  uint8_t* bits = nullptr;
  size_t size;
};

class DirtyLog : public ::testing::Test {
 protected:
  void SetUp() override {
    DeviceOptions o;
    o.poll = vcp::PollMode::never;
    srv = std::make_unique<DeviceServer>(o);
    ASSERT_TRUE(srv->device);
    ASSERT_NE(log.bits, nullptr);
    ASSERT_NO_FATAL_FAILURE(f.connect(*srv));
  }
  // QEMU's vhost_migration_log(true) on a running device.
  void start_logging() {
    ASSERT_EQ(f.fe().set_log_base(log.fd.get(), log.size), 0);
    ASSERT_EQ(f.fe().set_features(f.features() | vhost::bit(vhost::kFeatureLogAll)), 0);
    ASSERT_EQ(f.fe().set_vring_addr(f.ring_addr(1u << VHOST_VRING_F_LOG)), 0);
  }
  void stop_logging() {
    ASSERT_EQ(f.fe().set_features(f.features()), 0);
    ASSERT_EQ(f.fe().set_vring_addr(f.ring_addr()), 0);
  }

  RawFrontend f{MFD_CLOEXEC | MFD_ALLOW_SEALING};
  Log log{4096};  // guest addresses up to 128 MiB
  std::unique_ptr<DeviceServer> srv;
};

TEST_F(DirtyLog, ReadsMarkTheirDataStatusAndUsedRingPagesOnly) {
  ASSERT_NO_FATAL_FAILURE(start_logging());
  for (uint64_t page : log.take())
    EXPECT_EQ(page, RawFrontend::kUsed) << "before any request, only the used ring's flags (asking for kicks)";

  constexpr uint64_t kData = 0x40000;
  f.submit_read(0, 0, kData);
  f.kick();
  ASSERT_TRUE(f.wait_used(1));
  // The data page, the status byte's page, the used ring's page; not the descriptors, the avail
  // ring or the request header, which the device only reads.
  const std::vector<uint64_t> first{RawFrontend::kUsed, RawFrontend::kStatus & ~0xfffull, kData};
  EXPECT_EQ(log.take_until(first), first);

  // A read into a buffer that spans two pages marks both.
  f.submit_read(1, 8, 0x50800);
  f.kick();
  ASSERT_TRUE(f.wait_used(2));
  const std::vector<uint64_t> second{RawFrontend::kUsed, RawFrontend::kStatus & ~0xfffull, 0x50000, 0x51000};
  EXPECT_EQ(log.take_until(second), second);

  // Logging off: reads go on, nothing is marked.
  ASSERT_NO_FATAL_FAILURE(stop_logging());
  (void)log.take();  // marks made before the queue took the change
  f.submit_read(2, 16, 0x60000);
  f.kick();
  ASSERT_TRUE(f.wait_used(3));
  EXPECT_TRUE(log.take().empty());
}

TEST_F(DirtyLog, WithoutTheRingFlagTheUsedRingIsNotMarked) {
  ASSERT_EQ(f.fe().set_log_base(log.fd.get(), log.size), 0);
  ASSERT_EQ(f.fe().set_features(f.features() | vhost::bit(vhost::kFeatureLogAll)), 0);
  f.submit_read(0, 0, 0x40000);
  f.kick();
  ASSERT_TRUE(f.wait_used(1));
  const std::vector<uint64_t> want{RawFrontend::kStatus & ~0xfffull, 0x40000};
  EXPECT_EQ(log.take_until(want), want);
}

TEST_F(DirtyLog, ALogTooSmallForTheGuestIsSurvivedAndSaid) {
  // 1 byte covers 8 pages (32 KiB): the guest memory at 1 MiB lies beyond it.
  Log tiny(1);
  ASSERT_EQ(f.fe().set_log_base(tiny.fd.get(), 1), 0);
  ASSERT_EQ(f.fe().set_features(f.features() | vhost::bit(vhost::kFeatureLogAll)), 0);
  f.submit_read(0, 0, 0x40000);
  f.kick();
  ASSERT_TRUE(f.wait_used(1)) << "the request completes all the same";
  EXPECT_EQ(tiny.bits[0], 0) << "nothing written outside the log";
}

}  // namespace
}  // namespace vcp::client::test
