#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "backends/factories.hpp"
#include "base/hash.hpp"
#include "backends/iscsi/url.hpp"

namespace vcp {

const char* to_string(BlockOp op) {
  switch (op) {
    case BlockOp::read: return "read";
    case BlockOp::write: return "write";
    case BlockOp::flush: return "flush";
    case BlockOp::discard: return "discard";
    case BlockOp::write_zeroes: return "write-zeroes";
    case BlockOp::get_id: return "get-id";
  }
  return "?";
}

namespace {
struct Kind {
  const char* name;
  std::unique_ptr<BlockBackend> (*make)(Spec&, std::string*);
  const char* usage;
};
// Adding a backend: one line here and its file in this folder.
constexpr Kind kKinds[] = {
    {"null", backends::make_null, "null:size=SIZE[,block_size=N][,physical_block_size=N][,serial=S]  (completes at once; data untouched)"},
    {"ram", backends::make_ram, "ram:size=SIZE[,block_size=N][,physical_block_size=N][,serial=S]"},
    {"file", backends::make_file, "file:path=PATH[,direct=on][,ro=on][,block_size=N][,physical_block_size=N][,size=SIZE][,serial=S]"},
};
}  // namespace

std::unique_ptr<BlockBackend> make_backend(const std::string& text, std::string* error) {
  if (text.rfind("iscsi:", 0) == 0) {
    auto b = backends::make_iscsi(text, error);
    // Spec mistakes get the usage line; failures talking to the target ("iscsi: ...") do not.
    if (!b && error->rfind("iscsi: ", 0) != 0) *error += "; usage: " + std::string(backends::iscsi::kIscsiUsage);
    return b;
  }
  auto spec = parse_spec(text, error);
  if (!spec) return nullptr;
  for (const auto& k : kKinds) {
    if (spec->kind != k.name) continue;
    auto b = k.make(*spec, error);
    if (b && !spec->options.empty()) {
      *error = "unknown option '" + spec->options.begin()->first + "' for " + k.name + "; usage: " + k.usage;
      return nullptr;
    }
    if (!b && error->find("usage:") == std::string::npos) *error += "; usage: " + std::string(k.usage);
    return b;
  }
  *error = "unknown backend kind '" + spec->kind + "' (known: null, ram, file, iscsi)";
  return nullptr;
}

namespace backends {

bool take_size(Spec& spec, const char* key, uint64_t* out, std::string* error) {
  auto v = spec.take(key);
  if (!v) return true;
  auto n = parse_size(*v);
  if (!n || *n == 0) {
    *error = std::string("bad ") + key + " '" + *v + "' (expected a size such as 512M or 1G)";
    return false;
  }
  *out = *n;
  return true;
}

bool take_block_size(Spec& spec, uint32_t* out, std::string* error) {
  uint64_t bs = *out;
  if (!take_size(spec, "block_size", &bs, error)) return false;
  if (bs < 512 || bs > 65536 || (bs & (bs - 1)) != 0) {
    *error = "block_size must be a power of two from 512 to 64K";
    return false;
  }
  *out = static_cast<uint32_t>(bs);
  return true;
}

bool take_physical_block_size(Spec& spec, BackendInfo* info, uint64_t fallback, std::string* error) {
  if (spec.get("physical_block_size")) {
    uint64_t pbs = 0;
    if (!take_size(spec, "physical_block_size", &pbs, error)) return false;
    if (pbs < info->block_size || pbs > 65536 || (pbs & (pbs - 1)) != 0) {
      *error = "physical_block_size must be a power of two from block_size (" + std::to_string(info->block_size) +
               ") to 64K";
      return false;
    }
    info->physical_block_size = static_cast<uint32_t>(pbs);
    return true;
  }
  uint64_t pbs = info->block_size;
  while (pbs * 2 <= std::min<uint64_t>(fallback, 65536)) pbs *= 2;
  info->physical_block_size = static_cast<uint32_t>(pbs);
  return true;
}

bool take_bool(Spec& spec, const char* key, bool* out, std::string* error) {
  auto v = spec.take(key);
  if (!v) return true;
  auto b = parse_bool(v->empty() ? "on" : *v);
  if (!b) {
    *error = std::string("bad ") + key + " '" + *v + "' (expected on or off)";
    return false;
  }
  *out = *b;
  return true;
}

bool take_serial(Spec& spec, std::string fallback, std::string* out, std::string* error) {
  auto v = spec.take("serial");
  if (!v) {
    *out = std::move(fallback);
    return true;
  }
  const bool graphic = std::all_of(v->begin(), v->end(), [](char c) { return c > 0x20 && c < 0x7f; });
  if (v->empty() || v->size() > kSerialMax || !graphic) {
    *error = "bad serial '" + *v + "' (1 to 20 printable ASCII characters, no spaces)";
    return false;
  }
  *out = std::move(*v);
  return true;
}

namespace {
std::string vcp_hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "vcp-%016llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

std::string stable_serial(const std::string& what) {
  std::string machine;
  if (auto id = read_small_file("/etc/machine-id", 256); id && !id->empty()) {
    machine = *id;
  } else {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0) machine = host;
  }
  return vcp_hex(fnv1a64(what, fnv1a64(std::string_view("\0", 1), fnv1a64(machine))));
}

std::string own_storage(const char* kind) {
  static std::atomic<uint64_t> made{0};
  return std::string(kind) + " #" + std::to_string(made.fetch_add(1, std::memory_order_relaxed));
}

std::string random_serial() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
    // No entropy to be had (never on Linux >= 3.17 once booted): time and address, still
    // distinct between processes.
    v = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
        (static_cast<uint64_t>(::getpid()) << 32) ^ reinterpret_cast<uintptr_t>(&v);
  }
  return vcp_hex(v);
}

}  // namespace backends
}  // namespace vcp
