// Taking connections from a listening socket without spinning when the process is out of file
// descriptors (or memory).
//
// Then accept() fails and the connection stays at the head of the backlog, so the listening socket
// stays readable and a poll loop around it would spin. Acceptor keeps one spare descriptor: it
// closes it, takes the connection, closes that at once (the peer learns there and then and can
// retry later) and takes the spare back. The first such refusal, and then one every 10 s, is
// logged with a count.
#pragma once

#include <cstdint>
#include <string>

#include "base/unique_fd.hpp"

namespace vcp {

class Acceptor {
 public:
  // `what` names the listener in the log ("vcp target", "vcp serve").
  Acceptor(int listen_fd, std::string what);

  // A new connection (SOCK_CLOEXEC); or, when none could be taken, an invalid fd with errno set:
  // EAGAIN/EINTR/ECONNABORTED as accept4 says them, EMFILE/ENFILE/ENOBUFS/ENOMEM after shedding
  // the connection (or, without a spare, after waiting up to 100 ms so the caller does not spin).
  UniqueFd accept();

  uint64_t shed() const { return shed_; }

 private:
  void shed_one(int err);

  int listen_fd_;
  std::string what_;
  UniqueFd spare_;
  uint64_t shed_ = 0;
  uint64_t logged_ms_ = 0;
  bool logged_ = false;
};

}  // namespace vcp
