// The command table: every operation code (and service action) this device server implements,
// with its CDB length, its class under persistent reservations, and its CDB usage data for
// REPORT SUPPORTED OPERATION CODES. One table drives dispatch and the report alike.
#pragma once

#include <cstdint>
#include <span>

#include "target/scsi/lun.hpp"

namespace vcp::scsi {

struct CommandInfo {
  uint8_t opcode;
  uint8_t service_action;
  bool has_sa;
  uint8_t cdb_len;
  PrAccess pr;           // START STOP UNIT / PREVENT ALLOW refine theirs by CDB content
  bool ua_exempt;        // INQUIRY, REPORT LUNS, REQUEST SENSE (SAM-5 5.14)
  bool legacy_allowed;   // not blocked by a RESERVE(6/10) reservation of another nexus
  bool needs_thin;       // present only when the LUN reports logical block provisioning
  Lun::Handler handler;
  uint8_t usage[16];     // byte 0 = opcode; the bits the device server looks at
};

struct CommandTable {
  static std::span<const CommandInfo> all();
  // The entry for a CDB; with an unknown service action of a known opcode, *opcode_known.
  static const CommandInfo* find(const uint8_t* cdb, bool* opcode_known);
};

}  // namespace vcp::scsi
