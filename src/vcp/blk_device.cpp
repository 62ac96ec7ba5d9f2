#include "vcp/blk_device.hpp"

#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include <endian.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <system_error>

#include "base/log.hpp"

namespace vcp {

BlkDevice::BlkDevice(std::unique_ptr<BlockBackend> backend, const BlkDeviceOptions& opts)
    : backend_(std::move(backend)), opts_(opts) {}

std::unique_ptr<BlkDevice> BlkDevice::create(std::unique_ptr<BlockBackend> backend, const BlkDeviceOptions& opts,
                                             std::string* error) {
  if (opts.num_queues == 0 || opts.num_queues > 64) {
    *error = "queues must be 1..64";
    return nullptr;
  }
  if (opts.max_queue_size < 2 || opts.max_queue_size > 32768 || (opts.max_queue_size & (opts.max_queue_size - 1))) {
    *error = "queue size must be a power of two from 2 to 32768";
    return nullptr;
  }
  std::unique_ptr<BlkDevice> d(new BlkDevice(std::move(backend), opts));
  d->grow_done_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!d->grow_done_) {
    *error = "eventfd: " + errno_str(errno);
    return nullptr;
  }
  const BackendInfo& info = d->backend_->info();
  d->capacity_bytes_.store(info.capacity_bytes, std::memory_order_relaxed);
  d->shared_ = {d->backend_.get(), &info, &d->capacity_bytes_, opts.seg_max};

  uint64_t f = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
               (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_SIZE_MAX) |
               (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_TOPOLOGY) |
               (1ull << VIRTIO_BLK_F_MQ);
  if (info.read_only) f |= 1ull << VIRTIO_BLK_F_RO;
  if (info.discard && !info.read_only) f |= 1ull << VIRTIO_BLK_F_DISCARD;
  if (info.write_zeroes && !info.read_only) f |= 1ull << VIRTIO_BLK_F_WRITE_ZEROES;
  d->features_ = f;

  virtio::BlkConfigParams p;
  p.capacity_sectors = info.capacity_bytes >> 9;
  p.blk_size = info.block_size;
  p.physical_block_exp = physical_block_exponent(info);
  p.seg_max = opts.seg_max;
  p.size_max = opts.size_max;
  p.num_queues = opts.num_queues;
  p.opt_io_size_blocks = info.optimal_io_bytes / info.block_size;
  const uint32_t sectors_cap = 0xffffffffu;
  auto to_sectors = [&](uint32_t bytes) { return bytes ? bytes >> 9 : sectors_cap; };
  p.max_discard_sectors = to_sectors(info.max_discard_bytes);
  p.max_discard_seg = 1;
  p.discard_sector_alignment = (info.discard_granularity ? info.discard_granularity : info.block_size) >> 9;
  p.max_write_zeroes_sectors = to_sectors(info.max_write_zeroes_bytes);
  p.max_write_zeroes_seg = 1;
  p.write_zeroes_may_unmap = info.discard;
  d->config_ = virtio::make_blk_config(p);

  for (unsigned i = 0; i < opts.num_queues; ++i) {
    WorkerOptions w;
    w.poll_mode = opts.poll_mode;
    w.spin_us = opts.spin_us;
    w.coalescing = opts.coalescing;
    w.kick_wait_us = opts.kick_wait_us;
    w.cpu = opts.cpus.empty() ? -1 : opts.cpus[i % opts.cpus.size()];
    w.name = opts.name + "-q" + std::to_string(i);
    d->workers_.push_back(std::make_unique<QueueWorker>(i, d->shared_, w));
  }
  for (auto& w : d->workers_) {
    int rc = w->wait_ready();
    if (rc < 0) {
      *error = "cannot open the backend for a queue: " + errno_str(rc);
      return nullptr;
    }
  }
  return d;
}

BlkDevice::~BlkDevice() {
  // A size read still running ends within its own bounds (an iSCSI probe's: a few seconds).
  if (sizer_.joinable()) sizer_.join();
  workers_.clear();
}

