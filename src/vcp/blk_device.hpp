// A virtio-blk device served by a VCP: the device model that vhost-user drives.
//
// It turns a BlockBackend's capabilities into virtio-blk features and config space, and owns
// one QueueWorker (thread) per queue. Everything here runs on the control thread except what
// the workers do.
#pragma once

#include <linux/virtio_blk.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "backends/block_backend.hpp"
#include "vcp/queue_worker.hpp"
#include "vhost/device.hpp"

namespace vcp {

struct BlkDeviceOptions {
  uint16_t num_queues = 1;
  uint16_t max_queue_size = 1024;
  uint32_t seg_max = 128;              // data segments per request
  // Bytes per segment. Observed with QEMU 7.2's SeaBIOS: with size_max 1 MiB and seg_max 128 it
  // sends zero-length reads forever (its per-request block count seems to be a 16-bit
  // size_max * seg_max / 512, here 0); 64 KiB * 128 is a 8 MiB request, plenty.
  uint32_t size_max = 64u << 10;
  PollMode poll_mode = PollMode::adaptive;
  uint32_t spin_us = 50;
  Coalescing coalescing{5000, 0, 8};   // interrupt coalescing (QueueWorker): by depth, at most 5 ms
  uint32_t kick_wait_us = 5000;        // kick moderation (WorkerOptions); 0: off
  std::vector<int> cpus;               // queue i runs on cpus[i % size]; empty: unpinned
  std::string name = "vcp";
};

class BlkDevice final : public vhost::Device {
 public:
  // Starts the queue threads; on failure (a backend channel would not open) returns null and
  // says why in *error.
  static std::unique_ptr<BlkDevice> create(std::unique_ptr<BlockBackend> backend, const BlkDeviceOptions& opts,
                                           std::string* error);
  ~BlkDevice() override;

  uint64_t features() const override { return features_; }
  void set_features(uint64_t acked) override { acked_ = acked; }
  uint16_t num_queues() const override { return opts_.num_queues; }
  uint16_t max_queue_size() const override { return opts_.max_queue_size; }
  int read_config(uint32_t offset, std::span<uint8_t> out) override;
  int write_config(uint32_t offset, std::span<const uint8_t> data) override;
  int start_queue(const vhost::QueueStart& q) override;
  uint16_t stop_queue(unsigned index) override;
  void set_call_fd(unsigned index, int call_fd) override;
  void set_dirty_log(unsigned index, const vhost::DirtyLogState& s) override;
  void pause() override;
  void resume() override;
  void reset() override;
  void frontend_gone() override;

  // Reads the backend's size again (BlockBackend::grow: a file or LUN grown since) and, when it
  // grew, serves the new one: the queues take requests up to the new end from their next
  // request on, and the config space says the new capacity. True when it grew; the caller then
  // tells the front-end (VhostUserBackend::config_changed()), whose driver reads the config
  // again. A backend that shrank keeps its old capacity (logged; reads past the new end fail).
  bool grow();
  // The same in two halves, for a caller whose thread must stay free meanwhile (vcp serve's
  // control thread serves the front-end, whose requests must not wait for a probe of a network
  // target that can take seconds): start_grow() reads the size on a thread of its own;
  // grow_fd() becomes readable when it has; finish_grow() then serves a larger size as grow()
  // does and says whether it grew. Asked again while one runs, another runs after it (a size
  // changed during the read is not missed); finish_grow() starts it. The control thread calls
  // all three, and neither grow() nor info().capacity_bytes meanwhile.
  void start_grow();
  int grow_fd() const { return grow_done_.get(); }
  bool finish_grow();
  bool growing() const { return sizing_; }
  // The backend's "my size may have changed" eventfd (BlockBackend::resize_fd), or -1.
  int resize_fd() const { return backend_->resize_fd(); }
  uint64_t capacity_bytes() const { return capacity_bytes_.load(std::memory_order_relaxed); }

  const BackendInfo& info() const { return backend_->info(); }
  const QueueWorker& worker(unsigned i) const { return *workers_[i]; }
  QueueWorker& worker(unsigned i) { return *workers_[i]; }

 private:
  BlkDevice(std::unique_ptr<BlockBackend> backend, const BlkDeviceOptions& opts);
  bool take_size(uint64_t now, bool shrunk);  // grow()'s second half

  std::unique_ptr<BlockBackend> backend_;
  BlkDeviceOptions opts_;
  BlkDeviceShared shared_;
  std::atomic<uint64_t> capacity_bytes_{0};  // what the queues check requests against
  virtio_blk_config config_{};
  uint64_t features_ = 0;
  uint64_t acked_ = 0;
  std::vector<std::unique_ptr<QueueWorker>> workers_;
  // start_grow(): the thread reading the size, what it read (written before it signals
  // grow_done_, read after joining it), and whether another read was asked for meanwhile.
  std::thread sizer_;
  UniqueFd grow_done_;
  bool sizing_ = false;
  uint64_t sized_ = 0;
  bool sized_shrunk_ = false;
  bool grow_again_ = false;
};

}  // namespace vcp
