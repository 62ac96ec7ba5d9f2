// SendTargets discovery (RFC 7143 §13.3, Appendix C): a Discovery session to one portal that
// asks for every target the portal will show us. Control path only: blocking sockets with
// timeouts, plain std::string results.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/iscsi/url.hpp"

namespace vcp::backends::iscsi {

struct DiscoveredTarget {
  std::string name;
  std::vector<std::string> addresses;  // "host:port,tpgt" as the target sent them
  friend bool operator==(const DiscoveredTarget&, const DiscoveredTarget&) = default;
};

// Parses a (reassembled) SendTargets response: TargetName starts a record, the TargetAddress
// keys after it belong to it. False with *error on malformed text or an address before any name.
bool parse_send_targets(std::span<const uint8_t> text, std::vector<DiscoveredTarget>* out, std::string* error);

// Logs in to cfg.host:cfg.port as a Discovery session (CHAP from cfg as for a normal session;
// cfg.target is ignored), sends SendTargets=All and logs out.
std::optional<std::vector<DiscoveredTarget>> discover_targets(const IscsiConfig& cfg, std::string* error);

}  // namespace vcp::backends::iscsi
