#include "virtio/guest_memory.hpp"

#include <cerrno>

#include <gtest/gtest.h>

namespace vcp::virtio {
namespace {

TEST(GuestMemory, TranslateInsideAndAcrossRegions) {
  static uint8_t a[4096], b[4096];
  GuestMemory m;
  ASSERT_EQ(m.add({0x1000, 4096, 0x7000'0000, a}), 0);
  ASSERT_EQ(m.add({0x2000, 4096, 0x7100'0000, b}), 0);
  EXPECT_EQ(m.translate(0x1000, 4096), a);
  EXPECT_EQ(m.translate(0x1ff0, 0x20), nullptr);  // straddles: not in one region
  uint64_t n = 0;
  EXPECT_EQ(m.translate_partial(0x1ff0, 0x20, &n), a + 0xff0);
  EXPECT_EQ(n, 0x10u);
  EXPECT_EQ(m.translate(0x3000, 1), nullptr);
  EXPECT_EQ(m.translate(0xfff, 1), nullptr);
  EXPECT_EQ(m.translate(UINT64_MAX, 2), nullptr);
  EXPECT_EQ(m.translate_user(0x7100'0010, 16), b + 16);
  EXPECT_EQ(m.translate_user(0x7100'0ff0, 32), nullptr);
}

TEST(GuestMemory, RefusesOverlapsEmptyAndWrapping) {
  static uint8_t a[8192];
  GuestMemory m;
  ASSERT_EQ(m.add({0x1000, 4096, 0, a}), 0);
  EXPECT_EQ(m.add({0x1800, 4096, 0, a}), -EINVAL);
  EXPECT_EQ(m.add({0x4000, 0, 0, a}), -EINVAL);
  EXPECT_EQ(m.add({UINT64_MAX - 10, 4096, 0, a}), -EINVAL);
  EXPECT_EQ(m.remove(0x1000, 100), -ENOENT);
  EXPECT_EQ(m.remove(0x1000, 4096), 0);
  EXPECT_EQ(m.translate(0x1000, 1), nullptr);
}

TEST(GuestMemory, Full) {
  static uint8_t a[4096];
  GuestMemory m;
  for (size_t i = 0; i < GuestMemory::kMaxRegions; ++i) ASSERT_EQ(m.add({i * 0x10000, 16, 0, a}), 0);
  EXPECT_EQ(m.add({0x1000'0000, 16, 0, a}), -ENOSPC);
}

}  // namespace
}  // namespace vcp::virtio
