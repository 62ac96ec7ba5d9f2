// The device side of a virtio 1.x split virtqueue.
//
// The driver (a guest, or libvcp) owns the descriptor table and the avail ring; we own the used
// ring. Everything read from shared memory is hostile: a head index, a descriptor's address,
// length, flags or next field is checked before use. One thread uses a DeviceQueue (SPSC).
//
// Memory ordering (pairs with the driver, see docs/channel.md):
//  - avail->idx is read with acquire; it pairs with the driver's release store after it wrote
//    the ring entry and the descriptors.
//  - used->idx is written with release after the used elements; pairs with the driver's acquire.
//  - with notifications: a full fence between publishing used->idx / avail_event and reading the
//    driver's used_event / avail->idx (the classic lost-wakeup fence, both sides).
#pragma once

// The legacy helpers of this header are C, not C++; we need only the layout and vring_need_event.
#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#include <linux/virtio_ring.h>

#include <cstdint>

#include "virtio/dirty_log.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/inflight.hpp"

namespace vcp::virtio {

// A piece of a request's buffer, already translated into this process.
struct Segment {
  uint8_t* addr;
  uint32_t len;
};

// Why a chain was refused (logged by the caller; the head is returned to the driver unused).
enum class ChainError : uint8_t {
  none,
  bad_address,       // a descriptor's range is not (wholly) in guest memory
  loop,              // the chain visits more descriptors than the table has
  too_many_segments, // more segments than the caller's storage
  nested_indirect,   // an indirect table names another indirect table
  bad_indirect,      // indirect length not a multiple of 16, zero, or too large; INDIRECT|NEXT
  bad_next,          // next index out of range
  write_before_read, // a device-readable descriptor after a device-writable one
  too_large,         // total length overflows 32 bits
};
const char* to_string(ChainError e);

struct DescriptorChain {
  uint16_t head = 0;
  uint16_t num_readable = 0;  // segs[0 .. num_readable) are device-readable
  uint16_t num_writable = 0;  // then num_writable device-writable ones
  uint32_t readable_bytes = 0;
  uint32_t writable_bytes = 0;
  Segment* segs = nullptr;    // the caller's storage
  ChainError error = ChainError::none;
};

struct QueueLayout {
  uint16_t size = 0;          // power of two, 1..32768
  vring_desc* desc = nullptr;
  vring_avail* avail = nullptr;
  vring_used* used = nullptr;
};

class DeviceQueue {
 public:
  enum class Pop { empty, chain, bad_chain, broken };

  // `mem` must outlive the queue's use. `last_avail_idx` is where to resume (SET_VRING_BASE).
  // -EINVAL when the size is not a power of two or a pointer is null.
  int start(const GuestMemory* mem, const QueueLayout& layout, bool event_idx, uint16_t last_avail_idx,
            InflightQueue* inflight = nullptr);
  void stop() { started_ = false; }
  bool started() const { return started_; }

  // Takes the next available chain into `out` (segments into `storage`, at most `capacity`).
  //  - chain:     a valid request; complete it later with push().
  //  - bad_chain: the head was valid but the chain is not; out->error says why. It has been
  //               consumed: the caller logs it and push()es it with length 0.
  //  - empty:     nothing available.
  //  - broken:    the avail ring itself is corrupt (head out of range, idx jumped by more than
  //               the size); the queue stops until restarted.
  Pop pop(DescriptorChain* out, Segment* storage, uint32_t capacity);

  // Puts a used element; visible to the driver only after publish_used().
  void push(uint16_t head, uint32_t written);
  // Publishes the used elements pushed so far (release store of used->idx) and updates the
  // inflight region. Returns true when the driver must be notified (call eventfd).
  bool publish_used();

  // True when the avail ring holds something we have not popped (acquire).
  bool has_available() const;
  // Asks the driver for kicks (enable=true, before sleeping) or tells it not to bother
  // (enable=false, while polling). With EVENT_IDX this writes avail_event, otherwise
  // used->flags. After enabling, call has_available() again before sleeping.
  void set_notification(bool enable);

  // Dirty logging of the used ring (live migration, VHOST_VRING_F_LOG): while `log` is set,
  // every write to the used ring (elements, idx, flags, avail_event) marks its pages, counted
  // from `used_gpa` (the front-end's log_guest_addr for the ring). null: none (after start()).
  void set_used_log(const DirtyLog* log, uint64_t used_gpa) {
    used_log_ = log;
    used_log_gpa_ = used_gpa;
  }

  uint16_t last_avail_idx() const { return last_avail_; }
  uint16_t size() const { return layout_.size; }
  bool broken() const { return broken_; }
  // Requests popped and not yet pushed.
  uint32_t in_flight() const { return in_flight_; }

 private:
  int walk(uint16_t head, DescriptorChain* out, Segment* storage, uint32_t capacity);

  void log_used(uint64_t offset, uint64_t len) const {
    if (used_log_) used_log_->mark(used_log_gpa_ + offset, len);
  }

  const GuestMemory* mem_ = nullptr;
  const DirtyLog* used_log_ = nullptr;
  uint64_t used_log_gpa_ = 0;
  QueueLayout layout_{};
  InflightQueue* inflight_ = nullptr;
  bool event_idx_ = false;
  bool started_ = false;
  bool broken_ = false;
  uint16_t last_avail_ = 0;
  uint16_t used_idx_ = 0;       // our private copy of used->idx (next slot to fill)
  uint16_t published_used_ = 0; // value last stored into used->idx
  uint16_t signalled_used_ = 0; // used->idx at the last notification (EVENT_IDX)
  bool signalled_valid_ = false;
  uint32_t in_flight_ = 0;
};

}  // namespace vcp::virtio
