// The driver side of a split virtqueue: what a guest's virtio driver does, in userspace.
//
// Used by libvcp (an application talking to a VCP) and by the tests that play the driver against
// DeviceQueue. Addresses are the driver's "guest physical" ones: the caller lays the ring and its
// buffers out in memory it shares with the device and says which address that memory has.
// Everything the device writes (used ring) is checked: a bogus used entry is an error, never a
// wild pointer. Nothing else in shared memory is read back: the device can write the descriptor
// table too, so the free list and the chains' links live in a private copy (next_). One thread
// uses a DriverQueue.
#pragma once

// The legacy helpers of this header are C, not C++; we need only the layout and vring_need_event.
#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#include <linux/virtio_ring.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "virtio/split_queue.hpp"

namespace vcp::virtio {

struct DriverBuffer {
  uint64_t addr = 0;  // driver (guest-physical) address
  uint32_t len = 0;
  bool device_writable = false;
};

class DriverQueue {
 public:
  // Bytes the ring needs (table, avail ring with used_event, used ring with avail_event), laid
  // out with the alignments of virtio 1.x (16, 2, 4; used ring on its own 64-byte line).
  static size_t ring_bytes(uint16_t size);

  // Lays the ring out at `host`, which the device sees at driver address `addr` (64-aligned).
  // `indirect_host/indirect_addr` (optional) give room for one indirect table of `max_indirect`
  // descriptors per head. -EINVAL for a size that is not a power of two or misaligned memory.
  int init(uint8_t* host, uint64_t addr, uint16_t size, bool event_idx, uint8_t* indirect_host = nullptr,
           uint64_t indirect_addr = 0, uint16_t max_indirect = 0);

  uint16_t size() const { return size_; }
  QueueLayout layout() const { return {size_, desc_, avail_, used_}; }
  uint64_t desc_addr() const { return addr_; }
  uint64_t avail_addr() const { return addr_ + (reinterpret_cast<uint8_t*>(avail_) - base_); }
  uint64_t used_addr() const { return addr_ + (reinterpret_cast<uint8_t*>(used_) - base_); }

  // Adds a request: readable buffers first, then writable ones (the order virtio requires).
  // With `indirect` and room for an indirect table, it takes one ring descriptor. Returns the
  // head, or -ENOSPC when not enough descriptors are free, -EINVAL for an empty or mis-ordered
  // list. The request becomes visible to the device at publish().
  int add(const DriverBuffer* bufs, uint16_t n, void* token, bool indirect = false);
  // Makes the added requests visible (release store of avail->idx). Returns true when the device
  // wants a kick (its flags / avail_event say so).
  bool publish();

  // Takes one completion. 0 with *token and *len set; -EAGAIN when there is none; -EPROTO when
  // the device wrote a used entry naming a head that is not in flight (the queue is then
  // unusable: every later call returns -EPROTO).
  int get_used(void** token, uint32_t* len);
  // Asks for interrupts (call eventfd) or not; the choice holds until changed (get_used keeps
  // it). Enabling returns true when completions arrived meanwhile (look again before sleeping).
  bool enable_interrupts(bool enable);
  // Interrupts on, but (with EVENT_IDX) only once `n` more completions than we have taken are
  // in the used ring: one call eventfd write per batch instead of per completion (virtio's
  // used_event, as a driver may place it anywhere). n is at most what is in flight, or the
  // interrupt never comes. True when n have arrived already (look again before sleeping).
  // Without EVENT_IDX the device cannot count for us: the same as enable_interrupts(true).
  bool enable_interrupts_after(uint16_t n);

  uint16_t num_free() const { return num_free_; }
  uint16_t in_flight() const { return static_cast<uint16_t>(size_ - num_free_); }
  bool broken() const { return broken_; }

 private:
  struct HeadState {
    void* token = nullptr;
    uint16_t ndesc = 0;  // ring descriptors it holds (1 when indirect)
    bool busy = false;
  };

  uint8_t* base_ = nullptr;
  uint64_t addr_ = 0;
  uint16_t size_ = 0;
  bool event_idx_ = false;
  bool broken_ = false;
  bool interrupts_ = true;
  vring_desc* desc_ = nullptr;
  vring_avail* avail_ = nullptr;
  vring_used* used_ = nullptr;
  uint8_t* ind_host_ = nullptr;
  uint64_t ind_addr_ = 0;
  uint16_t max_indirect_ = 0;
  uint16_t free_head_ = 0;
  uint16_t num_free_ = 0;
  uint16_t avail_idx_ = 0;      // our copy of avail->idx (next slot)
  uint16_t published_avail_ = 0;
  uint16_t last_used_ = 0;
  std::unique_ptr<HeadState[]> heads_;
  // Descriptor i's next link, ours: the free list and the chains in flight. The table's next
  // fields are written from it and never read.
  std::unique_ptr<uint16_t[]> next_;
};

}  // namespace vcp::virtio
