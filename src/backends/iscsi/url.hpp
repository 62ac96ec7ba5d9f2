// The iscsi backend's SPEC: the URL form users know from libiscsi and QEMU,
//   iscsi://[user@]host[:port]/target-iqn/lun[?key=value&key=value][,key=value...]
// (`portal=HOST[:PORT]` may repeat: more portals of the same target, tried in turn when one
// does not answer)
// and where its secrets come from (a file or the environment, never the command line: a
// command line is visible to every user through /proc).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "backends/iscsi/resolve.hpp"
#include "iscsi/chap.hpp"
#include "iscsi/negotiation.hpp"

namespace vcp::backends::iscsi {

constexpr uint16_t kDefaultPort = 3260;
constexpr size_t kMaxPortals = 16;  // host:port and up to 15 portal= options
constexpr const char* kDefaultInitiator = "iqn.2024-01.org.vcp:initiator";

struct PortalAddress {
  std::string host;  // name or address; IPv6 without the brackets
  uint16_t port = kDefaultPort;
  bool operator==(const PortalAddress&) const = default;
};

struct IscsiConfig {
  std::string host;  // name or address; IPv6 without the brackets
  uint16_t port = kDefaultPort;
  // Other portals of the same target (`portal=`), in order after host:port: a connection or
  // login that fails on one is tried on the next (docs/iscsi.md, "Several portals").
  std::vector<PortalAddress> more_portals;
  // The portal sessions try first (portal_at() numbering): the one the start-up probe got in
  // through, so that a first portal that is down costs the queues' sessions nothing.
  size_t first_portal = 0;
  std::string target;  // IQN / EUI / NAA name
  uint32_t lun = 0;
  std::string initiator = kDefaultInitiator;
  // CHAP: user set means "offer CHAP with this name"; mutual_user set means "require the
  // target to prove itself with this name" (mutual CHAP).
  std::string user;
  std::string secret;
  std::string mutual_user;
  std::string mutual_secret;
  // CHAP algorithms offered, in order (`chap_algs=SHA256:MD5`); empty: MD5 alone.
  std::vector<vcp::iscsi::ChapAlgorithm> chap_algorithms;
  vcp::iscsi::DigestPolicy header_digest = vcp::iscsi::DigestPolicy::Allow;
  vcp::iscsi::DigestPolicy data_digest = vcp::iscsi::DigestPolicy::Allow;
  uint32_t max_recv_data_segment_length = 262144;  // what we declare
  uint32_t timeout_ms = 30000;           // a command without an answer for this long is aborted
  uint32_t nop_interval_ms = 5000;       // NOP-Out after this long without hearing the target
  uint32_t nop_timeout_ms = 0;           // a NOP-Out unanswered this long drops the connection; 0: timeout_ms
  uint32_t recovery_timeout_ms = 120000; // reconnecting longer than this fails outstanding I/O
  uint32_t login_timeout_ms = 15000;     // connect + login
  // Resolves a portal's host name (empty: resolve_portal, the system's resolver). A name that
  // stands for several addresses has each tried in turn within one login_timeout.
  Resolver resolver;
};

// How many portals the config names (host:port and more_portals).
inline size_t portal_count(const IscsiConfig& c) { return 1 + c.more_portals.size(); }
// Portal i of the config: 0 is host:port, then more_portals in order.
PortalAddress portal_at(const IscsiConfig& c, size_t i);
// "host:port", with brackets for IPv6.
std::string portal_name(const PortalAddress& p);

// Looks up an environment variable (tests inject their own).
using EnvLookup = std::function<std::optional<std::string>(const char*)>;
std::optional<std::string> system_env(const char* name);

// Parses "iscsi://...". On failure *error says what is wrong in words a user can act on.
std::optional<IscsiConfig> parse_iscsi_url(const std::string& text, std::string* error,
                                           const EnvLookup& env = system_env);

// "host:port" or "[v6]:port" or "host" (port defaults to 3260), for `vcp discover` and
// TargetAddress values ("host:port,tpgt": the ",tpgt" is dropped).
bool parse_portal(const std::string& text, std::string* host, uint16_t* port, std::string* error);

// The usage line for the registry.
extern const char* const kIscsiUsage;

}  // namespace vcp::backends::iscsi
