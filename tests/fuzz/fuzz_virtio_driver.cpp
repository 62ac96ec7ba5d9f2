// The driver side of a split virtqueue (libvcp's DriverQueue) against a hostile device: the
// device may write anything anywhere in the ring (used entries, used->idx, the descriptor
// table itself) between the driver's calls. The input is a list of operations:
//   0 add a request of 1-4 buffers (direct or indirect)   1 publish
//   2 the device writes a used entry and moves used->idx  3 the device scribbles a descriptor
//   4 the driver takes completions                         5 interrupts after a batch
// What must hold: the ring's memory is never left (the ring sits in a heap block of exactly its
// size, so ASan sees any stray access), a completion names a request in flight and each request
// completes at most once, and the free count always matches what is in flight.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>

#include "virtio/driver_queue.hpp"

using namespace vcp::virtio;

namespace {

constexpr uint16_t kSize = 16;
constexpr uint16_t kMaxIndirect = 4;
constexpr uint64_t kRingAddr = 0x10000;
constexpr uint64_t kIndAddr = 0x20000;

struct Reader {
  const uint8_t* p;
  size_t n;
  bool take(uint8_t* out) {
    if (n == 0) return false;
    *out = *p++;
    --n;
    return true;
  }
  uint16_t u16() {
    uint8_t a = 0, b = 0;
    take(&a);
    take(&b);
    return static_cast<uint16_t>(a | (b << 8));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool event_idx = data[0] & 1;
  Reader in{data + 1, size - 1};
  const size_t ring_bytes = DriverQueue::ring_bytes(kSize);
  // aligned_alloc: the ring must be 64-byte aligned; the block is exactly the ring.
  std::unique_ptr<uint8_t, decltype(&free)> ring(static_cast<uint8_t*>(aligned_alloc(64, ring_bytes)), &free);
  std::unique_ptr<uint8_t[]> ind(new uint8_t[size_t{kSize} * kMaxIndirect * sizeof(vring_desc)]);
  DriverQueue q;
  if (q.init(ring.get(), kRingAddr, kSize, event_idx, ind.get(), kIndAddr, kMaxIndirect) != 0) abort();
  const QueueLayout l = q.layout();

  std::map<uintptr_t, uint16_t> in_flight;  // token -> descriptors it holds
  uintptr_t next_token = 1;
  uint16_t used_idx = 0;
  uint8_t op = 0;
  while (in.take(&op)) {
    switch (op % 6) {
      case 0: {
        uint8_t shape = 0;
        in.take(&shape);
        const uint16_t n = static_cast<uint16_t>(1 + shape % 4);
        const bool indirect = shape & 4;
        DriverBuffer b[4];
        for (uint16_t i = 0; i < n; ++i) b[i] = {0x100000 + i * 0x1000u, 512, i + 1 == n};
        const uintptr_t token = next_token++;
        const uint16_t free_before = q.num_free();
        const int head = q.add(b, n, reinterpret_cast<void*>(token), indirect);
        if (head >= 0) {
          if (head >= kSize) abort();
          in_flight[token] = static_cast<uint16_t>(free_before - q.num_free());
        } else if (q.num_free() != free_before) {
          abort();  // a refused add takes nothing
        }
        break;
      }
      case 1: (void)q.publish(); break;
      case 2: {
        const uint16_t slot = in.u16();
        const uint16_t id = in.u16();
        uint8_t step = 0;
        in.take(&step);
        l.used->ring[slot % kSize] = {static_cast<uint32_t>(id % (kSize * 2)), 512};
        used_idx = static_cast<uint16_t>(used_idx + (step % 3 == 2 ? in.u16() : step % 3));
        l.used->idx = used_idx;
        break;
      }
      case 3: {
        uint8_t i = 0;
        in.take(&i);
        vring_desc& d = l.desc[i % kSize];
        d.next = in.u16();
        d.flags = in.u16();
        d.len = in.u16();
        break;
      }
      case 4: {
        for (int k = 0; k < kSize + 2; ++k) {
          void* t = nullptr;
          uint32_t len = 0;
          const int rc = q.get_used(&t, &len);
          if (rc == -EAGAIN || rc == -EPROTO) break;
          if (rc != 0) abort();
          auto it = in_flight.find(reinterpret_cast<uintptr_t>(t));
          if (it == in_flight.end()) abort();  // not in flight, or completed twice
          in_flight.erase(it);
        }
        break;
      }
      case 5: {
        uint8_t n = 0;
        in.take(&n);
        (void)q.enable_interrupts_after(n % (kSize + 1));
        break;
      }
    }
    uint32_t held = 0;
    for (const auto& [t, nd] : in_flight) held += nd;
    if (q.num_free() + held != kSize) abort();
  }
  return 0;
}
