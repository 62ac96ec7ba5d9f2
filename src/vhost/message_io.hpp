// Moving vhost-user messages over a unix stream socket, for both sides of the protocol.
//
// A message's fds travel as SCM_RIGHTS with its first bytes; a reader collects them from every
// recvmsg() of the message. Sockets may be blocking or not: every call uses MSG_DONTWAIT and
// waits in poll() with a deadline, so a peer that stops half-way through a message cannot hold
// the caller forever.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "base/unique_fd.hpp"
#include "vhost/protocol.hpp"

namespace vcp::vhost {

// The fds that arrived with one message (at most kMaxFds). Those not take()n close with it.
class FdList {
 public:
  size_t size() const { return n_; }
  int get(size_t i) const { return i < n_ ? fds_[i].get() : -1; }
  UniqueFd take(size_t i) { return i < n_ ? UniqueFd(fds_[i].release()) : UniqueFd(); }
  void add(int fd);
  void clear();
  void mark_overflowed() { overflowed_ = true; }
  // More fds arrived than fit (MSG_CTRUNC or over kMaxFds); the extras were closed.
  bool overflowed() const { return overflowed_; }
  // The count to validate against: kMaxFds + 1 when some were lost, so it is never accepted.
  int count_for_validation() const { return overflowed_ ? static_cast<int>(kMaxFds + 1) : static_cast<int>(n_); }

 private:
  std::array<UniqueFd, kMaxFds> fds_;
  size_t n_ = 0;
  bool overflowed_ = false;
};

// Reads exactly `len` bytes, collecting fds into *fds. When `wait_first` is false and nothing is
// there yet, returns -EAGAIN without waiting. Otherwise returns `len`, or:
//  -ECONNRESET  orderly EOF before the first byte
//  -EBADMSG     EOF after part of the bytes (a truncated message)
//  -ETIMEDOUT   the rest did not arrive within timeout_ms
//  other        -errno from recvmsg/poll
int recv_exact(int sock, void* buf, size_t len, FdList* fds, bool wait_first, int timeout_ms);

// Sends the bytes of `iov` (at most 4 pieces) with `fds` attached to the first byte.
// Returns 0 or -errno (-ETIMEDOUT when the peer stops reading; -EPIPE when it is gone).
int send_iov(int sock, std::span<const iovec> iov, std::span<const int> fds, int timeout_ms);

// Sends one message (header, then `payload_len` bytes) with `fds` attached to its first byte.
// Returns 0 or -errno (-ETIMEDOUT when the peer stops reading; -EPIPE when it is gone).
int send_message(int sock, const MsgHeader& h, const void* payload, size_t payload_len, std::span<const int> fds,
                 int timeout_ms);

}  // namespace vcp::vhost
