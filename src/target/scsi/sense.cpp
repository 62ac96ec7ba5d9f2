#include "target/scsi/sense.hpp"

#include <cstring>

#include "target/scsi/cdb.hpp"

namespace vcp::scsi {

void Sense::encode(uint8_t out[kFixedSenseLen]) const {
  std::memset(out, 0, kFixedSenseLen);
  out[0] = static_cast<uint8_t>(0x70 | (info_valid ? 0x80 : 0));
  out[2] = static_cast<uint8_t>(key);
  store_be32(out + 3, information);
  out[7] = kFixedSenseLen - 8;  // additional sense length
  out[12] = asc_of(asc);
  out[13] = ascq_of(asc);
  if (field_valid) {
    out[15] = static_cast<uint8_t>(0x80 | (in_cdb ? 0x40 : 0) | (bit_valid ? 0x08 | (bit & 7) : 0));
    store_be16(out + 16, field);
  }
}

}  // namespace vcp::scsi
