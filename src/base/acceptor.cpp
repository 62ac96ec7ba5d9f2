#include "base/acceptor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/result.hpp"

namespace vcp {

namespace {

UniqueFd open_spare() { return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

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
  const uint64_t now = coarse_now_ms();
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
