// Operation codes we decode; big-endian field access comes from base/endian.hpp.
//
// SCSI is big-endian on the wire; every multi-byte field goes through load_be*/store_be* so that
// no logic reads raw offsets by hand. Readers take a pointer the caller has already bounds-checked
// (CDB lengths are fixed per opcode; parameter lists are checked against their length first).
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/endian.hpp"
#include "base/scsi_codes.hpp"

namespace vcp::scsi {

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
