#include "vhost/message_io.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace vcp::vhost {
namespace {

using Clock = std::chrono::steady_clock;

// Waits for `events` on `sock` until `deadline`: 0 when ready, -ETIMEDOUT, or -errno.
int wait_for(int sock, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return -ETIMEDOUT;
    pollfd p{sock, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc > 0) return 0;  // readable, writable, or an error/hang-up the next call reports
    if (rc == 0) return -ETIMEDOUT;
    if (errno != EINTR) return -errno;
  }
}

void collect_fds(msghdr* mh, FdList* fds) {
  for (cmsghdr* c = CMSG_FIRSTHDR(mh); c != nullptr; c = CMSG_NXTHDR(mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds->add(fd);
    }
  }
}

}  // namespace

void FdList::add(int fd) {
  if (n_ < kMaxFds) {
    fds_[n_++].reset(fd);
  } else {
    ::close(fd);
    overflowed_ = true;
  }
}

void FdList::clear() {
  for (size_t i = 0; i < n_; ++i) fds_[i].reset();
  n_ = 0;
  overflowed_ = false;
}

int recv_exact(int sock, void* buf, size_t len, FdList* fds, bool wait_first, int timeout_ms) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  while (got < len) {
    iovec iov{p + got, len - got};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
      if (got == 0 && !wait_first) return -EAGAIN;
      if (int rc = wait_for(sock, POLLIN, deadline); rc < 0) return rc;
      continue;
    }
    collect_fds(&mh, fds);
    if (mh.msg_flags & MSG_CTRUNC) fds->mark_overflowed();
    if (n == 0) return got == 0 ? -ECONNRESET : -EBADMSG;
    got += static_cast<size_t>(n);
  }
  return static_cast<int>(len);
}

int send_iov(int sock, std::span<const iovec> iov, std::span<const int> fds, int timeout_ms) {
  if (fds.size() > kMaxFds || iov.size() > 4) return -EINVAL;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  size_t total = 0, sent = 0;
  for (const auto& v : iov) total += v.iov_len;
  while (sent < total) {
    // Skip what is already out.
    iovec cur[4];
    int niov = 0;
    size_t skip = sent;
    for (const auto& v : iov) {
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      cur[niov++] = {static_cast<uint8_t*>(v.iov_base) + skip, v.iov_len - skip};
      skip = 0;
    }
    msghdr mh{};
    mh.msg_iov = cur;
    mh.msg_iovlen = niov;
    if (sent == 0 && !fds.empty()) {
      mh.msg_control = control;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = ::sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
      if (int rc = wait_for(sock, POLLOUT, deadline); rc < 0) return rc;
      continue;
    }
    sent += static_cast<size_t>(n);
  }
  return 0;
}

int send_message(int sock, const MsgHeader& h, const void* payload, size_t payload_len, std::span<const int> fds,
                 int timeout_ms) {
  const iovec iov[2] = {{const_cast<MsgHeader*>(&h), sizeof(h)}, {const_cast<void*>(payload), payload_len}};
  return send_iov(sock, std::span<const iovec>(iov, payload_len ? 2 : 1), fds, timeout_ms);
}

}  // namespace vcp::vhost
