// CRC32C (Castagnoli) for iSCSI header and data digests, computed by ISA-L (SSE4.2/PCLMUL when
// the CPU has them). The digest goes on the wire least significant byte first (RFC 7143
// §11.1 and the test vectors of RFC 3720 Appendix B.4): store it with store_digest.
#pragma once

#include <cstdint>
#include <span>

namespace vcp::iscsi {

constexpr uint32_t kDigestSize = 4;

// Incremental form, for a data segment that is scattered over several buffers.
class Crc32c {
 public:
  void update(std::span<const uint8_t> bytes);
  uint32_t value() const { return ~state_; }

 private:
  uint32_t state_ = 0xffffffffu;
};

uint32_t crc32c(std::span<const uint8_t> bytes);

// CRC of a data segment with its 0..3 pad bytes (zeros), as the data digest covers them.
uint32_t data_digest(std::span<const uint8_t> data);

inline void store_digest(std::span<uint8_t, kDigestSize> out, uint32_t crc) {
  out[0] = static_cast<uint8_t>(crc);
  out[1] = static_cast<uint8_t>(crc >> 8);
  out[2] = static_cast<uint8_t>(crc >> 16);
  out[3] = static_cast<uint8_t>(crc >> 24);
}
inline uint32_t load_digest(std::span<const uint8_t, kDigestSize> in) {
  return uint32_t{in[0]} | uint32_t{in[1]} << 8 | uint32_t{in[2]} << 16 | uint32_t{in[3]} << 24;
}

}  // namespace vcp::iscsi
