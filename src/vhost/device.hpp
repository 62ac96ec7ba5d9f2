// The seam between the vhost-user protocol (this layer) and a device model (vcp/ runtime).
//
// The protocol side owns the socket, the memory table, the mappings and the inflight region; it
// validates every message and turns the ring messages into start/stop calls. The device side
// owns the queue threads and knows what a request means. All calls below come from the control
// thread (the one that reads the socket), one at a time.
#pragma once

#include <cstdint>
#include <span>

#include "base/unique_fd.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/dirty_log.hpp"
#include "virtio/inflight.hpp"
#include "virtio/split_queue.hpp"

namespace vcp::vhost {

// Live migration's dirty page log, as a queue thread needs it (docs/channel.md, "Live
// migration"): while `log` is set, every guest page the device writes is marked in it after the
// write: data of reads, status bytes, GET_ID answers and, with `log_used`, the used ring.
struct DirtyLogState {
  const virtio::DirtyLog* log = nullptr;  // null: logging off
  bool log_used = false;                  // VHOST_VRING_F_LOG: the used ring's writes too
  uint64_t used_gpa = 0;                  // the used ring's log_guest_addr (marks are counted from it)
};

// Everything a queue thread needs to run one virtqueue. Pointers stay valid until the queue is
// stopped (stop_queue) or the device is paused for a memory table change.
struct QueueStart {
  unsigned index = 0;
  virtio::QueueLayout layout;         // translated, checked to lie inside guest memory
  uint16_t last_avail_idx = 0;        // from SET_VRING_BASE
  bool event_idx = false;             // VIRTIO_RING_F_EVENT_IDX negotiated
  int kick_fd = -1;                   // borrowed: the protocol side owns it; -1: poll only
  int call_fd = -1;                   // borrowed; -1: never notify
  const virtio::GuestMemory* memory = nullptr;
  virtio::InflightQueue* inflight = nullptr;  // null when the frontend set no inflight region
  DirtyLogState dirty;                        // live migration's log; off unless VHOST_F_LOG_ALL
};

class Device {
 public:
  virtual ~Device() = default;

  // Device-specific virtio feature bits offered (VIRTIO_BLK_F_*, VIRTIO_RING_F_*,
  // VIRTIO_F_VERSION_1 ...). The protocol side adds VHOST_USER_F_PROTOCOL_FEATURES itself.
  virtual uint64_t features() const = 0;
  // Called once SET_FEATURES is accepted, with the acknowledged subset.
  virtual void set_features(uint64_t acked) = 0;
  virtual uint16_t num_queues() const = 0;
  virtual uint16_t max_queue_size() const = 0;

  // Config space (GET_CONFIG / SET_CONFIG). Return -EINVAL for a range outside the config.
  virtual int read_config(uint32_t offset, std::span<uint8_t> out) = 0;
  virtual int write_config(uint32_t offset, std::span<const uint8_t> data) = 0;

  // Begins serving a queue (it is started and enabled). -errno refuses it.
  virtual int start_queue(const QueueStart& q) = 0;
  // Stops a queue: no request is taken after this returns; requests already taken are
  // completed first (their used entries written). Returns the last_avail_idx to report for
  // GET_VRING_BASE. A queue that is not running returns what it was started with.
  virtual uint16_t stop_queue(unsigned index) = 0;
  // The frontend replaced the call eventfd of a running queue (borrowed, -1: none).
  virtual void set_call_fd(unsigned index, int call_fd) = 0;
  // Dirty logging turned on or off, or its log replaced, on a running queue. Returns once the
  // queue thread uses the new state (the old log may then be unmapped).
  virtual void set_dirty_log(unsigned index, const DirtyLogState& s) = 0;

  // Around changes to the memory table (SET_MEM_TABLE, ADD/REM_MEM_REG): pause() returns once
  // no queue thread touches guest memory (in-flight requests drained); resume() lets them go on.
  virtual void pause() = 0;
  virtual void resume() = 0;

  // The frontend went away or sent RESET_OWNER/RESET_DEVICE: stop everything, forget state.
  virtual void reset() = 0;
  // The frontend went away (its connection closed): the queues' stops that follow give up the
  // requests the backend cannot answer soon instead of waiting for them (no one will see the
  // answers). Called before those stops.
  virtual void frontend_gone() {}
};

}  // namespace vcp::vhost
