// SendTargets (RFC 7143 §13.3, Appendix C): the text a target answers to "SendTargets=<value>"
// in a Text Request: for every target the initiator may see, TargetName=<iqn> followed by one
// TargetAddress=<host:port,tpgt> per portal.
//
// Pure logic over the target list its user passes in; no sockets.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "iscsi/negotiation.hpp"
#include "iscsi/text.hpp"

namespace vcp::iscsi {

struct SendTargetsRecord {
  std::string name;                    // iSCSI name of the target
  std::vector<std::string> addresses;  // "host:port,tpgt" ("[v6addr]:port,tpgt" for IPv6)
};

// "host:port"; IPv6 literals (containing ':') are bracketed.
std::string host_port(std::string_view host, uint16_t port);
// Formats one TargetAddress value: host_port() and ",tpgt".
std::string target_address(std::string_view host, uint16_t port, uint16_t tpgt);

// Which targets a SendTargets value names:
//  - "All": every target (Discovery sessions; in a Normal session only the session's own
//    target, which is all such a session may address);
//  - "" (empty): the session's target (Normal sessions; nothing in a Discovery session);
//  - an iSCSI name: that target, when it exists.
// Appends the answer to out; an empty answer (nothing matched) is legal and means "none".
void build_send_targets(std::string_view value, SessionType session, std::string_view session_target,
                        std::span<const SendTargetsRecord> targets, TextKeys& out);

}  // namespace vcp::iscsi
