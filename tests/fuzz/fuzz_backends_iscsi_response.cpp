// What the iscsi backend parses from a target: READ CAPACITY(16) data, the Block Limits /
// Logical Block Provisioning / Unit Serial Number VPD pages, sense data (bare and in a SCSI
// Response segment), SendTargets texts and the MODE SENSE(10) header. The first byte picks the
// parser, the rest is its input. Every parser must stay inside its input and never crash. (The
// iscsi:// spec a user types is fuzz_backends_spec's.)
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "backends/iscsi/discovery.hpp"
#include "backends/iscsi/scsi.hpp"

using namespace vcp::backends::iscsi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> in(data + 1, size - 1);
  switch (data[0] % 8) {
    case 0: (void)parse_read_capacity16(in); break;
    case 1: (void)parse_block_limits_vpd(in); break;
    case 2: (void)parse_provisioning_vpd(in); break;
    case 3:
      (void)parse_serial_vpd(in);
      (void)parse_device_id_vpd(in);
      break;
    case 4:
      if (auto s = parse_sense(in)) {
        (void)describe(*s);
        (void)classify(vcp::scsi::code(vcp::scsi::Status::check_condition), s, vcp::BlockOp::discard);
      }
      break;
    case 5: (void)parse_response_sense(in); break;
    case 6: {
      std::vector<DiscoveredTarget> out;
      std::string err;
      (void)parse_send_targets(in, &out, &err);
      break;
    }
    case 7: (void)parse_mode_sense10_write_protect(in); break;
  }
  return 0;
}
