// The vhost-user inflight region for split rings (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD).
//
// Shared memory that outlives the backend process: it records which heads were popped and not
// yet completed, so a restarted backend can resubmit them (nothing lost, nothing done twice).
// Layout and update order are fixed by the vhost-user specification.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vcp::virtio {

struct InflightDescSplit {
  uint8_t inflight;
  uint8_t padding[5];
  uint16_t next;
  uint64_t counter;
};
static_assert(sizeof(InflightDescSplit) == 16);

struct InflightQueueSplit {
  uint64_t features;
  uint16_t version;
  uint16_t desc_num;
  uint16_t last_batch_head;
  uint16_t used_idx;
  InflightDescSplit desc[];
};
static_assert(sizeof(InflightQueueSplit) == 16);

// Bytes one queue's region takes for a ring of `queue_size`, aligned to 64.
constexpr size_t inflight_queue_bytes(uint16_t queue_size) {
  return (sizeof(InflightQueueSplit) + sizeof(InflightDescSplit) * queue_size + 63) & ~size_t{63};
}

// One queue's view of the region, used by DeviceQueue.
struct InflightQueue {
  InflightQueueSplit* region = nullptr;
  uint64_t counter = 0;  // next fetch order number
};

}  // namespace vcp::virtio
