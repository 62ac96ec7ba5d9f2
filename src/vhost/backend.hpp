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

#include <cstdint>
#include <vector>

#include "base/mapping.hpp"
#include "base/unique_fd.hpp"
#include "vhost/device.hpp"
#include "vhost/message_io.hpp"
#include "vhost/protocol.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/inflight.hpp"

namespace vcp::vhost {

// Protocol features this back-end offers.
inline constexpr uint64_t kBackendProtocolFeatures = bit(kProtoMq) | bit(kProtoReplyAck) | bit(kProtoConfig) |
                                                     bit(kProtoInflightShmfd) | bit(kProtoResetDevice) |
                                                     bit(kProtoConfigureMemSlots);

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

  // Reads and handles one message (nothing, if none is there yet). 0, or a negative errno when
  // the connection must be dropped: -ECONNRESET for an orderly EOF between messages.
  int on_readable();

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
  };

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
  void warn_unsealed(const char* what);
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

  // Config space and inflight region.
  int get_config(const ConfigMsg& c);
  int set_config(const ConfigMsg& c);
  bool inflight_shape_ok(const InflightMsg& in, const char* what) const;
  int get_inflight_fd(const InflightMsg& in);
  int set_inflight_fd(const InflightMsg& in, int fd);

  Device& device_;
  UniqueFd conn_;
  BackendOptions opts_;
  alignas(8) uint8_t buf_[kHeaderSize + kMaxPayloadSize];

  bool owner_ = false;
  bool warned_unsealed_ = false;  // said once per connection that guest memory can shrink
  uint64_t acked_features_ = 0;
  uint64_t protocol_features_ = 0;

  virtio::GuestMemory memory_;
  std::vector<MappedRegion> regions_;

  Mapping inflight_map_;
  uint16_t inflight_queue_size_ = 0;
  std::vector<virtio::InflightQueue> inflight_;  // one per device queue; region null when unset

  std::vector<Ring> rings_;
};

}  // namespace vcp::vhost
