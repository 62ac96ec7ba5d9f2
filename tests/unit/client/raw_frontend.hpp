// A front-end written by hand against a real BlkDevice (DeviceServer): guest memory in a memfd
// it maps itself, one ring at fixed places, requests put into the ring directly. For tests of
// what no well-behaved client does (shrinking its memory) and of what libvcp does not do
// (migrating: the dirty page log).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <chrono>

#include "harness.hpp"
#include "vhost/frontend.hpp"
#include "virtio/split_queue.hpp"

namespace vcp::client::test {

class RawFrontend {
 public:
  // Guest memory: 1 MiB at guest physical address kGpa. Ring 0 (64 entries) at kDesc, kAvail,
  // kUsed; one request's header at kHeader, its status byte at kStatus.
  static constexpr size_t kMem = 1 << 20;
  static constexpr uint64_t kGpa = 0x100000;
  static constexpr uint64_t kDesc = 0x10000, kAvail = 0x11000, kUsed = 0x12000, kHeader = 0x20000, kStatus = 0x20100;

  // `memfd_flags`: MFD_CLOEXEC alone makes memory that cannot be sealed against shrinking.
  explicit RawFrontend(unsigned memfd_flags = MFD_CLOEXEC) {
    memfd_.reset(memfd_create("raw-frontend-mem", memfd_flags));
    if (!memfd_ || ftruncate(memfd_.get(), kMem) != 0) return;
    void* m = mmap(nullptr, kMem, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    if (m != MAP_FAILED) mem_ = static_cast<uint8_t*>(m);
  }
  ~RawFrontend() {
    if (mem_) munmap(mem_, kMem);
  }

  // Connects to srv over a socketpair and brings ring 0 up (VERSION_1 and protocol features,
  // REPLY_ACK, the memory table, kick and call eventfds). Fails the test on any refusal.
  void connect(DeviceServer& srv, uint64_t extra_features = 0) {
    ASSERT_NE(mem_, nullptr);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    srv.loop = std::make_unique<ServerLoop>(*srv.device, UniqueFd(sv[0]));
    fe_ = std::make_unique<vhost::FrontendChannel>(UniqueFd(sv[1]), 2000);
    auto pf = fe_->get_protocol_features();
    ASSERT_TRUE(pf);
    ASSERT_EQ(fe_->set_protocol_features(*pf & (vhost::bit(vhost::kProtoReplyAck) | vhost::bit(vhost::kProtoLogShmfd))),
              0);
    ASSERT_EQ(fe_->set_owner(), 0);
    features_ = (1ull << VIRTIO_F_VERSION_1) | vhost::bit(vhost::kFeatureProtocolFeatures) | extra_features;
    ASSERT_EQ(fe_->set_features(features_), 0);
    vhost::FrontendChannel::RegionFd r{{kGpa, kMem, uva(0), 0}, memfd_.get()};
    ASSERT_EQ(fe_->set_mem_table({&r, 1}), 0);
    ASSERT_EQ(fe_->set_vring_num(0, 64), 0);
    ASSERT_EQ(fe_->set_vring_base(0, 0), 0);
    ASSERT_EQ(fe_->set_vring_addr(ring_addr()), 0);
    ASSERT_EQ(fe_->set_vring_kick(0, kick_.get()), 0);
    ASSERT_EQ(fe_->set_vring_call(0, call_.get()), 0);
    ASSERT_EQ(fe_->set_vring_enable(0, true), 0);
  }

  vhost_vring_addr ring_addr(uint32_t flags = 0) const {
    return {0, flags, uva(kDesc), uva(kUsed), uva(kAvail), flags ? kGpa + kUsed : 0};
  }

  // Puts a 4 KiB read of sector `sector` into data buffer `data` (an offset in the memory)
  // into the ring as head `slot * 3` and kicks.
  void submit_read(uint16_t slot, uint64_t sector, uint64_t data) {
    auto* hdr = reinterpret_cast<virtio_blk_outhdr*>(mem_ + kHeader + slot * 16);
    hdr->type = VIRTIO_BLK_T_IN;
    hdr->ioprio = 0;
    hdr->sector = sector;
    mem_[kStatus + slot] = 0xff;
    auto* desc = reinterpret_cast<vring_desc*>(mem_ + kDesc);
    const uint16_t h = static_cast<uint16_t>(slot * 3);
    desc[h] = {kGpa + kHeader + slot * 16, sizeof(virtio_blk_outhdr), VRING_DESC_F_NEXT, static_cast<uint16_t>(h + 1)};
    desc[h + 1] = {kGpa + data, 4096, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, static_cast<uint16_t>(h + 2)};
    desc[h + 2] = {kGpa + kStatus + slot, 1, VRING_DESC_F_WRITE, 0};
    auto* avail = reinterpret_cast<vring_avail*>(mem_ + kAvail);
    avail->ring[avail_idx_ % 64] = h;
    __atomic_store_n(&avail->idx, ++avail_idx_, __ATOMIC_RELEASE);
  }
  void kick() {
    const uint64_t one = 1;
    ASSERT_EQ(write(kick_.get(), &one, sizeof(one)), 8);
  }
  // Waits up to 5 s for used->idx to reach `n`.
  bool wait_used(uint16_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (used_idx() != n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      pollfd p{call_.get(), POLLIN, 0};
      uint64_t calls = 0;
      if (::poll(&p, 1, 10) == 1) (void)!read(call_.get(), &calls, sizeof(calls));
    }
    return true;
  }
  uint16_t used_idx() const {
    return __atomic_load_n(&reinterpret_cast<const vring_used*>(mem_ + kUsed)->idx, __ATOMIC_ACQUIRE);
  }

  uint64_t uva(uint64_t off) const { return reinterpret_cast<uint64_t>(mem_) + off; }
  uint8_t* mem() const { return mem_; }
  int memfd() const { return memfd_.get(); }
  int call_fd() const { return call_.get(); }
  uint64_t features() const { return features_; }
  vhost::FrontendChannel& fe() { return *fe_; }
  // Unmaps the memory now (before the test shrinks the file under the device).
  void unmap() {
    if (mem_) munmap(mem_, kMem);
    mem_ = nullptr;
  }

 private:
  UniqueFd memfd_;
  uint8_t* mem_ = nullptr;
  std::unique_ptr<vhost::FrontendChannel> fe_;
  UniqueFd kick_{eventfd(0, EFD_CLOEXEC)}, call_{eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  uint64_t features_ = 0;
  uint16_t avail_idx_ = 0;
};

}  // namespace vcp::client::test
