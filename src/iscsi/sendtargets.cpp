#include "iscsi/sendtargets.hpp"

#include <algorithm>
#include <cctype>

namespace vcp::iscsi {

std::string target_address(std::string_view host, uint16_t port, uint16_t tpgt) {
  std::string s;
  if (host.find(':') != std::string_view::npos && !host.starts_with('[')) {
    s += '[';
    s += host;
    s += ']';
  } else {
    s += host;
  }
  s += ':' + std::to_string(port) + ',' + std::to_string(tpgt);
  return s;
}

namespace {
void append_record(const SendTargetsRecord& r, TextKeys& out) {
  out.add("TargetName", r.name);
  for (const auto& a : r.addresses) out.add("TargetAddress", a);
}
// iSCSI names compare without regard to case (RFC 3722).
bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}
}  // namespace

void build_send_targets(std::string_view value, SessionType session, std::string_view session_target,
                        std::span<const SendTargetsRecord> targets, TextKeys& out) {
  const bool all = value == "All";
  for (const auto& r : targets) {
    bool match;
    if (all) {
      match = session == SessionType::Discovery || same_name(r.name, session_target);
    } else if (value.empty()) {
      match = session == SessionType::Normal && same_name(r.name, session_target);
    } else {
      match = same_name(r.name, value);
    }
    if (match) append_record(r, out);
  }
}

}  // namespace vcp::iscsi
