// Test harness for libvcp: the device runs in this process (a BlkDevice over a real backend, or
// a fake device for misbehaviour) behind a VhostUserBackend served on its own thread, over a
// socketpair or a unix socket, the way `vcp serve` runs it.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstring>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "vcp/blk_device.hpp"
#include "vcp/client.hpp"
#include "vhost/backend.hpp"
#include "virtio/blk.hpp"

namespace vcp::client::test {

// Serves one connection on a thread until the front-end goes, stop() is called or the test
// asks it to drop the connection.
class ServerLoop {
 public:
  ServerLoop(vhost::Device& dev, UniqueFd conn) : stop_(eventfd(0, EFD_CLOEXEC)), post_(eventfd(0, EFD_CLOEXEC)) {
    backend_ = std::make_unique<vhost::VhostUserBackend>(dev, std::move(conn), vhost::BackendOptions{500});
    thread_ = std::thread([this] { run(); });
  }
  ~ServerLoop() { stop(); }
  // Ends the loop and destroys the back-end: the socket closes (what a crashed VCP looks like).
  void stop() {
    if (thread_.joinable()) {
      uint64_t one = 1;
      (void)!write(stop_.get(), &one, sizeof(one));
      thread_.join();
    }
    backend_.reset();
  }

  // Runs fn on the loop's thread, between two messages (what `vcp serve` does on SIGHUP), and
  // returns once it ran.
  void run_on_loop(std::function<void(vhost::VhostUserBackend&)> fn) {
    std::unique_lock lk(post_mu_);
    posted_ = std::move(fn);
    uint64_t one = 1;
    (void)!write(post_.get(), &one, sizeof(one));
    post_cv_.wait(lk, [this] { return !posted_; });
  }

 private:
  void run() {
    for (;;) {
      pollfd p[2 + vhost::VhostUserBackend::kPollFds] = {{stop_.get(), POLLIN, 0}, {post_.get(), POLLIN, 0}};
      backend_->poll_fds(&p[2]);
      if (::poll(p, std::size(p), -1) < 0) continue;
      if (p[0].revents) return;
      if (p[1].revents) {
        uint64_t v;
        (void)!read(post_.get(), &v, sizeof(v));
        std::lock_guard lk(post_mu_);
        posted_(*backend_);
        posted_ = nullptr;
        post_cv_.notify_all();
        continue;
      }
      if (backend_->on_ready(&p[2]) < 0) {
        ::shutdown(backend_->fd(), SHUT_RDWR);
        return;
      }
    }
  }

  std::unique_ptr<vhost::VhostUserBackend> backend_;
  UniqueFd stop_;
  UniqueFd post_;
  std::mutex post_mu_;
  std::condition_variable post_cv_;
  std::function<void(vhost::VhostUserBackend&)> posted_;
  std::thread thread_;
};

struct DeviceOptions {
  std::string spec = "ram:size=16M";
  uint16_t queues = 1;
  uint32_t seg_max = 128;
  uint32_t size_max = 64u << 10;
  vcp::PollMode poll = vcp::PollMode::adaptive;
};

// Connects a client to `dev` through a socketpair; the server side runs on its own thread in
// *loop, which must outlive the client.
inline int connect_over_socketpair(vhost::Device& dev, const ClientOptions& co, std::unique_ptr<ServerLoop>* loop,
                                   std::unique_ptr<Client>* out, std::string* why = nullptr) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -errno;
  *loop = std::make_unique<ServerLoop>(dev, UniqueFd(sv[0]));
  return Client::connect_fd(sv[1], co, out, why);
}

// A BlkDevice over a backend spec, and a client connected to it over a socketpair.
class DeviceServer {
 public:
  explicit DeviceServer(const DeviceOptions& o) {
    std::string err;
    auto be = make_backend(o.spec, &err);
    EXPECT_TRUE(be) << err;
    if (!be) return;
    BlkDeviceOptions bo;
    bo.num_queues = o.queues;
    bo.seg_max = o.seg_max;
    bo.size_max = o.size_max;
    bo.poll_mode = o.poll;
    bo.spin_us = 20;
    bo.name = "ctest";
    device = BlkDevice::create(std::move(be), bo, &err);
    EXPECT_TRUE(device) << err;
  }
  ~DeviceServer() {
    loop.reset();
    device.reset();
  }

  // Connects a client through a socketpair; the server side runs on its own thread.
  int connect(const ClientOptions& co, std::unique_ptr<Client>* out, std::string* why = nullptr) {
    return connect_over_socketpair(*device, co, &loop, out, why);
  }