bool BlkDevice::grow() {
  bool shrunk = false;
  const uint64_t now = backend_->grow(&shrunk);
  return take_size(now, shrunk);
}

void BlkDevice::start_grow() {
  if (sizing_) {
    grow_again_ = true;
    return;
  }
  sizing_ = true;
  auto read_size = [this] {
    bool shrunk = false;
    sized_ = backend_->grow(&shrunk);
    sized_shrunk_ = shrunk;
    const uint64_t one = 1;
    (void)!::write(grow_done_.get(), &one, sizeof one);
  };
  try {
    sizer_ = std::thread(read_size);
  } catch (const std::system_error& e) {
    // No thread to be had (a process at its limit): read here, and answer the same way.
    VCP_LOG_WARN("no thread for reading the size ({}): read on this one", e.what());
    read_size();
  }
}

bool BlkDevice::finish_grow() {
  uint64_t v;
  if (!sizing_ || ::read(grow_done_.get(), &v, sizeof v) != sizeof v) return false;
  if (sizer_.joinable()) sizer_.join();  // what it read is ours from here (join orders its writes before us)
  sizing_ = false;
  const bool grew = take_size(sized_, sized_shrunk_);
  if (grow_again_) {
    grow_again_ = false;
    start_grow();
  }
  return grew;
}

bool BlkDevice::take_size(uint64_t now, bool shrunk) {
  const uint64_t before = capacity_bytes();
  if (shrunk)
    VCP_LOG_WARN("{} is smaller than it was: still served at {} bytes (reads past its new end fail)",
                 backend_->info().description, before);
  // A size that is not whole blocks serves its whole blocks (as at start-up, capacity >> 9).
  const uint64_t blocks = now / backend_->info().block_size * backend_->info().block_size;
  if (blocks <= before) return false;
  capacity_bytes_.store(blocks, std::memory_order_relaxed);
  config_.capacity = htole64(blocks >> 9);
  VCP_LOG_INFO("{}: capacity grown from {} to {} bytes", backend_->info().description, before, blocks);
  return true;
}

int BlkDevice::read_config(uint32_t offset, std::span<uint8_t> out) {
  // Frontends ask for the config size their own headers know (QEMU: up to the fields of the
  // features it supports); fields past ours read as zero, as for a device without them.
  constexpr size_t kMaxConfig = 256;
  if (offset > kMaxConfig || out.size() > kMaxConfig - offset) return -EINVAL;
  std::memset(out.data(), 0, out.size());
  if (offset < sizeof(config_)) {
    size_t n = std::min(out.size(), sizeof(config_) - offset);
    std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(&config_) + offset, n);
  }
  return 0;
}

int BlkDevice::write_config(uint32_t offset, std::span<const uint8_t> data) {
  // Only the cache mode byte is writable in virtio-blk, and only with CONFIG_WCE, which we do
  // not offer: the cache mode is the backend's, not the driver's, to choose.
  (void)offset;
  (void)data;
  return -EINVAL;
}

int BlkDevice::start_queue(const vhost::QueueStart& q) {
  if (q.index >= workers_.size()) return -EINVAL;
  return workers_[q.index]->start(q);
}

uint16_t BlkDevice::stop_queue(unsigned index) {
  if (index >= workers_.size()) return 0;
  return workers_[index]->stop();
}

void BlkDevice::set_call_fd(unsigned index, int call_fd) {
  if (index < workers_.size()) workers_[index]->set_call_fd(call_fd);
}

void BlkDevice::set_dirty_log(unsigned index, const vhost::DirtyLogState& s) {
  if (index < workers_.size()) workers_[index]->set_dirty_log(s);
}

void BlkDevice::pause() {
  for (auto& w : workers_) w->pause();
}

void BlkDevice::resume() {
  for (auto& w : workers_) w->resume();
}

void BlkDevice::frontend_gone() {
  for (auto& w : workers_) w->abandon_on_stop();
}

void BlkDevice::reset() {
  for (auto& w : workers_) w->stop();
  acked_ = 0;
}

}  // namespace vcp
