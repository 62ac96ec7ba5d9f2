// A driver and a device sharing one piece of "guest memory", for the ring tests.
#pragma once

#include <sys/mman.h>

#include <cstring>

#include <gtest/gtest.h>

#include "virtio/driver_queue.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/split_queue.hpp"

namespace vcp::virtio::testing {

// Guest memory at guest address kBase: the ring first, then indirect tables, then buffers.
struct RingHarness {
  static constexpr uint64_t kBase = 0x4000'0000;
  static constexpr size_t kBytes = 4 << 20;
  static constexpr size_t kRingOff = 0;
  static constexpr size_t kIndOff = 256 << 10;
  static constexpr size_t kBufOff = 1 << 20;

  explicit RingHarness(uint16_t size = 16, bool event_idx = false, uint16_t max_indirect = 32) {
    host = static_cast<uint8_t*>(mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    EXPECT_NE(host, MAP_FAILED);
    EXPECT_EQ(mem.add({kBase, kBytes, reinterpret_cast<uint64_t>(host), host}), 0);
    EXPECT_EQ(drv.init(host + kRingOff, kBase + kRingOff, size, event_idx, host + kIndOff, kBase + kIndOff,
                       max_indirect),
              0);
    EXPECT_EQ(dev.start(&mem, drv.layout(), event_idx, 0), 0);
  }
  ~RingHarness() { munmap(host, kBytes); }

  uint64_t buf(size_t off) const { return kBase + kBufOff + off; }
  uint8_t* buf_host(size_t off) const { return host + kBufOff + off; }
  vring_desc* desc() const { return drv.layout().desc; }

  // Puts a raw head into the avail ring and publishes it, bypassing DriverQueue's checks.
  void raw_publish(uint16_t head) {
    vring_avail* a = drv.layout().avail;
    a->ring[a->idx & (drv.size() - 1)] = head;
    a->idx = static_cast<uint16_t>(a->idx + 1);
  }

  uint8_t* host = nullptr;
  GuestMemory mem;
  DriverQueue drv;
  DeviceQueue dev;
  Segment segs[64];
};

}  // namespace vcp::virtio::testing
