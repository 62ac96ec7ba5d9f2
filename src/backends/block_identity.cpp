// block_identity(): what names a block device across boots, from sysfs (factories.hpp).
#include <climits>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "backends/factories.hpp"
#include "base/parse.hpp"

namespace vcp::backends {
namespace {

// A sysfs attribute's value without its trailing white space; nullopt when absent or empty.
std::optional<std::string> attribute(const std::string& path) {
  auto text = read_small_file(path, 4096);
  if (!text) return std::nullopt;
  std::string v = std::move(*text);
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ' || v.back() == '\t' || v.back() == '\0')) v.pop_back();
  if (v.empty()) return std::nullopt;
  return v;
}

// The identity of the disk whose sysfs directory is `dir`, in the order of how far it can be
// trusted: a WWID (SCSI VPD 0x83, NVMe EUI/NGUID), a serial (virtio-blk), a device-mapper or
// md UUID (LVM volumes, dm-crypt, RAID arrays), a loop device's backing file and offset.
std::optional<std::string> disk_identity(const std::string& dir) {
  for (const char* wwid : {"/wwid", "/device/wwid"})
    if (auto v = attribute(dir + wwid)) return "wwid " + *v;
  if (auto v = attribute(dir + "/serial")) return "serial " + *v;
  if (auto v = attribute(dir + "/dm/uuid")) return "dm " + *v;
  if (auto v = attribute(dir + "/md/uuid")) return "md " + *v;
  if (auto v = attribute(dir + "/loop/backing_file"))
    return "loop " + *v + " at " + attribute(dir + "/loop/offset").value_or("0");
  return std::nullopt;
}

}  // namespace

std::optional<std::string> block_identity(unsigned major, unsigned minor, const std::string& sysfs) {
  const std::string link = sysfs + "/dev/block/" + std::to_string(major) + ":" + std::to_string(minor);
  std::unique_ptr<char, decltype(&::free)> dir(::realpath(link.c_str(), nullptr), &::free);
  if (!dir) return std::nullopt;
  const std::string d = dir.get();
  // A partition: its disk's identity and its number (the disk is the directory above it).
  if (auto part = attribute(d + "/partition")) {
    auto disk = disk_identity(d.substr(0, d.rfind('/')));
    if (!disk) return std::nullopt;
    return *disk + " partition " + *part;
  }
  return disk_identity(d);
}

}  // namespace vcp::backends
