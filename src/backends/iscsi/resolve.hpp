// A portal's host name to the socket addresses it stands for. A name may stand for several
// (localhost: ::1 and 127.0.0.1; a DNS name with A and AAAA records): an initiator tries each
// in turn before it calls the portal unreachable, as every TCP client does.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"

namespace vcp::backends::iscsi {

struct SocketAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;  // "127.0.0.1:3260", "[::1]:3260"
};

// At most this many addresses of one name are tried (a name with dozens would otherwise hold
// a reconnect for dozens of timeouts).
inline constexpr size_t kMaxAddresses = 8;

// Every address HOST:PORT names, in the resolver's order (RFC 6724: the preferred first),
// duplicates dropped, at most kMaxAddresses. A numeric host is taken as it is, without a
// lookup. False with *error ("cannot resolve 'HOST': ...") when the name gives none.
bool resolve_portal(const std::string& host, uint16_t port, std::vector<SocketAddress>* out, std::string* error);

// The text form of an address ("127.0.0.1:3260", "[::1]:3260").
std::string address_text(const sockaddr* sa, socklen_t len);

// Who resolves names for an initiator (tests inject their own; empty: resolve_portal).
using Resolver = std::function<bool(const std::string& host, uint16_t port, std::vector<SocketAddress>* out,
                                    std::string* error)>;

// HOST:PORT through `resolver`, or resolve_portal when it is empty. True with at least one
// address; false with *error saying why (never empty) and *out empty.
bool resolve_with(const Resolver& resolver, const std::string& host, uint16_t port, std::vector<SocketAddress>* out,
                  std::string* error);

// Whether HOST is an IPv4 or IPv6 address as text (no lookup needed to connect to it).
bool numeric_host(const std::string& host);

// A lookup of HOST:PORT (resolve_with) on a thread of its own, so that a resolver that stalls
// (a DNS server that does not answer: glibc waits its timeout for each attempt and server)
// holds no event loop. fd() turns readable when it is done. The last reference may be dropped
// while the lookup still runs: its thread then finishes it alone and frees it.
class PortalLookup {
 public:
  // Starts it; nullptr with *error when no thread could be made.
  static std::shared_ptr<PortalLookup> start(Resolver resolver, std::string host, uint16_t port, std::string* error);

  const std::string& host() const { return host_; }
  uint16_t port() const { return port_; }
  // An eventfd, readable (a count of 1) once the lookup is done.
  int fd() const { return fd_.get(); }
  bool done() const { return done_.load(std::memory_order_acquire); }
  // Once done(): what resolve_with() answered (true with *out not empty, or false with *error).
  bool result(std::vector<SocketAddress>* out, std::string* error) const;

  PortalLookup(std::string host, uint16_t port, UniqueFd fd);

 private:
  std::string host_;
  uint16_t port_;
  UniqueFd fd_;
  // Written by the lookup's thread before done_ is set, read only after.
  bool ok_ = false;
  std::vector<SocketAddress> addrs_;
  std::string error_;
  std::atomic<bool> done_{false};
};

}  // namespace vcp::backends::iscsi
