// `vcp discover HOST[:PORT]`: SendTargets discovery against one iSCSI portal; prints every
// target the portal shows us, one "NAME ADDRESS" line per portal address (address as the
// target sent it: "host:port,tpgt"), ready to become an iscsi://host:port/NAME/LUN spec.
#include <cstdio>

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
  uint32_t timeout_s = 10;
};

int run_discover(const DiscoverArgs& a) {
  // The portal and the CHAP options go through the iscsi spec parser, so discovery reads
  // secrets exactly as the backend does (secret_file= or the environment, never argv).
  std::string url = "iscsi://" + (a.user.empty() ? "" : a.user + "@") + a.portal + "/discovery/0?login_timeout=" +
                    std::to_string(a.timeout_s);
  if (!a.mutual_user.empty()) url += "&mutual_user=" + a.mutual_user;
  if (!a.secret_file.empty()) url += "&secret_file=" + a.secret_file;
  if (!a.initiator.empty()) url += "&initiator=" + a.initiator;
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
  sub->add_option("--timeout", a->timeout_s, "seconds to wait for the portal")->check(CLI::Range(1, 3600));
  return [a] { return run_discover(*a); };
}

}  // namespace vcp::tools
