// The one interface between a VCP's runtime and the storage behind it (the SPDK lesson: one
// narrow function table per backend, per-thread channels, completion on the submitting thread).
//
// Threading: a BlockBackend is created once (start-up, may throw nothing, returns errors).
// Each queue thread opens its own BackendQueue and uses it alone: no locks on the data path.
// A BackendQueue completes every request it accepted exactly once, on its own thread, either
// inside submit() or later from poll(). No exceptions, no allocation on submit/poll.
#pragma once

#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>

#include "base/result.hpp"

namespace vcp {

enum class BlockOp : uint8_t { read, write, flush, discard, write_zeroes, get_id };
const char* to_string(BlockOp op);

struct BlockRequest;
// status: 0, or -errno. -EOPNOTSUPP means "this backend does not do that" (virtio UNSUPP);
// anything else is an I/O error.
using BlockCompletion = void (*)(BlockRequest* req, int status);

struct BlockRequest {
  BlockOp op = BlockOp::read;
  bool fua = false;    // write: durable before completion
  bool unmap = false;  // write_zeroes: the range may be deallocated
  uint64_t offset = 0; // bytes from the start of the device
  uint64_t length = 0; // bytes; for read/write/get_id the sum of the iovecs
  const iovec* iov = nullptr;  // read/write/get_id: buffers (in shared memory: zero copy)
  uint32_t iovcnt = 0;
  BlockCompletion done = nullptr;
  void* ctx = nullptr;  // the submitter's
};

// The longest serial a virtio-blk GET_ID answer carries (virtio 1.x, 5.2.6).
inline constexpr size_t kSerialMax = 20;

// What a backend can do; the VCP turns it into virtio-blk config and feature bits.
struct BackendInfo {
  uint64_t capacity_bytes = 0;
  uint32_t block_size = 512;          // logical block size, bytes (power of two >= 512)
  // The unit the storage writes in underneath (a 4 KiB file system block or disk sector under
  // 512-byte blocks: a smaller write costs it a read-modify-write), a power of two >= block_size,
  // passed on so that initiators and guests align to it; 0: block_size.
  uint32_t physical_block_size = 0;
  uint32_t optimal_io_bytes = 0;      // 0: no preference
  bool read_only = false;
  bool volatile_cache = false;        // flush means something
  bool discard = false;
  bool write_zeroes = false;
  uint32_t max_transfer_bytes = 0;    // largest read/write; 0: no limit
  uint32_t max_discard_bytes = 0;     // per range; 0: no limit
  uint32_t max_write_zeroes_bytes = 0;
  uint32_t discard_granularity = 0;   // bytes; 0: block_size
  std::string serial;                 // GET_ID (at most kSerialMax bytes are used); names this disk only
  std::string description;            // for logs and `vcp ctl`
  // What holds the data, to tell whether two backends are one disk: equal for two opened on
  // the same file or block device (whatever path led to it), never for two ram or null disks.
  std::string storage;
};

// Logical blocks per physical block as a power of two (READ CAPACITY(16)'s LOGICAL BLOCKS PER
// PHYSICAL BLOCK EXPONENT, virtio-blk's physical_block_exp): 0 when they are the same size.
inline uint8_t physical_block_exponent(const BackendInfo& info) {
  uint8_t e = 0;
  while (e < 15 && (uint64_t{info.block_size} << (e + 1)) <= info.physical_block_size) ++e;
  return e;
}

class BackendQueue {
 public:
  virtual ~BackendQueue() = default;
  // Starts a request; it completes through req->done (possibly before submit returns).
  virtual void submit(BlockRequest* req) = 0;
  // Called after a batch of submit()s: a chance to hand the whole batch to the kernel at once.
  virtual void commit() {}
  // Reaps finished work, calling done() for each; returns how many completed.
  virtual int poll() { return 0; }
  // A descriptor that becomes readable when poll() has something to reap (for sleeping), or -1
  // when this backend only completes inline.
  virtual int wait_fd() const { return -1; }
  // Resets wait_fd() after a sleep saw it readable. The default reads it once, as an eventfd;
  // a backend whose descriptor stays readable while completions wait and clears itself when
  // poll() reaps them (an io_uring's own fd, on which a read would only fail) does nothing.
  virtual void clear_wait_fd() {
    uint64_t v;
    (void)!::read(wait_fd(), &v, sizeof v);
  }
  // Requests accepted and not yet completed.
  virtual uint32_t in_flight() const { return 0; }
  // Where bytes [offset, offset + length) of the device can be read in place, with no request
  // and no copy: a pointer into the backend's own memory (a ram disk; a file's page cache
  // through a shared read-only mapping), or nullptr when the backend has no such view. A
  // caller sends from it straight away (a target's Data-In: the kernel copies the page cache
  // into the socket, once). The bytes are live: a later write shows through, and if a file
  // shrinks under the mapping, reading the lost part faults. So a view is only handed to the
  // kernel (send/sendmsg: EFAULT, an error the caller handles), never read in user space,
  // where that fault is SIGBUS.
  virtual const uint8_t* read_view(uint64_t offset, uint64_t length) const {
    (void)offset;
    (void)length;
    return nullptr;
  }
  // A descriptor holding the bytes of read_view() at the same offsets, or -1. A caller may
  // sendfile(2) a view's bytes from it instead: the kernel then hands the page cache pages
  // themselves to the socket rather than copying them (a file LUN's 256 KiB Data-In over
  // loopback: about 52 instead of 85 µs of the sender's CPU). The same rules hold: the bytes
  // are live until the kernel has sent them, and past the end of a file that shrank, sendfile
  // sends nothing (returns 0), which the caller treats as the error it is.
  virtual int read_view_fd() const { return -1; }
  // The front-end is gone (or the VCP stops): requests that have not reached the storage and
  // may not for long (an iSCSI session waiting for its target to come back) complete now with
  // -ECANCELED, so stopping the queue does not wait for them. Those the storage holds complete
  // as they do. Called on the queue's thread, maybe repeatedly; a backend that always answers
  // soon does nothing.
  virtual void abandon() {}
  // A line on the queue's own state for a status report (an iSCSI session: where it is
  // connected, since when it reconnects), or empty. Called on the queue's thread.
  virtual std::string status() const { return {}; }
};

class BlockBackend {
 public:
  virtual ~BlockBackend() = default;
  virtual const BackendInfo& info() const = 0;
  // Opens the channel for queue `index`; called on the thread that will use it.
  virtual Result<std::unique_ptr<BackendQueue>> open_queue(unsigned index) = 0;
  // Reads again the size of what the backend serves (a file or block device grown since it was
  // opened) and takes it if it is larger: info().capacity_bytes grows, nothing else changes.
  // Returns the capacity now. A backend whose size cannot change (ram, null, a file given
  // size=) keeps it; a device that shrank keeps the capacity it had (reads past its end then
  // fail), and *shrunk (if given) tells so. The queues never read the capacity; whoever reads
  // info() on other threads must be kept from doing so meanwhile.
  virtual uint64_t grow(bool* shrunk = nullptr) {
    if (shrunk) *shrunk = false;
    return info().capacity_bytes;
  }
  // A descriptor that becomes readable when the backend learned by itself that the size of
  // what it serves may have changed (an iSCSI target's CAPACITY DATA HAS CHANGED), or -1 when it
  // never learns that. It is an eventfd: whoever polls it reads it (resetting it) and then calls
  // grow(), on the thread that owns info().
  virtual int resize_fd() const { return -1; }
};

// Creates a backend from a spec such as "ram:size=256M" or "file:path=/x,direct=on".
// On failure, *error says what is wrong in words a user can act on.
std::unique_ptr<BlockBackend> make_backend(const std::string& spec, std::string* error);

}  // namespace vcp
