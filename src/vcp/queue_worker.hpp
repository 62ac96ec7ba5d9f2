// One virtqueue served by one thread: the VCP's scheduling domain for that queue.
//
// The thread lives as long as the device. The control thread (vhost-user messages) drives it
// through a small command handshake: start, stop, pause/resume (memory table changes),
// set_call_fd, shutdown. Between commands the thread owns everything it touches: the ring, the
// backend channel, the request slots. No locks on the data path: the only shared word it reads
// per loop iteration is `command_pending_`.
#pragma once

#include <linux/virtio_blk.h>
#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/block_backend.hpp"
#include "base/unique_fd.hpp"
#include "vcp/poll_mode.hpp"
#include "vcp/queue_stats.hpp"
#include "vhost/device.hpp"
#include "virtio/blk.hpp"
#include "virtio/split_queue.hpp"

namespace vcp {

// Interrupt coalescing (as NVMe's aggregation time and threshold, ethtool's rx-usecs and
// rx-frames): a completion the driver asked to be told about may wait for its call while other
// requests of the queue are still in flight, so that one call reports several. The call goes
// out when `usecs` have passed since the first completion it owes, when `max_completions`
// requests have completed since the last call (0: no such limit), or at once when nothing is
// left in flight. usecs == 0: every call at once (the default). The used ring itself is
// published at once either way: a driver that polls sees completions without delay.
//
// `depth` scales the wait with the queue's depth: the call goes out once the completions it owes
// are at least 1/depth of the requests the driver has outstanding with the queue (those in
// flight and those completed since the last call). With depth 8 a driver keeping 32 requests
// queued is called every 4 completions, one keeping 8 or fewer at every completion: a shallow
// queue, whose driver waits for its few completions to send more, never waits for a call.
// 0: no such rule.
struct Coalescing {
  uint32_t usecs = 0;
  uint32_t max_completions = 0;
  uint32_t depth = 0;
};

// Kick moderation, the submission side's counterpart: while the backend is completing requests
// (some in flight, one completed in the last kRecentCompletionNs), the queue thread sleeps
// without asking the driver for a kick (EVENT_IDX's avail_event left behind, or NO_NOTIFY) and
// takes whatever the driver queued meanwhile when the next completion wakes it: the driver
// saves its kicks, the queue thread the wake-ups they cost. A backend that completes nothing
// for a while (a long flush) gets no such sleep, and one that stops completing bounds it: a
// kick-free sleep lasts at most kick_wait_us; if it ends with no completion, the thread asks
// for kicks until one comes. 0: always ask (every new request may kick).
struct WorkerOptions {
  PollMode poll_mode = PollMode::adaptive;
  uint32_t spin_us = 50;  // adaptive: how long to keep polling after the last piece of work
  Coalescing coalescing;
  uint32_t kick_wait_us = 5000;  // kick moderation (above); 0: off
  int cpu = -1;           // pin to this CPU; -1: leave placement to the kernel
  std::string name;       // thread and log name, e.g. "vcp0-q1"
};

// What every queue of a device shares (read-only while queues run).
struct BlkDeviceShared {
  BlockBackend* backend = nullptr;
  const BackendInfo* info = nullptr;  // everything but the capacity, which can grow:
  // the device's size in bytes, read once per request (it only grows, BlkDevice::grow()).
  const std::atomic<uint64_t>* capacity_bytes = nullptr;
  uint32_t max_segments = 0;  // data segments per request we accept (seg_max)
};

class QueueWorker {
 public:
  QueueWorker(unsigned index, const BlkDeviceShared& shared, WorkerOptions opts);
  ~QueueWorker();
  QueueWorker(const QueueWorker&) = delete;
  QueueWorker& operator=(const QueueWorker&) = delete;

  // Waits until the thread has opened its backend channel; -errno if that failed.
  int wait_ready();

  // Commands, from the control thread; each returns when the worker has carried it out.
  int start(const vhost::QueueStart& q);
  uint16_t stop();  // drains; returns last_avail_idx
  // The front-end is gone: the next stop() gives up what the backend cannot answer soon
  // (BackendQueue::abandon) and leaves those requests unanswered in guest memory (a front-end
  // that comes back with its inflight region resubmits them). Until the next start.
  void abandon_on_stop() { abandon_.store(true, std::memory_order_release); }
  void pause();     // drains; stays off guest memory until resume()
  void resume();
  void set_call_fd(int fd);
  void set_dirty_log(const vhost::DirtyLogState& s);
  // Has the worker log its backend queue's status line (BackendQueue::status), if it has one.
  void log_backend_status();

