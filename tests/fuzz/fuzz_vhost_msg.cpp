// libFuzzer target for the vhost-user back-end.
//
// The input is a byte stream as a front-end would write it to the socket. It goes to
// parse_message() whole, and then, cut into messages by their headers, to a VhostUserBackend
// over a socketpair with a fake device. So that memory and ring messages reach past the fd
// checks, the harness attaches the fds a message's header asks for: a 1 MiB memfd for memory
// table, region and inflight messages, an eventfd for kick/call/err, a socket for the back-end
// channel (SET_BACKEND_REQ_FD; after each message the back-end sends a config change on it,
// whatever state the input left it in). The fake device touches
// the first and last byte of every ring structure it is given, so a layout outside the mapped
// memory crashes here rather than later in a queue thread.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "base/log.hpp"
#include "vhost/backend.hpp"
#include "vhost/message_io.hpp"
#include "vhost/protocol.hpp"

namespace {

using namespace vcp;
using namespace vcp::vhost;

constexpr size_t kMemBytes = 1 << 20;
int g_memfd = -1;
int g_eventfd = -1;
int g_backend_channel = -1;  // the back-end's end of a socket pair; the other is drained
int g_frontend_channel = -1;
uint8_t* g_mem = nullptr;

class FuzzDevice final : public Device {
 public:
  uint64_t features() const override { return (1ull << 32) | (1ull << 29) | (1ull << 28); }
  void set_features(uint64_t) override {}
  uint16_t num_queues() const override { return 2; }
  uint16_t max_queue_size() const override { return 256; }
  int read_config(uint32_t offset, std::span<uint8_t> out) override {
    if (offset > sizeof(config_) || out.size() > sizeof(config_) - offset) return -EINVAL;
    std::memcpy(out.data(), config_ + offset, out.size());
    return 0;
  }
  int write_config(uint32_t offset, std::span<const uint8_t> data) override {
    if (offset > sizeof(config_) || data.size() > sizeof(config_) - offset) return -EINVAL;
    std::memcpy(config_ + offset, data.data(), data.size());
    return 0;
  }
  int start_queue(const QueueStart& q) override {
    if (q.index >= 2 || q.memory == nullptr || q.layout.size == 0) __builtin_trap();
    const uint16_t n = q.layout.size;
    touch(q.layout.desc, 16u * n);
    touch(q.layout.avail, 6u + 2u * n);
    touch(q.layout.used, 6u + 8u * n);
    if (q.inflight) touch(q.inflight->region, sizeof(virtio::InflightQueueSplit) + 16u * n);
    base_[q.index] = q.last_avail_idx;
    return 0;
  }
  uint16_t stop_queue(unsigned index) override { return index < 2 ? base_[index] : 0; }
  void set_call_fd(unsigned, int) override {}
  void set_dirty_log(unsigned, const DirtyLogState& s) override {
    // What a queue thread would do with it: mark a page (the log is mapped and sized).
    if (s.log) s.log->mark(0, 1);
  }
  void pause() override {}
  void resume() override {}
  void reset() override {}

 private:
  static void touch(const void* p, size_t len) {
    auto* b = static_cast<const volatile uint8_t*>(p);
    sink_ = static_cast<uint8_t>(sink_ + b[0] + b[len - 1]);
  }
  static inline uint8_t sink_ = 0;
  uint8_t config_[60] = {};
  uint16_t base_[2] = {};
};

// The fds a front-end would attach to this message.
size_t fds_for(const uint8_t* msg, size_t len, int* fds) {
  MsgHeader h;
  std::memcpy(&h, msg, sizeof(h));
  const uint8_t* p = msg + kHeaderSize;
  const size_t payload = len - kHeaderSize;
  size_t n = 0;
  switch (static_cast<Request>(h.request)) {
    case Request::set_mem_table: {
      uint32_t regions = 0;
      if (payload >= 4) std::memcpy(&regions, p, 4);
      n = regions < kMaxFds ? regions : kMaxFds;
      for (size_t i = 0; i < n; ++i) fds[i] = g_memfd;
      return n;
    }
    case Request::add_mem_reg:
    case Request::set_inflight_fd:
      fds[0] = g_memfd;
      return 1;
    case Request::set_vring_kick:
    case Request::set_vring_call:
    case Request::set_vring_err: {
      uint64_t v = kVringNofdMask;
      if (payload >= 8) std::memcpy(&v, p, 8);
      if (v & kVringNofdMask) return 0;
      fds[0] = g_eventfd;
      return 1;
    }
    case Request::set_backend_req_fd:
      fds[0] = g_backend_channel;
      return 1;
    default:
      return 0;
  }
}

void drain(int sock) {
  uint8_t buf[4096];
  while (::recv(sock, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
  }
}

void run_backend(const uint8_t* data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  UniqueFd front(sv[1]);
  std::memset(g_mem, 0, kMemBytes);  // inflight records from an earlier input must not leak in
  FuzzDevice dev;
  VhostUserBackend backend(dev, UniqueFd(sv[0]), BackendOptions{20});

  // Cut the stream where the back-end will: header, then `size` bytes.
  size_t off = 0;
  bool shut = false;
  while (off < size) {
    size_t len = size - off;
    if (len >= kHeaderSize) {
      MsgHeader h;
      std::memcpy(&h, data + off, sizeof(h));
      if (h.size <= kMaxPayloadSize && kHeaderSize + h.size < len) len = kHeaderSize + h.size;
    }
    int fds[kMaxFds];
    const size_t nfds = len >= kHeaderSize ? fds_for(data + off, len, fds) : 0;
    const iovec iov{const_cast<uint8_t*>(data + off), len};
    if (send_iov(front.get(), std::span<const iovec>(&iov, 1), std::span<const int>(fds, nfds), 20) < 0) break;
    off += len;
    if (off == size) {
      ::shutdown(front.get(), SHUT_WR);  // a short last message ends in EOF, not a wait
      shut = true;
    }
    int rc = backend.on_readable();
    drain(front.get());
    if (rc < 0) return;
    (void)backend.config_changed();
    drain(g_frontend_channel);
  }
  if (!shut) ::shutdown(front.get(), SHUT_WR);
  for (int i = 0; i < 4 && backend.on_readable() == 0; ++i) drain(front.get());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vcp::log::set_level(vcp::log::Level::off);
  g_memfd = memfd_create("fuzz-guest-mem", MFD_CLOEXEC);
  if (g_memfd < 0 || ftruncate(g_memfd, kMemBytes) != 0) __builtin_trap();
  void* m = mmap(nullptr, kMemBytes, PROT_READ | PROT_WRITE, MAP_SHARED, g_memfd, 0);
  if (m == MAP_FAILED) __builtin_trap();
  g_mem = static_cast<uint8_t*>(m);
  g_eventfd = eventfd(0, EFD_CLOEXEC);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) __builtin_trap();
  g_backend_channel = sv[0];
  g_frontend_channel = sv[1];
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return -1;
  ParsedMessage m;
  (void)parse_message(data, size, size ? data[size - 1] % 10 : 0, &m);
  run_backend(data, size);
  return 0;
}
