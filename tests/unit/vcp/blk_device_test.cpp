// The VCP runtime without the socket: a BlkDevice over real backends, its queue threads driven
// through a DriverQueue in shared memory with real kick and call eventfds.
#include "vcp/blk_device.hpp"

#include <endian.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/unique_fd.hpp"
#include "virtio/blk.hpp"
#include "virtio/driver_queue.hpp"

namespace vcp {
namespace {

using virtio::DriverBuffer;

constexpr uint64_t kBase = 0x1'0000'0000;
constexpr size_t kMem = 8 << 20;
constexpr size_t kBufOff = 1 << 20;

struct Completion {
  uint8_t status = 0xee;
  uint32_t len = 0;
};

class DeviceHarness {
 public:
  DeviceHarness(const std::string& spec, PollMode mode, uint16_t queues = 1, bool event_idx = true,
                uint16_t qsize = 64)
      : DeviceHarness(backend_of(spec), mode, {}, queues, event_idx, qsize) {}
  DeviceHarness(std::unique_ptr<BlockBackend> be, PollMode mode, Coalescing coalescing, uint16_t queues = 1,
                bool event_idx = true, uint16_t qsize = 64, uint32_t kick_wait_us = BlkDeviceOptions{}.kick_wait_us) {
    std::string err;
    BlkDeviceOptions o;
    o.kick_wait_us = kick_wait_us;
    o.num_queues = queues;
    o.poll_mode = mode;
    o.spin_us = 20;
    o.coalescing = coalescing;
    o.name = "test";
    dev = BlkDevice::create(std::move(be), o, &err);
    EXPECT_TRUE(dev) << err;
    host = static_cast<uint8_t*>(mmap(nullptr, kMem, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    mem.add({kBase, kMem, 0, host});
    for (uint16_t q = 0; q < queues; ++q) {
      Q& s = qs.emplace_back();
      s.kick.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
      s.call.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
      size_t ring_off = q * 64 * 1024;
      EXPECT_EQ(s.drv.init(host + ring_off, kBase + ring_off, qsize, event_idx, host + ring_off + 32768,
                           kBase + ring_off + 32768, 16),
                0);
      vhost::QueueStart st;
      st.index = q;
      st.layout = s.drv.layout();
      st.event_idx = event_idx;
      st.kick_fd = s.kick.get();
      st.call_fd = s.call.get();
      st.memory = &mem;
      EXPECT_EQ(dev->start_queue(st), 0);
    }
  }
  ~DeviceHarness() {
    dev.reset();
    munmap(host, kMem);
  }

  static std::unique_ptr<BlockBackend> backend_of(const std::string& spec) {
    std::string err;
    auto be = make_backend(spec, &err);
    EXPECT_TRUE(be) << err;
    return be;
  }

  // Takes what is in the used ring now, without waiting.
  int take_used(uint16_t q) {
    int got = 0;
    void* t;
    uint32_t len;
    while (qs[q].drv.get_used(&t, &len) == 0) {
      auto* c = static_cast<Completion*>(t);
      c->len = len;
      c->status = *status_ptr[c];
      ++got;
    }
    return got;
  }

  // Whether the device called (the call eventfd's counter, reset), waiting up to timeout_ms.
  bool called(uint16_t q, int timeout_ms) {
    pollfd p{qs[q].call.get(), POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return false;
    uint64_t v;
    return read(qs[q].call.get(), &v, 8) == 8;
  }

  uint8_t* buf(size_t off) { return host + kBufOff + off; }
  uint64_t gpa(size_t off) { return kBase + kBufOff + off; }

  // A request at buffer offset `off`: 16-byte header there, data after it, status byte last.
  void submit(uint16_t q, uint32_t type, uint64_t sector, size_t off, uint32_t data_len, Completion* c,
              bool indirect = false) {
    virtio_blk_outhdr h{htole32(type), 0, htole64(sector)};
    std::memcpy(buf(off), &h, sizeof(h));
    const bool dev_writes = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
    DriverBuffer b[3];
    uint16_t n = 0;
    b[n++] = {gpa(off), 16, false};
    if (data_len) b[n++] = {gpa(off + 4096), data_len, dev_writes};
    b[n++] = {gpa(off + 4096 + data_len), 1, true};
    *buf(off + 4096 + data_len) = 0xee;
    status_ptr[c] = buf(off + 4096 + data_len);
    ASSERT_GE(qs[q].drv.add(b, n, c, indirect), 0);
    if (qs[q].drv.publish()) {
      uint64_t one = 1;
      ASSERT_EQ(write(qs[q].kick.get(), &one, 8), 8);
    }
  }

  // Waits for `n` completions on queue q (on the call eventfd, as a guest would).
  void wait(uint16_t q, int n) {
    int got = 0;
    for (int spins = 0; got < n && spins < 5000; ++spins) {
      got += take_used(q);
      if (got >= n) break;
      if (!qs[q].drv.enable_interrupts(true)) {
        pollfd p{qs[q].call.get(), POLLIN, 0};
        poll(&p, 1, 1);
        uint64_t v;
        (void)!read(qs[q].call.get(), &v, 8);
      }
    }
    ASSERT_EQ(got, n) << "completions missing";
  }

  std::unique_ptr<BlkDevice> dev;
  uint8_t* host = nullptr;
  virtio::GuestMemory mem;
  struct Q {
    UniqueFd kick, call;
    virtio::DriverQueue drv;
  };
  std::vector<Q> qs;
  std::map<Completion*, uint8_t*> status_ptr;
};

class Modes : public ::testing::TestWithParam<PollMode> {};

TEST_P(Modes, WriteReadFlushGetId) {
  DeviceHarness h("ram:size=16M", GetParam());
  std::memset(h.buf(4096), 0x5a, 8192);
  Completion w, r, f, id;
  h.submit(0, VIRTIO_BLK_T_OUT, 64, 0, 8192, &w);
  h.wait(0, 1);
  EXPECT_EQ(w.status, VIRTIO_BLK_S_OK);
  h.submit(0, VIRTIO_BLK_T_IN, 64, 65536, 8192, &r, /*indirect=*/true);
  h.submit(0, VIRTIO_BLK_T_FLUSH, 0, 131072, 0, &f);
  h.submit(0, VIRTIO_BLK_T_GET_ID, 0, 196608, 20, &id);
  h.wait(0, 3);
  EXPECT_EQ(r.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(r.len, 8193u);  // data + status
  EXPECT_EQ(std::memcmp(h.buf(65536 + 4096), h.buf(4096), 8192), 0);
  EXPECT_EQ(f.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(id.status, VIRTIO_BLK_S_OK);
  EXPECT_GT(std::strlen(reinterpret_cast<char*>(h.buf(196608 + 4096))), 0u);
}

INSTANTIATE_TEST_SUITE_P(PollModes, Modes, ::testing::Values(PollMode::always, PollMode::adaptive, PollMode::never));

TEST(BlkDevice, OutOfRangeMisalignedAndUnknownAreAnswered) {
  DeviceHarness h("ram:size=1M", PollMode::never);
  Completion past, mis, unknown, big;
  h.submit(0, VIRTIO_BLK_T_IN, 2048, 0, 512, &past);  // 1 MiB = 2048 sectors: one past the end
  h.submit(0, VIRTIO_BLK_T_OUT, 0, 65536, 100, &mis);  // not whole blocks
  h.submit(0, 77, 0, 131072, 0, &unknown);
  h.submit(0, VIRTIO_BLK_T_IN, 2047, 196608, 1024, &big);  // runs past the end
  Completion zero;  // no data at all: legal, nothing to do (firmware probes with it)
  h.submit(0, VIRTIO_BLK_T_IN, 0, 262144, 0, &zero);
  h.wait(0, 5);
  EXPECT_EQ(zero.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(past.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(mis.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(unknown.status, VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(big.status, VIRTIO_BLK_S_IOERR);
}

TEST(BlkDevice, DiscardAndWriteZeroesReadBackZeros) {
  DeviceHarness h("ram:size=4M", PollMode::adaptive);
  std::memset(h.buf(4096), 0xff, 65536);
  Completion w;
  h.submit(0, VIRTIO_BLK_T_OUT, 0, 0, 65536, &w);
  h.wait(0, 1);
  ASSERT_EQ(w.status, VIRTIO_BLK_S_OK);
  // Discard sectors 0-63 and write zeroes over 64-127.
  virtio_blk_discard_write_zeroes d{htole64(0), htole32(64), 0};
  virtio_blk_discard_write_zeroes z{htole64(64), htole32(64), 0};
  Completion dc, zc, r;
  std::memcpy(h.buf(131072 + 4096), &d, 16);
  h.submit(0, VIRTIO_BLK_T_DISCARD, 0, 131072, 16, &dc);
  std::memcpy(h.buf(196608 + 4096), &z, 16);
  h.submit(0, VIRTIO_BLK_T_WRITE_ZEROES, 0, 196608, 16, &zc);
  h.wait(0, 2);
  EXPECT_EQ(dc.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(zc.status, VIRTIO_BLK_S_OK);
  h.submit(0, VIRTIO_BLK_T_IN, 0, 262144, 65536, &r);
  h.wait(0, 1);
  ASSERT_EQ(r.status, VIRTIO_BLK_S_OK);
  std::vector<uint8_t> zeros(65536, 0);
  EXPECT_EQ(std::memcmp(h.buf(262144 + 4096), zeros.data(), 65536), 0);
}

TEST(BlkDevice, HostileChainsAreRefusedAndTheQueueGoesOn) {
  DeviceHarness h("ram:size=1M", PollMode::never, 1, false);
  auto& q = h.qs[0];
  // A chain naming memory outside the table: answered with length 0, no status written.
  Completion bad;
  DriverBuffer b[2] = {{0x42, 16, false}, {h.gpa(100), 1, true}};
  ASSERT_GE(q.drv.add(b, 2, &bad), 0);
  q.drv.publish();
  uint64_t one = 1;
  ASSERT_EQ(write(q.kick.get(), &one, 8), 8);
  h.status_ptr[&bad] = h.buf(100);
  *h.buf(100) = 0xee;
  h.wait(0, 1);
  EXPECT_EQ(bad.len, 0u);
  EXPECT_EQ(bad.status, 0xee);
  // A read whose data is device-readable: malformed, answered IOERR through its status byte.
  Completion wrong;
  virtio_blk_outhdr hd{htole32(VIRTIO_BLK_T_IN), 0, 0};
  std::memcpy(h.buf(8192), &hd, 16);
  DriverBuffer w[3] = {{h.gpa(8192), 16, false}, {h.gpa(16384), 512, false}, {h.gpa(20000), 1, true}};
  ASSERT_GE(q.drv.add(w, 3, &wrong), 0);
  q.drv.publish();
  ASSERT_EQ(write(q.kick.get(), &one, 8), 8);
  h.status_ptr[&wrong] = h.buf(20000);
  h.wait(0, 1);
  EXPECT_EQ(wrong.status, VIRTIO_BLK_S_IOERR);
  // And a good request still works.
  Completion ok;
  h.submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &ok);
  h.wait(0, 1);
  EXPECT_EQ(ok.status, VIRTIO_BLK_S_OK);
}

TEST(BlkDevice, StopReportsLastAvailAndRestartResumes) {
  DeviceHarness h("ram:size=1M", PollMode::adaptive);
  Completion c[3];
  for (int i = 0; i < 3; ++i) h.submit(0, VIRTIO_BLK_T_IN, 0, i * 65536, 512, &c[i]);
  h.wait(0, 3);
  EXPECT_EQ(h.dev->stop_queue(0), 3);
  // While stopped, a new request waits; after a restart at 3 it is served.
  Completion later;
  h.submit(0, VIRTIO_BLK_T_IN, 0, 4 * 65536, 512, &later);
  vhost::QueueStart st;
  st.index = 0;
  st.layout = h.qs[0].drv.layout();
  st.event_idx = true;
  st.kick_fd = h.qs[0].kick.get();
  st.call_fd = h.qs[0].call.get();
  st.memory = &h.mem;
  st.last_avail_idx = 3;
  ASSERT_EQ(h.dev->start_queue(st), 0);
  h.wait(0, 1);
  EXPECT_EQ(later.status, VIRTIO_BLK_S_OK);
}

TEST(BlkDevice, TwoQueuesTwoThreads) {
  DeviceHarness h("ram:size=8M", PollMode::adaptive, 2);
  std::memset(h.buf(4096), 1, 4096);
  std::memset(h.buf(65536 + 4096), 2, 4096);
  Completion a, b;
  h.submit(0, VIRTIO_BLK_T_OUT, 0, 0, 4096, &a);
  h.submit(1, VIRTIO_BLK_T_OUT, 8, 65536, 4096, &b);
  h.wait(0, 1);
  h.wait(1, 1);
  EXPECT_EQ(a.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(b.status, VIRTIO_BLK_S_OK);
  Completion r;
  h.submit(1, VIRTIO_BLK_T_IN, 0, 131072, 8192, &r);
  h.wait(1, 1);
  EXPECT_EQ(*h.buf(131072 + 4096), 1);
  EXPECT_EQ(*h.buf(131072 + 4096 + 4096), 2);
}

TEST(BlkDevice, FeaturesAndConfigFollowTheBackend) {
  DeviceHarness h("ram:size=64M", PollMode::never, 2);
  EXPECT_TRUE(h.dev->features() & (1ull << VIRTIO_BLK_F_DISCARD));
  EXPECT_TRUE(h.dev->features() & (1ull << VIRTIO_BLK_F_MQ));
  virtio_blk_config c;
  ASSERT_EQ(h.dev->read_config(0, {reinterpret_cast<uint8_t*>(&c), sizeof(c)}), 0);
  EXPECT_EQ(le64toh(c.capacity), (64u << 20) / 512);
  EXPECT_EQ(le16toh(c.num_queues), 2);
  uint8_t past[8];
  EXPECT_EQ(h.dev->read_config(1000, {past, sizeof(past)}), -EINVAL);
}

// A file grown under a running queue: grow() serves the new end to the next request and the
// config space says the new capacity; a shrunk file keeps the capacity served.
TEST(BlkDevice, GrowServesALargerFileAndKeepsAShrunkOne) {
  char path[] = "/tmp/vcp-grow-XXXXXX";
  UniqueFd fd(mkstemp(path));
  ASSERT_TRUE(fd);
  ASSERT_EQ(ftruncate(fd.get(), 1 << 20), 0);
  DeviceHarness h(std::string("file:path=") + path, PollMode::never);
  unlink(path);
  Completion before;
  h.submit(0, VIRTIO_BLK_T_IN, 2048, 0, 512, &before);  // the first block past 1 MiB
  h.wait(0, 1);
  EXPECT_EQ(before.status, VIRTIO_BLK_S_IOERR);
  EXPECT_FALSE(h.dev->grow()) << "the same size";
  ASSERT_EQ(ftruncate(fd.get(), 3 << 20), 0);
  ASSERT_TRUE(h.dev->grow());
  EXPECT_EQ(h.dev->capacity_bytes(), 3u << 20);
  virtio_blk_config c;
  ASSERT_EQ(h.dev->read_config(0, {reinterpret_cast<uint8_t*>(&c), sizeof(c)}), 0);
  EXPECT_EQ(le64toh(c.capacity), (3u << 20) / 512);
  std::memset(h.buf(65536 + 4096), 0x3c, 512);
  Completion w, r, past;
  h.submit(0, VIRTIO_BLK_T_OUT, 6143, 65536, 512, &w);  // the new last block
  h.wait(0, 1);
  EXPECT_EQ(w.status, VIRTIO_BLK_S_OK);
  h.submit(0, VIRTIO_BLK_T_IN, 6143, 131072, 512, &r);
  h.submit(0, VIRTIO_BLK_T_IN, 6144, 196608, 512, &past);
  h.wait(0, 2);
  EXPECT_EQ(r.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(std::memcmp(h.buf(131072 + 4096), h.buf(65536 + 4096), 512), 0);
  EXPECT_EQ(past.status, VIRTIO_BLK_S_IOERR);
  ASSERT_EQ(ftruncate(fd.get(), 2 << 20), 0);
  EXPECT_FALSE(h.dev->grow()) << "shrunk: kept";
  EXPECT_EQ(h.dev->capacity_bytes(), 3u << 20);
}

// A ram backend whose size reads wait until the test lets each one end with a size it names.
class SlowSizeBackend final : public BlockBackend {
 public:
  SlowSizeBackend() {
    std::string err;
    inner_ = make_backend("ram:size=1M", &err);
    EXPECT_TRUE(inner_) << err;
    info_ = inner_->info();
  }
  const BackendInfo& info() const override { return info_; }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned i) override { return inner_->open_queue(i); }
  uint64_t grow(bool* shrunk) override {
    if (shrunk) *shrunk = false;
    std::unique_lock l(m_);
    ++reads_;
    cv_.wait(l, [&] { return released_ > taken_; });
    info_.capacity_bytes = sizes_[taken_++];
    return info_.capacity_bytes;
  }
  void release(uint64_t size) {
    std::lock_guard l(m_);
    sizes_.push_back(size);
    ++released_;
    cv_.notify_all();
  }
  int reads() {
    std::lock_guard l(m_);
    return reads_;
  }

 private:
  std::unique_ptr<BlockBackend> inner_;
  BackendInfo info_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<uint64_t> sizes_;
  size_t released_ = 0, taken_ = 0;
  int reads_ = 0;
};

uint64_t config_capacity(BlkDevice& d) {
  virtio_blk_config c{};
  EXPECT_EQ(d.read_config(0, {reinterpret_cast<uint8_t*>(&c), sizeof(c)}), 0);
  return le64toh(c.capacity) * 512;
}

TEST(BlkDevice, TheSizeIsReadOffTheCallersThread) {
  auto b = std::make_unique<SlowSizeBackend>();
  SlowSizeBackend* slow = b.get();
  DeviceHarness h(std::move(b), PollMode::never, {});
  pollfd p{h.dev->grow_fd(), POLLIN, 0};
  h.dev->start_grow();
  EXPECT_TRUE(h.dev->growing());
  // While the backend takes its time, the caller's thread is free and the device answers
  // with the size it has.
  EXPECT_EQ(poll(&p, 1, 50), 0);
  EXPECT_EQ(config_capacity(*h.dev), 1u << 20);
  EXPECT_FALSE(h.dev->finish_grow()) << "nothing read yet";
  h.dev->start_grow();  // asked again meanwhile: another read follows this one
  slow->release(2 << 20);
  ASSERT_EQ(poll(&p, 1, 5000), 1);
  EXPECT_TRUE(h.dev->finish_grow());
  EXPECT_EQ(h.dev->capacity_bytes(), 2u << 20);
  EXPECT_EQ(config_capacity(*h.dev), 2u << 20);
  EXPECT_TRUE(h.dev->growing()) << "the read asked for meanwhile";
  slow->release(3 << 20);
  ASSERT_EQ(poll(&p, 1, 5000), 1);
  EXPECT_TRUE(h.dev->finish_grow());
  EXPECT_EQ(h.dev->capacity_bytes(), 3u << 20);
  EXPECT_FALSE(h.dev->growing());
  EXPECT_EQ(slow->reads(), 2);
  // The same size again: not grown, and nothing more runs.
  h.dev->start_grow();
  slow->release(3 << 20);
  ASSERT_EQ(poll(&p, 1, 5000), 1);
  EXPECT_FALSE(h.dev->finish_grow());
  EXPECT_FALSE(h.dev->growing());
  EXPECT_EQ(poll(&p, 1, 0), 0);
}

// A backend that holds requests at sectors >= kHeldSector until the test opens its gate; the
// rest complete on the queue thread's next poll(). Only what a queue in flight needs to test
// when the device calls the driver.
constexpr uint64_t kHeldSector = 1024;

class GateBackend final : public BlockBackend {
 public:
  GateBackend() : efd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    info_.capacity_bytes = 16 << 20;
    info_.description = "gate";
  }
  const BackendInfo& info() const override { return info_; }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned) override {
    return std::unique_ptr<BackendQueue>(std::make_unique<Queue>(*this));
  }
  // From the test thread: lets the held requests complete and wakes the queue thread.
  void open_gate() {
    open_.store(true, std::memory_order_release);
    uint64_t one = 1;
    EXPECT_EQ(write(efd_.get(), &one, 8), 8);
  }

 private:
  class Queue final : public BackendQueue {
   public:
    explicit Queue(GateBackend& b) : b_(b) {}
    void submit(BlockRequest* req) override {
      pending_.push_back(req);
      if (req->offset < kHeldSector * 512) {
        uint64_t one = 1;
        EXPECT_EQ(write(b_.efd_.get(), &one, 8), 8);
      }
    }
    int poll() override {
      const bool open = b_.open_.load(std::memory_order_acquire);
      int n = 0;
      for (size_t i = 0; i < pending_.size();) {
        BlockRequest* r = pending_[i];
        if (r->offset >= kHeldSector * 512 && !open) {
          ++i;
          continue;
        }
        pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
        r->done(r, 0);
        ++n;
      }
      return n;
    }
    int wait_fd() const override { return b_.efd_.get(); }
    uint32_t in_flight() const override { return static_cast<uint32_t>(pending_.size()); }
    // The held requests (the backend cannot answer them soon) are given up.
    void abandon() override {
      for (size_t i = 0; i < pending_.size();) {
        BlockRequest* r = pending_[i];
        if (r->offset < kHeldSector * 512) {
          ++i;
          continue;
        }
        pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
        b_.abandoned.fetch_add(1);
        r->done(r, -ECANCELED);
      }
    }

   private:
    GateBackend& b_;
    std::vector<BlockRequest*> pending_;
  };

  BackendInfo info_;
  UniqueFd efd_;
  std::atomic<bool> open_{false};

 public:
  std::atomic<int> abandoned{0};
};

struct GateHarness {
  explicit GateHarness(Coalescing c, PollMode mode = PollMode::never,
                       uint32_t kick_wait_us = BlkDeviceOptions{}.kick_wait_us) {
    auto g = std::make_unique<GateBackend>();
    gate = g.get();
    h = std::make_unique<DeviceHarness>(std::move(g), mode, c, 1, true, 64, kick_wait_us);
    // As a guest driver that sleeps: tell me about the next completion.
    h->qs[0].drv.enable_interrupts(true);
  }
  ~GateHarness() {
    gate->open_gate();  // nothing may stay held when the device stops
  }
  GateBackend* gate = nullptr;
  std::unique_ptr<DeviceHarness> h;
};

// Polls the used ring (as a driver that polls would) until `n` completions are there.
int take_used_within(DeviceHarness& h, int n, int timeout_ms) {
  int got = 0;
  for (int i = 0; i < timeout_ms && got < n; ++i) {
    got += h.take_used(0);
    if (got < n) usleep(1000);
  }
  return got;
}

// The front-end gone (vhost-user connection closed, vcp serve stopping): stopping the queue
// gives up what the backend holds and cannot answer soon (an iSCSI session in an outage) and
// writes nothing of it to guest memory; without that it waits, as a live front-end's stop must.
TEST(BlkDeviceFrontendGone, StoppingGivesUpWhatTheBackendCannotAnswerSoon) {
  GateHarness g({});
  std::thread valve([&] {  // if the stop waited for the gate after all, the test still ends
    for (int i = 0; i < 100 && g.gate->abandoned.load() == 0; ++i) usleep(100000);
    g.gate->open_gate();
  });
  Completion held, fast;
  g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &fast);
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
  EXPECT_EQ(fast.status, VIRTIO_BLK_S_OK);
  g.h->dev->frontend_gone();
  g.h->dev->stop_queue(0);
  EXPECT_EQ(g.gate->abandoned.load(), 1) << "the stop waited for the held request instead";
  EXPECT_EQ(*g.h->status_ptr[&held], 0xee) << "a given-up request's status was written";
  EXPECT_EQ(g.h->take_used(0), 0) << "a given-up request was put in the used ring";
  valve.join();
}

TEST(BlkDeviceFrontendGone, AStopWithTheFrontEndThereWaitsForTheBackend) {
  GateHarness g({});
  Completion held;
  g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
  usleep(50000);  // taken by the queue thread
  std::thread opener([&] {
    usleep(300000);
    g.gate->open_gate();
  });
  const auto t0 = std::chrono::steady_clock::now();
  g.h->dev->stop_queue(0);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250));
  opener.join();
  EXPECT_EQ(g.gate->abandoned.load(), 0);
  EXPECT_EQ(g.h->take_used(0), 1);
  EXPECT_EQ(held.status, VIRTIO_BLK_S_OK);
}

TEST(BlkDeviceCoalescing, OffCallsForEachCompletionAtOnce) {
  GateHarness g({});
  Completion held, fast;
  g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &fast);
  EXPECT_TRUE(g.h->called(0, 5000)) << "no call for a completion while another request is in flight";
  EXPECT_EQ(g.h->take_used(0), 1);
  EXPECT_EQ(fast.status, VIRTIO_BLK_S_OK);
}

TEST(BlkDeviceCoalescing, CallWaitsWhileRequestsAreInFlightButTheUsedRingDoesNot) {
  // A window far longer than the test: only the last request ending may bring the call.
  GateHarness g({60'000'000, 0});
  Completion held, fast1, fast2;
  g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &fast1);
  g.h->submit(0, VIRTIO_BLK_T_OUT, 8, 2 * 65536, 512, &fast2);
  // Published at once: a polling driver sees both.
  EXPECT_EQ(take_used_within(*g.h, 2, 5000), 2);
  EXPECT_EQ(fast1.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(fast2.status, VIRTIO_BLK_S_OK);
  EXPECT_FALSE(g.h->called(0, 100)) << "called while a request was still in flight";
  g.gate->open_gate();
  EXPECT_TRUE(g.h->called(0, 5000)) << "no call once nothing was left in flight";
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
  EXPECT_EQ(held.status, VIRTIO_BLK_S_OK);
  g.h->dev->stop_queue(0);  // the worker's counters are settled once it stopped
  EXPECT_EQ(g.h->dev->worker(0).stats().notifications.load(), 1u) << "one call for three completions";
}

TEST(BlkDeviceCoalescing, TheWindowEndsTheWait) {
  GateHarness g({20'000, 0});  // 20 ms
  Completion held, fast;
  g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
  const auto t0 = std::chrono::steady_clock::now();
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &fast);
  ASSERT_TRUE(g.h->called(0, 5000)) << "the owed call never came while a request stayed in flight";
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(20)) << "called before the coalescing window ended";
  EXPECT_EQ(g.h->take_used(0), 1);
  EXPECT_EQ(held.status, 0xee) << "the held request completed";
}

TEST(BlkDeviceCoalescing, TheCountEndsTheWait) {
  for (PollMode mode : {PollMode::never, PollMode::always}) {
    SCOPED_TRACE(to_string(mode));
    GateHarness g({60'000'000, 3}, mode);
    Completion held, fast[3];
    g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
    g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &fast[0]);
    g.h->submit(0, VIRTIO_BLK_T_IN, 0, 2 * 65536, 512, &fast[1]);
    EXPECT_EQ(take_used_within(*g.h, 2, 5000), 2);
    EXPECT_FALSE(g.h->called(0, 100)) << "called after 2 completions with a count of 3";
    g.h->submit(0, VIRTIO_BLK_T_IN, 0, 3 * 65536, 512, &fast[2]);
    EXPECT_TRUE(g.h->called(0, 5000)) << "no call after the third completion";
    EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
    EXPECT_EQ(held.status, 0xee);
  }
}

TEST(BlkDeviceCoalescing, TheDepthScalesTheWait) {
  for (PollMode mode : {PollMode::never, PollMode::always}) {
    SCOPED_TRACE(to_string(mode));
    GateHarness g({60'000'000, 0, 4}, mode);
    // Shallow: one request held, one done. 1 of 2 outstanding is over a quarter: called at once.
    Completion held[6], fast[3];
    g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held[0]);
    g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &fast[0]);
    EXPECT_TRUE(g.h->called(0, 5000)) << "a shallow queue waited for its call";
    EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
    // Deeper: 6 held, then one done: 1 of 7 outstanding is under a quarter, so the call waits...
    for (uint64_t i = 1; i < 6; ++i) g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector + i, i * 4096, 512, &held[i]);
    g.h->submit(0, VIRTIO_BLK_T_IN, 0, 2 * 65536, 512, &fast[1]);
    EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
    EXPECT_FALSE(g.h->called(0, 100)) << "called for 1 completion of 7 outstanding with depth 4";
    // ...until 2 of 8 are: a quarter reached (2 * 4 >= 6 + 2).
    g.h->submit(0, VIRTIO_BLK_T_IN, 0, 3 * 65536, 512, &fast[2]);
    EXPECT_TRUE(g.h->called(0, 5000)) << "no call once the completions owed were a quarter of the depth";
    EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
    for (const Completion& c : held) EXPECT_EQ(c.status, 0xee);
  }
}

TEST(BlkDeviceCoalescing, AnOwedCallGoesToTheCallFdOfTheMomentItIsMade) {
  GateHarness g({60'000'000, 0});
  Completion held, fast;
  g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &fast);
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);  // the call for it is owed now
  // The frontend replaces the call fd (SET_VRING_CALL) while the call waits.
  UniqueFd fresh(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  g.h->dev->set_call_fd(0, fresh.get());
  UniqueFd old = std::move(g.h->qs[0].call);
  g.h->qs[0].call = std::move(fresh);
  g.gate->open_gate();
  EXPECT_TRUE(g.h->called(0, 5000)) << "the owed call was lost with the old call fd";
  uint64_t v;
  EXPECT_NE(read(old.get(), &v, 8), 8) << "called on the replaced fd";
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
  EXPECT_EQ(held.status, VIRTIO_BLK_S_OK);
  g.h->dev->stop_queue(0);  // before `old` closes: the worker may no longer hold either fd
}

}  // namespace
// ---- kick moderation (WorkerOptions::kick_wait_us) ----

