// A front-end that shrinks its guest memory under a real BlkDevice: the queue thread's access to
// the lost pages is survived (src/base/shrink_guard.hpp), the front-end is dropped, and the
// device serves the next one.
#include "raw_frontend.hpp"

namespace vcp::client::test {
namespace {

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

TEST(ShrunkGuestMemory, TheFrontendIsDroppedAndTheNextOneIsServed) {
  DeviceOptions o;
  o.poll = vcp::PollMode::never;
  DeviceServer srv(o);
  ASSERT_TRUE(srv.device);
  RawFrontend f;  // memory that cannot be sealed against shrinking
  ASSERT_NO_FATAL_FAILURE(f.connect(srv));

  // One 4 KiB read whose data buffer lies in the part of the file about to go.
  constexpr uint64_t kData = 0xc0000, kKeep = 0x80000;
  f.submit_read(0, 0, kData);
  ASSERT_EQ(ftruncate(f.memfd(), kKeep), 0);
  f.kick();

  // The queue thread copied into the lost page (it read zeros there instead of dying), finished
  // the request in the memory that is still shared, and the front-end was dropped.
  ASSERT_TRUE(f.wait_used(1)) << "the request was not completed";
  const auto* used = reinterpret_cast<const vring_used*>(f.mem() + RawFrontend::kUsed);
  EXPECT_EQ(used->ring[0].id, 0u);
  EXPECT_EQ(f.mem()[RawFrontend::kStatus], VIRTIO_BLK_S_OK);
  EXPECT_TRUE(readable(f.fe().fd(), 5000)) << "the connection was not closed";
  EXPECT_FALSE(f.fe().get_features().ok()) << "the front-end is dropped";
  f.unmap();

  // The VCP lives: as `vcp serve` does, the device is reset and the next front-end served.
  srv.loop.reset();
  srv.device->reset();
  std::unique_ptr<Client> c;
  ASSERT_EQ(srv.connect({}, &c), 0);
  auto* buf = static_cast<uint8_t*>(c->alloc(4096));
  ASSERT_NE(buf, nullptr);
  std::memset(buf, 0x5c, 4096);
  ASSERT_EQ(c->queue(0).write_sync(8192, buf, 4096), 0);
  std::memset(buf, 0, 4096);
  ASSERT_EQ(c->queue(0).read_sync(8192, buf, 4096), 0);
  EXPECT_EQ(buf[4095], 0x5c);
}

}  // namespace
}  // namespace vcp::client::test
