// The vhost-user wire format (QEMU docs/interop/vhost-user.rst) and its validator.
//
// A message is a 12-byte header (request, flags, size) followed by `size` payload bytes, with
// file descriptors passed as SCM_RIGHTS ancillary data. All numbers are host byte order.
// parse_message() is the trust boundary for the framing: it checks the version, the payload
// size against what the request type carries, the number of fds, and the few fields whose
// values decide sizes (region counts, config lengths). It copies the payload into a typed
// ParsedMessage and allocates nothing; semantic checks (queue indices, addresses) are the
// backend's.
#pragma once

// linux/vhost_types.h pulls in virtio_ring.h, whose legacy helpers are not valid C++.
#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#include <linux/vhost_types.h>

#include <cstddef>
#include <cstdint>

namespace vcp::vhost {

// Request numbers, front-end to back-end.
enum class Request : uint32_t {
  none = 0,
  get_features = 1,
  set_features = 2,
  set_owner = 3,
  reset_owner = 4,
  set_mem_table = 5,
  set_log_base = 6,
  set_log_fd = 7,
  set_vring_num = 8,
  set_vring_addr = 9,
  set_vring_base = 10,
  get_vring_base = 11,
  set_vring_kick = 12,
  set_vring_call = 13,
  set_vring_err = 14,
  get_protocol_features = 15,
  set_protocol_features = 16,
  get_queue_num = 17,
  set_vring_enable = 18,
  send_rarp = 19,
  net_set_mtu = 20,
  set_backend_req_fd = 21,
  iotlb_msg = 22,
  set_vring_endian = 23,
  get_config = 24,
  set_config = 25,
  create_crypto_session = 26,
  close_crypto_session = 27,
  postcopy_advise = 28,
  postcopy_listen = 29,
  postcopy_end = 30,
  get_inflight_fd = 31,
  set_inflight_fd = 32,
  gpu_set_socket = 33,
  reset_device = 34,
  vring_kick = 35,
  get_max_mem_slots = 36,
  add_mem_reg = 37,
  rem_mem_reg = 38,
  set_status = 39,
  get_status = 40,
};
const char* to_string(Request r);

// Request numbers on the back-end channel (SET_BACKEND_REQ_FD), back-end to front-end.
enum class BackendRequest : uint32_t {
  iotlb_msg = 1,
  config_change_msg = 2,  // the config space changed: the front-end reads it again (GET_CONFIG)
  vring_host_notifier_msg = 3,
};

// VHOST_USER_F_PROTOCOL_FEATURES: a virtio feature bit reused to gate protocol features.
inline constexpr unsigned kFeatureProtocolFeatures = 30;
// VHOST_F_LOG_ALL: the back-end logs the guest pages it writes (live migration).
inline constexpr unsigned kFeatureLogAll = 26;
// vhost_vring_addr.flags: VHOST_VRING_F_LOG, log the used ring's writes too.
inline constexpr uint32_t kVringFlagLog = 1u << 0;

// Protocol feature bits (GET/SET_PROTOCOL_FEATURES).
enum ProtocolFeature : unsigned {
  kProtoMq = 0,
  kProtoLogShmfd = 1,
  kProtoRarp = 2,
  kProtoReplyAck = 3,
  kProtoMtu = 4,
  kProtoBackendReq = 5,
  kProtoCrossEndian = 6,
  kProtoCryptoSession = 7,
  kProtoPagefault = 8,
  kProtoConfig = 9,
  kProtoBackendSendFd = 10,
  kProtoHostNotifier = 11,
  kProtoInflightShmfd = 12,
  kProtoResetDevice = 13,
  kProtoInbandNotifications = 14,
  kProtoConfigureMemSlots = 15,
  kProtoStatus = 16,
};
constexpr uint64_t bit(unsigned n) { return uint64_t{1} << n; }

// Header flags.
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kFlagReply = 1u << 2;
inline constexpr uint32_t kFlagNeedReply = 1u << 3;

// SET_VRING_KICK/CALL/ERR u64 payload: bits 0-7 the ring index, bit 8 "no fd" (poll instead).
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNofdMask = 1u << 8;

inline constexpr size_t kMaxFds = 8;              // fds in one message (SCM_RIGHTS)
inline constexpr size_t kMemTableMaxRegions = 8;  // regions in one SET_MEM_TABLE
inline constexpr size_t kMaxConfigSize = 256;     // virtio config space bytes in GET/SET_CONFIG
// Largest payload read off the socket. The biggest message we understand is 268 bytes; unknown
// requests up to this size are read and discarded, anything larger drops the connection.
inline constexpr size_t kMaxPayloadSize = 4096;

struct MsgHeader {
  uint32_t request;
  uint32_t flags;
  uint32_t size;  // payload bytes that follow
};
static_assert(sizeof(MsgHeader) == 12);
inline constexpr size_t kHeaderSize = sizeof(MsgHeader);

struct MemRegion {
  uint64_t guest_addr;
  uint64_t size;
  uint64_t user_addr;
  uint64_t mmap_offset;
};
static_assert(sizeof(MemRegion) == 32);

struct MemTable {
  uint32_t nregions;
  uint32_t padding;
  MemRegion regions[kMemTableMaxRegions];
};
static_assert(offsetof(MemTable, regions) == 8 && sizeof(MemTable) == 264);

// ADD_MEM_REG / REM_MEM_REG payload.
struct SingleMemRegion {
  uint64_t padding;
  MemRegion region;
};
static_assert(sizeof(SingleMemRegion) == 40);

// GET_CONFIG / SET_CONFIG payload: a 12-byte header and `size` bytes of config space.
struct ConfigMsg {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;  // 0: a writable field; 1: live migration
  uint8_t data[kMaxConfigSize];
};
inline constexpr size_t kConfigHeaderSize = 12;
static_assert(offsetof(ConfigMsg, data) == kConfigHeaderSize);
inline constexpr uint32_t kConfigFlagMigration = 1;

// SET_LOG_BASE payload (with LOG_SHMFD; the log's fd rides along).
struct LogMsg {
  uint64_t mmap_size;
  uint64_t mmap_offset;
};
static_assert(sizeof(LogMsg) == 16);

// GET_INFLIGHT_FD / SET_INFLIGHT_FD payload. The spec lists 20 bytes of fields; QEMU sends the
// C struct with its tail padding (24). Both are accepted; replies carry 24, as QEMU expects.
struct InflightMsg {
  uint64_t mmap_size;
  uint64_t mmap_offset;
  uint16_t num_queues;
  uint16_t queue_size;
  uint32_t padding;
};
static_assert(sizeof(InflightMsg) == 24);
inline constexpr size_t kInflightFieldsSize = 20;

static_assert(sizeof(vhost_vring_state) == 8);
static_assert(sizeof(vhost_vring_addr) == 40);

// A validated message. The payload member that is meaningful depends on `request`; the fds
// themselves stay with the caller (parse_message only counts them).
struct ParsedMessage {
  Request request = Request::none;
  uint32_t flags = 0;
  uint32_t size = 0;
  bool known = false;  // a request this layer understands (others are answered or ignored)
  union Payload {
    uint64_t u64;
    vhost_vring_state state;
    vhost_vring_addr addr;
    MemTable mem;
    SingleMemRegion region;
    ConfigMsg config;
    InflightMsg inflight;
    LogMsg log;
  } payload{};

  bool need_reply() const { return (flags & kFlagNeedReply) != 0; }
};

// Checks a header alone: version 1, not a reply, payload size at most kMaxPayloadSize.
// Returns 0, -EPROTO (version or flags) or -EMSGSIZE (too big to read).
int check_header(const MsgHeader& h);

// Validates one complete message (`len` = header + payload bytes) that arrived with `nfds`
// file descriptors, and fills *out. Returns 0 or a negative errno:
//  -EPROTO    bad version / reply flag set
//  -EMSGSIZE  declared size larger than kMaxPayloadSize
//  -EBADMSG   `len` disagrees with the header's size, or the size is wrong for the request
//  -EINVAL    a size-deciding field out of range (region count, config length)
//  -EBADF     wrong number of fds for the request
// Unknown requests parse successfully with out->known = false and no payload decoded.
int parse_message(const uint8_t* buf, size_t len, int nfds, ParsedMessage* out);

}  // namespace vcp::vhost