// A held request in flight and one that completed at once: the backend is completing, so the
// queue thread sleeps without asking for a kick. Returns with `next` submitted after that.
void submit_behind_a_completion(GateHarness& g, Completion& held, Completion& fast, Completion& next) {
  g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &fast);
  ASSERT_EQ(take_used_within(*g.h, 1, 5000), 1);
  ASSERT_EQ(fast.status, VIRTIO_BLK_S_OK);
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 2 * 65536, 512, &next);  // kicks only if asked to
}

TEST(BlkDeviceKickModeration, WhileTheBackendCompletesNewRequestsWaitForTheNextCompletion) {
  GateHarness g({}, PollMode::never, 60'000'000);
  Completion held, fast, next;
  submit_behind_a_completion(g, held, fast, next);
  EXPECT_EQ(take_used_within(*g.h, 1, 100), 0) << "the driver was asked to kick (or the thread woke) anyway";
  g.gate->open_gate();  // the held request completes: its wake-up takes the new one too
  EXPECT_EQ(take_used_within(*g.h, 2, 5000), 2);
  EXPECT_EQ(held.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(next.status, VIRTIO_BLK_S_OK);
  g.h->dev->stop_queue(0);
  EXPECT_GE(g.h->dev->worker(0).stats().kick_free.load(), 1u);
}

TEST(BlkDeviceKickModeration, ABackendThatStopsCompletingBoundsTheWait) {
  GateHarness g({}, PollMode::never, 20'000);  // 20 ms
  Completion held, fast, next, later;
  submit_behind_a_completion(g, held, fast, next);
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1) << "a request waited for a completion that never came";
  EXPECT_EQ(next.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(held.status, 0xee);
  // The bound ran out with no completion: the thread asks for kicks again.
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 3 * 65536, 512, &later);
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
  EXPECT_EQ(later.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(held.status, 0xee);
}

TEST(BlkDeviceKickModeration, ABackendThatCompletesNothingGetsAKickForEachRequest) {
  // Only a held request in flight (a long flush, say): no completion lately, so new requests
  // kick and are served at once, however long the bound.
  GateHarness g({}, PollMode::never, 60'000'000);
  Completion held, next;
  g.h->submit(0, VIRTIO_BLK_T_IN, kHeldSector, 0, 512, &held);
  usleep(5000);  // well past "lately"
  g.h->submit(0, VIRTIO_BLK_T_IN, 0, 65536, 512, &next);
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
  EXPECT_EQ(next.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(held.status, 0xee);
}

TEST(BlkDeviceKickModeration, OffEveryRequestIsTakenAtOnce) {
  GateHarness g({}, PollMode::never, 0);
  Completion held, fast, next;
  submit_behind_a_completion(g, held, fast, next);
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
  EXPECT_EQ(next.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(held.status, 0xee);
  g.gate->open_gate();  // stopping drains what is in flight
  EXPECT_EQ(take_used_within(*g.h, 1, 5000), 1);
  g.h->dev->stop_queue(0);
  EXPECT_EQ(g.h->dev->worker(0).stats().kick_free.load(), 0u);
}

}  // namespace vcp
