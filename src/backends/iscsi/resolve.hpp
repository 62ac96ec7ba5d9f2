// A portal's host name to the socket addresses it stands for. A name may stand for several
// (localhost: ::1 and 127.0.0.1; a DNS name with A and AAAA records): an initiator tries each
// in turn before it calls the portal unreachable, as every TCP client does.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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

}  // namespace vcp::backends::iscsi
