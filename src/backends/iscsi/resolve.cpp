#include "backends/iscsi/resolve.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

#include "iscsi/sendtargets.hpp"

namespace vcp::backends::iscsi {

std::string address_text(const sockaddr* sa, socklen_t len) {
  char host[NI_MAXHOST] = {};
  char serv[NI_MAXSERV] = {};
  if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "(an address of family " + std::to_string(sa->sa_family) + ")";
  return vcp::iscsi::host_port(host, static_cast<uint16_t>(std::stoul(serv)));
}

bool resolve_portal(const std::string& host, uint16_t port, std::vector<SocketAddress>* out, std::string* error) {
  out->clear();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int g = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (g != 0 || !res) {
    *error = "cannot resolve '" + host + "': " + (g != 0 ? gai_strerror(g) : "no address");
    if (res) freeaddrinfo(res);
    return false;
  }
  for (const addrinfo* a = res; a && out->size() < kMaxAddresses; a = a->ai_next) {
    if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) || a->ai_addrlen > sizeof(sockaddr_storage)) continue;
    bool seen = false;
    for (const SocketAddress& s : *out)
      seen = seen || (s.len == a->ai_addrlen && std::memcmp(&s.addr, a->ai_addr, s.len) == 0);
    if (seen) continue;
    SocketAddress s;
    std::memcpy(&s.addr, a->ai_addr, a->ai_addrlen);
    s.len = a->ai_addrlen;
    s.text = address_text(a->ai_addr, a->ai_addrlen);
    out->push_back(std::move(s));
  }
  freeaddrinfo(res);
  if (out->empty()) {
    *error = "cannot resolve '" + host + "': no IPv4 or IPv6 address";
    return false;
  }
  return true;
}

bool resolve_with(const Resolver& resolver, const std::string& host, uint16_t port, std::vector<SocketAddress>* out,
                  std::string* error) {
  error->clear();
  if ((resolver ? resolver(host, port, out, error) : resolve_portal(host, port, out, error)) && !out->empty())
    return true;
  out->clear();
  if (error->empty()) *error = "cannot resolve '" + host + "'";
  return false;
}

bool numeric_host(const std::string& host) {
  in6_addr a;
  return inet_pton(AF_INET, host.c_str(), &a) == 1 || inet_pton(AF_INET6, host.c_str(), &a) == 1;
}

PortalLookup::PortalLookup(std::string host, uint16_t port, UniqueFd fd)
    : host_(std::move(host)), port_(port), fd_(std::move(fd)) {}

std::shared_ptr<PortalLookup> PortalLookup::start(Resolver resolver, std::string host, uint16_t port,
                                                  std::string* error) {
  UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) {
    *error = "cannot look up '" + host + "': eventfd: " + std::strerror(errno);
    return nullptr;
  }
  auto l = std::make_shared<PortalLookup>(std::move(host), port, std::move(fd));
  try {
    std::thread([l, resolver = std::move(resolver)] {
      l->ok_ = resolve_with(resolver, l->host_, l->port_, &l->addrs_, &l->error_);
      l->done_.store(true, std::memory_order_release);
      const uint64_t one = 1;
      (void)!::write(l->fd_.get(), &one, sizeof one);  // cannot fail: the count is far from its limit
    }).detach();
  } catch (const std::system_error& e) {
    *error = "cannot look up '" + l->host_ + "': no thread for it: " + e.what();
    return nullptr;
  }
  return l;
}

bool PortalLookup::result(std::vector<SocketAddress>* out, std::string* error) const {
  if (!done()) {
    out->clear();
    *error = "cannot resolve '" + host_ + "': still looking it up";
    return false;
  }
  *out = addrs_;
  *error = error_;
  return ok_;
}

}  // namespace vcp::backends::iscsi
