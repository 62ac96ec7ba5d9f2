// Who may use the target: the initiator names and the peer addresses a session may come from
// (docs/target.md, "Access control"). Both lists empty: anyone who can reach the portal (and
// passes CHAP, if required). Either list set: an initiator must be on it (on both, if both are
// set) to log in to the target, and SendTargets shows the target only to those who may.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vcp::target {

// An IPv4 or IPv6 network: "192.168.1.0/24", "10.1.2.3" (one host), "fd00::/8", "::1".
struct AddressRange {
  int family = 0;  // AF_INET or AF_INET6
  std::array<uint8_t, 16> bytes{};
  uint8_t prefix = 0;  // leading bits that must match
  std::string text;    // as given, for messages

  bool operator==(const AddressRange&) const = default;
};
// On failure, *error says what is wrong.
std::optional<AddressRange> parse_address_range(std::string_view text, std::string* error);

// One end of a connection (the peer's for the access list, ours for SendTargets on a wildcard
// portal); family 0 when unknown. An IPv4 peer of a dual-stack IPv6 listener (::ffff:a.b.c.d)
// is plain IPv4, so "10.0.0.0/8" covers it.
struct IpAddress {
  int family = 0;
  std::array<uint8_t, 16> bytes{};
};
IpAddress ip_address_of(const sockaddr* sa, socklen_t len);
std::string to_string(const IpAddress& a);  // "10.1.2.3", "fd00::1", "an unknown address"
bool contains(const AddressRange& r, const IpAddress& a);
bool is_loopback(const IpAddress& a);  // 127.0.0.0/8 or ::1

struct InitiatorAcl {
  std::vector<std::string> names;        // iscsi::normalize_iscsi_name() form; empty: any name
  std::vector<AddressRange> addresses;   // empty: any address
  // An unknown address (family 0) passes only when no address list is set.
  bool allows(std::string_view initiator_name, const IpAddress& peer) const;

  bool operator==(const InitiatorAcl&) const = default;
};

}  // namespace vcp::target
