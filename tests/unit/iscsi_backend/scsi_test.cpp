#include "backends/iscsi/scsi.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

namespace vcp::backends::iscsi {
namespace {

TEST(ScsiCdb, Read16Write16) {
  Cdb r = build_read16(0x0102030405060708ull, 0x11223344);
  EXPECT_EQ(r[0], 0x88);
  EXPECT_EQ(r[1], 0);
  EXPECT_EQ(r[2], 0x01);
  EXPECT_EQ(r[9], 0x08);
  EXPECT_EQ(r[10], 0x11);
  EXPECT_EQ(r[13], 0x44);
  EXPECT_EQ(r[14], 0);
  Cdb w = build_write16(8, 1, true);
  EXPECT_EQ(w[0], 0x8a);
  EXPECT_EQ(w[1], 0x08);  // FUA
  EXPECT_EQ(w[9], 8);
  EXPECT_EQ(w[13], 1);
  EXPECT_EQ(build_write16(8, 1, false)[1], 0);
}

TEST(ScsiCdb, FlushUnmapWriteSameInquiryCapacity) {
  Cdb s = build_synchronize_cache16();
  EXPECT_EQ(s[0], 0x91);
  for (size_t i = 1; i < s.size(); ++i) EXPECT_EQ(s[i], 0) << i;  // whole medium

  Cdb u = build_unmap(kUnmapParamLength);
  EXPECT_EQ(u[0], 0x42);
  EXPECT_EQ(u[7], 0);
  EXPECT_EQ(u[8], 24);
  std::array<uint8_t, kUnmapParamLength> p{};
  build_unmap_params(0x1000, 0x80, p);
  EXPECT_EQ(p[1], 22);  // UNMAP DATA LENGTH
  EXPECT_EQ(p[3], 16);  // BLOCK DESCRIPTOR DATA LENGTH
  EXPECT_EQ(p[14], 0x10);
  EXPECT_EQ(p[15], 0x00);
  EXPECT_EQ(p[19], 0x80);

  Cdb ws = build_write_same16(5, 9, true);
  EXPECT_EQ(ws[0], 0x93);
  EXPECT_EQ(ws[1], 0x08);  // UNMAP
  EXPECT_EQ(ws[9], 5);
  EXPECT_EQ(ws[13], 9);
  EXPECT_EQ(build_write_same16(5, 9, false)[1], 0);

  Cdb i = build_inquiry_vpd(0xb0, 255);
  EXPECT_EQ(i[0], 0x12);
  EXPECT_EQ(i[1], 1);
  EXPECT_EQ(i[2], 0xb0);
  EXPECT_EQ(i[4], 255);
  Cdb rc = build_read_capacity16(32);
  EXPECT_EQ(rc[0], 0x9e);
  EXPECT_EQ(rc[1], 0x10);
  EXPECT_EQ(rc[13], 32);
}

TEST(ScsiCdb, ModeSense10HeaderAndWriteProtect) {
  Cdb m = build_mode_sense10_header();
  EXPECT_EQ(m[0], 0x5a);
  EXPECT_EQ(m[1], 0x08);  // DBD
  EXPECT_EQ(m[2], 0x3f);  // current values, all pages
  EXPECT_EQ(m[7], 0);
  EXPECT_EQ(m[8], kModeSense10HeaderLength);
  const uint8_t wp[8] = {0, 6, 0, 0x90, 0, 0, 0, 0};  // WP and DPOFUA
  const uint8_t rw[8] = {0, 6, 0, 0x10, 0, 0, 0, 0};
  EXPECT_EQ(parse_mode_sense10_write_protect(wp), std::optional<bool>(true));
  EXPECT_EQ(parse_mode_sense10_write_protect(rw), std::optional<bool>(false));
  EXPECT_EQ(parse_mode_sense10_write_protect(std::span<const uint8_t>(wp, 3)), std::nullopt);  // too short
}

TEST(ScsiParse, ReadCapacity16) {
  std::vector<uint8_t> d(32, 0);
  d[7] = 0xff;  // last LBA 255
  d[10] = 0x10; // 4096-byte blocks
  d[13] = 0x03;
  d[14] = 0xc0; // LBPME, LBPRZ
  auto c = parse_read_capacity16(d);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->blocks, 256u);
  EXPECT_EQ(c->block_size, 4096u);
  EXPECT_EQ(c->physical_block_exponent, 3u);
  EXPECT_TRUE(c->thin_provisioning_enabled);
  EXPECT_TRUE(c->unmapped_reads_zero);
  d[10] = 0x10;
  d[11] = 0x01;  // 4097: not a power of two
  EXPECT_FALSE(parse_read_capacity16(d));
  EXPECT_FALSE(parse_read_capacity16(std::vector<uint8_t>(13, 0)));
  std::vector<uint8_t> all_ones(32, 0xff);
  EXPECT_FALSE(parse_read_capacity16(all_ones));
}

TEST(ScsiParse, BlockLimitsVpd) {
  std::vector<uint8_t> d(64, 0);
  d[1] = 0xb0;
  d[3] = 0x3c;
  d[11] = 0x80;  // max transfer 128 blocks
  d[15] = 0x08;  // optimal 8
  d[23] = 0x40;  // max unmap 64
  d[27] = 0x01;  // 1 descriptor
  d[28] = 0x80;  // UGAVALID bit ignored in the granularity
  d[31] = 0x08;
  d[43] = 0x20;  // max write same 32
  auto b = parse_block_limits_vpd(d);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->max_transfer_blocks, 128u);
  EXPECT_EQ(b->optimal_transfer_blocks, 8u);
  EXPECT_EQ(b->max_unmap_blocks, 64u);
  EXPECT_EQ(b->max_unmap_descriptors, 1u);
  EXPECT_EQ(b->unmap_granularity_blocks, 8u);
  EXPECT_EQ(b->max_write_same_blocks, 32u);
  // A short page gives what it has; fields beyond it stay 0.
  std::vector<uint8_t> short_page(d.begin(), d.begin() + 16);
  short_page[3] = 12;
  b = parse_block_limits_vpd(short_page);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->max_transfer_blocks, 128u);
  EXPECT_EQ(b->max_unmap_blocks, 0u);
  d[1] = 0xb2;
  EXPECT_FALSE(parse_block_limits_vpd(d));  // another page
}

