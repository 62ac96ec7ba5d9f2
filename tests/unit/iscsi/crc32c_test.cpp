#include "iscsi/crc32c.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace vcp::iscsi {
namespace {

// RFC 3720 Appendix B.4 / RFC 7143 test vectors.
TEST(Crc32c, ThirtyTwoZeros) {
  std::array<uint8_t, 32> b{};
  EXPECT_EQ(crc32c(b), 0x8a9136aau);
}

TEST(Crc32c, ThirtyTwoOnes) {
  std::array<uint8_t, 32> b;
  b.fill(0xff);
  EXPECT_EQ(crc32c(b), 0x62a8ab43u);
}

TEST(Crc32c, Ascending) {
  std::array<uint8_t, 32> b;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(crc32c(b), 0x46dd794eu);
}

TEST(Crc32c, Descending) {
  std::array<uint8_t, 32> b;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(crc32c(b), 0x113fdb5cu);
}

TEST(Crc32c, IscsiReadCommandVector) {
  // The 48-byte SCSI Read (10) command PDU of RFC 3720 B.4.
  const std::array<uint8_t, 48> b = {
      0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
      0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(crc32c(b), 0xd9963a56u);
}

TEST(Crc32c, IncrementalEqualsOneShot) {
  std::vector<uint8_t> b(1000);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 3);
  Crc32c c;
  c.update(std::span<const uint8_t>(b).first(1));
  c.update(std::span<const uint8_t>(b).subspan(1, 500));
  c.update(std::span<const uint8_t>(b).subspan(501));
  EXPECT_EQ(c.value(), crc32c(b));
}

TEST(Crc32c, DataDigestCoversPadding) {
  const std::array<uint8_t, 5> d = {1, 2, 3, 4, 5};
  const std::array<uint8_t, 8> padded = {1, 2, 3, 4, 5, 0, 0, 0};
  EXPECT_EQ(data_digest(d), crc32c(padded));
}

TEST(Crc32c, DigestIsLittleEndianOnTheWire) {
  std::array<uint8_t, 4> w{};
  store_digest(w, 0x8a9136aau);
  EXPECT_EQ(w, (std::array<uint8_t, 4>{0xaa, 0x36, 0x91, 0x8a}));
  EXPECT_EQ(load_digest(w), 0x8a9136aau);
}

}  // namespace
}  // namespace vcp::iscsi
