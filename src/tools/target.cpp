// `vcp target`: an iSCSI target serving ram/file/null LUNs (src/target/).
//
//   vcp target --portal 127.0.0.1:3260 --iqn iqn.2024-01.org.vcp:disk --lun 0=ram:size=64M
//              [--lun 1=file:path=/x] [--chap-file F] [--mutual-chap-file F] [--cpu 1-2]
//              [--discovery-chap-file F] [--discovery-mutual-chap-file F] [--chap-algs SHA256:MD5]
//              [--config target.toml] [--max-tasks N] [--max-connections N] [--state-dir DIR]
//              [--allow-initiator IQN ...] [--allow-address CIDR ...]
// The TOML file gives the same settings (docs/target.md); command-line options override it.
// SIGHUP reads the access list and CHAP credentials again, and adds, removes, replaces and
// grows LUNs and adds and removes targets (reload() below);
// SIGUSR1 logs a status report (TargetServer::status).
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "base/cpu.hpp"
#include "base/log.hpp"
#include "base/service_notify.hpp"
#include "iscsi/names.hpp"
#include "target/server.hpp"
#include "tools/commands.hpp"

namespace vcp::tools {
namespace {

struct TargetArgs {
  std::vector<std::string> portals;
  std::string iqn;
  std::vector<std::string> luns;
  std::string chap_file;
  std::string mutual_chap_file;
  std::string discovery_chap_file;
  std::string chap_algs;
  std::string discovery_mutual_chap_file;
  std::string cpus;
  std::string config;
  std::string state_dir;
  uint32_t max_tasks = 0;
  uint32_t max_connections = 0;
  std::string sendfile;
  std::vector<std::string> allow_initiators;
  std::vector<std::string> allow_addresses;
};

int fail(const std::string& why) {
  std::fprintf(stderr, "vcp target: %s\n", why.c_str());
  return 2;
}

// The settings the arguments give: the TOML file first, the command line over it; the files
// (TOML, CHAP) are read now. Also what a reload (SIGHUP) runs again.
bool build_settings(const TargetArgs& a, target::TargetSettings& s, std::string* error) {
  if (!a.config.empty() && !target::load_toml(a.config, s, error)) return false;
  if (!a.portals.empty() && !s.set_portals(a.portals, error)) {
    *error = "--portal: " + *error;
    return false;
  }
  if (!a.iqn.empty()) s.iqn = a.iqn;
  if (!a.state_dir.empty()) s.state_dir = a.state_dir;
  if (a.max_tasks) s.max_tasks = a.max_tasks;
  if (a.max_connections) s.max_connections = a.max_connections;
  if (!a.sendfile.empty() && !target::parse_sendfile(a.sendfile, &s.sendfile)) {
    *error = "--sendfile: auto, on or off";
    return false;
  }
  for (const auto& n : a.allow_initiators)
    if (!target::allow_initiator(s.acl, n, error)) {
      *error = "--allow-initiator: " + *error;
      return false;
    }
  for (const auto& r : a.allow_addresses)
    if (!target::allow_address(s.acl, r, error)) {
      *error = "--allow-address: " + *error;
      return false;
    }
  for (const auto& l : a.luns) {
    auto spec = target::parse_lun_arg(l, error);
    if (!spec) {
      *error = "--lun " + l + ": " + *error;
      return false;
    }
    s.luns.push_back(*spec);
  }
  for (auto [path, field] : {std::pair{&a.chap_file, &s.chap}, std::pair{&a.mutual_chap_file, &s.mutual_chap},
                             std::pair{&a.discovery_chap_file, &s.discovery_chap},
                             std::pair{&a.discovery_mutual_chap_file, &s.discovery_mutual_chap}}) {
    if (path->empty()) continue;
    auto c = target::read_chap_file(*path, error);
    if (!c) return false;
    *field = c;
  }
  if (!a.chap_algs.empty()) {
    auto list = iscsi::parse_chap_algorithm_names(a.chap_algs);
    if (!list) {
      *error = "--chap-algs: SHA3-256, SHA256, SHA1 or MD5, several joined by ':' or ','";
      return false;
    }
    s.chap_algorithms = std::move(*list);
  }
  if (!a.cpus.empty()) {
    auto cpus = parse_cpu_list(a.cpus);
    if (!cpus) {
      *error = "bad --cpu '" + a.cpus + "' (expected a list such as 1 or 0-3,6)";
      return false;
    }
    s.cpus = *cpus;
  }
  for (int c : s.cpus)
    if (c >= online_cpus()) {
      *error = "--cpu " + std::to_string(c) + ": this machine has CPUs 0-" + std::to_string(online_cpus() - 1);
      return false;
    }
  return true;
}

// A target's access settings as a reload logs them.
std::string describe(const target::TargetAccess& t) {
  return fmt::format("{} initiator names, {} address ranges allowed (none: any); CHAP {}, mutual CHAP {}",
                     t.acl.names.size(), t.acl.addresses.size(), t.chap ? "on" : "off", t.mutual_chap ? "on" : "off");
}

// SIGHUP: the access list and the CHAP credentials are read again (TOML file, CHAP files, the
// command line over them) and apply to logins from now on; sessions the new list refuses are
// ended by their I/O threads (TargetConnection::tick), the others go on. A target's LUNs
// follow the file: one new is added, one gone is removed (its commands in flight end first),
// one given another backend is replaced (the new one opened first), one whose file grew takes
// the new size. Targets new to the file are added after the others; one gone from it is
// removed (its sessions end, then its LUNs go as above), so a renamed one is both; an alias
// changed is taken by logins from then on; portals added listen, portals removed stop
// accepting. [limits] are taken by connections from then on (take_live_limits); settings that
// need a restart (CPUs, state_dir; max_transfer_bytes, max_tasks, buffer_bytes) are left as they are, and
// said so; a file that does not read or validate leaves everything as it was. `running` follows what
// was applied; a removed target keeps its place in it (targets keep their indices), marked
// removed in the server's access settings.
void reload(const TargetArgs& a, target::TargetSettings& running, target::TargetServer& server) {
  target::TargetSettings s;
  std::string error;
  if (!build_settings(a, s, &error) || !target::validate(s, &error)) {
    VCP_LOG_WARN("vcp target: reload refused, settings unchanged: {}", error);
    return;
  }
  std::vector<std::string> ignored;
  if (s.portals() != running.portals()) {
    // Portals added listen now, those removed stop accepting; sessions go on where they are.
    std::vector<std::string> added, removed;
    std::string why;
    if (server.set_portals(s.portals(), &added, &removed, &why)) {
      for (const auto& addr : added) VCP_LOG_INFO("vcp target: listening on {} (added by a reload)", addr);
      for (const auto& addr : removed)
        VCP_LOG_INFO("vcp target: no longer listening on {} (removed by a reload; sessions through it go on)", addr);
      running.host = s.host;
      running.port = s.port;
      running.more_portals = s.more_portals;
    } else {
      VCP_LOG_WARN("vcp target: reload: the portals stay as they were: {}", why);
    }
  }
  const std::vector<target::TargetSpec> now = running.all_targets(), next = s.all_targets();
  target::AccessSettings access = *server.access();
  // Removed by an earlier reload: not served, matched by nothing.
  auto gone = [&](size_t i) { return i < access.targets.size() && access.targets[i].removed; };
  // Targets are matched by name (without regard to case); access settings apply to those the
  // file still has; one new to the file is added, one no longer in it removed.
  auto named = [](const std::vector<target::TargetSpec>& list, const std::string& iqn) -> const target::TargetSpec* {
    for (const auto& t : list)
      if (iscsi::same_iscsi_name(t.iqn, iqn)) return &t;
    return nullptr;
  };
  auto find = [&](const target::TargetSpec& t) { return named(next, t.iqn); };
  std::vector<size_t> targets_removed;
  std::vector<std::vector<target::LunSpec>> added(now.size());  // per running target
  std::vector<std::vector<uint32_t>> removed(now.size());     // likewise
  std::vector<std::vector<target::LunSpec>> replaced(now.size());  // likewise: numbers given other backends
  for (size_t i = 0; i < now.size(); ++i) {
    if (gone(i)) continue;
    const target::TargetSpec& t = now[i];
    const target::TargetSpec* n = find(t);
    if (!n) {
      targets_removed.push_back(i);
      continue;
    }
    // A LUN number new to the target is added, one gone is removed, one with another backend
    // is replaced.
    for (const auto& l : n->luns) {
      auto old = std::find_if(t.luns.begin(), t.luns.end(), [&](const auto& o) { return o.number == l.number; });
      if (old == t.luns.end()) added[i].push_back(l);
      else if (old->backend != l.backend) replaced[i].push_back(l);
    }
    for (const auto& o : t.luns)
      if (std::none_of(n->luns.begin(), n->luns.end(), [&](const auto& l) { return l.number == o.number; }))
        removed[i].push_back(o.number);
  }
  // A target new to the file (or renamed: the new name) is added, after the others.
  std::vector<target::TargetSpec> new_targets;
  for (const auto& n : next) {
    bool served = false;
    for (size_t i = 0; i < now.size(); ++i) served |= !gone(i) && iscsi::same_iscsi_name(now[i].iqn, n.iqn);
    if (!served) new_targets.push_back(n);
  }
  if (s.cpus != running.cpus) ignored.push_back("CPUs");
  if (s.state_dir != running.state_dir) ignored.push_back("state_dir");
  // Whatever else differs, access settings aside, is a [limits] key: the groups above and the
  // access settings taken as they run, the rest compares whole (a new key is covered too).
  target::TargetSettings rest = s;
  rest.host = running.host;
  rest.port = running.port;
  rest.more_portals = running.more_portals;
  rest.set_first_target(running.first_target());
  rest.more_targets = running.more_targets;
  rest.cpus = running.cpus;
  rest.state_dir = running.state_dir;
  rest.discovery_chap = running.discovery_chap;
  rest.discovery_mutual_chap = running.discovery_mutual_chap;
  rest.chap_algorithms = running.chap_algorithms;
  // The [limits] a running target takes: those of connections from now on (sessions logged in
  // keep what they negotiated); the others need a restart.
  target::take_live_limits(running, s);
  if (const std::vector<std::string> live = server.set_limits(s); !live.empty()) {
    std::string what;
    for (const auto& k : live) what += (what.empty() ? "" : ", ") + k;
    VCP_LOG_INFO("vcp target: reload: [limits] {} taken for connections from now on (sessions logged in keep theirs)",
                 what);
  }
  const std::vector<std::string> restart = target::restart_limits_differing(running, s);
  for (const auto& k : restart) ignored.push_back("[limits] " + k);
  if (restart.empty() && rest != running) ignored.push_back("[limits]");  // a key named nowhere
  if (!ignored.empty()) {
    std::string what;
    for (const auto& w : ignored) what += (what.empty() ? "" : ", ") + w;
    VCP_LOG_WARN("vcp target: reload: changes to {} need a restart and are not applied", what);
  }
  access.discovery_chap = s.discovery_chap;
  access.discovery_mutual_chap = s.discovery_identity();
  access.chap_algorithms = s.chap_algorithms;
  VCP_LOG_INFO("vcp target: CHAP algorithms accepted for new logins: {}",
               s.chap_algorithms.empty() ? std::string("SHA-256, SHA3-256, SHA-1, MD5 (all)")
                                         : iscsi::chap_algorithm_names(s.chap_algorithms));
  for (size_t i = 0; i < now.size() && i < access.targets.size(); ++i) {
    if (gone(i)) continue;
    const target::TargetSpec* n = find(now[i]);
    if (!n) {  // not in the file any more: its logins refused, its sessions ended
      access.targets[i].removed = true;
      continue;
    }
    access.targets[i] = {n->acl, n->chap, n->mutual_chap};
    VCP_LOG_INFO("vcp target: reloaded access for new logins to {}: {}", now[i].iqn, describe(access.targets[i]));
  }
  for (const auto& line : server.grow_luns()) VCP_LOG_INFO("vcp target: {}", line);
  // New targets: served by every I/O thread first, then given their access settings, which is
  // when logins and SendTargets find them.
  for (const auto& n : new_targets) {
    if (!server.add_target(n, &error)) {
      VCP_LOG_WARN("vcp target: reload: target {} not added: {}", n.iqn, error);
      continue;
    }
    access.targets.push_back({n.acl, n.chap, n.mutual_chap});
    running.more_targets.push_back(n);
    std::string luns;
    for (const auto& l : n.luns) luns += fmt::format("{}LUN {} ({})", luns.empty() ? "" : ", ", l.number, l.backend);
    VCP_LOG_INFO("vcp target: target {} added: {}; {}", n.iqn, luns, describe(access.targets.back()));
  }
  VCP_LOG_INFO("vcp target: discovery CHAP {}{}", access.discovery_chap ? "on" : "off",
               access.discovery_chap && access.discovery_mutual_chap
                   ? ", mutual as " + access.discovery_mutual_chap->name
                   : std::string());
  server.set_access(std::move(access));
  // Removed targets: gone for logins and SendTargets now, their sessions ended by their I/O
  // threads at the next tick; their LUNs are removed as LUNs are.
  for (size_t i : targets_removed) {
    if (!server.remove_target(i, &error)) {
      VCP_LOG_WARN("vcp target: reload: the LUNs of removed target {} stay: {}", now[i].iqn, error);
      continue;
    }
    VCP_LOG_INFO("vcp target: target {} removed: its sessions end, its {} LUNs are removed (their commands in "
                 "flight end first)",
                 now[i].iqn, now[i].luns.size());
  }
  for (size_t i = 0; i < now.size(); ++i) {
    const target::TargetSpec* n = gone(i) ? nullptr : find(now[i]);
    if (n && n->alias != now[i].alias) {
      if (!server.set_alias(i, n->alias, &error)) {
        VCP_LOG_WARN("vcp target: reload: the alias of {} stays: {}", now[i].iqn, error);
      } else {
        (i == 0 ? running.alias : running.more_targets[i - 1].alias) = n->alias;
        VCP_LOG_INFO("vcp target: target {} has the alias '{}' for logins from now on", now[i].iqn, n->alias);
      }
    }
    auto& luns = i == 0 ? running.luns : running.more_targets[i - 1].luns;
    if (!removed[i].empty()) {
      if (!server.remove_luns(i, removed[i], &error)) {
        VCP_LOG_WARN("vcp target: reload: LUNs not removed from {}: {}", now[i].iqn, error);  // not expected
      } else {
        for (uint32_t n : removed[i]) {
          auto l = std::find_if(luns.begin(), luns.end(), [n](const auto& x) { return x.number == n; });
          VCP_LOG_INFO("vcp target: LUN {} of {} removed ({}); its commands in flight end first", n, now[i].iqn,
                       l->backend);
          luns.erase(l);
        }
      }
    }
    // Another backend for a LUN: opened first; if it cannot be, the LUN keeps its old one.
    if (!replaced[i].empty()) {
      if (!server.replace_luns(i, replaced[i], &error)) {
        VCP_LOG_WARN("vcp target: reload: LUNs of {} keep their backends: {}", now[i].iqn, error);
      } else {
        for (const auto& l : replaced[i]) {
          auto old = std::find_if(luns.begin(), luns.end(), [&](const auto& x) { return x.number == l.number; });
          VCP_LOG_INFO("vcp target: LUN {} of {} replaced: {} in place of {} (the old one's commands in flight end first)",
                       l.number, now[i].iqn, l.backend, old->backend);
          *old = l;
        }
      }
    }
    if (added[i].empty()) continue;
    if (!server.add_luns(i, added[i], &error)) {
      VCP_LOG_WARN("vcp target: reload: LUNs not added to {}: {}", now[i].iqn, error);
      continue;
    }
    for (const auto& l : added[i]) {
      VCP_LOG_INFO("vcp target: LUN {} of {} added ({})", l.number, now[i].iqn, l.backend);
      luns.push_back(l);
    }
  }
}

// What `systemctl status` shows of the target: where it listens.
std::string service_status(const target::TargetServer& server) {
  std::string s = "listening on";
  for (const std::string& addr : server.addresses()) s += " " + addr;
  return s;
}

int run_target(const TargetArgs& a) {
  target::TargetSettings s;
  std::string error;
  if (!build_settings(a, s, &error)) return fail(error);
  target::TargetSettings running = s;  // what a reload compares against (the signal thread's)

  // Signals are taken by a thread of ours, never by the I/O threads (blocked before they start).
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = target::TargetServer::create(std::move(s), &error);
  if (!server) {
    std::fprintf(stderr, "vcp target: %s\n", error.c_str());
    return 1;
  }
  std::thread signals([&server, &a, &running, mask] {
    for (;;) {
      int sig = 0;
      sigwait(&mask, &sig);
      if (sig == SIGHUP) {
        notify_service_manager_or_warn(reloading_state(), "vcp target");
        reload(a, running, *server);
        notify_service_manager_or_warn("READY=1\nSTATUS=" + service_status(*server), "vcp target");
        continue;
      }
      if (sig == SIGUSR1) {
        for (const auto& line : server->status()) VCP_LOG_INFO("vcp target: {}", line);
        continue;
      }
      VCP_LOG_INFO("vcp target: signal {}, stopping", sig);
      notify_service_manager_or_warn("STOPPING=1", "vcp target");
      server->stop();
      return;
    }
  });
  for (const std::string& addr : server->addresses()) std::printf("vcp target: listening on %s\n", addr.c_str());
  std::fflush(stdout);
  // The portals are bound: a connection made from now on is served (systemd's Type=notify).
  notify_service_manager_or_warn("READY=1\nSTATUS=" + service_status(*server), "vcp target");
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
  cmd->footer(
      "Signals: SIGHUP reads the settings again (access lists and CHAP for new logins, sessions they now "
      "refuse ended; LUNs and targets added, removed or given other backends; grown files' new sizes; "
      "aliases); SIGUSR1 logs a status report; SIGINT/SIGTERM stop. See docs/target.md.");
  auto a = std::make_shared<TargetArgs>();
  cmd->add_option("--portal", a->portals,
                  "HOST:PORT to listen on (default 127.0.0.1:3260); again for more portals, each serving every target "
                  "(one portal group: a multipath initiator's paths)");
  cmd->add_option("--iqn", a->iqn, "the target's iSCSI name");
  cmd->add_option("--lun", a->luns, "N=SPEC, SPEC a backend: ram:size=64M, file:path=IMG, null:size=1G")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--chap-file", a->chap_file, "file with 'NAME SECRET': CHAP required of initiators");
  cmd->add_option("--mutual-chap-file", a->mutual_chap_file, "file with 'NAME SECRET': the target's, for mutual CHAP");
  cmd->add_option("--chap-algs", a->chap_algs,
                  "CHAP algorithms initiators may use, of SHA3-256, SHA256, SHA1, MD5 joined by ':' or ',' (default: all)");
  cmd->add_option("--discovery-chap-file", a->discovery_chap_file,
                  "file with 'NAME SECRET': CHAP required of discovery sessions (SendTargets)");
  cmd->add_option("--discovery-mutual-chap-file", a->discovery_mutual_chap_file,
                  "file with 'NAME SECRET': the target's, for mutual CHAP in discovery sessions (default: the "
                  "first target's --mutual-chap-file)");
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
  cmd->add_option("--state-dir", a->state_dir,
                  "directory where persistent reservations initiators ask to keep through a restart (APTPL) are "
                  "kept, a file per LUN (default: none, APTPL refused)");
  cmd->add_option("--max-tasks", a->max_tasks, "tasks in flight per LUN; more get TASK SET FULL (default 1024)")
      ->check(CLI::Range(1u, 65536u));
  cmd->add_option("--max-connections", a->max_connections,
                  "connections at once; one more is refused at login, out of resources (default 1024)")
      ->check(CLI::Range(1u, 65536u));
  cmd->add_option("--sendfile", a->sendfile,
                  "auto, on or off: large READs of a file LUN sent with sendfile(2), from the page cache with no "
                  "copy (default auto: for initiators on other machines)");
  return [a] { return run_target(*a); };
}

}  // namespace vcp::tools
