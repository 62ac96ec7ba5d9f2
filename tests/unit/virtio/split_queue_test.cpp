#include <atomic>
#include <thread>
#include <vector>

#include "ring_harness.hpp"

namespace vcp::virtio {
namespace {

using testing::RingHarness;

TEST(SplitQueue, DirectChainRoundTrip) {
  RingHarness h;
  DriverBuffer b[3] = {{h.buf(0), 16, false}, {h.buf(4096), 4096, true}, {h.buf(8192), 1, true}};
  int tok = 7;
  int head = h.drv.add(b, 3, &tok);
  ASSERT_GE(head, 0);
  EXPECT_FALSE(h.dev.has_available());
  EXPECT_TRUE(h.drv.publish());  // no flags set: the device wants kicks
  EXPECT_TRUE(h.dev.has_available());

  DescriptorChain c;
  ASSERT_EQ(h.dev.pop(&c, h.segs, 64), DeviceQueue::Pop::chain);
  EXPECT_EQ(c.head, head);
  EXPECT_EQ(c.num_readable, 1);
  EXPECT_EQ(c.num_writable, 2);
  EXPECT_EQ(c.readable_bytes, 16u);
  EXPECT_EQ(c.writable_bytes, 4097u);
  EXPECT_EQ(c.segs[0].addr, h.buf_host(0));
  EXPECT_EQ(c.segs[1].addr, h.buf_host(4096));
  EXPECT_EQ(c.segs[2].len, 1u);
  EXPECT_EQ(h.dev.in_flight(), 1u);
  EXPECT_EQ(h.dev.pop(&c, h.segs, 64), DeviceQueue::Pop::empty);

  void* t = nullptr;
  uint32_t len = 0;
  EXPECT_EQ(h.drv.get_used(&t, &len), -EAGAIN);
  h.dev.push(static_cast<uint16_t>(head), 4097);
  EXPECT_EQ(h.drv.get_used(&t, &len), -EAGAIN);  // not yet published
  EXPECT_TRUE(h.dev.publish_used());
  ASSERT_EQ(h.drv.get_used(&t, &len), 0);
  EXPECT_EQ(t, &tok);
  EXPECT_EQ(len, 4097u);
  EXPECT_EQ(h.drv.num_free(), 16);
  EXPECT_EQ(h.dev.in_flight(), 0u);
  EXPECT_EQ(h.dev.last_avail_idx(), 1);
}

TEST(SplitQueue, IndirectChain) {
  RingHarness h;
  DriverBuffer b[4] = {{h.buf(0), 16, false}, {h.buf(512), 512, false}, {h.buf(4096), 512, true}, {h.buf(8192), 1, true}};
  int head = h.drv.add(b, 4, nullptr, /*indirect=*/true);
  ASSERT_GE(head, 0);
  EXPECT_EQ(h.drv.num_free(), 15);  // one ring descriptor for the whole request
  h.drv.publish();
  DescriptorChain c;
  ASSERT_EQ(h.dev.pop(&c, h.segs, 64), DeviceQueue::Pop::chain);
  EXPECT_EQ(c.num_readable, 2);
  EXPECT_EQ(c.num_writable, 2);
  EXPECT_EQ(c.readable_bytes, 528u);
  EXPECT_EQ(c.segs[1].addr, h.buf_host(512));
}

TEST(SplitQueue, BufferAcrossTwoRegionsBecomesTwoSegments) {
  RingHarness h;
  // A second region right after the first in guest address space, elsewhere in our memory.
  auto* extra = static_cast<uint8_t*>(mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_EQ(h.mem.add({RingHarness::kBase + RingHarness::kBytes, 1 << 20, 0x9000'0000, extra}), 0);
  DriverBuffer b[2] = {{RingHarness::kBase + RingHarness::kBytes - 100, 300, false}, {h.buf(0), 1, true}};
  h.drv.add(b, 2, nullptr);
  h.drv.publish();
  DescriptorChain c;
  ASSERT_EQ(h.dev.pop(&c, h.segs, 64), DeviceQueue::Pop::chain);
  ASSERT_EQ(c.num_readable, 2);
  EXPECT_EQ(c.segs[0].len, 100u);
  EXPECT_EQ(c.segs[1].addr, extra);
  EXPECT_EQ(c.segs[1].len, 200u);
  munmap(extra, 1 << 20);
}

// Hostile chains: each is refused with its reason, consumed, and the queue goes on.
struct Hostile : ::testing::Test {
  RingHarness h;
  ChainError pop_error(uint16_t head, uint32_t capacity = 64) {
    h.raw_publish(head);
    DescriptorChain c;
    auto r = h.dev.pop(&c, h.segs, capacity);
    EXPECT_EQ(r, DeviceQueue::Pop::bad_chain);
    EXPECT_EQ(c.head, head);
    h.dev.push(c.head, 0);
    h.dev.publish_used();
    return c.error;
  }
  void set(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    h.desc()[i] = vring_desc{addr, len, flags, next};
  }
};

TEST_F(Hostile, AddressOutsideMemory) {
  set(0, 0x1000, 16, 0);
  EXPECT_EQ(pop_error(0), ChainError::bad_address);
  set(1, RingHarness::kBase + RingHarness::kBytes - 8, 16, 0);  // runs off the end
  EXPECT_EQ(pop_error(1), ChainError::bad_address);
  set(2, UINT64_MAX - 4, 16, 0);  // wraps
  EXPECT_EQ(pop_error(2), ChainError::bad_address);
}

TEST_F(Hostile, LoopIsCaught) {
  set(0, h.buf(0), 16, VRING_DESC_F_NEXT, 1);
  set(1, h.buf(16), 16, VRING_DESC_F_NEXT, 0);
  EXPECT_EQ(pop_error(0), ChainError::loop);
  set(3, h.buf(0), 16, VRING_DESC_F_NEXT, 3);  // a self loop
  EXPECT_EQ(pop_error(3), ChainError::loop);
}

TEST_F(Hostile, NextOutOfRange) {
  set(0, h.buf(0), 16, VRING_DESC_F_NEXT, 16);
  EXPECT_EQ(pop_error(0), ChainError::bad_next);
}

TEST_F(Hostile, WriteBeforeRead) {
  set(0, h.buf(0), 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
  set(1, h.buf(16), 16, 0);
  EXPECT_EQ(pop_error(0), ChainError::write_before_read);
}

TEST_F(Hostile, TooManySegments) {
  for (uint16_t i = 0; i < 9; ++i) set(i, h.buf(i * 16u), 16, i < 8 ? VRING_DESC_F_NEXT : 0, static_cast<uint16_t>(i + 1));
  EXPECT_EQ(pop_error(0, 8), ChainError::too_many_segments);
}

TEST_F(Hostile, IndirectRules) {
  auto* table = reinterpret_cast<vring_desc*>(h.host + RingHarness::kIndOff);
  const uint64_t taddr = RingHarness::kBase + RingHarness::kIndOff;
  table[0] = {h.buf(0), 16, VRING_DESC_F_INDIRECT, 0};
  set(0, taddr, 16, VRING_DESC_F_INDIRECT);
  EXPECT_EQ(pop_error(0), ChainError::nested_indirect);
  set(1, taddr, 24, VRING_DESC_F_INDIRECT);  // not whole descriptors
  EXPECT_EQ(pop_error(1), ChainError::bad_indirect);
  set(2, taddr, 0, VRING_DESC_F_INDIRECT);
  EXPECT_EQ(pop_error(2), ChainError::bad_indirect);
  set(3, taddr, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 4);
  EXPECT_EQ(pop_error(3), ChainError::bad_indirect);
  set(4, 0x10, 32, VRING_DESC_F_INDIRECT);  // table outside memory
  EXPECT_EQ(pop_error(4), ChainError::bad_address);
  table[0] = {h.buf(0), 16, VRING_DESC_F_NEXT, 0};  // loops inside the table
  set(5, taddr, 16, VRING_DESC_F_INDIRECT);
  EXPECT_EQ(pop_error(5), ChainError::loop);
  table[0] = {h.buf(0), 16, VRING_DESC_F_NEXT, 2};  // next past the table's end
  set(6, taddr, 32, VRING_DESC_F_INDIRECT);
  EXPECT_EQ(pop_error(6), ChainError::bad_next);
}

TEST_F(Hostile, LengthOverflow) {
  // Two 3 GiB buffers in a reserved, never-touched mapping: the total does not fit 32 bits.
  const uint64_t big = 3ull << 30;
  auto* p = static_cast<uint8_t*>(mmap(nullptr, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(h.mem.add({0x10'0000'0000, big, 0, p}), 0);
  set(0, 0x10'0000'0000, static_cast<uint32_t>(big), VRING_DESC_F_NEXT, 1);
  set(1, 0x10'0000'0000, static_cast<uint32_t>(big), 0);
  EXPECT_EQ(pop_error(0), ChainError::too_large);
  munmap(p, big);
}

TEST_F(Hostile, QueueGoesOnAfterBadChains) {
  set(0, 0x1000, 16, 0);
  EXPECT_EQ(pop_error(0), ChainError::bad_address);
  set(1, h.buf(0), 16, 0);
  h.raw_publish(1);
  DescriptorChain c;
  EXPECT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::chain);
  EXPECT_EQ(c.head, 1);
}

TEST(SplitQueueBroken, HeadOutOfRangeStopsTheQueue) {
  RingHarness h;
  h.raw_publish(16);
  DescriptorChain c;
  EXPECT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::broken);
  EXPECT_TRUE(h.dev.broken());
  EXPECT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::broken);
  EXPECT_FALSE(h.dev.has_available());
  // A restart (what SET_VRING_BASE + kick does) brings it back.
  ASSERT_EQ(h.dev.start(&h.mem, h.drv.layout(), false, 1), 0);
  EXPECT_FALSE(h.dev.broken());
}

TEST(SplitQueueBroken, AvailIndexJumpingPastTheRing) {
  RingHarness h;
  h.drv.layout().avail->idx = 17;  // 17 new entries in a ring of 16
  DescriptorChain c;
  EXPECT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::broken);
}

TEST(SplitQueueStart, RefusesBadLayouts) {
  RingHarness h;
  DeviceQueue q;
  QueueLayout l = h.drv.layout();
  l.size = 12;
  EXPECT_EQ(q.start(&h.mem, l, false, 0), -EINVAL);
  l = h.drv.layout();
  l.used = reinterpret_cast<vring_used*>(reinterpret_cast<uint8_t*>(l.used) + 2);
  EXPECT_EQ(q.start(&h.mem, l, false, 0), -EINVAL);
  l = h.drv.layout();
  l.desc = nullptr;
  EXPECT_EQ(q.start(&h.mem, l, false, 0), -EINVAL);
}

TEST(SplitQueueNotify, FlagsWithoutEventIdx) {
  RingHarness h(16, false);
  h.dev.set_notification(false);
  EXPECT_EQ(h.drv.layout().used->flags, VRING_USED_F_NO_NOTIFY);
  DriverBuffer b[2] = {{h.buf(0), 16, false}, {h.buf(16), 1, true}};
  h.drv.add(b, 2, nullptr);
  EXPECT_FALSE(h.drv.publish());  // device polls: no kick
  h.dev.set_notification(true);
  h.drv.add(b, 2, nullptr);
  EXPECT_TRUE(h.drv.publish());

  DescriptorChain c;
  ASSERT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::chain);
  h.drv.enable_interrupts(false);
  h.dev.push(c.head, 1);
  EXPECT_FALSE(h.dev.publish_used());  // driver polls: no interrupt
  ASSERT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::chain);
  EXPECT_TRUE(h.drv.enable_interrupts(true));  // a completion is already there
  h.dev.push(c.head, 1);
  EXPECT_TRUE(h.dev.publish_used());
}

TEST(SplitQueueNotify, EventIdxBothWays) {
  RingHarness h(16, true);
  DriverBuffer b[2] = {{h.buf(0), 16, false}, {h.buf(16), 1, true}};
  // The device asks for a kick at avail index 0: the first publish kicks, the second does not.
  h.dev.set_notification(true);
  h.drv.add(b, 2, nullptr);
  EXPECT_TRUE(h.drv.publish());
  h.drv.add(b, 2, nullptr);
  EXPECT_FALSE(h.drv.publish());
  DescriptorChain c1, c2;
  Segment s2[8];
  ASSERT_EQ(h.dev.pop(&c1, h.segs, 8), DeviceQueue::Pop::chain);
  ASSERT_EQ(h.dev.pop(&c2, s2, 8), DeviceQueue::Pop::chain);
  // Re-arming at last_avail (2): the next request kicks again.
  h.dev.set_notification(true);
  h.drv.add(b, 2, nullptr);
  EXPECT_TRUE(h.drv.publish());

  // Driver wants an interrupt at used index 0 (it has seen nothing yet).
  EXPECT_FALSE(h.drv.enable_interrupts(true));
  h.dev.push(c1.head, 1);
  EXPECT_TRUE(h.dev.publish_used());   // first publish always notifies
  h.dev.push(c2.head, 1);
  EXPECT_FALSE(h.dev.publish_used());  // used_event still 0: the driver has not caught up
  void* t;
  uint32_t len;
  ASSERT_EQ(h.drv.get_used(&t, &len), 0);
  ASSERT_EQ(h.drv.get_used(&t, &len), 0);  // used_event now 2
  DescriptorChain c3;
  ASSERT_EQ(h.dev.pop(&c3, h.segs, 8), DeviceQueue::Pop::chain);
  h.dev.push(c3.head, 1);
  EXPECT_TRUE(h.dev.publish_used());   // crosses used_event 2
}

// A driver waiting for a batch places used_event that many completions ahead: one interrupt
// per batch; without EVENT_IDX the device cannot count, and every completion interrupts.
TEST(SplitQueueNotify, InterruptAfterABatch) {
  for (bool event_idx : {true, false}) {
    SCOPED_TRACE(event_idx ? "event_idx" : "flags");
    RingHarness h(16, event_idx);
    DriverBuffer b[2] = {{h.buf(0), 16, false}, {h.buf(16), 1, true}};
    DescriptorChain c[8];
    for (auto& ci : c) {
      h.drv.add(b, 2, nullptr);
      h.drv.publish();
      ASSERT_EQ(h.dev.pop(&ci, h.segs, 8), DeviceQueue::Pop::chain);
    }
    void* t;
    uint32_t len;
    h.dev.push(c[0].head, 1);
    EXPECT_TRUE(h.dev.publish_used());  // the first publish always notifies
    ASSERT_EQ(h.drv.get_used(&t, &len), 0);
    EXPECT_FALSE(h.drv.enable_interrupts_after(4));
    for (int i = 1; i <= 4; ++i) {
      h.dev.push(c[i].head, 1);
      EXPECT_EQ(h.dev.publish_used(), i == 4 || !event_idx) << "completion " << i;
    }
    for (int i = 1; i <= 4; ++i) ASSERT_EQ(h.drv.get_used(&t, &len), 0);
    // Asking for a batch that is already there: look again rather than sleep.
    h.dev.push(c[5].head, 1);
    h.dev.push(c[6].head, 1);
    h.dev.publish_used();
    EXPECT_TRUE(h.drv.enable_interrupts_after(2));
    EXPECT_EQ(h.drv.enable_interrupts_after(3), !event_idx);  // flags: any completion will do
  }
}

TEST(SplitQueueNotify, EventIdxDriverPollingGetsNoInterrupts) {
  RingHarness h(16, true);
  DriverBuffer b[2] = {{h.buf(0), 16, false}, {h.buf(16), 1, true}};
  h.drv.enable_interrupts(false);
  void* t;
  uint32_t len;
  for (int i = 0; i < 40; ++i) {  // wraps the 16-entry ring: the choice survives get_used()
    h.drv.add(b, 2, nullptr);
    h.drv.publish();
    DescriptorChain c;
    ASSERT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::chain);
    h.dev.push(c.head, 1);
    bool notify = h.dev.publish_used();
    if (i > 0) {
      EXPECT_FALSE(notify) << "completion " << i;  // the first publish always notifies
    }
    ASSERT_EQ(h.drv.get_used(&t, &len), 0);
  }
  // Asking again: the next completion interrupts.
  EXPECT_FALSE(h.drv.enable_interrupts(true));
  h.drv.add(b, 2, nullptr);
  h.drv.publish();
  DescriptorChain c;
  ASSERT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::chain);
  h.dev.push(c.head, 1);
  EXPECT_TRUE(h.dev.publish_used());
}

TEST(DriverQueue, BogusUsedEntriesAreErrors) {
  RingHarness h;
  DriverBuffer b[2] = {{h.buf(0), 16, false}, {h.buf(16), 1, true}};
  h.drv.add(b, 2, nullptr);
  h.drv.publish();
  // The device names a head that is not in flight.
  vring_used* u = h.drv.layout().used;
  u->ring[0] = {5, 1};
  u->idx = 1;
  void* t;
  uint32_t len;
  EXPECT_EQ(h.drv.get_used(&t, &len), -EPROTO);
  EXPECT_TRUE(h.drv.broken());
  EXPECT_EQ(h.drv.add(b, 2, nullptr), -EPROTO);
}

// The device can write the whole ring, descriptor table included. What it writes there must not
// change which descriptors the driver thinks are free: the free list is the driver's own.
TEST(DriverQueue, DeviceScribblingTheTableCannotMisleadTheDriver) {
  RingHarness h(8);
  DriverBuffer b[2] = {{h.buf(0), 16, false}, {h.buf(16), 1, true}};
  int tokens[4];
  std::vector<uint16_t> heads;
  for (int i = 0; i < 4; ++i) {
    int head = h.drv.add(b, 2, &tokens[i]);
    ASSERT_GE(head, 0);
    heads.push_back(static_cast<uint16_t>(head));
  }
  h.drv.publish();
  EXPECT_EQ(h.drv.num_free(), 0);
  // A hostile device points every descriptor's next at descriptor 0, then completes all four.
  vring_used* u = h.drv.layout().used;
  for (uint16_t i = 0; i < 8; ++i) h.desc()[i].next = 0;
  for (uint16_t i = 0; i < 4; ++i) u->ring[i] = {heads[i], 1};
  u->idx = 4;
  for (int i = 0; i < 4; ++i) {
    void* t = nullptr;
    uint32_t len = 0;
    ASSERT_EQ(h.drv.get_used(&t, &len), 0);
    EXPECT_EQ(t, &tokens[i]);
  }
  EXPECT_EQ(h.drv.num_free(), 8);
  // Four new chains of two take the eight descriptors, each exactly once.
  std::vector<int> owner(8, -1);
  for (int i = 0; i < 4; ++i) {
    int head = h.drv.add(b, 2, &tokens[i]);
    ASSERT_GE(head, 0);
    const uint16_t second = h.desc()[head].next;
    ASSERT_LT(second, 8);
    for (uint16_t d : {static_cast<uint16_t>(head), second}) {
      EXPECT_EQ(owner[d], -1) << "descriptor " << d << " given to two requests";
      owner[d] = i;
    }
  }
  EXPECT_EQ(h.drv.num_free(), 0);
  EXPECT_EQ(h.drv.add(b, 2, nullptr), -ENOSPC);
}

TEST(DriverQueue, FullRingAndOrdering) {
  RingHarness h(4);
  DriverBuffer b[2] = {{h.buf(0), 16, false}, {h.buf(16), 1, true}};
  EXPECT_GE(h.drv.add(b, 2, nullptr), 0);
  EXPECT_GE(h.drv.add(b, 2, nullptr), 0);
  EXPECT_EQ(h.drv.add(b, 2, nullptr), -ENOSPC);
  DriverBuffer wrong[2] = {{h.buf(0), 1, true}, {h.buf(16), 16, false}};
  EXPECT_EQ(h.drv.add(wrong, 2, nullptr), -EINVAL);
}

TEST(SplitQueueInflight, RecordsWhatIsInFlight) {
  RingHarness h;
  std::vector<uint8_t> region(inflight_queue_bytes(16), 0);
  InflightQueue iq{reinterpret_cast<InflightQueueSplit*>(region.data()), 1};
  ASSERT_EQ(h.dev.start(&h.mem, h.drv.layout(), false, 0, &iq), 0);
  EXPECT_EQ(iq.region->desc_num, 16);
  DriverBuffer b[2] = {{h.buf(0), 16, false}, {h.buf(16), 1, true}};
  int h1 = h.drv.add(b, 2, nullptr);
  int h2 = h.drv.add(b, 2, nullptr);
  h.drv.publish();
  DescriptorChain c;
  ASSERT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::chain);
  ASSERT_EQ(h.dev.pop(&c, h.segs, 8), DeviceQueue::Pop::chain);
  EXPECT_EQ(iq.region->desc[h1].inflight, 1);
  EXPECT_EQ(iq.region->desc[h2].inflight, 1);
  EXPECT_LT(iq.region->desc[h1].counter, iq.region->desc[h2].counter);
  h.dev.push(static_cast<uint16_t>(h1), 1);
  h.dev.publish_used();
  EXPECT_EQ(iq.region->desc[h1].inflight, 0);
  EXPECT_EQ(iq.region->desc[h2].inflight, 1);
  EXPECT_EQ(iq.region->used_idx, 1);
}

