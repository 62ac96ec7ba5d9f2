#include "iscsi/crc32c.hpp"

#include <isa-l/crc.h>

#include <climits>

namespace vcp::iscsi {

void Crc32c::update(std::span<const uint8_t> bytes) {
  // crc32_iscsi takes an int length; feed very large buffers in pieces.
  const uint8_t* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const size_t n = left > static_cast<size_t>(INT_MAX) ? static_cast<size_t>(INT_MAX) : left;
    state_ = crc32_iscsi(const_cast<unsigned char*>(p), static_cast<int>(n), state_);
    p += n;
    left -= n;
  }
}

uint32_t crc32c(std::span<const uint8_t> bytes) {
  Crc32c c;
  c.update(bytes);
  return c.value();
}

uint32_t data_digest(std::span<const uint8_t> data) {
  static constexpr uint8_t kZeros[4] = {0, 0, 0, 0};
  Crc32c c;
  c.update(data);
  const size_t pad = (4 - data.size() % 4) % 4;
  c.update(std::span<const uint8_t>(kZeros, pad));
  return c.value();
}

}  // namespace vcp::iscsi
