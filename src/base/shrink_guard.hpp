// Survives a shared file mapping whose file shrinks under it.
//
// An access to a page of a MAP_SHARED mapping that lies past the end of its file raises SIGBUS,
// which kills the process. A VCP maps files it does not own: guest memory and inflight regions
// handed over by a vhost-user front-end. Where the file can be sealed against shrinking it is
// (vhost/backend.cpp); where it cannot (a memfd created without MFD_ALLOW_SEALING, a tmpfs or
// hugetlbfs file), a front-end that truncates it would crash the VCP. A ShrinkGuard watches such
// a mapping: a SIGBUS inside it replaces the granule that faulted (a page, or a huge page for
// hugetlbfs) with private zero-filled memory, counts the fault, writes 1 to an eventfd if one
// was given, and lets the access run again. Nothing the front-end can do then reaches the VCP's
// memory outside its own mappings; the owner of the eventfd drops the front-end (its memory is
// no longer shared, so nothing it is told can be trusted to arrive).
//
// A SIGBUS anywhere else goes to the handler that was there before (by default: the process
// dies with a core, as without a guard).
//
// Threading: watch() and the destructor may run on any thread; the fault is handled on the
// thread that faulted. A guard must be destroyed before its range is unmapped, and nothing may
// touch the range while that happens (the owner stops its queues first).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/result.hpp"

namespace vcp {

class ShrinkGuard {
 public:
  // How many ranges can be watched at once, over the whole process.
  static constexpr size_t kMaxRanges = 256;

  ShrinkGuard() = default;
  ~ShrinkGuard() { reset(); }
  ShrinkGuard(ShrinkGuard&& o) noexcept : slot_(std::exchange(o.slot_, -1)) {}
  ShrinkGuard& operator=(ShrinkGuard&& o) noexcept {
    if (this != &o) {
      reset();
      slot_ = std::exchange(o.slot_, -1);
    }
    return *this;
  }
  ShrinkGuard(const ShrinkGuard&) = delete;
  ShrinkGuard& operator=(const ShrinkGuard&) = delete;

  // Watches [addr, addr + len), a mapping made in granules of `granule` bytes (the page size, or
  // the huge page size of a hugetlbfs mapping): a power of two that addr and len are multiples
  // of. `notify_fd`: an eventfd written once per replaced granule, or -1. Installs the process's
  // SIGBUS handler on first use. EINVAL for a bad range, ENOSPC when kMaxRanges are watched.
  static Result<ShrinkGuard> watch(void* addr, size_t len, size_t granule, int notify_fd);

  // Granules replaced so far (0 for an empty guard).
  uint64_t faults() const;
  bool active() const { return slot_ >= 0; }
  // Stops watching (a SIGBUS in the range is then fatal again).
  void reset();

 private:
  explicit ShrinkGuard(int slot) : slot_(slot) {}
  int slot_ = -1;
};

}  // namespace vcp
