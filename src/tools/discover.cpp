// `vcp discover HOST[:PORT]`: SendTargets discovery against one iSCSI portal; prints every
// target the portal shows us, one "NAME ADDRESS" line per portal address (address as the
// target sent it: "host:port,tpgt"), ready to become an iscsi://host:port/NAME/LUN spec.
// With --url LUN it prints those specs instead: one per target and portal group, its first
// address in the URL and the others as portal= (the initiator fails over between them).
#include <algorithm>
#include <cstdio>
#include <optional>
#include <utility>
#include <vector>

#include "backends/iscsi/discovery.hpp"
#include "backends/iscsi/url.hpp"
#include "tools/commands.hpp"

namespace vcp::tools {
namespace {

struct DiscoverArgs {
  std::string portal;
  std::string user;
  std::string mutual_user;
  std::string secret_file;
  std::string initiator;
  std::string chap_algs;
  uint32_t timeout_s = 10;
  std::optional<uint32_t> url_lun;
};

// The iscsi:// specs of one target for `lun`: its addresses grouped by portal group tag (a
// session's portals must be of one group to be reinstated on another), in the order sent.
// An address that does not parse is left out (and said on stderr).
std::vector<std::string> urls_of(const backends::iscsi::DiscoveredTarget& t, uint32_t lun) {
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;  // tpgt -> "host:port"s
  for (const auto& addr : t.addresses) {
    std::string host, error;
    uint16_t port = 0;
    if (!backends::iscsi::parse_portal(addr, &host, &port, &error)) {
      std::fprintf(stderr, "vcp discover: %s: left out: %s\n", t.name.c_str(), error.c_str());
      continue;
    }
    const size_t comma = addr.find(',');
    const std::string tpgt = comma == std::string::npos ? "" : addr.substr(comma + 1);
    auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == tpgt; });
    if (g == groups.end()) g = groups.insert(groups.end(), {tpgt, {}});
    g->second.push_back(backends::iscsi::portal_name({host, port}));
  }
  std::vector<std::string> out;
  for (const auto& [tpgt, portals] : groups) {
    std::string url = "iscsi://" + portals[0] + "/" + t.name + "/" + std::to_string(lun);
    for (size_t i = 1; i < portals.size() && i < backends::iscsi::kMaxPortals; ++i)
      url += (i == 1 ? "?portal=" : "&portal=") + portals[i];
    out.push_back(std::move(url));
  }
  return out;
}

int run_discover(const DiscoverArgs& a) {
  // The portal and the CHAP options go through the iscsi spec parser, so discovery reads
  // secrets exactly as the backend does (secret_file= or the environment, never argv).
  std::string url = "iscsi://" + (a.user.empty() ? "" : a.user + "@") + a.portal + "/discovery/0?login_timeout=" +
                    std::to_string(a.timeout_s);
  if (!a.mutual_user.empty()) url += "&mutual_user=" + a.mutual_user;
  if (!a.secret_file.empty()) url += "&secret_file=" + a.secret_file;
  if (!a.initiator.empty()) url += "&initiator=" + a.initiator;
  if (!a.chap_algs.empty()) url += "&chap_algs=" + a.chap_algs;
  std::string error;
  auto cfg = backends::iscsi::parse_iscsi_url(url, &error);
  if (!cfg) {
    std::fprintf(stderr, "vcp discover: %s\n", error.c_str());
    return 2;
  }
  auto targets = backends::iscsi::discover_targets(*cfg, &error);
  if (!targets) {
    std::fprintf(stderr, "vcp discover: %s\n", error.c_str());
    return 1;
  }
  if (targets->empty()) std::fprintf(stderr, "vcp discover: the portal shows us no targets\n");
  for (const auto& t : *targets) {
    if (a.url_lun) {
      for (const auto& url : urls_of(t, *a.url_lun)) std::printf("%s\n", url.c_str());
      continue;
    }
    if (t.addresses.empty()) std::printf("%s\n", t.name.c_str());
    for (const auto& addr : t.addresses) std::printf("%s %s\n", t.name.c_str(), addr.c_str());
  }
  return 0;
}

}  // namespace

Runner add_discover(CLI::App& app) {
  auto a = std::make_shared<DiscoverArgs>();
  auto* sub = app.add_subcommand("discover", "List the targets an iSCSI portal offers (SendTargets)");
  sub->add_option("portal", a->portal, "HOST[:PORT] (port 3260 by default; [v6addr]:PORT)")->required();
  sub->add_option("--user", a->user, "CHAP user name (secret from --secret-file or VCP_ISCSI_SECRET)");
  sub->add_option("--mutual-user", a->mutual_user, "the target's CHAP name for mutual CHAP");
  sub->add_option("--secret-file", a->secret_file, "line 1: our CHAP secret; line 2: the target's");
  sub->add_option("--initiator", a->initiator, "our initiator name (IQN)");
  sub->add_option("--chap-algs", a->chap_algs,
                  "CHAP algorithms to offer in order, of SHA3-256, SHA256, SHA1, MD5, joined by ':' (default MD5)");
  sub->add_option("--timeout", a->timeout_s, "seconds to wait for the portal")->check(CLI::Range(1, 3600));
  sub->add_option("--url", a->url_lun,
                  "print an iscsi:// spec for this LUN per target and portal group instead (its other addresses as "
                  "portal=)")
      ->check(CLI::Range(0, 16383));
  return [a] { return run_discover(*a); };
}

}  // namespace vcp::tools
