// `vcp target`: an iSCSI target serving ram/file/null LUNs (src/target/).
//
//   vcp target --portal 127.0.0.1:3260 --iqn iqn.2024-01.org.vcp:disk --lun 0=ram:size=64M
//              [--lun 1=file:path=/x] [--chap-file F] [--mutual-chap-file F] [--cpu 1-2]
//              [--discovery-chap-file F]
//              [--config target.toml] [--max-tasks N]
//              [--allow-initiator IQN ...] [--allow-address CIDR ...]
// The TOML file gives the same settings (docs/target.md); command-line options override it.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "base/cpu.hpp"
#include "base/log.hpp"
#include "target/server.hpp"
#include "tools/commands.hpp"

namespace vcp::tools {
namespace {

struct TargetArgs {
  std::string portal;
  std::string iqn;
  std::vector<std::string> luns;
  std::string chap_file;
  std::string mutual_chap_file;
  std::string discovery_chap_file;
  std::string cpus;
  std::string config;
  uint32_t max_tasks = 0;
  std::vector<std::string> allow_initiators;
  std::vector<std::string> allow_addresses;
};

int fail(const std::string& why) {
  std::fprintf(stderr, "vcp target: %s\n", why.c_str());
  return 2;
}

int run_target(const TargetArgs& a) {
  target::TargetSettings s;
  std::string error;
  if (!a.config.empty() && !target::load_toml(a.config, s, &error)) return fail(error);
  if (!a.portal.empty() && !target::parse_portal(a.portal, &s.host, &s.port, &error))
    return fail("--portal: " + error);
  if (!a.iqn.empty()) s.iqn = a.iqn;
  if (a.max_tasks) s.max_tasks = a.max_tasks;
  for (const auto& n : a.allow_initiators)
    if (!target::allow_initiator(s, n, &error)) return fail("--allow-initiator: " + error);
  for (const auto& r : a.allow_addresses)
    if (!target::allow_address(s, r, &error)) return fail("--allow-address: " + error);
  for (const auto& l : a.luns) {
    auto spec = target::parse_lun_arg(l, &error);
    if (!spec) return fail("--lun " + l + ": " + error);
    s.luns.push_back(*spec);
  }
  for (auto [path, field] : {std::pair{&a.chap_file, &s.chap}, std::pair{&a.mutual_chap_file, &s.mutual_chap},
                             std::pair{&a.discovery_chap_file, &s.discovery_chap}}) {
    if (path->empty()) continue;
    auto c = target::read_chap_file(*path, &error);
    if (!c) return fail(error);
    *field = c;
  }
  if (!a.cpus.empty()) {
    auto cpus = parse_cpu_list(a.cpus);
    if (!cpus) return fail("bad --cpu '" + a.cpus + "' (expected a list such as 1 or 0-3,6)");
    s.cpus = *cpus;
  }
  for (int c : s.cpus)
    if (c >= online_cpus())
      return fail("--cpu " + std::to_string(c) + ": this machine has CPUs 0-" + std::to_string(online_cpus() - 1));

  // Signals are taken by a thread of ours, never by the I/O threads (blocked before they start).
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = target::TargetServer::create(std::move(s), &error);
  if (!server) {
    std::fprintf(stderr, "vcp target: %s\n", error.c_str());
    return 1;
  }
  std::thread signals([&server, mask] {
    int sig = 0;
    sigwait(&mask, &sig);
    VCP_LOG_INFO("vcp target: signal {}, stopping", sig);
    server->stop();
  });
  std::printf("vcp target: listening on %s\n", server->address().c_str());
  std::fflush(stdout);
  int rc = server->run();
  if (signals.joinable()) {
    // run() ended without a signal (an I/O thread failed): release the signal thread.
    pthread_kill(signals.native_handle(), SIGTERM);
    signals.join();
  }
  return rc == 0 ? 0 : 1;
}

}  // namespace

Runner add_target(CLI::App& app) {
  auto* cmd = app.add_subcommand("target", "iSCSI target serving ram/file/null LUNs");
  auto a = std::make_shared<TargetArgs>();
  cmd->add_option("--portal", a->portal, "HOST:PORT to listen on (default 127.0.0.1:3260)");
  cmd->add_option("--iqn", a->iqn, "the target's iSCSI name");
  cmd->add_option("--lun", a->luns, "N=SPEC, SPEC a backend: ram:size=64M, file:path=IMG, null:size=1G")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--chap-file", a->chap_file, "file with 'NAME SECRET': CHAP required of initiators");
  cmd->add_option("--mutual-chap-file", a->mutual_chap_file, "file with 'NAME SECRET': the target's, for mutual CHAP");
  cmd->add_option("--discovery-chap-file", a->discovery_chap_file,
                  "file with 'NAME SECRET': CHAP required of discovery sessions (SendTargets)");
  cmd->add_option("--allow-initiator", a->allow_initiators,
                  "an initiator name that may log in (repeatable); none given: any name")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--allow-address", a->allow_addresses,
                  "an address or network (10.0.0.0/8, fd00::/8) logins may come from (repeatable); none given: any")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--cpu", a->cpus, "CPUs for the I/O threads, one thread each (e.g. 1 or 1-2)");
  cmd->add_option("--config", a->config, "TOML file with the same settings");
  cmd->add_option("--max-tasks", a->max_tasks, "tasks in flight per LUN; more get TASK SET FULL (default 1024)")
      ->check(CLI::Range(1u, 65536u));
  return [a] { return run_target(*a); };
}

}  // namespace vcp::tools
