#include "target/acl.hpp"

#include "iscsi/names.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace vcp::target {

std::optional<AddressRange> parse_address_range(std::string_view text, std::string* error) {
  AddressRange r;
  r.text = std::string(text);
  std::string host(text);
  std::optional<unsigned> prefix;
  if (auto slash = host.find('/'); slash != std::string::npos) {
    const std::string bits = host.substr(slash + 1);
    host.resize(slash);
    if (bits.empty() || bits.size() > 3 || !std::all_of(bits.begin(), bits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      *error = "'" + r.text + "': the prefix length after / must be a number";
      return std::nullopt;
    }
    prefix = static_cast<unsigned>(std::stoul(bits));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned max_bits;
  if (inet_pton(AF_INET, host.c_str(), r.bytes.data()) == 1) {
    r.family = AF_INET;
    max_bits = 32;
  } else if (inet_pton(AF_INET6, host.c_str(), r.bytes.data()) == 1) {
    r.family = AF_INET6;
    max_bits = 128;
  } else {
    *error = "'" + r.text + "' is not an IPv4 or IPv6 address, nor one with a /prefix";
    return std::nullopt;
  }
  if (prefix && *prefix > max_bits) {
    *error = "'" + r.text + "': the prefix length is at most " + std::to_string(max_bits);
    return std::nullopt;
  }
  r.prefix = static_cast<uint8_t>(prefix.value_or(max_bits));
  return r;
}

IpAddress ip_address_of(const sockaddr* sa, socklen_t len) {
  IpAddress p;
  if (!sa) return p;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(sa);
    p.family = AF_INET;
    std::memcpy(p.bytes.data(), &a->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(sa);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      p.family = AF_INET;
      std::memcpy(p.bytes.data(), a->sin6_addr.s6_addr + 12, 4);
    } else {
      p.family = AF_INET6;
      std::memcpy(p.bytes.data(), a->sin6_addr.s6_addr, 16);
    }
  }
  return p;
}

bool is_loopback(const IpAddress& a) {
  if (a.family == AF_INET) return a.bytes[0] == 127;
  if (a.family != AF_INET6) return false;
  static constexpr std::array<uint8_t, 16> kV6Loopback{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return a.bytes == kV6Loopback;
}

std::string to_string(const IpAddress& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.family == 0 || !inet_ntop(a.family, a.bytes.data(), buf, sizeof(buf))) return "an unknown address";
  return buf;
}

bool contains(const AddressRange& r, const IpAddress& a) {
  if (a.family != r.family) return false;
  const unsigned whole = r.prefix / 8, rest = r.prefix % 8;
  if (std::memcmp(r.bytes.data(), a.bytes.data(), whole) != 0) return false;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (r.bytes[whole] & mask) == (a.bytes[whole] & mask);
}

bool InitiatorAcl::allows(std::string_view initiator_name, const IpAddress& peer) const {
  if (!names.empty()) {
    auto n = iscsi::normalize_iscsi_name(initiator_name);
    if (!n || std::find(names.begin(), names.end(), *n) == names.end()) return false;
  }
  if (!addresses.empty()) {
    if (std::none_of(addresses.begin(), addresses.end(), [&](const AddressRange& r) { return contains(r, peer); }))
      return false;
  }
  return true;
}

}  // namespace vcp::target
