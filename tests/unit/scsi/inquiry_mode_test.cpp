// INQUIRY and VPD pages, READ CAPACITY, REPORT LUNS, MODE SENSE/SELECT, REPORT SUPPORTED
// OPERATION CODES / TASK MANAGEMENT FUNCTIONS, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL.
#include <gtest/gtest.h>

#include <string>

#include "harness.hpp"

namespace vcp::scsi::test {
namespace {

class InfoTest : public ::testing::Test {
 protected:
  void SetUp() override { h.clear_ua(); }
  Reply vpd(uint8_t page, uint16_t alloc = 512) {
    std::vector<uint8_t> c = {op::kInquiry, 0x01, page, 0, 0, 0};
    store_be16(&c[3], alloc);
    return h.in(c, alloc);
  }
  LunHarness h;
};

TEST_F(InfoTest, StandardInquiry) {
  Reply r = h.in(cdb6(op::kInquiry, 0, 255), 255);
  ASSERT_TRUE(r.good());
  ASSERT_GE(r.data.size(), 36u);
  EXPECT_EQ(r.data[0], 0x00);  // connected direct-access block device
  EXPECT_EQ(r.data[2], 0x06);  // SPC-4
  EXPECT_EQ(r.data[3] & 0x0f, 2);
  EXPECT_EQ(r.data[4] + 5u, r.data.size());
  EXPECT_EQ(r.data[7] & 0x02, 0x02);  // CMDQUE
  EXPECT_EQ(std::string(r.data.begin() + 8, r.data.begin() + 16), "VCP     ");
  // Allocation length smaller than the data: truncated, not an error.
  r = h.in(cdb6(op::kInquiry, 0, 5), 5);
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.data.size(), 5u);
}

TEST_F(InfoTest, InquiryInvalidFields) {
  EXPECT_TRUE(h.in({op::kInquiry, 0, 0x80, 0, 255, 0}, 255).invalid_field(2));  // page without EVPD
  EXPECT_TRUE(h.in({op::kInquiry, 0x02, 0, 0, 255, 0}, 255).invalid_field(1));  // CMDDT
  EXPECT_TRUE(vpd(0x99).invalid_field(2));
}

TEST_F(InfoTest, SupportedVpdPages) {
  Reply r = vpd(0x00);
  ASSERT_TRUE(r.good());
  std::vector<uint8_t> pages(r.data.begin() + 4, r.data.end());
  EXPECT_EQ(pages, (std::vector<uint8_t>{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}));
  EXPECT_EQ(load_be16(&r.data[2]), pages.size());
  for (uint8_t p : pages) {
    Reply v = vpd(p);
    ASSERT_TRUE(v.good()) << int(p);
    EXPECT_EQ(v.data[1], p);
    EXPECT_EQ(load_be16(&v.data[2]) + 4u, v.data.size()) << int(p);
  }
}

TEST_F(InfoTest, UnitSerialNumber) {
  Reply r = vpd(0x80);
  std::string serial(r.data.begin() + 4, r.data.end());
  EXPECT_EQ(serial, h.lun().config().serial);
  EXPECT_EQ(serial, h.backend().info().serial);
  EXPECT_FALSE(serial.empty());
}

// The NAA designator (8 bytes) of a LUN's device identification page.
std::vector<uint8_t> naa_of(LunHarness& l) {
  std::vector<uint8_t> c = {op::kInquiry, 0x01, 0x83, 0x02, 0x00, 0};
  Reply r = l.in(c, 512);
  for (size_t off = 4; off + 4 <= r.data.size(); off += 4 + r.data[off + 3]) {
    const uint8_t* d = &r.data[off];
    if (((d[1] >> 4) & 3) == 0 && (d[1] & 0x0f) == 3) return {d + 4, d + 4 + d[3]};
  }
  return {};
}

TEST_F(InfoTest, TwoDisksNeverShareAnIdentity) {
  // Multipath initiators group paths by these: two LUNs that share them are taken for one disk.
  // Each ram LUN is a disk of its own (LUN 0 of a ram backend, twice here).
  LunHarness other;
  other.clear_ua();
  EXPECT_NE(other.lun().config().serial, h.lun().config().serial);
  EXPECT_FALSE(naa_of(h).empty());
  EXPECT_NE(naa_of(other), naa_of(h));
  // serial= names the disk: the unit serial number and the T10 vendor identifier carry it.
  LunHarness named("ram:size=4M,serial=volume-7");
  named.clear_ua();
  std::vector<uint8_t> c = {op::kInquiry, 0x01, 0x80, 0x00, 0xff, 0};
  Reply r = named.in(c, 255);
  ASSERT_TRUE(r.good());
  EXPECT_EQ(std::string(r.data.begin() + 4, r.data.end()), "volume-7");
  c[2] = 0x83;
  r = named.in(c, 255);
  ASSERT_TRUE(r.good());
  const std::string page(r.data.begin(), r.data.end());
  EXPECT_NE(page.find("VCP     volume-7"), std::string::npos);
}

TEST_F(InfoTest, DeviceIdentification) {
  Reply r = vpd(0x83);
  ASSERT_TRUE(r.good());
  bool naa = false, t10 = false, relport = false, port_name = false, target_name = false;
  for (size_t off = 4; off + 4 <= r.data.size();) {
    const uint8_t* d = &r.data[off];
    uint8_t assoc = (d[1] >> 4) & 3, type = d[1] & 0x0f, len = d[3];
    if (assoc == 0 && type == 3) naa = (d[4] >> 4) == 3 && len == 8;
    if (assoc == 0 && type == 1) t10 = std::string(d + 4, d + 12) == "VCP     ";
    if (assoc == 1 && type == 4) relport = load_be16(d + 6) == 1 && (d[0] >> 4) == 5 && (d[1] & 0x80);
    if (assoc == 1 && type == 8) port_name = std::string(reinterpret_cast<const char*>(d + 4)) == "iqn.2024-01.vcp:target,t,0x0001";
    if (assoc == 2 && type == 8) target_name = std::string(reinterpret_cast<const char*>(d + 4)) == "iqn.2024-01.vcp:target";
    if (type == 8) {
      EXPECT_EQ(len % 4, 0);
    }
    off += 4 + len;
  }
  EXPECT_TRUE(naa);
  EXPECT_TRUE(t10);
  EXPECT_TRUE(relport);
  EXPECT_TRUE(port_name);
  EXPECT_TRUE(target_name);
}

TEST_F(InfoTest, BlockLimitsAndProvisioning) {
  Reply b0 = vpd(0xb0);
  ASSERT_EQ(b0.data.size(), 64u);
  EXPECT_EQ(b0.data[4] & 1, 1);  // WSNZ
  EXPECT_EQ(b0.data[5], 255);    // MAXIMUM COMPARE AND WRITE LENGTH
  EXPECT_EQ(load_be32(&b0.data[20]), 1u << 20);
  EXPECT_EQ(load_be32(&b0.data[24]), 256u);
  EXPECT_EQ(load_be64(&b0.data[36]), 1u << 22);
  Reply b1 = vpd(0xb1);
  EXPECT_EQ(load_be16(&b1.data[4]), 1);  // non-rotating
  Reply b2 = vpd(0xb2);
  EXPECT_EQ(b2.data[5] & 0xe0, 0xe0);  // LBPU, LBPWS, LBPWS10
  EXPECT_EQ((b2.data[5] >> 2) & 7, 1);  // LBPRZ: unmapped blocks read zero
  LunConfig cfg;
  cfg.thin_provisioning = false;
  LunHarness thick("ram:size=1M", cfg);
  thick.clear_ua();
  std::vector<uint8_t> c = {op::kInquiry, 0x01, 0xb2, 0, 255, 0};
  EXPECT_TRUE(thick.in(c, 255).invalid_field(2));
  Reply b0t = thick.in({op::kInquiry, 0x01, 0xb0, 0, 255, 0}, 255);
  EXPECT_EQ(load_be32(&b0t.data[20]), 0u);
}

TEST_F(InfoTest, ReadCapacity) {
  Reply r = h.in({op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8);
  ASSERT_TRUE(r.good());
  EXPECT_EQ(load_be32(&r.data[0]), 8191u);
  EXPECT_EQ(load_be32(&r.data[4]), 512u);
  EXPECT_TRUE(h.in({op::kReadCapacity10, 0, 0, 0, 0, 1, 0, 0, 0, 0}, 8).invalid_field(2));  // LBA without PMI
  std::vector<uint8_t> c(16, 0);
  c[0] = op::kServiceActionIn16;
  c[1] = sa::kReadCapacity16;
  store_be32(&c[10], 32);
  r = h.in(c, 32);
  ASSERT_TRUE(r.good());
  EXPECT_EQ(load_be64(&r.data[0]), 8191u);
  EXPECT_EQ(load_be32(&r.data[8]), 512u);
  EXPECT_EQ(r.data[14] & 0xc0, 0xc0);  // LBPME, LBPRZ
  EXPECT_EQ(r.data[13], 0u);  // a ram disk: physical blocks are logical ones
  EXPECT_EQ(load_be16(&r.data[14]) & 0x3fff, 0u);  // LOWEST ALIGNED LBA
  store_be32(&c[10], 12);  // allocation length cuts the data
  r = h.in(c, 32);
  EXPECT_EQ(r.data.size(), 12u);
  EXPECT_EQ(r.residual_kind, Residual::underflow);
}

TEST(ReadCapacity16, SaysHowManyLogicalBlocksMakeAPhysicalOne) {
  // 512-byte blocks on 4 KiB physical ones (a 512e disk, a file in the page cache): exponent
  // 3, so that initiators align to 4 KiB; the same size: 0.
  for (auto [spec, exponent] : {std::pair<const char*, uint8_t>{"ram:size=4M,physical_block_size=4k", 3},
                                {"ram:size=4M,block_size=4k,physical_block_size=4k", 0},
                                {"ram:size=4M,block_size=1k,physical_block_size=64k", 6}}) {
    LunHarness h(spec);
    h.clear_ua();
    std::vector<uint8_t> c(16, 0);
    c[0] = op::kServiceActionIn16;
    c[1] = sa::kReadCapacity16;
    store_be32(&c[10], 32);
    Reply r = h.in(c, 32);
    ASSERT_TRUE(r.good()) << spec;
    EXPECT_EQ(r.data[13], exponent) << spec;
  }
}

TEST_F(InfoTest, GetLbaStatus) {
  std::vector<uint8_t> c(16, 0);
  c[0] = op::kServiceActionIn16;
  c[1] = sa::kGetLbaStatus;
  store_be64(&c[2], 100);
  store_be32(&c[10], 24);
  Reply r = h.in(c, 24);
  ASSERT_TRUE(r.good());
  ASSERT_EQ(r.data.size(), 24u);
  EXPECT_EQ(load_be32(&r.data[0]), 20u);
  EXPECT_EQ(load_be64(&r.data[8]), 100u);
  EXPECT_EQ(load_be32(&r.data[16]), 8192u - 100);
  EXPECT_EQ(r.data[20] & 0x0f, 0);  // mapped or unknown
  store_be64(&c[2], 8192);
  EXPECT_TRUE(h.in(c, 24).is(SenseKey::illegal_request, Asc::lba_out_of_range));
}

TEST_F(InfoTest, ReportLuns) {
  std::vector<uint8_t> c(12, 0);
  c[0] = op::kReportLuns;
  store_be32(&c[6], 256);
  Reply r = h.in(c, 256);
  ASSERT_TRUE(r.good());
  EXPECT_EQ(load_be32(&r.data[0]), 8u);
  h.lun().set_reported_luns({0, 1, 7, 300}, false);
  r = h.in(c, 256);
  EXPECT_EQ(load_be32(&r.data[0]), 32u);
  EXPECT_EQ(r.data[8 + 16 + 1], 7);
  EXPECT_EQ(r.data[8 + 24], 0x41);
  c[2] = 0x01;  // well-known LUNs only
  r = h.in(c, 256);
  EXPECT_EQ(load_be32(&r.data[0]), 0u);
  c[2] = 0x05;
  EXPECT_TRUE(h.in(c, 256).invalid_field(2));
}

TEST_F(InfoTest, ModeSenseAllPages) {
  Reply r6 = h.in({op::kModeSense6, 0, 0x3f, 0, 255, 0}, 255);
  ASSERT_TRUE(r6.good());
  EXPECT_EQ(r6.data[0] + 1u, r6.data.size());
  EXPECT_EQ(r6.data[3], 8);  // block descriptor
  EXPECT_EQ(load_be24(&r6.data[4 + 5]), 512u);
  EXPECT_EQ(r6.data[2] & 0x10, 0x10);  // DPOFUA
  size_t off = 12;
  std::vector<uint8_t> codes;
  while (off < r6.data.size()) {
    codes.push_back(r6.data[off] & 0x3f);
    off += 2 + r6.data[off + 1];
  }
  EXPECT_EQ(codes, (std::vector<uint8_t>{0x08, 0x0a, 0x1c}));
  EXPECT_EQ(off, r6.data.size());

  Reply dbd = h.in({op::kModeSense6, 0x08, 0x3f, 0, 255, 0}, 255);
  EXPECT_EQ(dbd.data[3], 0);
  EXPECT_EQ(dbd.data.size(), r6.data.size() - 8);

  std::vector<uint8_t> c10 = {op::kModeSense10, 0x10, 0x3f, 0, 0, 0, 0, 0x01, 0x00, 0};  // LLBAA
  Reply r10 = h.in(c10, 256);
  ASSERT_TRUE(r10.good());
  EXPECT_EQ(load_be16(&r10.data[0]) + 2u, r10.data.size());
  EXPECT_EQ(r10.data[4] & 1, 1);  // LONGLBA
  EXPECT_EQ(load_be16(&r10.data[6]), 16);
  EXPECT_EQ(load_be64(&r10.data[8]), 8192u);
  EXPECT_EQ(load_be32(&r10.data[8 + 12]), 512u);
  Reply ff = h.in({op::kModeSense6, 0x08, 0x3f, 0xff, 255, 0}, 255);  // all pages and subpages
  EXPECT_TRUE(ff.good());
}

TEST_F(InfoTest, ModeSensePageControl) {
  Reply cur = h.in({op::kModeSense6, 0x08, 0x08, 0, 255, 0}, 255);
  ASSERT_TRUE(cur.good());
  EXPECT_EQ(cur.data[4], 0x08);
  EXPECT_EQ(cur.data[5], 0x12);
  Reply chg = h.in({op::kModeSense6, 0x08, 0x48, 0, 255, 0}, 255);
  EXPECT_EQ(chg.data[4 + 2], 0x04);  // WCE changeable
  Reply ctl = h.in({op::kModeSense6, 0x08, 0x4a, 0, 255, 0}, 255);
  EXPECT_TRUE(std::all_of(ctl.data.begin() + 6, ctl.data.end(), [](uint8_t b) { return b == 0; }));
  EXPECT_TRUE(h.in({op::kModeSense6, 0x08, 0x88, 0, 255, 0}, 255).good());  // default
  EXPECT_TRUE(h.in({op::kModeSense6, 0x08, 0xc8, 0, 255, 0}, 255)
                  .is(SenseKey::illegal_request, Asc::saving_parameters_not_supported));
  EXPECT_TRUE(h.in({op::kModeSense6, 0x08, 0x19, 0, 255, 0}, 255).invalid_field(2));  // no such page
  EXPECT_TRUE(h.in({op::kModeSense6, 0x08, 0x08, 0x01, 255, 0}, 255).invalid_field(3));  // no subpages
  Reply ctl_cur = h.in({op::kModeSense6, 0x08, 0x0a, 0, 255, 0}, 255);
  EXPECT_EQ(ctl_cur.data[4], 0x0a);
  EXPECT_EQ(ctl_cur.data[5], 0x0a);
  Reply ie = h.in({op::kModeSense6, 0x08, 0x1c, 0, 255, 0}, 255);
  EXPECT_EQ(ie.data[4], 0x1c);
}

std::vector<uint8_t> caching_page(bool wce) {
  std::vector<uint8_t> p(4 + 20, 0);
  p[4] = 0x08;
  p[5] = 0x12;
  if (wce) p[6] = 0x04;
  return p;
}

TEST_F(InfoTest, ModeSelectWce) {
  bool wce = h.lun().mode().wce;
  auto p = caching_page(!wce);
  EXPECT_TRUE(h.out({op::kModeSelect6, 0x10, 0, 0, static_cast<uint8_t>(p.size()), 0}, p).good());
  EXPECT_EQ(h.lun().mode().wce, !wce);
  Reply cur = h.in({op::kModeSense6, 0x08, 0x08, 0, 255, 0}, 255);
  EXPECT_EQ((cur.data[6] & 0x04) != 0, !wce);
  // MODE SELECT(10) with a block descriptor of the right block length.
  std::vector<uint8_t> p10(8 + 8 + 20, 0);
  store_be16(&p10[6], 8);
  store_be24(&p10[8 + 5], 512);
  p10[16] = 0x08;
  p10[17] = 0x12;
  if (wce) p10[18] = 0x04;
  std::vector<uint8_t> c10 = {op::kModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, static_cast<uint8_t>(p10.size()), 0};
  EXPECT_TRUE(h.out(c10, p10).good());
  EXPECT_EQ(h.lun().mode().wce, wce);
}

TEST_F(InfoTest, ModeSelectErrors) {
  auto p = caching_page(true);
  uint8_t n = static_cast<uint8_t>(p.size());
  EXPECT_TRUE(h.out({op::kModeSelect6, 0x11, 0, 0, n, 0}, p).invalid_field(1));  // SP
  auto bad = p;
  bad[6] |= 0x01;  // RCD is not changeable
  Reply r = h.out({op::kModeSelect6, 0x10, 0, 0, n, 0}, bad);
  EXPECT_TRUE(r.is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
  EXPECT_EQ(load_be16(&r.sense[16]), 6);
  bad = p;
  bad[5] = 0x10;  // wrong page length
  EXPECT_TRUE(h.out({op::kModeSelect6, 0x10, 0, 0, n, 0}, bad).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
  bad = p;
  bad[4] = 0x19;  // unknown page
  EXPECT_TRUE(h.out({op::kModeSelect6, 0x10, 0, 0, n, 0}, bad).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
  std::vector<uint8_t> shortp(p.begin(), p.begin() + 10);
  EXPECT_TRUE(h.out({op::kModeSelect6, 0x10, 0, 0, 10, 0}, shortp).is(SenseKey::illegal_request, Asc::parameter_list_length_error));
  std::vector<uint8_t> bd(4 + 8, 0);
  bd[3] = 8;
  store_be24(&bd[4 + 5], 4096);  // block length we do not have
  EXPECT_TRUE(h.out({op::kModeSelect6, 0x10, 0, 0, 12, 0}, bd).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
  EXPECT_TRUE(h.none({op::kModeSelect6, 0x10, 0, 0, 0, 0}).good());  // empty list
  // A control page identical to the current one is accepted.
  Reply ctl = h.in({op::kModeSense6, 0x08, 0x0a, 0, 255, 0}, 255);
  std::vector<uint8_t> cp(4, 0);
  cp.insert(cp.end(), ctl.data.begin() + 4, ctl.data.end());
  EXPECT_TRUE(h.out({op::kModeSelect6, 0x10, 0, 0, static_cast<uint8_t>(cp.size()), 0}, cp).good());
}

std::vector<uint8_t> rsoc(uint8_t options, uint8_t opcode = 0, uint16_t sa = 0, bool rctd = false) {
  std::vector<uint8_t> c(12, 0);
  c[0] = op::kMaintenanceIn;
  c[1] = sa::kReportSupportedOpcodes;
  c[2] = static_cast<uint8_t>(options | (rctd ? 0x80 : 0));
  c[3] = opcode;
  store_be16(&c[4], sa);
  store_be32(&c[6], 4096);
  return c;
}

TEST_F(InfoTest, ReportSupportedOpcodesAll) {
  Reply r = h.in(rsoc(0), 4096);
  ASSERT_TRUE(r.good());
  uint32_t len = load_be32(&r.data[0]);
  EXPECT_EQ(len + 4, r.data.size());
  EXPECT_EQ(len % 8, 0u);
  bool read16 = false, rc16 = false, unmap = false;
  for (size_t off = 4; off < r.data.size(); off += 8) {
    if (r.data[off] == op::kRead16) read16 = load_be16(&r.data[off + 6]) == 16;
    if (r.data[off] == op::kServiceActionIn16 && load_be16(&r.data[off + 2]) == 0x10) rc16 = r.data[off + 5] & 1;
    if (r.data[off] == op::kUnmap) unmap = true;
  }
  EXPECT_TRUE(read16 && rc16 && unmap);
  Reply t = h.in(rsoc(0, 0, 0, true), 4096);
  EXPECT_EQ(load_be32(&t.data[0]) % 20, 0u);  // with timeout descriptors
}

TEST_F(InfoTest, ReportSupportedOpcodesOne) {
  Reply r = h.in(rsoc(1, op::kRead10), 4096);
  ASSERT_TRUE(r.good());
  EXPECT_EQ(r.data[1] & 7, 3);
  EXPECT_EQ(load_be16(&r.data[2]), 10);
  EXPECT_EQ(r.data[4], op::kRead10);
  EXPECT_EQ(r.data.size(), 14u);
  r = h.in(rsoc(1, 0xc0), 4096);
  EXPECT_EQ(r.data[1] & 7, 1);  // not supported
  EXPECT_TRUE(h.in(rsoc(1, op::kServiceActionIn16), 4096).invalid_field(3));  // has service actions
  r = h.in(rsoc(2, op::kServiceActionIn16, 0x10), 4096);
  EXPECT_EQ(r.data[1] & 7, 3);
  EXPECT_EQ(r.data[4], op::kServiceActionIn16);
  EXPECT_EQ(r.data[5], 0x10);
  EXPECT_TRUE(h.in(rsoc(2, op::kRead10), 4096).invalid_field(3));
  r = h.in(rsoc(3, op::kRead10), 4096);
  EXPECT_EQ(r.data[1] & 7, 3);
  r = h.in(rsoc(1, op::kRead10, 0, true), 4096);
  EXPECT_EQ(r.data[1] & 0x80, 0x80);
  EXPECT_EQ(r.data.size(), 14u + 12);
  EXPECT_TRUE(h.in(rsoc(5), 4096).invalid_field(2));
}

TEST_F(InfoTest, ReportSupportedTmfs) {
  std::vector<uint8_t> c(12, 0);
  c[0] = op::kMaintenanceIn;
  c[1] = sa::kReportSupportedTmfs;
  store_be32(&c[6], 16);
  Reply r = h.in(c, 16);
  ASSERT_TRUE(r.good());
  ASSERT_EQ(r.data.size(), 4u);
  EXPECT_EQ(r.data[0] & 0xc8, 0xc8);  // ABORT TASK, ABORT TASK SET, LU RESET
  c[2] = 0x80;
  r = h.in(c, 16);
  EXPECT_EQ(r.data.size(), 16u);
  EXPECT_EQ(r.data[3], 0x0c);
}

TEST_F(InfoTest, StartStopAndPreventAllow) {
  EXPECT_TRUE(h.none({op::kStartStopUnit, 0, 0, 0, 0x01, 0}).good());
  EXPECT_TRUE(h.none({op::kStartStopUnit, 0x01, 0, 0, 0x00, 0}).good());
  EXPECT_TRUE(h.none({op::kStartStopUnit, 0, 0, 0, 0x03, 0}).good());  // LOEJ on a fixed disk: nothing to do
  EXPECT_TRUE(h.none({op::kStartStopUnit, 0, 0, 0, 0x50, 0}).invalid_field(4));
  EXPECT_TRUE(h.none({op::kPreventAllow, 0, 0, 0, 1, 0}).good());
  EXPECT_TRUE(h.none({op::kPreventAllow, 0, 0, 0, 0, 0}).good());
  EXPECT_TRUE(h.none({op::kPreventAllow, 0, 0, 0, 2, 0}).invalid_field(4));
}

}  // namespace
}  // namespace vcp::scsi::test
