// The memory a client shares with its back-end: one memfd, mapped once here and once there.
//
// Layout: the queues' private parts first (rings, indirect tables, request headers and status
// bytes, bounce buffers), then the buffer space that alloc() hands out. The back-end sees the
// whole arena at `gpa_base` ("guest physical" addresses are ours to choose); SET_VRING_ADDR
// names our own virtual addresses, which the back-end translates through the region's
// user_addr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

#include "base/mapping.hpp"
#include "base/result.hpp"
#include "base/unique_fd.hpp"

namespace vcp::client {

class Arena {
 public:
  // Far from 0 so that a stray host pointer taken for a guest address points nowhere.
  static constexpr uint64_t kGpaBase = uint64_t{1} << 40;
  static constexpr size_t kPage = 4096;

  // `private_bytes` for the queues, `buffer_bytes` for alloc(); both rounded up to pages.
  int init(size_t private_bytes, size_t buffer_bytes);

  int fd() const { return fd_.get(); }
  uint8_t* base() const { return map_.data(); }
  size_t size() const { return map_.size(); }
  uint64_t gpa(const void* p) const { return kGpaBase + (static_cast<const uint8_t*>(p) - map_.data()); }

  // Whether [p, p+len) lies in the buffer space.
  bool in_buffers(const void* p, size_t len) const {
    const auto a = reinterpret_cast<uintptr_t>(p);
    const auto lo = reinterpret_cast<uintptr_t>(map_.data() + buffers_off_);
    const auto hi = reinterpret_cast<uintptr_t>(map_.data() + map_.size());
    return a >= lo && a <= hi && len <= hi - a;
  }

  // First-fit over pages; a lock, since any thread may allocate (not the I/O path).
  void* alloc(size_t len, size_t align);
  void free(void* p);

 private:
  UniqueFd fd_;
  Mapping map_;
  size_t buffers_off_ = 0;
  std::mutex mu_;
  std::map<size_t, size_t> free_;  // offset -> bytes, within the buffer space
  std::map<size_t, size_t> used_;  // offset -> bytes
};

}  // namespace vcp::client
