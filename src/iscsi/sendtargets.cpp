#include "iscsi/sendtargets.hpp"

#include "iscsi/names.hpp"

namespace vcp::iscsi {

std::string host_port(std::string_view host, uint16_t port) {
  std::string s;
  if (host.find(':') != std::string_view::npos && !host.starts_with('[')) {
    s += '[';
    s += host;
    s += ']';
  } else {
    s += host;
  }
  s += ':' + std::to_string(port);
  return s;
}

std::string target_address(std::string_view host, uint16_t port, uint16_t tpgt) {
  return host_port(host, port) + ',' + std::to_string(tpgt);
}

namespace {
void append_record(const SendTargetsRecord& r, TextKeys& out) {
  out.add("TargetName", r.name);
  for (const auto& a : r.addresses) out.add("TargetAddress", a);
}
}  // namespace

void build_send_targets(std::string_view value, SessionType session, std::string_view session_target,
                        std::span<const SendTargetsRecord> targets, TextKeys& out) {
  const bool all = value == "All";
  for (const auto& r : targets) {
    bool match;
    if (all) {
      match = session == SessionType::Discovery || same_iscsi_name(r.name, session_target);
    } else if (value.empty()) {
      match = session == SessionType::Normal && same_iscsi_name(r.name, session_target);
    } else {
      match = same_iscsi_name(r.name, value);  // names compare without regard to case
    }
    if (match) append_record(r, out);
  }
}

}  // namespace vcp::iscsi
