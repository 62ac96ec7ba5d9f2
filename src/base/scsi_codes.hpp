// SCSI codes both sides of the wire use (SAM-5, SPC-4, SBC-4): operation codes, service
// actions, status and sense keys. The initiator (backends/iscsi) and the device server
// (target/scsi) take them from here.
#pragma once

#include <cstdint>

namespace vcp::scsi {

// Operation codes (SPC-4, SBC-4): those the target serves and the initiator sends.
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
constexpr uint8_t kOrWrite16 = 0x8b;
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

// SCSI status (SAM-5 5.3).
enum class Status : uint8_t {
  good = 0x00,
  check_condition = 0x02,
  condition_met = 0x04,
  busy = 0x08,
  reservation_conflict = 0x18,
  task_set_full = 0x28,
  aca_active = 0x30,
  task_aborted = 0x40,
};

// Sense keys (SPC-4 4.5.6).
enum class SenseKey : uint8_t {
  no_sense = 0x0,
  recovered_error = 0x1,
  not_ready = 0x2,
  medium_error = 0x3,
  hardware_error = 0x4,
  illegal_request = 0x5,
  unit_attention = 0x6,
  data_protect = 0x7,
  aborted_command = 0xb,
  miscompare = 0xe,
};

constexpr uint8_t code(Status s) { return static_cast<uint8_t>(s); }
constexpr uint8_t code(SenseKey k) { return static_cast<uint8_t>(k); }

}  // namespace vcp::scsi