TEST(ScsiParse, ProvisioningAndSerial) {
  std::vector<uint8_t> p = {0, 0xb2, 0, 4, 0, 0xc4, 0x02, 0};
  auto v = parse_provisioning_vpd(p);
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->unmap);
  EXPECT_TRUE(v->write_same16);
  EXPECT_TRUE(v->unmapped_reads_zero);
  EXPECT_FALSE(parse_provisioning_vpd(std::vector<uint8_t>{0, 0xb2, 0, 1, 0}));

  std::vector<uint8_t> s = {0, 0x80, 0, 8, ' ', 'b', 'e', 'a', 'f', '1', ' ', ' '};
  EXPECT_EQ(parse_serial_vpd(s), std::optional<std::string>("beaf1"));
  s[6] = 0x01;
  EXPECT_FALSE(parse_serial_vpd(s));
  // A page length beyond the data is clipped, not trusted.
  std::vector<uint8_t> longer = {0, 0x80, 0, 200, 'x', 'y'};
  EXPECT_EQ(parse_serial_vpd(longer), std::optional<std::string>("xy"));
}

TEST(ScsiVpd, DeviceIdentificationPicksTheStrongestLuDesignator) {
  // A T10 vendor ID (ASCII), a target-port designator (association 1: ignored) and an NAA
  // (binary) for the LU: the NAA wins, as hex.
  std::vector<uint8_t> d = {0, 0x83, 0, 0};
  auto add = [&](uint8_t code_set, uint8_t assoc, uint8_t type, std::vector<uint8_t> v) {
    d.insert(d.end(), {code_set, static_cast<uint8_t>(assoc << 4 | type), 0, static_cast<uint8_t>(v.size())});
    d.insert(d.end(), v.begin(), v.end());
  };
  add(2, 0, 1, {'V', 'E', 'N', 'D', 'O', 'R', ' ', ' ', 'l', 'u', '1', ' '});
  add(1, 1, 3, {0x60, 1, 2, 3, 4, 5, 6, 7});
  add(1, 0, 3, {0x60, 0x01, 0x40, 0x5a, 0xbc, 0xde, 0xf0, 0x12});
  d[3] = static_cast<uint8_t>(d.size() - 4);
  EXPECT_EQ(parse_device_id_vpd(d), std::optional<std::string>("6001405abcdef012"));
  // Without the NAA, the vendor ID (trailing spaces trimmed).
  std::vector<uint8_t> t(d.begin(), d.begin() + 4 + 16);
  t[3] = 16;
  EXPECT_EQ(parse_device_id_vpd(t), std::optional<std::string>("VENDOR  lu1"));
  // A descriptor claiming more bytes than the page holds ends the walk; a wrong page is no page.
  std::vector<uint8_t> bad = {0, 0x83, 0, 6, 1, 3, 0, 40, 1, 2};
  EXPECT_FALSE(parse_device_id_vpd(bad));
  bad[1] = 0x80;
  EXPECT_FALSE(parse_device_id_vpd(bad));
}