// Two threads, one driver and one device, both polling: every request completes exactly once
// and in a ring that wraps many times. TSan checks the ordering on the shared words.
TEST(SplitQueueThreads, DriverAndDeviceConcurrently) {
  for (bool event_idx : {false, true}) {
    RingHarness h(64, event_idx);
    constexpr uint32_t kRequests = 200000;
    std::atomic<bool> stop{false};
    std::thread device([&] {
      Segment segs[8];
      while (!stop.load(std::memory_order_relaxed)) {
        DescriptorChain c;
        int n = 0;
        while (h.dev.pop(&c, segs, 8) == DeviceQueue::Pop::chain) {
          // Echo the first readable byte into the writable one.
          *c.segs[1].addr = static_cast<uint8_t>(*c.segs[0].addr + 1);
          h.dev.push(c.head, 1);
          ++n;
        }
        if (n) h.dev.publish_used();
      }
    });
    uint32_t sent = 0, done = 0;
    uint64_t sum = 0;
    while (done < kRequests) {
      while (sent < kRequests && h.drv.num_free() >= 2) {
        uint16_t slot = static_cast<uint16_t>(sent % 64);
        *h.buf_host(slot * 2u) = static_cast<uint8_t>(sent);
        DriverBuffer b[2] = {{h.buf(slot * 2u), 1, false}, {h.buf(slot * 2u + 1), 1, true}};
        ASSERT_GE(h.drv.add(b, 2, reinterpret_cast<void*>(uintptr_t{slot} + 1)), 0);
        ++sent;
      }
      h.drv.publish();
      void* t;
      uint32_t len;
      while (h.drv.get_used(&t, &len) == 0) {
        uint16_t slot = static_cast<uint16_t>(reinterpret_cast<uintptr_t>(t) - 1);
        sum += *h.buf_host(slot * 2u + 1);
        ++done;
      }
      ASSERT_FALSE(h.drv.broken());
    }
    stop = true;
    device.join();
    // Each reply is (low byte of its request number) + 1.
    uint64_t want = 0;
    for (uint32_t i = 0; i < kRequests; ++i) want += static_cast<uint8_t>(static_cast<uint8_t>(i) + 1);
    EXPECT_EQ(sum, want);
    EXPECT_EQ(h.dev.in_flight(), 0u);
  }
}

}  // namespace
}  // namespace vcp::virtio
