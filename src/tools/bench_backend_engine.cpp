// `vcp bench --backend SPEC`: the load generator on a BlockBackend in this process.
//
// Each job thread opens its own BackendQueue (on that thread, as the backend interface asks,
// when the job first asks for its buffers) and drives it the way a VCP queue worker does:
// submit() a batch, commit() it once, then poll() for completions, sleeping on wait_fd() when
// the poll mode allows. Completions, inline or from poll(), go into a fixed ring that reap()
// hands to the job: no allocation on the data path.
#include "tools/bench_backend_engine.hpp"

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "backends/block_backend.hpp"
#include "base/clock.hpp"
#include "base/cpu.hpp"

namespace vcp::tools::bench {
namespace {

constexpr uint32_t kMaxTags = 1024;  // vcp bench allows --qd up to 1024

class BackendEngineQueue final : public EngineQueue {
 public:
  BackendEngineQueue(BlockBackend& backend, unsigned index, client::PollMode mode, uint32_t spin_us)
      : backend_(backend), index_(index), mode_(mode), spin_ns_(uint64_t{spin_us} * 1000),
        slots_(std::make_unique<Slot[]>(kMaxTags)), done_(std::make_unique<Done[]>(kMaxTags)) {
    for (uint32_t i = 0; i < kMaxTags; ++i) {
      slots_[i].owner = this;
      slots_[i].tag = i;
      slots_[i].req.iov = &slots_[i].iov;
      slots_[i].req.iovcnt = 1;
      slots_[i].req.ctx = &slots_[i];
      slots_[i].req.done = &BackendEngineQueue::on_done;
    }
  }

  ~BackendEngineQueue() override {
    if (q_) {
      // The load generator reaps everything it submitted; this only guards against a job that
      // gave up: nothing may complete into freed slots.
      const uint64_t until = now_ns() + 5'000'000'000ull;
      while (outstanding_ > 0 && now_ns() < until) {
        q_->commit();
        if (q_->poll() == 0) wait_for_backend(10);
      }
      q_.reset();
    }
    if (mem_) munmap(mem_, mem_len_);
  }

  uint8_t* buffers(size_t len) override {
    auto q = backend_.open_queue(index_);
    if (!q) {
      std::fprintf(stderr, "vcp bench: cannot open backend queue %u: %s\n", index_, errno_str(-q.error()).c_str());
      return nullptr;
    }
    q_ = std::move(*q);
    // Page-aligned (O_DIRECT files) and touched now, so page faults stay out of the measurement.
    mem_len_ = (len + 4095) & ~size_t{4095};
    void* m = mmap(nullptr, mem_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    mem_ = m;
    return static_cast<uint8_t*>(mem_);
  }

  int submit(bool write, uint64_t offset, uint8_t* buf, uint32_t len, uint32_t tag) override {
    if (tag >= kMaxTags || !q_) return -EINVAL;
    Slot& s = slots_[tag];
    s.iov = {buf, len};
    s.req.op = write ? BlockOp::write : BlockOp::read;
    s.req.offset = offset;
    s.req.length = len;
    ++outstanding_;
    q_->submit(&s.req);  // may complete inline
    return 0;
  }

  int reap(Done* out, unsigned max, unsigned min) override {
    if (!q_) return -EINVAL;
    q_->commit();
    unsigned got = take(out, max);
    uint64_t idle_since = 0;
    while (got < min && (outstanding_ > 0 || done_count_ > 0)) {
      if (q_->poll() > 0 || done_count_ > 0) {
        got += take(out + got, max - got);
        idle_since = 0;
        continue;
      }
      if (mode_ == client::PollMode::always || q_->wait_fd() < 0) {
        cpu_relax();
        continue;
      }
      if (mode_ == client::PollMode::adaptive) {
        const uint64_t t = now_ns();
        if (idle_since == 0) idle_since = t;
        if (t - idle_since < spin_ns_) {
          cpu_relax();
          continue;
        }
      }
      wait_for_backend(100);
      idle_since = 0;
    }
    return static_cast<int>(got);
  }

 private:
  struct Slot {
    BlockRequest req;
    iovec iov{};
    BackendEngineQueue* owner = nullptr;
    uint32_t tag = 0;
  };

  static void on_done(BlockRequest* req, int status) {
    auto* s = static_cast<Slot*>(req->ctx);
    BackendEngineQueue& q = *s->owner;
    // At most kMaxTags requests are outstanding, so the ring never overflows.
    q.done_[(q.done_head_ + q.done_count_) % kMaxTags] = {s->tag, status};
    ++q.done_count_;
    --q.outstanding_;
  }

  unsigned take(Done* out, unsigned max) {
    unsigned n = 0;
    while (n < max && done_count_ > 0) {
      out[n++] = done_[done_head_];
      done_head_ = (done_head_ + 1) % kMaxTags;
      --done_count_;
    }
    return n;
  }

  // Sleeps until the backend's wait_fd is readable (or timeout_ms), then clears it.
  void wait_for_backend(int timeout_ms) {
    const int fd = q_->wait_fd();
    if (fd < 0) {
      cpu_relax();
      return;
    }
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, timeout_ms) > 0) q_->clear_wait_fd();
  }

  BlockBackend& backend_;
  const unsigned index_;
  const client::PollMode mode_;
  const uint64_t spin_ns_;
  std::unique_ptr<BackendQueue> q_;
  std::unique_ptr<Slot[]> slots_;
  std::unique_ptr<Done[]> done_;
  uint32_t done_head_ = 0, done_count_ = 0;
  uint32_t outstanding_ = 0;
  void* mem_ = nullptr;
  size_t mem_len_ = 0;
};

class BackendEngine final : public Engine {
 public:
  BackendEngine(std::unique_ptr<BlockBackend> b, client::PollMode mode, uint32_t spin_us, unsigned max_queues)
      : b_(std::move(b)), mode_(mode), spin_us_(spin_us), max_queues_(max_queues) {}
  uint64_t capacity() const override { return b_->info().capacity_bytes; }
  uint32_t block_size() const override { return b_->info().block_size; }
  unsigned max_queues() const override { return max_queues_; }
  std::unique_ptr<EngineQueue> open_queue(unsigned index) override {
    return std::make_unique<BackendEngineQueue>(*b_, index, mode_, spin_us_);
  }

 private:
  std::unique_ptr<BlockBackend> b_;
  client::PollMode mode_;
  uint32_t spin_us_;
  unsigned max_queues_;
};

}  // namespace

std::unique_ptr<Engine> make_backend_engine(const std::string& spec, client::PollMode poll, uint32_t spin_us,
                                            unsigned max_queues, std::string* error) {
  auto b = make_backend(spec, error);
  if (!b) return nullptr;
  return std::make_unique<BackendEngine>(std::move(b), poll, spin_us, max_queues);
}

}  // namespace vcp::tools::bench
