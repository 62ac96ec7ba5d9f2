// One line per backend kind: the registry (registry.cpp) is the only caller.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "backends/block_backend.hpp"
#include "base/parse.hpp"

namespace vcp::backends {

// Each takes the parsed spec (consuming the options it knows) and returns null with *error set
// on failure.
std::unique_ptr<BlockBackend> make_null(Spec& spec, std::string* error);
std::unique_ptr<BlockBackend> make_ram(Spec& spec, std::string* error);
std::unique_ptr<BlockBackend> make_file(Spec& spec, std::string* error);
// iscsi takes the whole URL ("iscsi://host/iqn/lun?..."): its syntax is not "kind:key=value".
std::unique_ptr<BlockBackend> make_iscsi(const std::string& url, std::string* error);

// Shared option helpers: a size option (with a default), a block size (power of two, 512..64K).
bool take_size(Spec& spec, const char* key, uint64_t* out, std::string* error);
bool take_block_size(Spec& spec, uint32_t* out, std::string* error);
// info->physical_block_size from `physical_block_size=` (a power of two from info->block_size to
// 64K), else `fallback` brought into that range (rounded down to a power of two; 0: block_size).
bool take_physical_block_size(Spec& spec, BackendInfo* info, uint64_t fallback, std::string* error);
bool take_bool(Spec& spec, const char* key, bool* out, std::string* error);

// The backend's serial (BackendInfo::serial: virtio GET_ID, a target LUN's unit serial number
// and device identifiers), which must name this disk and no other: a multipath initiator takes
// two LUNs with one identity for two paths to one disk. `serial=` sets it (1 to 20 printable
// ASCII characters, no spaces: GET_ID carries 20 bytes); else `fallback`.
bool take_serial(Spec& spec, std::string fallback, std::string* out, std::string* error);
// "vcp-" and 16 hex digits: of a hash of this machine's identity (/etc/machine-id, else its
// host name) and `what` (a file's canonical path): the same on every start, another for
// another file or machine.
std::string stable_serial(const std::string& what);
// What names a block device (major:minor) across boots and whatever order its disks were found
// in (/dev/sdb may be /dev/sdc next time), read from sysfs: its WWID (SCSI, NVMe), its serial
// (virtio-blk), a device-mapper or md UUID (LVM, dm-crypt, RAID), or a loop device's backing
// file; for a partition, its disk's and its number. nullopt: none of these.
std::optional<std::string> block_identity(unsigned major, unsigned minor, const std::string& sysfs = "/sys");
// "vcp-" and 16 random hex digits: a disk whose data lives only as long as the process (ram,
// null) is a new disk each time.
std::string random_serial();
// BackendInfo::storage of a disk of this process's own making (ram, null): "KIND #N", N
// counting up, so no two are equal.
std::string own_storage(const char* kind);

}  // namespace vcp::backends
