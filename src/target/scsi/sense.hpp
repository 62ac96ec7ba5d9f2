// Sense data: keys, additional sense codes, and the fixed format (response code 0x70) we report.
#pragma once

#include <cstdint>

#include "base/scsi_codes.hpp"

namespace vcp::scsi {

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

constexpr unsigned kFixedSenseLen = 18;

// One sense condition before encoding. The field pointer is the sense-key-specific
// ILLEGAL REQUEST form: which byte (and optionally bit) of the CDB or parameter list is wrong.
struct Sense {
  SenseKey key = SenseKey::no_sense;
  Asc asc = Asc::no_additional_sense;
  bool info_valid = false;
  uint32_t information = 0;
  bool field_valid = false;
  bool in_cdb = true;      // C/D: the pointer is into the CDB (else into the parameter data)
  bool bit_valid = false;  // BPV
  uint8_t bit = 0;
  uint16_t field = 0;

  // Writes the fixed-format sense data (18 bytes) into out.
  void encode(uint8_t out[kFixedSenseLen]) const;
};

inline Sense sense(SenseKey key, Asc asc) { return Sense{key, asc}; }

// ILLEGAL REQUEST, INVALID FIELD IN CDB pointing at byte (and bit, when >= 0) of the CDB.
inline Sense invalid_cdb_field(uint16_t byte, int bit = -1) {
  Sense s{SenseKey::illegal_request, Asc::invalid_field_in_cdb};
  s.field_valid = true;
  s.field = byte;
  if (bit >= 0) {
    s.bit_valid = true;
    s.bit = static_cast<uint8_t>(bit);
  }
  return s;
}

// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST pointing at a byte of the parameter data.
inline Sense invalid_param_field(uint16_t byte, int bit = -1) {
  Sense s = invalid_cdb_field(byte, bit);
  s.asc = Asc::invalid_field_in_parameter_list;
  s.in_cdb = false;
  return s;
}

inline Sense illegal(Asc asc) { return Sense{SenseKey::illegal_request, asc}; }

}  // namespace vcp::scsi
