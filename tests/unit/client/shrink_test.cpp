// A front-end that shrinks its guest memory under a real BlkDevice: the queue thread's access to
// the lost pages is survived (src/base/shrink_guard.hpp), the front-end is dropped, and the
// device serves the next one.
#include <fcntl.h>
#include <sys/mman.h>

#include "harness.hpp"
#include "vhost/frontend.hpp"
#include "virtio/split_queue.hpp"

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

  // Guest memory that cannot be sealed against shrinking: a memfd without MFD_ALLOW_SEALING.
  constexpr size_t kMem = 1 << 20;
  constexpr uint64_t kDesc = 0x10000, kAvail = 0x11000, kUsed = 0x12000, kHeader = 0x20000, kStatus = 0x20100,
                     kData = 0xc0000, kKeep = 0x80000;
  UniqueFd memfd(memfd_create("shrink-test-mem", MFD_CLOEXEC));
  ASSERT_TRUE(memfd);
  ASSERT_EQ(ftruncate(memfd.get(), kMem), 0);
  void* m = mmap(nullptr, kMem, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
  ASSERT_NE(m, MAP_FAILED);
  auto* mem = static_cast<uint8_t*>(m);
  const auto uva = [&](uint64_t off) { return reinterpret_cast<uint64_t>(mem) + off; };

  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  srv.loop = std::make_unique<ServerLoop>(*srv.device, UniqueFd(sv[0]));
  vhost::FrontendChannel fe(UniqueFd(sv[1]), 2000);
  auto pf = fe.get_protocol_features();
  ASSERT_TRUE(pf);
  ASSERT_EQ(fe.set_protocol_features(*pf & vhost::bit(vhost::kProtoReplyAck)), 0);
  ASSERT_EQ(fe.set_owner(), 0);
  ASSERT_EQ(fe.set_features((1ull << VIRTIO_F_VERSION_1) | vhost::bit(vhost::kFeatureProtocolFeatures)), 0);
  vhost::FrontendChannel::RegionFd r{{0, kMem, uva(0), 0}, memfd.get()};
  ASSERT_EQ(fe.set_mem_table({&r, 1}), 0);
  UniqueFd kick(eventfd(0, EFD_CLOEXEC)), call(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_EQ(fe.set_vring_num(0, 64), 0);
  ASSERT_EQ(fe.set_vring_base(0, 0), 0);
  ASSERT_EQ(fe.set_vring_addr({0, 0, uva(kDesc), uva(kUsed), uva(kAvail), 0}), 0);
  ASSERT_EQ(fe.set_vring_kick(0, kick.get()), 0);
  ASSERT_EQ(fe.set_vring_call(0, call.get()), 0);
  ASSERT_EQ(fe.set_vring_enable(0, true), 0);

  // One 4 KiB read whose data buffer lies in the part of the file about to go.
  auto* hdr = reinterpret_cast<virtio_blk_outhdr*>(mem + kHeader);
  hdr->type = VIRTIO_BLK_T_IN;
  hdr->ioprio = 0;
  hdr->sector = 0;
  mem[kStatus] = 0xff;
  auto* desc = reinterpret_cast<vring_desc*>(mem + kDesc);
  desc[0] = {kHeader, sizeof(virtio_blk_outhdr), VRING_DESC_F_NEXT, 1};
  desc[1] = {kData, 4096, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2};
  desc[2] = {kStatus, 1, VRING_DESC_F_WRITE, 0};
  auto* avail = reinterpret_cast<vring_avail*>(mem + kAvail);
  avail->ring[0] = 0;
  __atomic_store_n(&avail->idx, 1, __ATOMIC_RELEASE);
  ASSERT_EQ(ftruncate(memfd.get(), kKeep), 0);  // the data buffer is past the new end
  const uint64_t one = 1;
  ASSERT_EQ(write(kick.get(), &one, sizeof(one)), 8);

  // The queue thread copied into the lost page (it read zeros there instead of dying), finished
  // the request in the memory that is still shared, and the front-end was dropped.
  ASSERT_TRUE(readable(call.get(), 5000)) << "the request was not completed";
  auto* used = reinterpret_cast<vring_used*>(mem + kUsed);
  EXPECT_EQ(__atomic_load_n(&used->idx, __ATOMIC_ACQUIRE), 1);
  EXPECT_EQ(used->ring[0].id, 0u);
  EXPECT_EQ(mem[kStatus], VIRTIO_BLK_S_OK);
  EXPECT_TRUE(readable(sv[1], 5000)) << "the connection was not closed";
  EXPECT_FALSE(fe.get_features().ok()) << "the front-end is dropped";
  munmap(m, kMem);

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
