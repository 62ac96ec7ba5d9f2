// The SCSI side of the iSCSI initiator (SBC-4, SPC-4): CDBs for what a block request needs,
// parsers for the data the target returns at start-up (READ CAPACITY(16), the Block Limits,
// Logical Block Provisioning and Unit Serial Number VPD pages) and sense data, and the rule
// that turns a SCSI status plus sense into "done", "retry" or an errno.
//
// Everything here is pure logic over bytes the target sent: lengths are checked before every
// read, nothing allocates on the data-path functions (build_* and classify).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "backends/block_backend.hpp"
#include "base/scsi_codes.hpp"

namespace vcp::backends::iscsi {

using Cdb = std::array<uint8_t, 16>;

// The UNMAP parameter list for one range (SBC-4 §5.32.2): 8-byte header + one 16-byte descriptor.
constexpr uint32_t kUnmapParamLength = 24;
constexpr uint32_t kReadCapacity16Length = 32;
constexpr uint32_t kVpdAllocation = 255;

// Data-path CDBs. lba and blocks in logical blocks; the caller checked the ranges.
Cdb build_read16(uint64_t lba, uint32_t blocks);
Cdb build_write16(uint64_t lba, uint32_t blocks, bool fua);
Cdb build_synchronize_cache16();
Cdb build_unmap(uint16_t param_length);
void build_unmap_params(uint64_t lba, uint32_t blocks, std::span<uint8_t, kUnmapParamLength> out);
// WRITE SAME(16) writing one block of zeros over `blocks` blocks; unmap lets the target
// deallocate instead (SBC-4 §5.50).
Cdb build_write_same16(uint64_t lba, uint32_t blocks, bool unmap);
// Start-up CDBs.
Cdb build_inquiry_vpd(uint8_t page, uint16_t allocation);
Cdb build_read_capacity16(uint32_t allocation);
Cdb build_test_unit_ready();
// MODE SENSE(10), all pages, no block descriptors: only its header is read (the target cuts
// the data at the allocation length).
Cdb build_mode_sense10_header();
constexpr uint32_t kModeSense10HeaderLength = 8;
// The WP bit of a MODE SENSE(10) header's device-specific parameter (SBC-4 §6.5.2): whether
// the LU refuses writes. nullopt for a header too short to say.
std::optional<bool> parse_mode_sense10_write_protect(std::span<const uint8_t> data);

struct Capacity {
  uint64_t blocks = 0;  // last LBA + 1
  uint32_t block_size = 0;
  uint32_t physical_block_exponent = 0;
  bool thin_provisioning_enabled = false;  // LBPME
  bool unmapped_reads_zero = false;        // LBPRZ
};
std::optional<Capacity> parse_read_capacity16(std::span<const uint8_t> data);

// Block Limits VPD (0xB0), in logical blocks; 0 means "not reported".
struct BlockLimits {
  uint32_t max_transfer_blocks = 0;
  uint32_t optimal_transfer_blocks = 0;
  uint32_t max_unmap_blocks = 0;
  uint32_t max_unmap_descriptors = 0;
  uint32_t unmap_granularity_blocks = 0;
  uint64_t max_write_same_blocks = 0;
};
std::optional<BlockLimits> parse_block_limits_vpd(std::span<const uint8_t> data);

// Logical Block Provisioning VPD (0xB2).
struct Provisioning {
  bool unmap = false;         // LBPU: UNMAP supported
  bool write_same16 = false;  // LBPWS: WRITE SAME(16) with UNMAP supported
  bool unmapped_reads_zero = false;
};
std::optional<Provisioning> parse_provisioning_vpd(std::span<const uint8_t> data);

// Unit Serial Number VPD (0x80): the printable serial without padding spaces.
std::optional<std::string> parse_serial_vpd(std::span<const uint8_t> data);
// Device Identification VPD (0x83): the logical unit's strongest designator (NAA, EUI-64,
// T10 vendor ID, SCSI name), binary ones as lower-case hex. nullopt when there is none.
std::optional<std::string> parse_device_id_vpd(std::span<const uint8_t> data);

// Sense data, fixed (0x70/0x71) or descriptor (0x72/0x73) format (SPC-4 §4.5).
struct Sense {
  uint8_t key = 0;
  uint8_t asc = 0;
  uint8_t ascq = 0;
  bool deferred = false;
};
std::optional<Sense> parse_sense(std::span<const uint8_t> sense);
// The iSCSI SCSI Response data segment: a 2-byte SenseLength, then the sense (RFC 7143 §11.4.7).
std::optional<Sense> parse_response_sense(std::span<const uint8_t> segment);
// "NOT READY / LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE (02/04/00)" style text for logs.
std::string describe(const Sense& s);
const char* sense_key_name(uint8_t key);

// What to do with a finished command.
enum class Verdict : uint8_t {
  Done,          // status 0 (or the errno in Outcome::error)
  RetryNow,      // UNIT ATTENTION: the condition is reported once; reissue
  RetryBackoff,  // BUSY, TASK SET FULL, NOT READY (becoming ready), ABORTED COMMAND
};
struct Outcome {
  Verdict verdict = Verdict::Done;
  int error = 0;  // 0 or -errno when Done
};
// status: the SCSI status; sense: parsed sense (with CHECK CONDITION). op tells ILLEGAL
// REQUEST on an optional command (UNMAP, WRITE SAME) apart from a real error.
Outcome classify(uint8_t status, const std::optional<Sense>& sense, BlockOp op);

}  // namespace vcp::backends::iscsi
