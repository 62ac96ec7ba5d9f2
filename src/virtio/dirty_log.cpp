#include "virtio/dirty_log.hpp"

namespace vcp::virtio {

void DirtyLog::mark(uint64_t gpa, uint64_t len) const {
  if (len == 0) return;
  uint64_t last = 0;
  if (__builtin_add_overflow(gpa, len - 1, &last)) last = UINT64_MAX;
  const uint64_t first_page = gpa / kPageSize, last_page = last / kPageSize;
  for (uint64_t page = first_page;; ++page) {
    const uint64_t byte = page / 8;
    if (byte >= bytes_) {
      missed_.fetch_add(last_page - page + 1, std::memory_order_relaxed);
      return;
    }
    // Release: the write being logged is visible before the mark that tells the front-end to
    // copy the page again. Always the locked OR, even when the bit looks set already: the
    // front-end may be clearing it at that moment to copy the page, perhaps without our write.
    __atomic_fetch_or(&bits_[byte], static_cast<uint8_t>(1u << (page % 8)), __ATOMIC_RELEASE);
    if (page == last_page) return;
  }
}

void DirtyLog::mark_host(const GuestMemory& mem, const void* p, uint64_t len) const {
  const auto* h = static_cast<const uint8_t*>(p);
  while (len > 0) {
    uint64_t gpa = 0, n = 0;
    if (!mem.host_to_guest(h, len, &gpa, &n)) {
      missed_.fetch_add((len + kPageSize - 1) / kPageSize, std::memory_order_relaxed);
      return;
    }
    mark(gpa, n);
    h += n;
    len -= n;
  }
}

}  // namespace vcp::virtio