  const QueueStats& stats() const { return stats_; }
  bool running() const { return state_.load(std::memory_order_relaxed) == State::running; }
  // Logs the counters of the queue's current run ("NAME: WHAT: N requests, ..."); any thread.
  void log_stats(const char* what) const;

 private:
  enum class State : uint8_t { idle, running, paused };
  enum class Cmd : uint8_t { none, start, stop, pause, resume, set_call, set_log, status, shutdown };

  struct Slot {
    BlockRequest req;
    QueueWorker* worker = nullptr;
    uint8_t* status = nullptr;
    uint32_t written = 0;  // bytes the driver gets back on success, status byte included
    uint16_t head = 0;
    bool busy = false;
    std::unique_ptr<iovec[]> iov;
  };

  int post(Cmd c, const vhost::QueueStart* q = nullptr, int fd = -1, const vhost::DirtyLogState* d = nullptr);
  void thread_main();
  bool take_command();  // returns false on shutdown
  void run_command();
  int do_start();
  void drain();

  // Data path.
  int process_available();
  void handle_chain(virtio::DescriptorChain& chain);
  void finish(Slot& s, uint8_t status);
  void apply_dirty_log(const vhost::DirtyLogState& d);
  void mark_dirty(const void* p, uint64_t len) const {
    if (cur_.dirty.log) cur_.dirty.log->mark_host(*cur_.memory, p, len);
  }
  bool log_this_refusal() const;
  void refuse(Slot& s, const virtio::BlkRequestView& v, const char* why);
  static void on_backend_done(BlockRequest* req, int status);
  void publish();
  void call_driver();
  int64_t call_deadline_ns() const;  // -1: no call owed
  void sleep_until_work(int64_t timeout_ns);
  // Idle or paused, with a backend that has a descriptor: sleeps until the next command or
  // until the backend has something to do, and lets it do it (BackendQueue::poll). Nothing is
  // in flight then, so this touches no guest memory.
  void idle_with_backend();

  const unsigned index_;
  const BlkDeviceShared shared_;
  const WorkerOptions opts_;
  QueueStats stats_;

  // Command handshake.
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> command_pending_{false};
  std::atomic<bool> abandon_{false};  // abandon_on_stop()
  uint32_t abandoned_ = 0;            // requests given up in this stop
  Cmd cmd_ = Cmd::none;
  uint64_t cmd_seq_ = 0, done_seq_ = 0;
  int cmd_result_ = 0;
  vhost::QueueStart cmd_queue_{};
  int cmd_fd_ = -1;
  vhost::DirtyLogState cmd_dirty_{};
  int ready_ = 1;  // 1: not yet, 0: ready, <0: failed
  UniqueFd wake_fd_;  // eventfd that interrupts sleep when a command is posted

  // Owned by the thread.
  std::atomic<State> state_{State::idle};
  std::unique_ptr<BackendQueue> bq_;
  virtio::DeviceQueue dq_;
  vhost::QueueStart cur_{};  // cur_.dirty.log: live migration's log, marks what this queue writes
  int call_fd_ = -1;
  UniqueFd epoll_fd_;
  std::vector<Slot> slots_;
  std::unique_ptr<virtio::Segment[]> segs_;  // scratch for walking a chain
  uint32_t seg_capacity_ = 0;
  uint32_t in_flight_ = 0;
  bool pending_publish_ = false;
  // Coalescing: a call the driver is owed, since when, and completions since the last call.
  bool call_owed_ = false;
  uint64_t owed_since_ns_ = 0;
  uint32_t done_since_call_ = 0;
  // Kick moderation: a kick-free sleep ended without a completion; ask for kicks until one.
  bool kick_wait_expired_ = false;
  uint64_t last_completion_ns_ = 0;
  static constexpr uint64_t kRecentCompletionNs = 200'000;

  std::thread thread_;
};

}  // namespace vcp
