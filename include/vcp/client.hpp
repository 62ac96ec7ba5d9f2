// libvcp: an application's direct line to a VCP (or any vhost-user-blk back-end).
//
// The client is the front-end side of vhost-user and the driver side of virtio-blk, in the
// application's process. It shares one memory arena with the back-end (rings and I/O buffers),
// so a buffer taken from Client::alloc() travels by reference (zero copy); any other buffer is
// copied through a bounce area of the queue. One Queue per thread: a Queue is used by one thread
// at a time and needs no locks; completions come back on that thread.
//
// Errors are negative errno values, never exceptions. A back-end that goes away (-ECONNRESET) or
// writes something impossible into the used ring (-EPROTO) ends the connection: every request
// still outstanding completes with that error and every later submission returns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace vcp::client {

// How a queue waits for completions (the same choice the VCP makes for kicks).
enum class PollMode : uint8_t {
  always,    // spin on the used ring; the back-end never needs to interrupt us
  adaptive,  // spin spin_us after the last completion, then sleep on the call eventfd
  never,     // sleep on the call eventfd whenever nothing is there
};

struct ClientOptions {
  uint16_t num_queues = 1;            // 0: as many as the device offers (at most 64)
  uint16_t queue_size = 256;          // ring entries (power of two); also the requests in flight
  size_t buffer_bytes = 64u << 20;    // arena space for alloc()
  uint32_t bounce_bytes = 64u << 10;  // per request in flight: copied requests go in pieces this big
  PollMode poll = PollMode::adaptive;
  uint32_t spin_us = 50;
  int control_timeout_ms = 5000;      // each vhost-user control message
  int sync_timeout_ms = 30000;        // the *_sync helpers; on expiry the queue fails with -ETIMEDOUT
  bool use_inflight = true;           // ask for the vhost-user inflight region (recovery)
};

// What the device said about itself (virtio-blk config space and negotiated features).
struct DeviceInfo {
  uint64_t capacity_bytes = 0;
  uint32_t block_size = 512;
  uint32_t physical_block_size = 512;  // what to align writes to (the device's topology)
  uint32_t seg_max = 0;          // data segments per request the device accepts
  uint32_t size_max = 0;         // bytes per segment
  uint32_t max_transfer = 0;     // bytes per virtio request we send (larger ones are split)
  uint16_t num_queues = 1;       // the device's
  uint32_t max_discard_sectors = 0;
  uint32_t discard_sector_alignment = 0;
  uint32_t max_write_zeroes_sectors = 0;
  bool read_only = false;
  bool flush = false;
  bool discard = false;
  bool write_zeroes = false;
  bool write_zeroes_may_unmap = false;
  bool inflight = false;         // an inflight region is mapped
  uint64_t features = 0;         // acknowledged virtio feature bits
  uint64_t protocol_features = 0;
};

// One finished request. result: 0 or -errno (-EIO: the device's IOERR; -EOPNOTSUPP: UNSUPP).
struct Completion {
  void* user = nullptr;
  int result = 0;
};
// Called on the queue's thread, from poll()/wait() or a *_sync helper.
using Callback = void (*)(void* user, int result);

class Client;

class Queue {
 public:
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // Asynchronous requests. offset and length in bytes, whole logical blocks. Each returns 0 when
  // accepted (it completes exactly once later: through `cb` when given, else as a Completion
  // from poll()/wait()), or: -EAGAIN when capacity() requests are outstanding, -EINVAL for a
  // misaligned or out-of-range request, -EROFS on a read-only device, -EOPNOTSUPP for what the
  // device does not offer, the connection's error once it failed. A request of any size is
  // accepted: it is split to fit the device's limits and completes once.
  int read(uint64_t offset, void* buf, size_t len, void* user, Callback cb = nullptr);
  int write(uint64_t offset, const void* buf, size_t len, void* user, Callback cb = nullptr);
  int flush(void* user, Callback cb = nullptr);
  int discard(uint64_t offset, uint64_t len, void* user, Callback cb = nullptr);
  int write_zeroes(uint64_t offset, uint64_t len, bool may_unmap, void* user, Callback cb = nullptr);
  // The device's serial: up to 20 bytes into buf (NUL-padded, not terminated when 20 long).
  int get_id(char* buf, void* user, Callback cb = nullptr);

