#include "virtio/guest_memory.hpp"

#include <cerrno>

namespace vcp::virtio {
namespace {
bool ends_after(uint64_t start, uint64_t len, uint64_t* end) { return !__builtin_add_overflow(start, len, end); }
}  // namespace

int GuestMemory::add(const MemoryRegion& r) {
  uint64_t end = 0, uend = 0;
  if (r.size == 0 || r.host == nullptr || !ends_after(r.guest_addr, r.size, &end) ||
      !ends_after(r.user_addr, r.size, &uend))
    return -EINVAL;
  for (size_t i = 0; i < count_; ++i) {
    const auto& o = regions_[i];
    if (r.guest_addr < o.guest_addr + o.size && o.guest_addr < end) return -EINVAL;
  }
  if (count_ == kMaxRegions) return -ENOSPC;
  regions_[count_++] = r;
  return 0;
}

int GuestMemory::remove(uint64_t guest_addr, uint64_t size) {
  for (size_t i = 0; i < count_; ++i) {
    if (regions_[i].guest_addr == guest_addr && regions_[i].size == size) {
      regions_[i] = regions_[count_ - 1];
      --count_;
      return 0;
    }
  }
  return -ENOENT;
}

uint8_t* GuestMemory::translate_partial(uint64_t gpa, uint64_t len, uint64_t* contiguous) const {
  for (size_t i = 0; i < count_; ++i) {
    const auto& r = regions_[i];
    if (gpa >= r.guest_addr && gpa - r.guest_addr < r.size) {
      uint64_t off = gpa - r.guest_addr;
      uint64_t avail = r.size - off;
      *contiguous = len < avail ? len : avail;
      return r.host + off;
    }
  }
  *contiguous = 0;
  return nullptr;
}

uint8_t* GuestMemory::translate(uint64_t gpa, uint64_t len) const {
  uint64_t n = 0;
  uint8_t* p = translate_partial(gpa, len, &n);
  return (p && n == len) ? p : nullptr;
}

bool GuestMemory::host_to_guest(const uint8_t* p, uint64_t len, uint64_t* gpa, uint64_t* contiguous) const {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (size_t i = 0; i < count_; ++i) {
    const auto& r = regions_[i];
    const auto base = reinterpret_cast<uintptr_t>(r.host);
    if (a >= base && a - base < r.size) {
      const uint64_t off = a - base;
      const uint64_t avail = r.size - off;
      *gpa = r.guest_addr + off;
      *contiguous = len < avail ? len : avail;
      return true;
    }
  }
  return false;
}

uint8_t* GuestMemory::translate_user(uint64_t uva, uint64_t len) const {
  for (size_t i = 0; i < count_; ++i) {
    const auto& r = regions_[i];
    if (uva >= r.user_addr && uva - r.user_addr < r.size && len <= r.size - (uva - r.user_addr))
      return r.host + (uva - r.user_addr);
  }
  return nullptr;
}

}  // namespace vcp::virtio
