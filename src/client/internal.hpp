// What lies behind the public Client and Queue: the connection, the arena and one virtqueue
// driver per queue. Not installed; src/client only.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "base/mapping.hpp"
#include "base/unique_fd.hpp"
#include "client/arena.hpp"
#include "vcp/client.hpp"
#include "vhost/frontend.hpp"
#include "virtio/driver_queue.hpp"

namespace vcp::client {

// Where one queue's private part of the arena lies, and the limits it splits requests by.
struct QueueSetup {
  unsigned index = 0;
  uint16_t size = 0;
  uint16_t max_indirect = 0;  // descriptors per indirect table; 0: no INDIRECT_DESC
  bool event_idx = false;
  uint8_t* ring = nullptr;
  uint8_t* indirect = nullptr;
  uint8_t* meta = nullptr;    // kMetaBytes per chain: header, range, status
  uint8_t* bounce = nullptr;  // bounce_piece bytes per chain
  uint32_t segs_per_piece = 1;
  uint32_t size_max = 0;      // bytes per data descriptor
  uint32_t max_piece = 0;     // bytes per zero-copy read/write piece
  uint32_t bounce_piece = 0;  // bytes per copied piece (and per chain's bounce buffer)
};

inline constexpr size_t kMetaBytes = 64;
inline constexpr size_t kMetaRangeOff = 16;
inline constexpr size_t kMetaStatusOff = 32;
inline constexpr uint32_t kMaxBlockSize = 64u << 10;  // a device claiming larger blocks is refused
inline constexpr uint16_t kMaxQueues = 64;            // queues a client opens at most
inline constexpr uint32_t kMaxSegsPerPiece = 128;
// A device without SIZE_MAX (qemu-storage-daemon) would take 126 x 4 GiB; pieces this big keep
// one request from holding the ring for long.
inline constexpr uint32_t kMaxPieceBytes = 4u << 20;
inline constexpr uint32_t kDefaultSizeMax = 1u << 20;  // per descriptor, without SIZE_MAX
inline constexpr uint32_t kGetIdBytes = 20;  // VIRTIO_BLK_ID_BYTES

struct Client::Impl {
  ClientOptions opts;
  DeviceInfo info;
  std::optional<vhost::FrontendChannel> chan;
  std::mutex control_mu;  // the control channel after connect (update_config)
  UniqueFd config_chan;   // our end of the back-end channel (BACKEND_REQ), or none
  // The capacity requests are checked against: info.capacity_bytes at connect, then what
  // update_config() reads. Read (relaxed) by the queue threads at each submit.
  std::atomic<uint64_t> capacity{0};
  Arena arena;
  UniqueFd inflight_fd;
  Mapping inflight_map;
  std::vector<std::unique_ptr<Queue>> queues;
  // 0 while healthy; the first failure wins. Read (relaxed) by every queue thread on each poll.
  std::atomic<int> fatal{0};

  // Records the connection's failure and shuts the socket, so a live back-end stops its
  // queues; safe from any thread.
  void fail(int err);
  int update_config();
  int sock() const { return chan ? chan->fd() : -1; }
  // Queue's constructor is private to Client (and so to its Impl).
  static std::unique_ptr<Queue> make_queue(std::unique_ptr<Queue::Impl> q) {
    return std::unique_ptr<Queue>(new Queue(std::move(q)));
  }
};

// The per-queue driver: runs on the one thread that uses the Queue.
struct Queue::Impl {
  enum class SlotState : uint8_t { free, active, done };
  struct Slot {
    Callback cb = nullptr;
    void* user = nullptr;
    uint8_t* buf = nullptr;  // read/write/get_id data
    uint64_t offset = 0;
    uint64_t len = 0;
    uint64_t issued = 0;     // bytes handed to the device so far
    uint32_t type = 0;       // VIRTIO_BLK_T_*
    uint32_t pieces_out = 0;
    int result = 0;
    bool zero_copy = false;
    bool unmap = false;
    bool all_issued = false;
    SlotState state = SlotState::free;
    uint16_t next = 0;       // free list / backlog link
  };
  struct Chain {
    uint16_t slot = 0;
    uint16_t next_free = 0;
    uint64_t pos = 0;  // where in the request this piece starts
    uint32_t len = 0;
  };
  static constexpr uint16_t kNone = 0xffff;

  Impl(Client::Impl* c, const QueueSetup& s, UniqueFd kick, UniqueFd call, PollMode mode, uint32_t spin_us);

  int submit(uint32_t type, uint64_t offset, uint8_t* buf, uint64_t len, bool unmap, void* user, Callback cb);
  int commit();
  int poll(Completion* out, unsigned max);
  int poll_step(Completion* out, unsigned max, unsigned* delivered);
  int wait(Completion* out, unsigned max, unsigned min, int timeout_ms);
  int run_sync(int submit_rc, const bool* done, const int* result);

  // Internals.
  int check_failed();
  void fail(int err);
  void pump();
  int issue_piece(Slot& s, uint16_t slot_index);
  int reap();
  void finish(uint16_t slot_index);
  int deliver(Completion* out, unsigned max, unsigned* delivered);
  int sleep_until(int64_t deadline_ns, unsigned want);
  void check_socket();
  void suppress_interrupts();

  Client::Impl* client;
  QueueSetup setup;
  const DeviceInfo& info;
  virtio::DriverQueue dq;
  UniqueFd kick_fd, call_fd;
  PollMode mode;
  int64_t spin_ns;
  int error = 0;

  std::unique_ptr<Slot[]> slots;
  std::unique_ptr<Chain[]> chains;
  std::unique_ptr<virtio::DriverBuffer[]> bufs;  // one chain being built
  std::unique_ptr<uint16_t[]> done_ring;         // finished slots waiting for delivery
  uint16_t nslots = 0;
  uint16_t free_slot = kNone, free_chain = kNone;
  uint16_t chains_free = 0;
  uint16_t backlog_head = kNone, backlog_tail = kNone;
  uint32_t done_head = 0, done_count = 0;
  unsigned outstanding = 0;
  uint32_t idle_polls = 0;
  bool interrupts_on = false;
};

}  // namespace vcp::client
