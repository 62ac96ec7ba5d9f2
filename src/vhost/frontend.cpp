#include "vhost/frontend.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "vhost/message_io.hpp"

namespace vcp::vhost {
namespace {

// A back-end's non-zero ack: an errno when it looks like one.
int ack_to_errno(uint64_t v) {
  if (v == 0) return 0;
  return v < 4096 ? -static_cast<int>(v) : -EIO;
}

}  // namespace

FrontendChannel::FrontendChannel(UniqueFd fd, int timeout_ms) : fd_(std::move(fd)), timeout_ms_(timeout_ms) {}

Result<FrontendChannel> FrontendChannel::connect(const std::string& path, int timeout_ms) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return Err(ENAMETOOLONG);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Err(errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Err(errno);
  return FrontendChannel(std::move(fd), timeout_ms);
}

int FrontendChannel::send(Request r, const void* payload, size_t len, std::span<const int> fds,
                          uint32_t extra_flags) {
  if (len > kMaxPayloadSize) return -EMSGSIZE;
  MsgHeader h{static_cast<uint32_t>(r), kVersion | extra_flags, static_cast<uint32_t>(len)};
  return send_message(fd_.get(), h, payload, len, fds, timeout_ms_);
}

int FrontendChannel::send_raw(const void* bytes, size_t len, std::span<const int> fds) {
  const iovec iov{const_cast<void*>(bytes), len};
  return send_iov(fd_.get(), std::span<const iovec>(&iov, 1), fds, timeout_ms_);
}

int FrontendChannel::receive(Request expected, Reply* out) {
  FdList fds;
  int rc = recv_exact(fd_.get(), &out->header, kHeaderSize, &fds, true, timeout_ms_);
  if (rc < 0) return rc;
  const MsgHeader& h = out->header;
  if ((h.flags & kVersionMask) != kVersion || !(h.flags & kFlagReply) || h.size > kMaxPayloadSize) return -EPROTO;
  if (h.size > 0) {
    rc = recv_exact(fd_.get(), out->payload, h.size, &fds, true, timeout_ms_);
    if (rc < 0) return rc == -ECONNRESET ? -EBADMSG : rc;
  }
  out->fd = fds.take(0);
  if (h.request != static_cast<uint32_t>(expected)) return -EPROTO;
  return 0;
}

int FrontendChannel::receive_ack(Request expected) {
  Reply rep;
  if (int rc = receive(expected, &rep); rc < 0) return rc;
  if (rep.header.size != sizeof(uint64_t)) return -EPROTO;
  uint64_t v;
  std::memcpy(&v, rep.payload, sizeof(v));
  return ack_to_errno(v);
}

int FrontendChannel::request(Request r, const void* payload, size_t len, std::span<const int> fds) {
  if (int rc = send(r, payload, len, fds, reply_ack_ ? kFlagNeedReply : 0); rc < 0) return rc;
  return reply_ack_ ? receive_ack(r) : 0;
}

Result<uint64_t> FrontendChannel::request_u64(Request r) {
  if (int rc = send(r, nullptr, 0); rc < 0) return Err(rc);
  Reply rep;
  if (int rc = receive(r, &rep); rc < 0) return Err(rc);
  if (rep.header.size != sizeof(uint64_t)) return Err(EPROTO);
  uint64_t v;
  std::memcpy(&v, rep.payload, sizeof(v));
  return v;
}

Result<uint64_t> FrontendChannel::get_features() { return request_u64(Request::get_features); }
Result<uint64_t> FrontendChannel::get_protocol_features() { return request_u64(Request::get_protocol_features); }
Result<uint64_t> FrontendChannel::get_queue_num() { return request_u64(Request::get_queue_num); }
Result<uint64_t> FrontendChannel::get_max_mem_slots() { return request_u64(Request::get_max_mem_slots); }

int FrontendChannel::set_features(uint64_t features) {
  return request(Request::set_features, &features, sizeof(features));
}

int FrontendChannel::set_protocol_features(uint64_t features) {
  int rc = request(Request::set_protocol_features, &features, sizeof(features));
  if (rc == 0) reply_ack_ = (features & bit(kProtoReplyAck)) != 0;
  return rc;
}

int FrontendChannel::set_owner() { return request(Request::set_owner, nullptr, 0); }
int FrontendChannel::reset_owner() { return request(Request::reset_owner, nullptr, 0); }
int FrontendChannel::reset_device() { return request(Request::reset_device, nullptr, 0); }

int FrontendChannel::set_mem_table(std::span<const RegionFd> regions) {
  if (regions.size() > kMemTableMaxRegions) return -E2BIG;
  MemTable t{};
  int fds[kMemTableMaxRegions];
  t.nregions = static_cast<uint32_t>(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {
    t.regions[i] = regions[i].region;
    fds[i] = regions[i].fd;
  }
  return request(Request::set_mem_table, &t, offsetof(MemTable, regions) + regions.size() * sizeof(MemRegion),
                 std::span<const int>(fds, regions.size()));
}

int FrontendChannel::add_mem_reg(const MemRegion& region, int fd) {
  SingleMemRegion m{0, region};
  return request(Request::add_mem_reg, &m, sizeof(m), std::span<const int>(&fd, 1));
}

int FrontendChannel::rem_mem_reg(const MemRegion& region) {
  SingleMemRegion m{0, region};
  return request(Request::rem_mem_reg, &m, sizeof(m));
}

int FrontendChannel::set_vring_num(unsigned index, unsigned num) {
  vhost_vring_state s{index, num};
  return request(Request::set_vring_num, &s, sizeof(s));
}

int FrontendChannel::set_vring_addr(const vhost_vring_addr& addr) {
  return request(Request::set_vring_addr, &addr, sizeof(addr));
}

int FrontendChannel::set_vring_base(unsigned index, unsigned base) {
  vhost_vring_state s{index, base};
  return request(Request::set_vring_base, &s, sizeof(s));
}

Result<uint16_t> FrontendChannel::get_vring_base(unsigned index) {
  vhost_vring_state s{index, 0};
  if (int rc = send(Request::get_vring_base, &s, sizeof(s)); rc < 0) return Err(rc);
  Reply rep;
  if (int rc = receive(Request::get_vring_base, &rep); rc < 0) return Err(rc);
  if (rep.header.size != sizeof(s)) return Err(EPROTO);
  std::memcpy(&s, rep.payload, sizeof(s));
  if (s.index != index || s.num > 0xffff) return Err(EPROTO);
  return static_cast<uint16_t>(s.num);
}

int FrontendChannel::set_vring_fd(Request r, unsigned index, int fd) {
  if (index > kVringIndexMask) return -EINVAL;
  uint64_t v = index | (fd < 0 ? kVringNofdMask : 0);
  if (fd < 0) return request(r, &v, sizeof(v));
  return request(r, &v, sizeof(v), std::span<const int>(&fd, 1));
}

int FrontendChannel::set_vring_kick(unsigned index, int fd) { return set_vring_fd(Request::set_vring_kick, index, fd); }
int FrontendChannel::set_vring_call(unsigned index, int fd) { return set_vring_fd(Request::set_vring_call, index, fd); }
int FrontendChannel::set_vring_err(unsigned index, int fd) { return set_vring_fd(Request::set_vring_err, index, fd); }

int FrontendChannel::set_vring_enable(unsigned index, bool enable) {
  vhost_vring_state s{index, enable ? 1u : 0u};
  return request(Request::set_vring_enable, &s, sizeof(s));
}

int FrontendChannel::get_config(uint32_t offset, std::span<uint8_t> out) {
  if (out.size() > kMaxConfigSize) return -EINVAL;
  ConfigMsg c{};
  c.offset = offset;
  c.size = static_cast<uint32_t>(out.size());
  const size_t len = kConfigHeaderSize + out.size();
  if (int rc = send(Request::get_config, &c, len); rc < 0) return rc;
  Reply rep;
  if (int rc = receive(Request::get_config, &rep); rc < 0) return rc;
  if (rep.header.size == 0) return -EIO;  // the back-end's way of saying no
  if (rep.header.size != len) return -EPROTO;
  std::memcpy(out.data(), rep.payload + kConfigHeaderSize, out.size());
  return 0;
}

int FrontendChannel::set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) {
  if (data.size() > kMaxConfigSize) return -EINVAL;
  ConfigMsg c{};
  c.offset = offset;
  c.size = static_cast<uint32_t>(data.size());
  c.flags = flags;
  std::memcpy(c.data, data.data(), data.size());
  return request(Request::set_config, &c, kConfigHeaderSize + data.size());
}

Result<InflightRegion> FrontendChannel::get_inflight_fd(uint16_t num_queues, uint16_t queue_size) {
  InflightMsg m{};
  m.num_queues = num_queues;
  m.queue_size = queue_size;
  if (int rc = send(Request::get_inflight_fd, &m, sizeof(m)); rc < 0) return Err(rc);
  Reply rep;
  if (int rc = receive(Request::get_inflight_fd, &rep); rc < 0) return Err(rc);
  if (rep.header.size < kInflightFieldsSize || rep.header.size > sizeof(m)) return Err(EPROTO);
  std::memcpy(&m, rep.payload, rep.header.size);
  InflightRegion out;
  out.mmap_size = m.mmap_size;
  out.mmap_offset = m.mmap_offset;
  out.num_queues = m.num_queues;
  out.queue_size = m.queue_size;
  if (m.mmap_size != 0 && !rep.fd) return Err(EPROTO);
  out.fd = std::move(rep.fd);
  return out;
}

int FrontendChannel::set_backend_req_fd(int fd) {
  return request(Request::set_backend_req_fd, nullptr, 0, std::span<const int>(&fd, 1));
}

int FrontendChannel::receive_backend_request(int fd, MsgHeader* h, std::span<uint8_t> out, int timeout_ms) {
  FdList fds;  // the requests a back-end sends carry none; any that came are closed
  int rc = recv_exact(fd, h, sizeof(*h), &fds, true, timeout_ms);
  if (rc < 0) return rc;
  if ((h->flags & kVersionMask) != kVersion || h->size > out.size()) return -EPROTO;
  if (h->size == 0) return 0;
  rc = recv_exact(fd, out.data(), h->size, &fds, true, timeout_ms);
  return rc < 0 ? rc : static_cast<int>(h->size);
}

int FrontendChannel::set_log_base(int fd, uint64_t size, uint64_t offset) {
  const LogMsg m{size, offset};
  if (int rc = send(Request::set_log_base, &m, sizeof(m), std::span<const int>(&fd, 1)); rc < 0) return rc;
  Reply rep;
  return receive(Request::set_log_base, &rep);
}

int FrontendChannel::set_inflight_fd(const InflightRegion& region) {
  if (!region.fd) return -EBADF;
  InflightMsg m{};
  m.mmap_size = region.mmap_size;
  m.mmap_offset = region.mmap_offset;
  m.num_queues = region.num_queues;
  m.queue_size = region.queue_size;
  const int fd = region.fd.get();
  return request(Request::set_inflight_fd, &m, sizeof(m), std::span<const int>(&fd, 1));
}

}  // namespace vcp::vhost
