// The dirty page log of live migration (vhost-user VHOST_F_LOG_ALL, VHOST_USER_SET_LOG_BASE).
//
// While a guest migrates, its memory is copied to the destination while it runs; pages written
// after they were copied are copied again. Pages the guest's CPUs write, the hypervisor sees;
// pages a vhost-user back-end writes (data of a read, status bytes, the used ring), it does not:
// the back-end marks them in this log, a bitmap in memory the front-end shares, one bit per
// 4 KiB page of guest physical memory (page = gpa / 4096, byte page / 8, bit page % 8), set with
// atomic operations because the front-end clears them concurrently as it copies.
//
// A page is marked after the write to it, never before: the front-end may clear the bit and copy
// the page at any moment, and a write that lands after that must leave the bit set again.
//
// Threading: mark*() from any number of queue threads at once; the object is replaced (never
// changed) by the control thread, which hands the new one to every queue before it unmaps the
// old bitmap.
#pragma once

#include <atomic>
#include <cstdint>

#include "virtio/guest_memory.hpp"

namespace vcp::virtio {

class DirtyLog {
 public:
  static constexpr uint64_t kPageSize = 0x1000;  // VHOST_LOG_PAGE

  // `bitmap` of `bytes` bytes covers guest physical addresses [0, bytes * 8 * 4096).
  DirtyLog(uint8_t* bitmap, uint64_t bytes) : bits_(bitmap), bytes_(bytes) {}
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  // Marks every page that [gpa, gpa + len) touches. Pages past the end of the bitmap cannot be
  // marked: they are counted (missed()) and the caller says so once.
  void mark(uint64_t gpa, uint64_t len) const;
  // Marks the pages of bytes written at `p`, a host address inside guest memory `mem` (a piece
  // of a descriptor chain as translated from it). Bytes in no region are counted as missed.
  void mark_host(const GuestMemory& mem, const void* p, uint64_t len) const;

  // Bytes of the guest's address space the bitmap covers.
  uint64_t covers() const { return bytes_ > UINT64_MAX / (8 * kPageSize) ? UINT64_MAX : bytes_ * 8 * kPageSize; }
  // Pages that could not be marked (outside the bitmap or outside guest memory).
  uint64_t missed() const { return missed_.load(std::memory_order_relaxed); }

 private:
  uint8_t* const bits_;
  const uint64_t bytes_;
  mutable std::atomic<uint64_t> missed_{0};
};

}  // namespace vcp::virtio