  // Makes the requests submitted so far visible to the device (one release store, and a kick
  // only when the device sleeps). poll() and wait() commit first, so callers that reap right
  // after submitting need not call it.
  int commit();
  // Reaps without blocking: runs the callbacks of finished requests and stores up to `max`
  // others in out[] (those that do not fit wait for the next call). Returns how many it stored
  // in out[], or the connection's error when nothing finished and the connection failed.
  int poll(Completion* out, unsigned max);
  // Like poll(), but waits (as the poll mode says) until at least `min` requests finished
  // (callbacks and out[] both count) or timeout_ms passed (-1: no limit). Returns how many it
  // stored in out[]; -ETIMEDOUT when none finished in time. Returns early when nothing is
  // outstanding.
  int wait(Completion* out, unsigned max, unsigned min, int timeout_ms = -1);

  // Synchronous helpers: submit, wait for this request (others' callbacks run meanwhile; their
  // Completions are kept for the next poll()), return its result.
  int read_sync(uint64_t offset, void* buf, size_t len);
  int write_sync(uint64_t offset, const void* buf, size_t len);
  int flush_sync();
  int discard_sync(uint64_t offset, uint64_t len);
  int write_zeroes_sync(uint64_t offset, uint64_t len, bool may_unmap = false);
  int get_id_sync(char* buf);

  unsigned index() const;
  unsigned capacity() const;     // requests that may be outstanding at once
  unsigned outstanding() const;  // submitted and not yet reaped
  int error() const;             // 0, or why the connection failed

  struct Impl;

 private:
  friend class Client;
  explicit Queue(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Client {
 public:
  // Connects to a back-end listening at `socket_path` and sets up every queue. 0 with *out set,
  // or -errno with *why (when given) saying what failed.
  static int connect(const std::string& socket_path, const ClientOptions& opts, std::unique_ptr<Client>* out,
                     std::string* why = nullptr);
  // The same over a connected stream socket (taken over, closed on failure).
  static int connect_fd(int fd, const ClientOptions& opts, std::unique_ptr<Client>* out, std::string* why = nullptr);
  // Outstanding requests must be reaped (or the connection failed) before destruction: the
  // socket is closed and the arena unmapped.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // What the device said at connect. Its capacity can grow later (see update_config()):
  // capacity_bytes() is the one requests are checked against now.
  const DeviceInfo& info() const;
  uint64_t capacity_bytes() const;
  // A descriptor that becomes readable when the device says its configuration changed (its
  // capacity grew: `vcp serve` after SIGHUP, an iSCSI LUN grown on its target), or -1 when the
  // back-end cannot say so (it offers no vhost-user back-end channel). Poll it beside the
  // application's other descriptors; when it is readable, call update_config(), then ask for
  // config_fd() again: it is -1 from then on if the back-end closed its channel. Not to be
  // called while update_config() runs on another thread.
  int config_fd() const;
  // Takes the notices waiting on config_fd() and reads the device's config again: requests are
  // then checked against the capacity it says. 1 when the capacity changed, 0 when not, -errno
  // when the control channel failed (the connection then fails). Thread-safe; not for the I/O
  // path (a control round trip).
  int update_config();
  unsigned num_queues() const;
  Queue& queue(unsigned index);

  // Memory in the shared arena: buffers from here travel with zero copies. Thread-safe (not
  // for the I/O path: it takes a lock). nullptr when the arena has no room.
  void* alloc(size_t len, size_t align = 4096);
  void free(void* p);
  // Whether [p, p+len) lies in the arena's buffer space (a request on it is zero copy).
  bool is_zero_copy(const void* p, size_t len) const;

  // The connection's error: 0 while healthy, -ECONNRESET / -EPROTO / -ETIMEDOUT once failed.
  int error() const;
  // Closes the connection: outstanding requests complete with -ECONNRESET on their queues'
  // next poll.
  void disconnect();

  // The vhost-user inflight region (kept mapped for recovery); fd -1 and size 0 when absent.
  int inflight_fd() const;
  const void* inflight_region() const;
  size_t inflight_size() const;

  struct Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

const char* to_string(PollMode m);
bool parse_poll_mode(const std::string& s, PollMode* out);

}  // namespace vcp::client
