// Walking a byte range of a task's iovecs: the one loop behind every copy and compare.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>

namespace vcp::scsi {

// Calls fn(segment, done, n) for each piece of [offset, offset + len) that lies inside the
// iovecs, in order; `done` is how many bytes came before the piece. fn returns false to stop.
// Returns the bytes visited.
template <class Fn>
uint64_t walk_iov(const iovec* iov, uint32_t iovcnt, uint64_t offset, uint64_t len, Fn&& fn) {
  uint64_t done = 0;
  for (uint32_t i = 0; i < iovcnt && done < len; ++i) {
    uint64_t l = iov[i].iov_len;
    if (offset >= l) {
      offset -= l;
      continue;
    }
    uint64_t n = std::min(l - offset, len - done);
    if (!fn(static_cast<uint8_t*>(iov[i].iov_base) + offset, done, n)) return done;
    done += n;
    offset = 0;
  }
  return done;
}

}  // namespace vcp::scsi
