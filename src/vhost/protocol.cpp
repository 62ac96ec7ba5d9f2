#include "vhost/protocol.hpp"

#include <cerrno>
#include <cstring>

namespace vcp::vhost {
namespace {

// What a request carries: payload size range and fd count range. Requests without a payload
// accept up to 8 ignored bytes (some front-ends send a zero u64).
struct RequestSpec {
  uint16_t min_size;
  uint16_t max_size;
  uint8_t min_fds;
  uint8_t max_fds;
};

constexpr RequestSpec kNoPayload{0, 8, 0, 0};
constexpr RequestSpec kU64{8, 8, 0, 0};
constexpr RequestSpec kState{8, 8, 0, 0};

bool spec_for(Request r, RequestSpec* s) {
  switch (r) {
    case Request::get_features:
    case Request::set_owner:
    case Request::reset_owner:
    case Request::get_protocol_features:
    case Request::get_queue_num:
    case Request::reset_device:
    case Request::get_max_mem_slots:
      *s = kNoPayload;
      return true;
    case Request::set_backend_req_fd:
      *s = {0, 8, 1, 1};  // no payload (QEMU sends none), one socket
      return true;
    case Request::set_features:
    case Request::set_protocol_features:
      *s = kU64;
      return true;
    case Request::set_vring_num:
    case Request::set_vring_base:
    case Request::get_vring_base:
    case Request::set_vring_enable:
      *s = kState;
      return true;
    case Request::set_vring_addr:
      *s = {sizeof(vhost_vring_addr), sizeof(vhost_vring_addr), 0, 0};
      return true;
    case Request::set_vring_kick:
    case Request::set_vring_call:
    case Request::set_vring_err:
      *s = {8, 8, 0, 1};  // exact count decided by the NOFD bit
      return true;
    case Request::set_mem_table:
      *s = {offsetof(MemTable, regions), sizeof(MemTable), 0, kMemTableMaxRegions};
      return true;
    case Request::get_config:
    case Request::set_config:
      *s = {kConfigHeaderSize, sizeof(ConfigMsg), 0, 0};
      return true;
    case Request::get_inflight_fd:
      *s = {kInflightFieldsSize, sizeof(InflightMsg), 0, 0};
      return true;
    case Request::set_inflight_fd:
      *s = {kInflightFieldsSize, sizeof(InflightMsg), 1, 1};
      return true;
    case Request::set_log_base:
      *s = {sizeof(LogMsg), sizeof(LogMsg), 1, 1};
      return true;
    case Request::add_mem_reg:
      *s = {sizeof(SingleMemRegion), sizeof(SingleMemRegion), 1, 1};
      return true;
    case Request::rem_mem_reg:
      // The spec allows (and QEMU 7.2 sends) one stray fd; it is closed unused.
      *s = {sizeof(SingleMemRegion), sizeof(SingleMemRegion), 0, 1};
      return true;
    default:
      return false;
  }
}

}  // namespace

const char* to_string(Request r) {
  switch (r) {
    case Request::none: return "NONE";
    case Request::get_features: return "GET_FEATURES";
    case Request::set_features: return "SET_FEATURES";
    case Request::set_owner: return "SET_OWNER";
    case Request::reset_owner: return "RESET_OWNER";
    case Request::set_mem_table: return "SET_MEM_TABLE";
    case Request::set_log_base: return "SET_LOG_BASE";
    case Request::set_log_fd: return "SET_LOG_FD";
    case Request::set_vring_num: return "SET_VRING_NUM";
    case Request::set_vring_addr: return "SET_VRING_ADDR";
    case Request::set_vring_base: return "SET_VRING_BASE";
    case Request::get_vring_base: return "GET_VRING_BASE";
    case Request::set_vring_kick: return "SET_VRING_KICK";
    case Request::set_vring_call: return "SET_VRING_CALL";
    case Request::set_vring_err: return "SET_VRING_ERR";
    case Request::get_protocol_features: return "GET_PROTOCOL_FEATURES";
    case Request::set_protocol_features: return "SET_PROTOCOL_FEATURES";
    case Request::get_queue_num: return "GET_QUEUE_NUM";
    case Request::set_vring_enable: return "SET_VRING_ENABLE";
    case Request::send_rarp: return "SEND_RARP";
    case Request::net_set_mtu: return "NET_SET_MTU";
    case Request::set_backend_req_fd: return "SET_BACKEND_REQ_FD";
    case Request::iotlb_msg: return "IOTLB_MSG";
    case Request::set_vring_endian: return "SET_VRING_ENDIAN";
    case Request::get_config: return "GET_CONFIG";
    case Request::set_config: return "SET_CONFIG";
    case Request::create_crypto_session: return "CREATE_CRYPTO_SESSION";
    case Request::close_crypto_session: return "CLOSE_CRYPTO_SESSION";
    case Request::postcopy_advise: return "POSTCOPY_ADVISE";
    case Request::postcopy_listen: return "POSTCOPY_LISTEN";
    case Request::postcopy_end: return "POSTCOPY_END";
    case Request::get_inflight_fd: return "GET_INFLIGHT_FD";
    case Request::set_inflight_fd: return "SET_INFLIGHT_FD";
    case Request::gpu_set_socket: return "GPU_SET_SOCKET";
    case Request::reset_device: return "RESET_DEVICE";
    case Request::vring_kick: return "VRING_KICK";
    case Request::get_max_mem_slots: return "GET_MAX_MEM_SLOTS";
    case Request::add_mem_reg: return "ADD_MEM_REG";
    case Request::rem_mem_reg: return "REM_MEM_REG";
    case Request::set_status: return "SET_STATUS";
    case Request::get_status: return "GET_STATUS";
  }
  return "UNKNOWN";
}

int check_header(const MsgHeader& h) {
  if ((h.flags & kVersionMask) != kVersion || (h.flags & kFlagReply)) return -EPROTO;
  if (h.size > kMaxPayloadSize) return -EMSGSIZE;
  return 0;
}

int parse_message(const uint8_t* buf, size_t len, int nfds, ParsedMessage* out) {
  if (buf == nullptr || len < kHeaderSize || nfds < 0) return -EBADMSG;
  MsgHeader h;
  std::memcpy(&h, buf, sizeof(h));
  if (int rc = check_header(h); rc < 0) return rc;
  if (len - kHeaderSize != h.size) return -EBADMSG;

  out->request = static_cast<Request>(h.request);
  out->flags = h.flags;
  out->size = h.size;
  out->known = false;
  std::memset(&out->payload, 0, sizeof(out->payload));

  RequestSpec spec;
  if (!spec_for(out->request, &spec)) return 0;
  if (h.size < spec.min_size || h.size > spec.max_size) return -EBADMSG;
  if (nfds < spec.min_fds || nfds > spec.max_fds) return -EBADF;

  const uint8_t* p = buf + kHeaderSize;
  static_assert(sizeof(ParsedMessage::Payload) >= sizeof(ConfigMsg));
  std::memcpy(&out->payload, p, h.size);

  switch (out->request) {
    case Request::set_mem_table: {
      const uint32_t n = out->payload.mem.nregions;
      if (n > kMemTableMaxRegions) return -EINVAL;
      if (h.size < offsetof(MemTable, regions) + n * sizeof(MemRegion)) return -EBADMSG;
      if (static_cast<uint32_t>(nfds) != n) return -EBADF;
      break;
    }
    case Request::set_vring_kick:
    case Request::set_vring_call:
    case Request::set_vring_err: {
      const uint64_t v = out->payload.u64;
      if (v & ~(kVringIndexMask | kVringNofdMask)) return -EINVAL;
      const int want = (v & kVringNofdMask) ? 0 : 1;
      if (nfds != want) return -EBADF;
      break;
    }
    case Request::get_config:
    case Request::set_config: {
      const uint32_t n = out->payload.config.size;
      if (n > kMaxConfigSize) return -EINVAL;
      if (h.size != kConfigHeaderSize + n) return -EBADMSG;
      break;
    }
    default:
      break;
  }
  out->known = true;
  return 0;
}

}  // namespace vcp::vhost
