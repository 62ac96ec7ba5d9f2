// The target's configuration as a user (or a hostile file) gives it. The first byte picks the
// parser, the rest is its input:
//   0: a TOML file (load_toml) and the checks the server runs before it starts (validate);
//   1: a CHAP file (read_chap_file);
//   2: the command-line forms --lun N=SPEC and --portal HOST:PORT.
// Files are handed over as /proc/self/fd/N of a memfd. Inputs naming files of their own
// (chap_file =, escapes that could spell it) are skipped: they would read whatever the path
// names on this machine, which the unit tests cover (settings_test.cpp).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "iscsi/chap.hpp"
#include "iscsi/names.hpp"
#include "target/settings.hpp"

using namespace vcp;
using namespace vcp::target;

namespace {

std::string as_file(std::string_view text, int* fd) {
  *fd = memfd_create("fuzz-settings", MFD_CLOEXEC);
  if (*fd < 0) abort();
  if (!text.empty() && write(*fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) abort();
  return "/proc/self/fd/" + std::to_string(*fd);
}

void check_valid(const TargetSettings& s) {
  // What validate() lets through is what the server is built from: it must hold. Every target
  // (the first one and the [[target]] ones) has a name of its own and LUNs of its own.
  std::set<std::string> names;
  for (const TargetSpec& t : s.all_targets()) {
    auto n = iscsi::normalize_iscsi_name(t.iqn);
    if (t.iqn.empty() || t.luns.empty() || !n || !names.insert(*n).second) abort();
    std::set<uint32_t> numbers;
    for (const auto& l : t.luns)
      if (l.number > 16383 || !numbers.insert(l.number).second) abort();
    if (t.mutual_chap && !t.chap) abort();
    // The access list holds names in their normal form and ranges whose prefix fits the family.
    for (const auto& name : t.acl.names)
      if (iscsi::normalize_iscsi_name(name) != name) abort();
    for (const auto& r : t.acl.addresses)
      if ((r.family != AF_INET && r.family != AF_INET6) || r.prefix > (r.family == AF_INET ? 32 : 128)) abort();
    for (const auto* c : {&t.chap, &t.mutual_chap})
      if (*c && iscsi::validate_secret((*c)->secret) != iscsi::ChapError::Ok) abort();
  }
  for (const auto* c : {&s.discovery_chap, &s.discovery_mutual_chap})
    if (*c && iscsi::validate_secret((*c)->secret) != iscsi::ChapError::Ok) abort();
  if (s.discovery_mutual_chap && !s.discovery_chap) abort();
  if (s.cmd_window < 1 || s.cmd_window > 4096 || s.max_tasks < 1 || s.max_tasks > 65536) abort();
  const auto& l = s.limits;
  if (l.max_recv_data_segment_length < 512 || l.max_burst_length > 16777215 || l.first_burst_length < 512 ||
      l.first_burst_length > l.max_burst_length || l.max_outstanding_r2t < 1)
    abort();
  if (s.connection_buffer_bytes < (1u << 20)) abort();
  // Each I/O thread's share of the buffer room holds at least 1 MiB and one connection's room.
  const uint64_t threads = s.cpus.empty() ? 1 : s.cpus.size();
  if (s.buffer_bytes < s.connection_buffer_bytes || s.buffer_bytes / threads < (1u << 20)) abort();
  if (s.max_connections < 1 || s.max_connections > 65536) abort();
  // The access settings follow the targets one for one, and name every portal not on a
  // wildcard address; no address and port is listened on twice.
  const AccessSettings a = AccessSettings::of(s);
  if (a.targets.size() != names.size()) abort();
  const std::vector<Portal> portals = s.portals();
  size_t named = 0;
  bool wildcard = false;
  for (size_t i = 0; i < portals.size(); ++i) {
    if (portals[i].host.empty()) abort();
    if (is_wildcard(portals[i].host)) wildcard = true;
    else ++named;
    for (size_t j = i + 1; j < portals.size(); ++j)
      if (portals[i] == portals[j] && portals[i].port != 0) abort();
  }
  if (a.portal_addresses.size() != named || a.wildcard_portal != wildcard) abort();
  // A reload of these onto a target started with the defaults: what it takes leaves a
  // connection's room within a thread's share, and taking again changes nothing.
  TargetSettings running;
  (void)take_live_limits(running, s);
  if (running.connection_buffer_bytes > running.buffer_bytes) abort();
  if (running.limits != s.limits || running.cmd_window != s.cmd_window || running.max_connections != s.max_connections)
    abort();
  if (!take_live_limits(running, s).empty()) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string error;
  switch (data[0] % 3) {
    case 0: {
      if (text.find("_file") != std::string_view::npos || text.find('\\') != std::string_view::npos) return 0;
      int fd = -1;
      const std::string path = as_file(text, &fd);
      TargetSettings s;
      const bool loaded = load_toml(path, s, &error);
      close(fd);
      if (!loaded && error.empty()) abort();  // every refusal says why
      if (loaded) {
        error.clear();
        if (validate(s, &error)) check_valid(s);
        else if (error.empty()) abort();
      }
      break;
    }
    case 1: {
      int fd = -1;
      const std::string path = as_file(text, &fd);
      auto c = read_chap_file(path, &error);
      close(fd);
      if (c && (c->name.empty() || iscsi::validate_secret(c->secret) != iscsi::ChapError::Ok)) abort();
      if (!c && error.empty()) abort();
      break;
    }
    default: {
      const std::string arg(text);
      auto lun = parse_lun_arg(arg, &error);
      if (lun && (lun->number > 16383 || lun->backend.empty())) abort();
      std::string host;
      uint16_t port = 0;
      if (parse_portal(arg, &host, &port, &error) && host.empty()) abort();
      break;
    }
  }
  return 0;
}
