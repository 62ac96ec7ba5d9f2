// The backend specs users type (`vcp serve --backend`, `vcp target --lun N=SPEC`, `vcp bench
// --backend`): the generic "kind:key=value,..." form with its sizes and switches, and the iscsi
// URL with its portal. Secrets come from an injected environment; specs naming a secret_file
// are skipped (they would read whatever the path names on this machine: url_test.cpp covers it).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "backends/block_backend.hpp"
#include "backends/iscsi/url.hpp"
#include "base/parse.hpp"

using namespace vcp;

namespace {

std::optional<std::string> fake_env(const char* name) {
  if (std::string_view(name) == "VCP_ISCSI_SECRET") return "initiator-secret";
  if (std::string_view(name) == "VCP_ISCSI_MUTUAL_SECRET") return "target-secret-1";
  return std::nullopt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string error;

  if (auto spec = parse_spec(text, &error)) {
    // The spec prints back to text that parses to the same spec.
    if (spec->kind.empty() || spec->kind.find(':') != std::string::npos) abort();
    std::string again = spec->kind;
    char sep = ':';
    for (const auto& [k, v] : spec->options) {
      again += sep + k + "=" + v;
      sep = ',';
    }
    auto back = parse_spec(again, &error);
    if (!back || back->kind != spec->kind || back->options != spec->options) abort();
    for (const auto& [k, v] : spec->options) {
      (void)parse_size(v);
      (void)parse_bool(v);
    }
  } else if (error.empty()) {
    abort();
  }

  // A null disk opens nothing and allocates nothing whatever its size: the factory runs whole
  // (its options, serial= among them). What it accepts names the disk in 1 to 20 printable
  // characters, as GET_ID and a LUN's unit serial number carry it.
  if (text.rfind("null:", 0) == 0) {
    error.clear();
    if (auto b = make_backend(text, &error)) {
      const std::string& serial = b->info().serial;
      if (serial.empty() || serial.size() > kSerialMax) abort();
      for (char c : serial)
        if (c <= 0x20 || c >= 0x7f) abort();
      if (b->info().capacity_bytes == 0) abort();
      if (b->info().storage.rfind("null #", 0) != 0) abort();  // a disk of its own
    } else if (error.empty()) {
      abort();
    }
  }

  if (auto n = parse_size(text); n && text.find_first_not_of("0123456789") == std::string::npos && text.size() < 20 &&
                                 *n != std::stoull(text))
    abort();

  if (text.find("secret_file") == std::string::npos) {
    error.clear();
    if (auto c = backends::iscsi::parse_iscsi_url(text, &error, fake_env)) {
      if (c->host.empty() || c->target.empty() || c->target.find('/') != std::string::npos || c->lun > 16383 ||
          c->port == 0 || c->max_recv_data_segment_length < 512 || c->initiator.empty())
        abort();
      if (!c->mutual_user.empty() && c->user.empty()) abort();
      if (!c->user.empty() && c->secret.empty()) abort();
      // More portals: each named, none twice, at most kMaxPortals in all; the URL's first.
      const size_t n = backends::iscsi::portal_count(*c);
      if (n > backends::iscsi::kMaxPortals) abort();
      for (size_t i = 0; i < n; ++i) {
        auto p = backends::iscsi::portal_at(*c, i);
        if (p.host.empty() || p.port == 0) abort();
        for (size_t j = 0; j < i; ++j)
          if (backends::iscsi::portal_at(*c, j) == p) abort();
      }
      if (c->first_portal != 0) abort();
    } else if (error.empty()) {
      abort();
    }
  }
  std::string host;
  uint16_t port = 0;
  error.clear();
  if (backends::iscsi::parse_portal(text, &host, &port, &error)) {
    if (host.empty() || port == 0) abort();
  } else if (error.empty()) {
    abort();
  }
  return 0;
}
