// Operation codes we decode; big-endian field access comes from base/endian.hpp.
//
// SCSI is big-endian on the wire; every multi-byte field goes through load_be*/store_be* so that
// no logic reads raw offsets by hand. Readers take a pointer the caller has already bounds-checked
// (CDB lengths are fixed per opcode; parameter lists are checked against their length first).
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/endian.hpp"

namespace vcp::scsi {

// Operation codes (SPC-4, SBC-4) this device server knows.
namespace op {
constexpr uint8_t kTestUnitReady = 0x00;
constexpr uint8_t kRequestSense = 0x03;
constexpr uint8_t kRead6 = 0x08;
constexpr uint8_t kWrite6 = 0x0a;
constexpr uint8_t kInquiry = 0x12;
constexpr uint8_t kModeSelect6 = 0x15;
constexpr uint8_t kReserve6 = 0x16;
constexpr uint8_t kRelease6 = 0x17;
constexpr uint8_t kModeSense6 = 0x1a;
constexpr uint8_t kStartStopUnit = 0x1b;
constexpr uint8_t kPreventAllow = 0x1e;
constexpr uint8_t kReadCapacity10 = 0x25;
constexpr uint8_t kRead10 = 0x28;
constexpr uint8_t kWrite10 = 0x2a;
constexpr uint8_t kWriteVerify10 = 0x2e;
constexpr uint8_t kVerify10 = 0x2f;
constexpr uint8_t kPreFetch10 = 0x34;
constexpr uint8_t kSyncCache10 = 0x35;
constexpr uint8_t kWriteSame10 = 0x41;
constexpr uint8_t kUnmap = 0x42;
constexpr uint8_t kModeSelect10 = 0x55;
constexpr uint8_t kReserve10 = 0x56;
constexpr uint8_t kRelease10 = 0x57;
constexpr uint8_t kModeSense10 = 0x5a;
constexpr uint8_t kPrIn = 0x5e;
constexpr uint8_t kPrOut = 0x5f;
constexpr uint8_t kRead16 = 0x88;
constexpr uint8_t kCompareAndWrite = 0x89;
constexpr uint8_t kWrite16 = 0x8a;
constexpr uint8_t kWriteVerify16 = 0x8e;
constexpr uint8_t kVerify16 = 0x8f;
constexpr uint8_t kPreFetch16 = 0x90;
constexpr uint8_t kSyncCache16 = 0x91;
constexpr uint8_t kWriteSame16 = 0x93;
constexpr uint8_t kServiceActionIn16 = 0x9e;  // READ CAPACITY(16) is service action 0x10
constexpr uint8_t kReportLuns = 0xa0;
constexpr uint8_t kMaintenanceIn = 0xa3;      // REPORT SUPPORTED OPCODES / TMFS
constexpr uint8_t kRead12 = 0xa8;
constexpr uint8_t kWrite12 = 0xaa;
constexpr uint8_t kWriteVerify12 = 0xae;
constexpr uint8_t kVerify12 = 0xaf;
}  // namespace op

namespace sa {
constexpr uint16_t kReadCapacity16 = 0x10;
constexpr uint16_t kGetLbaStatus = 0x12;
constexpr uint16_t kReportSupportedOpcodes = 0x0c;
constexpr uint16_t kReportSupportedTmfs = 0x0d;
}  // namespace sa

// The CDB length a group code implies (SAM-5 table: group 0 = 6, 1-2 = 10, 4 = 16, 5 = 12);
// 0 for groups 3 (variable/reserved), 6 and 7 (vendor specific).
inline unsigned cdb_length_for(uint8_t opcode) {
  switch (opcode >> 5) {
    case 0: return 6;
    case 1:
    case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 0;
  }
}

}  // namespace vcp::scsi
