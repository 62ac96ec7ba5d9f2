#include "client/arena.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace vcp::client {
namespace {

constexpr size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

}  // namespace

int Arena::init(size_t private_bytes, size_t buffer_bytes) {
  buffers_off_ = round_up(private_bytes, kPage);
  const size_t total = buffers_off_ + round_up(buffer_bytes, kPage);
  fd_.reset(memfd_create("libvcp-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd_) return -errno;
  if (ftruncate(fd_.get(), static_cast<off_t>(total)) != 0) return -errno;
  // Its size is final: sealed, as QEMU seals guest RAM, so that no one (the VCP maps it too)
  // can shrink it under a mapping (SIGBUS) or grow it.
  if (fcntl(fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return -errno;
  auto m = Mapping::map_shared(fd_.get(), 0, total);
  if (!m) return -m.error();
  map_ = std::move(*m);
  // The rings and request headers are touched on every request: fault them in now.
  if (buffers_off_) madvise(map_.data(), buffers_off_, MADV_WILLNEED);
  free_.clear();
  used_.clear();
  if (total > buffers_off_) free_[buffers_off_] = total - buffers_off_;
  return 0;
}

void* Arena::alloc(size_t len, size_t align) {
  if (len == 0 || align == 0 || (align & (align - 1))) return nullptr;
  len = round_up(len, kPage);
  align = align < kPage ? kPage : align;
  std::lock_guard lk(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const size_t off = it->first, n = it->second;
    // Aligned as an address, not as an offset (the mapping is only page-aligned).
    const auto base = reinterpret_cast<uintptr_t>(map_.data());
    const size_t start = round_up(base + off, align) - base;
    if (start - off > n || n - (start - off) < len) continue;
    free_.erase(it);
    if (start > off) free_[off] = start - off;
    if (off + n > start + len) free_[start + len] = off + n - (start + len);
    used_[start] = len;
    return map_.data() + start;
  }
  return nullptr;
}

void Arena::free(void* p) {
  if (!p) return;
  const size_t off = static_cast<size_t>(static_cast<uint8_t*>(p) - map_.data());
  std::lock_guard lk(mu_);
  auto u = used_.find(off);
  if (u == used_.end()) return;
  size_t start = off, len = u->second;
  used_.erase(u);
  // Merge with the free neighbours.
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + len) {
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      len += prev->second;
      free_.erase(prev);
    }
  }
  free_[start] = len;
}

}  // namespace vcp::client
