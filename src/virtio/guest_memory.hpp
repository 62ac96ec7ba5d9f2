// The memory table: which host addresses back the driver's (guest's) physical memory.
//
// Every address a peer names (descriptor addresses, ring addresses) goes through here before it
// is touched: this is the trust boundary for memory. A range is valid only when it lies wholly
// inside mapped regions; a range may run across adjacent regions, so translation returns the
// contiguous piece that starts at the address and the caller walks on.
//
// Threading: written by the control thread only while the queues that read it are paused.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace vcp::virtio {

struct MemoryRegion {
  uint64_t guest_addr = 0;  // guest physical address of the first byte
  uint64_t size = 0;
  uint64_t user_addr = 0;   // the frontend's virtual address of the same byte (vring addresses use it)
  uint8_t* host = nullptr;  // where it is mapped in this process
};

class GuestMemory {
 public:
  static constexpr size_t kMaxRegions = 64;

  // Adds a region; -EINVAL when empty, wrapping or overlapping an existing one (by guest address),
  // -ENOSPC when full.
  int add(const MemoryRegion& r);
  // Removes the region that starts at guest_addr with that size; -ENOENT if there is none.
  int remove(uint64_t guest_addr, uint64_t size);
  void clear() { count_ = 0; }
  size_t size() const { return count_; }
  const MemoryRegion& region(size_t i) const { return regions_[i]; }

  // Host pointer for guest physical address `gpa`, and in *contiguous how many bytes (at most
  // `len`) follow it inside the same region. nullptr when gpa is in no region.
  uint8_t* translate_partial(uint64_t gpa, uint64_t len, uint64_t* contiguous) const;
  // Host pointer for [gpa, gpa+len) only when the whole range is inside one region.
  uint8_t* translate(uint64_t gpa, uint64_t len) const;
  // The same for the frontend's virtual addresses (VHOST_USER_SET_VRING_ADDR).
  uint8_t* translate_user(uint64_t uva, uint64_t len) const;
  // The other way (dirty logging): the guest physical address of host address `p`, and in
  // *contiguous how many bytes (at most `len`) follow it in the same region. False when `p` is
  // in no region.
  bool host_to_guest(const uint8_t* p, uint64_t len, uint64_t* gpa, uint64_t* contiguous) const;

 private:
  std::array<MemoryRegion, kMaxRegions> regions_{};
  size_t count_ = 0;
};

}  // namespace vcp::virtio