TEST(ScsiSense, FixedAndDescriptorFormats) {
  std::vector<uint8_t> fixed(18, 0);
  fixed[0] = 0x70;
  fixed[2] = 0x06;
  fixed[7] = 10;
  fixed[12] = 0x29;
  fixed[13] = 0x00;
  auto s = parse_sense(fixed);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->key, vcp::scsi::code(vcp::scsi::SenseKey::unit_attention));
  EXPECT_EQ(s->asc, 0x29);
  EXPECT_FALSE(s->deferred);
  EXPECT_EQ(describe(*s), "UNIT ATTENTION, ASC/ASCQ 29/00");

  std::vector<uint8_t> desc = {0x73, 0x05, 0x24, 0x01, 0, 0, 0, 0};
  s = parse_sense(desc);
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->deferred);
  EXPECT_EQ(s->key, vcp::scsi::code(vcp::scsi::SenseKey::illegal_request));
  EXPECT_EQ(s->ascq, 0x01);

  EXPECT_FALSE(parse_sense(std::vector<uint8_t>{0x70, 0}));
  EXPECT_FALSE(parse_sense(std::vector<uint8_t>{0x7f, 0, 0, 0}));
  // Fixed sense whose additional length stops before ASC: key only.
  std::vector<uint8_t> short_fixed = {0x70, 0, 0x02, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0x04, 0x01};
  s = parse_sense(short_fixed);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->asc, 0);

  // The iSCSI response segment: SenseLength, then sense; a length beyond the segment is refused.
  std::vector<uint8_t> seg = {0, 8, 0x72, 0x02, 0x04, 0x01, 0, 0, 0, 0};
  s = parse_response_sense(seg);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->key, vcp::scsi::code(vcp::scsi::SenseKey::not_ready));
  seg[1] = 9;
  EXPECT_FALSE(parse_response_sense(seg));
  EXPECT_FALSE(parse_response_sense(std::vector<uint8_t>{0}));
}

TEST(ScsiClassify, StatusesAndSense) {
  using vcp::scsi::code;
  using vcp::scsi::Status;
  constexpr uint8_t kGood = code(Status::good), kBusy = code(Status::busy), kTaskSetFull = code(Status::task_set_full),
                    kReservationConflict = code(Status::reservation_conflict),
                    kCheckCondition = code(Status::check_condition);
  auto sense = [](uint8_t key, uint8_t asc, uint8_t ascq) { return std::optional<Sense>(Sense{key, asc, ascq}); };
  EXPECT_EQ(classify(kGood, {}, BlockOp::read).verdict, Verdict::Done);
  EXPECT_EQ(classify(kGood, {}, BlockOp::read).error, 0);
  EXPECT_EQ(classify(kBusy, {}, BlockOp::write).verdict, Verdict::RetryBackoff);
  EXPECT_EQ(classify(kTaskSetFull, {}, BlockOp::write).verdict, Verdict::RetryBackoff);
  EXPECT_EQ(classify(kReservationConflict, {}, BlockOp::write).error, -EBUSY);
  EXPECT_EQ(classify(kCheckCondition, {}, BlockOp::read).error, -EIO);  // no sense: an error
  EXPECT_EQ(classify(kCheckCondition, sense(6, 0x29, 0), BlockOp::read).verdict, Verdict::RetryNow);
  EXPECT_EQ(classify(kCheckCondition, sense(2, 0x04, 0x01), BlockOp::read).verdict, Verdict::RetryBackoff);
  EXPECT_EQ(classify(kCheckCondition, sense(2, 0x3a, 0x00), BlockOp::read).error, -EIO);  // no medium
  EXPECT_EQ(classify(kCheckCondition, sense(0xb, 0, 0), BlockOp::read).verdict, Verdict::RetryBackoff);
  EXPECT_EQ(classify(kCheckCondition, sense(3, 0x11, 0), BlockOp::read).error, -EIO);
  EXPECT_EQ(classify(kCheckCondition, sense(7, 0x27, 0), BlockOp::write).error, -EROFS);
  EXPECT_EQ(classify(kCheckCondition, sense(7, 0x27, 7), BlockOp::write).error, -ENOSPC);  // thin LUN full
  EXPECT_EQ(classify(kCheckCondition, sense(1, 0, 0), BlockOp::read).error, 0);  // recovered
  // ILLEGAL REQUEST: unsupported for optional commands, an error for reads and writes.
  EXPECT_EQ(classify(kCheckCondition, sense(5, 0x20, 0), BlockOp::discard).error, -EOPNOTSUPP);
  EXPECT_EQ(classify(kCheckCondition, sense(5, 0x24, 0), BlockOp::write_zeroes).error, -EOPNOTSUPP);
  EXPECT_EQ(classify(kCheckCondition, sense(5, 0x21, 0), BlockOp::read).error, -EIO);
  EXPECT_EQ(classify(0x22, {}, BlockOp::read).error, -EIO);  // a status we do not know
}

}  // namespace
}  // namespace vcp::backends::iscsi
