// SCSI codes both sides of the wire use (SAM-5, SPC-4, SBC-4): operation codes, service
// actions, status, sense keys and additional sense codes. The initiator (backends/iscsi) and
// the device server (target/scsi) take them from here.
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

// Additional sense codes (SPC-4 D.2) the device server reports and the initiator acts on:
// ASC in the high byte, ASCQ in the low one.
enum class Asc : uint16_t {
  no_additional_sense = 0x0000,
  write_error = 0x0c00,
  unrecovered_read_error = 0x1100,
  parameter_list_length_error = 0x1a00,
  miscompare_during_verify = 0x1d00,
  invalid_opcode = 0x2000,
  lba_out_of_range = 0x2100,
  invalid_field_in_cdb = 0x2400,
  lun_not_supported = 0x2500,
  invalid_field_in_parameter_list = 0x2600,
  invalid_release_of_pr = 0x2604,
  write_protected = 0x2700,
  space_allocation_failed_write_protect = 0x2707,
  power_on_reset = 0x2900,
  power_on_occurred = 0x2901,
  scsi_bus_reset = 0x2902,
  bus_device_reset_function = 0x2903,
  it_nexus_loss = 0x2907,
  mode_parameters_changed = 0x2a01,
  reservations_preempted = 0x2a03,
  reservations_released = 0x2a04,
  registrations_preempted = 0x2a05,
  capacity_data_changed = 0x2a09,
  commands_cleared_by_another_initiator = 0x2f00,
  saving_parameters_not_supported = 0x3900,
  reported_luns_data_changed = 0x3f0e,
  internal_target_failure = 0x4400,
  insufficient_registration_resources = 0x5504,
};

constexpr uint8_t asc_of(Asc a) { return static_cast<uint8_t>(static_cast<uint16_t>(a) >> 8); }
constexpr uint8_t ascq_of(Asc a) { return static_cast<uint8_t>(static_cast<uint16_t>(a)); }

constexpr uint8_t code(Status s) { return static_cast<uint8_t>(s); }
constexpr uint8_t code(SenseKey k) { return static_cast<uint8_t>(k); }

}  // namespace vcp::scsi
