// The back-end (device) side of one vhost-user connection.
//
// It reads one message per on_readable(), validates it (framing in parse_message, meaning
// here), keeps the connection's state (owner, features, memory table, inflight region, rings)
// and drives the Device: a ring is started once it has a size, addresses, a kick fd (or
// "no fd": polling) and, when VHOST_USER_F_PROTOCOL_FEATURES was negotiated, is enabled; it is
// stopped by GET_VRING_BASE, by SET_VRING_ENABLE 0, or around a memory table change.
//
// Error policy: a request that fails is answered with a non-zero u64 (the positive errno) when
// the front-end asked for a reply (REPLY_ACK); otherwise the error is logged and on_readable()
// returns it, and the caller drops the connection. Framing errors (bad version, oversized or
// truncated messages) always drop it. Unknown requests are answered with ENOSYS when a reply
// was asked for and ignored otherwise.
//
// Threading: one control thread calls everything here; Device calls are made from it.
#pragma once

#include <poll.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "base/mapping.hpp"
#include "base/shrink_guard.hpp"
#include "base/unique_fd.hpp"
#include "vhost/device.hpp"
#include "vhost/message_io.hpp"
#include "vhost/protocol.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/inflight.hpp"

namespace vcp::vhost {

// Protocol features this back-end offers.
inline constexpr uint64_t kBackendProtocolFeatures = bit(kProtoMq) | bit(kProtoLogShmfd) | bit(kProtoReplyAck) |
                                                     bit(kProtoConfig) | bit(kProtoInflightShmfd) | bit(kProtoBackendReq) |
                                                     bit(kProtoResetDevice) | bit(kProtoConfigureMemSlots);

struct BackendOptions {
  // How long the rest of a message (or a reply's room in the socket) may take once it began.
  int io_timeout_ms = 2000;
};

class VhostUserBackend {
 public:
  VhostUserBackend(Device& device, UniqueFd conn, BackendOptions opts = {});
  // Stops the queues still running (they point into mappings that go away with this object).
  ~VhostUserBackend();
  VhostUserBackend(const VhostUserBackend&) = delete;
  VhostUserBackend& operator=(const VhostUserBackend&) = delete;

  int fd() const { return conn_.get(); }

  // What the caller's loop polls for this connection: the socket, and an eventfd that becomes
  // readable when the front-end shrank a memory file that could not be sealed and an access
  // past its new end was survived (base/shrink_guard.hpp; fd -1, which poll() skips, if no
  // eventfd could be made). After poll(), on_ready() with the same entries handles what is
  // ready: a fault first (the front-end is dropped with -EFAULT and a log line saying why),
  // then one message. 0, or a negative errno when the connection must be dropped.
  static constexpr int kPollFds = 2;
  void poll_fds(pollfd out[kPollFds]) const;
  int on_ready(const pollfd ready[kPollFds]);

  // Reads and handles one message (nothing, if none is there yet). 0, or a negative errno when
  // the connection must be dropped: -ECONNRESET for an orderly EOF between messages.
  int on_readable();

  // Tells the front-end that the device's config space changed (a virtio-blk capacity grown):
  // CONFIG_CHANGE_MSG on the back-end channel, after which QEMU reads the config again and
  // interrupts the guest. No reply is asked for, even with REPLY_ACK: QEMU answers only after
  // its GET_CONFIG round trip on the main socket, which this same thread serves, so waiting
  // would deadlock. Returns 0; -ENOTCONN when the front-end gave no back-end channel or did not
  // negotiate CONFIG (it sees the change only when it next reads the config); -errno when the
  // send failed (the channel is then closed and later changes return -ENOTCONN).
  int config_changed();
  bool has_backend_channel() const { return static_cast<bool>(backend_req_); }
  int backend_channel_fd() const { return backend_req_.get(); }  // for tests: -1 when none

  // State, for diagnostics and tests.
  bool has_owner() const { return owner_; }
  uint64_t acked_features() const { return acked_features_; }
  uint64_t protocol_features() const { return protocol_features_; }
  const virtio::GuestMemory& memory() const { return memory_; }
  bool ring_running(unsigned index) const { return index < rings_.size() && rings_[index].running; }

