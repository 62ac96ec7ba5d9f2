// Sense data: one condition (key and additional sense code, from base/scsi_codes.hpp) and the
// fixed format (response code 0x70) we report.
#pragma once

#include <cstdint>

#include "base/scsi_codes.hpp"

namespace vcp::scsi {

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
