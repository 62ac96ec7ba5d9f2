// Test harness for the vhost layer: a fake Device that records what the protocol asked of it,
// a back-end running on its own thread over a socketpair, and memfd-backed guest memory.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vhost/backend.hpp"
#include "vhost/device.hpp"
#include "vhost/frontend.hpp"

namespace vcp::vhost::test {

class FakeDevice final : public Device {
 public:
  static constexpr uint64_t kFeatures = (1ull << 32) /* VERSION_1 */ | (1ull << 29) /* EVENT_IDX */ |
                                        (1ull << 28) /* INDIRECT_DESC */ | (1ull << 6) /* BLK_SIZE */;
  static constexpr uint16_t kQueues = 2;
  static constexpr uint16_t kMaxQueueSize = 256;
  static constexpr size_t kConfigSize = 64;

  uint64_t features() const override { return kFeatures; }
  void set_features(uint64_t acked) override {
    std::lock_guard lk(mu);
    acked_features = acked;
    log.push_back("features");
  }
  uint16_t num_queues() const override { return kQueues; }
  uint16_t max_queue_size() const override { return kMaxQueueSize; }
  int read_config(uint32_t offset, std::span<uint8_t> out) override {
    if (offset > kConfigSize || out.size() > kConfigSize - offset) return -EINVAL;
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(offset + i);
    return 0;
  }
  int write_config(uint32_t offset, std::span<const uint8_t> data) override {
    if (offset > kConfigSize || data.size() > kConfigSize - offset) return -EINVAL;
    std::lock_guard lk(mu);
    config_writes.emplace_back(offset, std::vector<uint8_t>(data.begin(), data.end()));
    return 0;
  }
  int start_queue(const QueueStart& q) override {
    std::lock_guard lk(mu);
    if (start_result < 0) return start_result;
    starts.push_back(q);
    running[q.index] = true;
    log.push_back("start " + std::to_string(q.index));
    return 0;
  }
  uint16_t stop_queue(unsigned index) override {
    std::lock_guard lk(mu);
    running[index] = false;
    log.push_back("stop " + std::to_string(index));
    return stop_value[index];
  }
  void set_dirty_log(unsigned index, const DirtyLogState& s) override {
    std::lock_guard lk(mu);
    dirty_logs.emplace_back(index, s);
    log.push_back("dirty log " + std::to_string(index) + (s.log ? " on" : " off") + (s.log_used ? " used" : ""));
  }
  void set_call_fd(unsigned index, int call_fd) override {
    std::lock_guard lk(mu);
    call_fds.emplace_back(index, call_fd);
  }
  void pause() override {
    std::lock_guard lk(mu);
    log.push_back("pause");
  }
  void resume() override {
    std::lock_guard lk(mu);
    log.push_back("resume");
  }
  void reset() override {
    std::lock_guard lk(mu);
    ++resets;
    running[0] = running[1] = false;
    log.push_back("reset");
  }

  // Snapshots, taken under the lock.
  std::vector<QueueStart> get_starts() {
    std::lock_guard lk(mu);
    return starts;
  }
  std::vector<std::string> get_log() {
    std::lock_guard lk(mu);
    return log;
  }
  bool is_running(unsigned i) {
    std::lock_guard lk(mu);
    return running[i];
  }

  std::mutex mu;
  uint64_t acked_features = 0;
  int start_result = 0;
  uint16_t stop_value[kQueues] = {0, 0};
  bool running[kQueues] = {false, false};
  int resets = 0;
  std::vector<QueueStart> starts;
  std::vector<std::pair<unsigned, int>> call_fds;
  std::vector<std::pair<unsigned, DirtyLogState>> dirty_logs;
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>> config_writes;
  std::vector<std::string> log;
};

// A VhostUserBackend served by its own thread the way `vcp serve` does: poll, on_readable,
// stop at the first negative return.
class BackendLoop {
 public:
  BackendLoop(Device& dev, UniqueFd conn)
      : backend_(std::make_unique<VhostUserBackend>(dev, std::move(conn), BackendOptions{300})),
        stop_(eventfd(0, EFD_CLOEXEC)) {
    auto done = std::make_shared<std::promise<int>>();
    result_ = done->get_future();
    thread_ = std::thread([this, done] { done->set_value(run()); });
  }
  ~BackendLoop() { join(); }

  // The back-end's final return value: waits up to 3 s for it to give up on the connection;
  // 1 when it did not (the test then fails on the value).
  int join() {
    if (!thread_.joinable()) return rc_;
    if (result_.wait_for(std::chrono::seconds(3)) == std::future_status::timeout) {
      uint64_t one = 1;
      (void)!write(stop_.get(), &one, sizeof(one));
    }
    rc_ = result_.get();
    thread_.join();
    return rc_;
  }
  // Only after join(), or after a round trip when the test knows the thread is idle.
  VhostUserBackend& backend() { return *backend_; }
  // Ends the loop at once (if the back-end has not dropped the connection) and destroys the
  // back-end, as `vcp serve` does when it shuts down.
  void destroy_backend() {
    uint64_t one = 1;
    (void)!write(stop_.get(), &one, sizeof(one));
    join();
    backend_.reset();
  }

 private:
  int run() {
    for (;;) {
      pollfd p[1 + VhostUserBackend::kPollFds] = {{stop_.get(), POLLIN, 0}};
      backend_->poll_fds(&p[1]);
      if (::poll(p, std::size(p), -1) < 0) continue;
      if (p[0].revents) return 1;
      if (int rc = backend_->on_ready(&p[1]); rc < 0) {
        ::shutdown(backend_->fd(), SHUT_RDWR);  // the peer sees the drop
        return rc;
      }
    }
  }

  std::unique_ptr<VhostUserBackend> backend_;
  UniqueFd stop_;
  std::future<int> result_;
  std::thread thread_;
  int rc_ = 0;
};

// Guest memory the way QEMU shares it: a memfd, mapped here too so tests can write into it.
struct SharedMemory {
  explicit SharedMemory(size_t bytes, unsigned memfd_flags = MFD_CLOEXEC) : size(bytes) {
    fd.reset(memfd_create("vhost-test-mem", memfd_flags));
    if (!fd || ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) return;
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (m != MAP_FAILED) p = static_cast<uint8_t*>(m);
  }
  ~SharedMemory() {
    if (p) munmap(p, size);
  }
  uint64_t uva(uint64_t off = 0) const { return reinterpret_cast<uint64_t>(p) + off; }
  MemRegion region(uint64_t gpa) const { return {gpa, size, uva(), 0}; }

  UniqueFd fd;
  uint8_t* p = nullptr;
  size_t size;
};

// Where a test puts ring `index`: three pages per ring from 64 KiB into the memory.
inline vhost_vring_addr ring_addr(const SharedMemory& m, unsigned index) {
  const uint64_t base = 0x10000 + index * 0x4000;
  return vhost_vring_addr{index, 0, m.uva(base), m.uva(base + 0x2000), m.uva(base + 0x1000), 0};
}

inline size_t open_fd_count() {
  size_t n = 0;
  for (int fd = 0; fd < 4096; ++fd)
    if (fcntl(fd, F_GETFD) >= 0) ++n;
  return n;
}

}  // namespace vcp::vhost::test