 private:
  struct Ring {
    uint32_t num = 0;  // 0 until SET_VRING_NUM
    bool addr_set = false;
    vhost_vring_addr addr{};
    uint16_t base = 0;  // last_avail_idx to start from
    UniqueFd kick, call, err;
    bool kick_set = false;  // a kick fd, or "no fd" (the device polls)
    bool enabled = false;
    bool running = false;
  };
  struct MappedRegion {
    MemRegion desc;  // as the front-end described it
    Mapping map;
    ShrinkGuard guard;  // when the file could not be sealed; destroyed before the mapping
  };

  int on_fault();
  int dispatch(const ParsedMessage& m, FdList& fds);
  int handle(const ParsedMessage& m, FdList& fds);
  int reply(Request r, const void* payload, size_t len, int fd = -1);
  int reply_u64(Request r, uint64_t v) { return reply(r, &v, sizeof(v)); }

  // Features and ownership.
  int set_features(uint64_t v);
  int set_protocol_features(uint64_t v);
  void reset_rings();
  bool protocol_features_negotiated() const { return (acked_features_ & bit(kFeatureProtocolFeatures)) != 0; }

  // Memory table.
  int map_region(const MemRegion& r, int fd, MappedRegion* out, virtio::MemoryRegion* mr);
  ShrinkGuard guard_unsealed(const Mapping& map, uint64_t granule, const char* what);
  int set_mem_table(const MemTable& t, FdList& fds);
  int add_mem_reg(const MemRegion& r, int fd);
  int rem_mem_reg(const MemRegion& r);
  int commit_memory(const virtio::GuestMemory& next, std::vector<MappedRegion>& next_regions);

  // Rings.
  int check_index(uint32_t index, const char* what) const;
  int check_stopped(uint32_t index, const char* what) const;  // in range and not running
  bool any_ring_running() const;
  int translate_ring(const Ring& r, virtio::QueueLayout* out) const;
  int try_start(unsigned index);
  void stop_ring(unsigned index);
  int set_vring_num(const vhost_vring_state& s);
  int set_vring_addr(const vhost_vring_addr& a);
  int set_vring_base(const vhost_vring_state& s);
  int get_vring_base(const vhost_vring_state& s);
  int set_vring_fd(Request r, uint64_t v, FdList& fds);
  int set_vring_enable(const vhost_vring_state& s);

  // Dirty page log (live migration).
  DirtyLogState dirty_state(unsigned index) const;
  void update_dirty_log();  // hands every running ring its state
  int set_log_base(const LogMsg& l, int fd);
  void drop_log();

  // The back-end channel.
  int set_backend_req_fd(FdList& fds);

  // Config space and inflight region.
  int get_config(const ConfigMsg& c);
  int set_config(const ConfigMsg& c);
  bool inflight_shape_ok(const InflightMsg& in, const char* what) const;
  int get_inflight_fd(const InflightMsg& in);
  int set_inflight_fd(const InflightMsg& in, int fd);

  Device& device_;
  UniqueFd conn_;
  BackendOptions opts_;
  UniqueFd fault_fd_;  // eventfd written by the SIGBUS handler (ShrinkGuard)
  alignas(8) uint8_t buf_[kHeaderSize + kMaxPayloadSize];

  UniqueFd backend_req_;  // SET_BACKEND_REQ_FD: the back-end's own requests go out on it
  bool owner_ = false;
  bool warned_unsealed_ = false;  // said once per connection that guest memory can shrink
  uint64_t acked_features_ = 0;
  uint64_t protocol_features_ = 0;

  virtio::GuestMemory memory_;
  std::vector<MappedRegion> regions_;

  Mapping inflight_map_;
  ShrinkGuard inflight_guard_;  // declared after the mapping: destroyed before it
  uint16_t inflight_queue_size_ = 0;
  std::vector<virtio::InflightQueue> inflight_;  // one per device queue; region null when unset

  std::vector<Ring> rings_;

  // Declared after rings_: the destructor stops the rings before these go.
  Mapping log_map_;
  ShrinkGuard log_guard_;  // destroyed before the mapping
  std::unique_ptr<virtio::DirtyLog> log_;
};

}  // namespace vcp::vhost
