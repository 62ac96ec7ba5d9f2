// The front-end (driver) side of a vhost-user connection: sends requests, reads replies.
//
// Used by libvcp to drive a VCP, and by the tests to drive VhostUserBackend. It is a thin,
// synchronous message layer: the typed helpers send one request and, where the protocol (or
// REPLY_ACK) gives one, wait for its reply. Once REPLY_ACK is negotiated through
// set_protocol_features(), every request without a reply of its own asks for an ack, so a
// failure on the back-end comes back as the helper's return value (-errno when the back-end
// sent an errno-sized value, -EIO otherwise).
//
// Threading: one thread at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "vhost/protocol.hpp"

namespace vcp::vhost {

// A reply as it came off the socket.
struct Reply {
  MsgHeader header{};
  alignas(8) uint8_t payload[kMaxPayloadSize];
  UniqueFd fd;  // the first fd that came with it, if any (others are closed)
};

// GET_INFLIGHT_FD's answer.
struct InflightRegion {
  UniqueFd fd;  // invalid when the back-end declined (mmap_size 0)
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
  uint16_t num_queues = 0;
  uint16_t queue_size = 0;
};

class FrontendChannel {
 public:
  static constexpr int kDefaultTimeoutMs = 5000;

  explicit FrontendChannel(UniqueFd fd, int timeout_ms = kDefaultTimeoutMs);
  // Connects to a back-end listening on a unix socket path.
  static Result<FrontendChannel> connect(const std::string& path, int timeout_ms = kDefaultTimeoutMs);

  int fd() const { return fd_.get(); }
  // Whether requests without their own reply ask for an ack (set by set_protocol_features).
  bool reply_ack() const { return reply_ack_; }
  void set_reply_ack(bool on) { reply_ack_ = on; }

  // Raw messages. send() adds the header (version 1, plus `extra_flags`, e.g. kFlagNeedReply).
  int send(Request r, const void* payload, size_t len, std::span<const int> fds = {}, uint32_t extra_flags = 0);
  // Bytes exactly as given (for tests of malformed input).
  int send_raw(const void* bytes, size_t len, std::span<const int> fds = {});
  // Reads one reply; -EPROTO when it is not a reply to `expected`.
  int receive(Request expected, Reply* out);
  // Reads the u64 ack of a request sent with kFlagNeedReply: 0, or -errno / -EIO.
  int receive_ack(Request expected);

  // Typed requests.
  Result<uint64_t> get_features();
  int set_features(uint64_t features);
  Result<uint64_t> get_protocol_features();
  int set_protocol_features(uint64_t features);  // also turns reply_ack() on when REPLY_ACK is in it
  int set_owner();
  int reset_owner();
  int reset_device();
  Result<uint64_t> get_queue_num();
  Result<uint64_t> get_max_mem_slots();

  struct RegionFd {
    MemRegion region;
    int fd;
  };
  int set_mem_table(std::span<const RegionFd> regions);
  int add_mem_reg(const MemRegion& region, int fd);
  int rem_mem_reg(const MemRegion& region);

  int set_vring_num(unsigned index, unsigned num);
  int set_vring_addr(const vhost_vring_addr& addr);
  int set_vring_base(unsigned index, unsigned base);
  Result<uint16_t> get_vring_base(unsigned index);
  // fd -1 sends the "no fd" flag (polling).
  int set_vring_kick(unsigned index, int fd);
  int set_vring_call(unsigned index, int fd);
  int set_vring_err(unsigned index, int fd);
  int set_vring_enable(unsigned index, bool enable);

  // Reads out.size() bytes of config space at `offset`; -EIO when the back-end refused.
  int get_config(uint32_t offset, std::span<uint8_t> out);
  int set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags = 0);

  Result<InflightRegion> get_inflight_fd(uint16_t num_queues, uint16_t queue_size);
  int set_inflight_fd(const InflightRegion& region);

  // Hands the back-end its channel for requests of its own (BACKEND_REQ): one end of a socket
  // pair, the other end being read with receive_backend_request().
  int set_backend_req_fd(int fd);
  // Reads one back-end request header (and up to out.size() payload bytes) from the back-end
  // channel `fd`, waiting up to timeout_ms. Returns the payload size, or -errno.
  static int receive_backend_request(int fd, MsgHeader* h, std::span<uint8_t> out, int timeout_ms);

  // Live migration's dirty log (LOG_SHMFD): `fd` shared, [offset, offset + size) the bitmap.
  // Like QEMU, waits for the back-end's reply whatever REPLY_ACK says.
  int set_log_base(int fd, uint64_t size, uint64_t offset = 0);

 private:
  // Sends a request that has no reply of its own; waits for the ack when reply_ack() is on.
  int request(Request r, const void* payload, size_t len, std::span<const int> fds = {});
  Result<uint64_t> request_u64(Request r);
  int set_vring_fd(Request r, unsigned index, int fd);

  UniqueFd fd_;
  int timeout_ms_;
  bool reply_ack_ = false;
};

}  // namespace vcp::vhost