  std::unique_ptr<BlkDevice> device;
  std::unique_ptr<ServerLoop> loop;
};

// A device that takes requests and never answers them; the test plays the device by writing
// into the used ring itself (through the back-end's own mapping of the arena).
class SilentDevice final : public vhost::Device {
 public:
  static constexpr uint16_t kQueues = 2;
  uint64_t features() const override {
    return (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
           (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_SIZE_MAX) |
           (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_MQ) | (1ull << VIRTIO_BLK_F_TOPOLOGY);
  }
  void set_features(uint64_t) override {}
  uint16_t num_queues() const override { return config.num_queues; }  // started: the first kQueues
  uint16_t max_queue_size() const override { return 1024; }
  int read_config(uint32_t offset, std::span<uint8_t> out) override {
    const virtio_blk_config c = virtio::make_blk_config(config);
    if (offset > 256 || out.size() > 256 - offset) return -EINVAL;
    std::memset(out.data(), 0, out.size());
    if (offset < sizeof(c))
      std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(&c) + offset, std::min(out.size(), sizeof(c) - offset));
    return 0;
  }
  int write_config(uint32_t, std::span<const uint8_t>) override { return -EINVAL; }
  int start_queue(const vhost::QueueStart& q) override {
    std::lock_guard lk(mu);
    if (q.index < kQueues) starts[q.index] = q;
    return 0;
  }
  uint16_t stop_queue(unsigned) override { return 0; }
  void set_call_fd(unsigned, int) override {}
  void set_dirty_log(unsigned, const vhost::DirtyLogState&) override {}
  void pause() override {}
  void resume() override {}
  void reset() override {}

  vhost::QueueStart start(unsigned i) {
    std::lock_guard lk(mu);
    return starts[i];
  }

  std::mutex mu;
  vhost::QueueStart starts[kQueues];
  virtio::BlkConfigParams config = [] {  // what read_config reports (a test may make it nonsense)
    virtio::BlkConfigParams p;
    p.capacity_sectors = (64u << 20) >> 9;
    p.seg_max = 16;
    p.size_max = 64u << 10;
    p.num_queues = kQueues;
    return p;
  }();
};

// A unix socket listening in a temporary folder; serve() accepts one front-end for `dev` on a
// thread (the way `vcp serve` does).
class UnixListener {
 public:
  UnixListener() {
    char dir[] = "/tmp/libvcp-test-XXXXXX";
    if (!mkdtemp(dir)) return;
    dir_ = dir;
    path = dir_ + "/sock";
    fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path.c_str());
    ok = bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && listen(fd_.get(), 1) == 0;
  }
  ~UnixListener() {
    if (acceptor_.joinable()) acceptor_.join();
    loop_.reset();
    unlink(path.c_str());
    rmdir(dir_.c_str());
  }
  void serve(vhost::Device& dev) {
    acceptor_ = std::thread([this, &dev] {
      loop_ = std::make_unique<ServerLoop>(dev, UniqueFd(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC)));
    });
  }
  // Call once the client connected: the server thread is then running.
  void accepted() { acceptor_.join(); }

  std::string path;
  bool ok = false;

 private:
  std::string dir_;
  UniqueFd fd_;
  std::thread acceptor_;
  std::unique_ptr<ServerLoop> loop_;
};

// A temporary image file of `bytes`, removed at the end.
struct TempImage {
  explicit TempImage(size_t bytes) {
    char p[] = "/tmp/libvcp-img-XXXXXX";
    const int fd = mkstemp(p);
    if (fd < 0) return;
    path = p;
    ok = ftruncate(fd, static_cast<off_t>(bytes)) == 0;
    close(fd);
  }
  ~TempImage() {
    if (!path.empty()) unlink(path.c_str());
  }
  std::string path;
  bool ok = false;
};

// Fills a buffer with a pattern that names its offset and a seed.
inline void fill_pattern(uint8_t* p, size_t len, uint64_t offset, uint32_t seed) {
  for (size_t i = 0; i < len; ++i) p[i] = static_cast<uint8_t>((offset + i) * 131 + seed + ((offset + i) >> 9));
}
inline bool check_pattern(const uint8_t* p, size_t len, uint64_t offset, uint32_t seed) {
  for (size_t i = 0; i < len; ++i)
    if (p[i] != static_cast<uint8_t>((offset + i) * 131 + seed + ((offset + i) >> 9))) return false;
  return true;
}

}  // namespace vcp::client::test
