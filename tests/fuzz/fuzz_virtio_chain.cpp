// Descriptor-chain walking and virtio-blk parsing on whatever a hostile driver writes.
//
// Input layout: byte 0 = flags (bit 0: EVENT_IDX), byte 1 = how many heads to publish, then
// bytes copied over the descriptor table (16 descriptors), the avail ring, and an indirect-table
// area. Every descriptor address points somewhere in (or near, or far from) a 64 KiB memory.
#include <sys/mman.h>

#include <cstdint>
#include <cstring>

#include "virtio/blk.hpp"
#include "virtio/driver_queue.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/split_queue.hpp"

using namespace vcp::virtio;

namespace {
constexpr uint64_t kBase = 0x10000;
constexpr size_t kBytes = 64 << 10;
constexpr uint16_t kSize = 16;
uint8_t* g_mem = nullptr;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!g_mem) {
    g_mem = static_cast<uint8_t*>(
        mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  }
  if (size < 2) return 0;
  std::memset(g_mem, 0, kBytes);
  GuestMemory mem;
  mem.add({kBase, kBytes, kBase, g_mem});
  DriverQueue drv;
  const bool event_idx = data[0] & 1;
  drv.init(g_mem, kBase, kSize, event_idx);
  QueueLayout l = drv.layout();
  const uint8_t heads = data[1];
  data += 2;
  size -= 2;
  // Descriptor table, then avail ring entries, then 2 KiB at 32 KiB (indirect tables, payloads).
  size_t n = std::min(size, sizeof(vring_desc) * kSize);
  std::memcpy(l.desc, data, n);
  data += n;
  size -= n;
  n = std::min(size, sizeof(uint16_t) * kSize);
  std::memcpy(l.avail->ring, data, n);
  data += n;
  size -= n;
  n = std::min<size_t>(size, 2048);
  std::memcpy(g_mem + 32768, data, n);
  l.avail->idx = heads;

  DeviceQueue dev;
  if (dev.start(&mem, l, event_idx, 0) != 0) return 0;
  Segment segs[32];
  for (int i = 0; i < 64; ++i) {
    DescriptorChain c;
    auto r = dev.pop(&c, segs, 32);
    if (r == DeviceQueue::Pop::empty || r == DeviceQueue::Pop::broken) break;
    if (r == DeviceQueue::Pop::chain) {
      BlkRequestView v;
      if (parse_blk_request(c, &v) == 0) {
        // Touch every byte the device would: the data, and the status byte.
        volatile uint8_t sink = 0;
        for (uint16_t s = 0; s < v.num_data; ++s)
          for (uint32_t b = 0; b < v.data[s].len; b += 512) sink = sink + v.data[s].addr[b];
        if (v.type == VIRTIO_BLK_T_DISCARD || v.type == VIRTIO_BLK_T_WRITE_ZEROES) {
          BlkRange ranges[4];
          uint32_t count;
          parse_blk_ranges(v, v.type == VIRTIO_BLK_T_WRITE_ZEROES, ranges, 4, &count);
        }
        *v.status = 0;
      } else if (v.status) {
        *v.status = 1;
      }
    }
    dev.push(c.head, 1);
    dev.publish_used();
    dev.set_notification(true);
  }
  return 0;
}
