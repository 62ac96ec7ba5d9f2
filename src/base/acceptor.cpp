#include "base/acceptor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>

#include "base/log.hpp"
#include "base/result.hpp"

namespace vcp {

namespace {

UniqueFd open_spare() { return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

uint64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

}  // namespace

Acceptor::Acceptor(int listen_fd, std::string what)
    : listen_fd_(listen_fd), what_(std::move(what)), spare_(open_spare()) {}

UniqueFd Acceptor::accept() {
  UniqueFd fd(accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC));
  if (fd) return fd;
  const int err = errno;
  if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) shed_one(err);
  errno = err;
  return fd;
}

void Acceptor::shed_one(int err) {
  ++shed_;
  const bool had_spare = spare_.valid();
  if (had_spare) {
    spare_.reset();
    UniqueFd doomed(accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC));
  }
  // Logged while the spare's descriptor is free, for whatever the logging may need.
  const uint64_t now = now_ms();
  if (!logged_ || now - logged_ms_ >= 10000) {
    VCP_LOG_WARN("{}: cannot accept a connection: {} ({} refused so far; raise the open files limit)", what_,
                 errno_str(err), shed_);
    logged_ = true;
    logged_ms_ = now;
  }
  if (had_spare) spare_ = open_spare();
  if (spare_) return;
  // No spare to give up (someone else took the descriptor): do not spin on the readable socket.
  pollfd none{-1, 0, 0};
  (void)::poll(&none, 1, 100);
}

}  // namespace vcp
