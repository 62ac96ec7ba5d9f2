// Dispatch, unit attentions, residuals, task management and absent LUNs.
#include <gtest/gtest.h>

#include "harness.hpp"

namespace vcp::scsi::test {
namespace {

class LunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h.clear_ua(&h.a);
    h.clear_ua(&h.b);
  }
  LunHarness h;
};

TEST(LunUnitAttention, FirstAccessReportsPowerOnOncePerNexus) {
  LunHarness h;
  Reply r = h.none(cdb6(op::kTestUnitReady, 0, 0));
  EXPECT_TRUE(r.is(SenseKey::unit_attention, Asc::power_on_reset));
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0)).good());
  // The other nexus has its own.
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &h.b).is(SenseKey::unit_attention, Asc::power_on_reset));
}

TEST(LunUnitAttention, InquiryReportLunsAndRequestSenseAreNotBlocked) {
  LunHarness h;
  EXPECT_TRUE(h.in(cdb6(op::kInquiry, 0, 96), 96).good());
  std::vector<uint8_t> rl(12, 0);
  rl[0] = op::kReportLuns;
  store_be32(&rl[6], 64);
  EXPECT_TRUE(h.in(rl, 64).good());
  // REQUEST SENSE returns the unit attention as data and clears it.
  Reply r = h.in(cdb6(op::kRequestSense, 0, 18), 18);
  ASSERT_TRUE(r.good());
  ASSERT_EQ(r.data.size(), 18u);
  EXPECT_EQ(r.data[0], 0x70);
  EXPECT_EQ(r.data[2], 0x06);
  EXPECT_EQ(r.data[12], 0x29);
  EXPECT_EQ(r.data[13], 0x00);
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0)).good());
  r = h.in(cdb6(op::kRequestSense, 0, 18), 18);
  EXPECT_EQ(r.data[2], 0x00);
  EXPECT_EQ(r.data[12], 0x00);
}

TEST(LunUnitAttention, UnknownOpcodeStillReportsUnitAttentionFirst) {
  LunHarness h;
  EXPECT_TRUE(h.none({0xc0, 0, 0, 0, 0, 0}).is(SenseKey::unit_attention, Asc::power_on_reset));
  EXPECT_TRUE(h.none({0xc0, 0, 0, 0, 0, 0}).is(SenseKey::illegal_request, Asc::invalid_opcode));
}

TEST_F(LunTest, UnitAttentionsAreReportedOldestFirstOneAtATime) {
  h.lun().set_reported_luns({0, 1}, true);
  auto p = std::vector<uint8_t>(4 + 20, 0);
  p[4] = 0x08;
  p[5] = 0x12;
  if (!h.lun().mode().wce) p[6] = 0x04;
  h.clear_ua(&h.b);
  ASSERT_TRUE(h.out({op::kModeSelect6, 0x10, 0, 0, 24, 0}, p, &h.b).good());
  Reply r1 = h.none(cdb6(op::kTestUnitReady, 0, 0));
  Reply r2 = h.none(cdb6(op::kTestUnitReady, 0, 0));
  EXPECT_TRUE(r1.is(SenseKey::unit_attention, Asc::reported_luns_data_changed));
  EXPECT_TRUE(r2.is(SenseKey::unit_attention, Asc::mode_parameters_changed));
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0)).good());
}

TEST_F(LunTest, ANewSessionOfTheSameInitiatorPortKeepsItsState) {
  h.lun().nexus_lost(h.a);
  ItNexus again = h.a;
  again.id = 77;
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &again).good());  // no second power-on
  ItNexus other_isid = h.a;
  other_isid.id = 78;
  other_isid.isid = 0x23d000000099;
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &other_isid).is(SenseKey::unit_attention, Asc::power_on_reset));
}

TEST_F(LunTest, CdbShorterThanItsOpcodeNeeds) {
  ScsiTask t;
  auto c = cdb16(op::kRead16, 0, 1);
  std::copy(c.begin(), c.end(), t.cdb);
  t.cdb_len = 10;
  t.nexus = &h.a;
  bool done = false;
  t.ctx = &done;
  t.done = [](ScsiTask* x) { *static_cast<bool*>(x->ctx) = true; };
  h.lun().execute(&t);
  ASSERT_TRUE(done);
  EXPECT_EQ(t.status, Status::check_condition);
  EXPECT_EQ(t.sense[12], 0x20);
}

TEST_F(LunTest, InvalidOpcode) {
  EXPECT_TRUE(h.none({0xc0, 0, 0, 0, 0, 0}).is(SenseKey::illegal_request, Asc::invalid_opcode));
  EXPECT_TRUE(h.none({0x04, 0, 0, 0, 0, 0}).is(SenseKey::illegal_request, Asc::invalid_opcode));  // FORMAT UNIT
}

TEST_F(LunTest, UnknownServiceActionIsInvalidField) {
  std::vector<uint8_t> c(16, 0);
  c[0] = op::kServiceActionIn16;
  c[1] = 0x1f;
  Reply r = h.in(c, 32);
  EXPECT_TRUE(r.invalid_field(1));
  EXPECT_EQ(r.sense[15] & 0x0f, 0x08 | 4);  // BPV, bit 4
}

TEST_F(LunTest, NacaAndLinkBitsAreRejected) {
  auto c = cdb6(op::kTestUnitReady, 0, 0);
  c[5] = 0x04;
  EXPECT_TRUE(h.none(c).invalid_field(5));
  c[5] = 0x01;
  EXPECT_TRUE(h.none(c).invalid_field(5));
}

TEST_F(LunTest, FixedSenseFormat) {
  Reply r = h.in(cdb16(op::kRead16, h.lun().blocks(), 1), 512);
  ASSERT_EQ(r.sense.size(), kFixedSenseLen);
  EXPECT_EQ(r.sense[0], 0x70);
  EXPECT_EQ(r.sense[7], 10);
  EXPECT_TRUE(r.is(SenseKey::illegal_request, Asc::lba_out_of_range));
}

TEST_F(LunTest, ModeSelectRaisesModeParametersChangedForOtherNexuses) {
  Reply sense = h.in({op::kModeSense6, 0x08, 0x08, 0, 255, 0}, 255);
  ASSERT_TRUE(sense.good());
  std::vector<uint8_t> p(4 + 20, 0);
  std::copy(sense.data.begin() + 4, sense.data.begin() + 24, p.begin() + 4);
  p[4] &= 0x3f;
  p[4 + 2] ^= 0x04;  // flip WCE
  EXPECT_TRUE(h.out({op::kModeSelect6, 0x10, 0, 0, static_cast<uint8_t>(p.size()), 0}, p).good());
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0)).good());
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &h.b).is(SenseKey::unit_attention, Asc::mode_parameters_changed));
}

TEST_F(LunTest, ReportedLunsChangedIsClearedByReportLuns) {
  h.lun().set_reported_luns({0, 1, 2}, true);
  std::vector<uint8_t> rl(12, 0);
  rl[0] = op::kReportLuns;
  store_be32(&rl[6], 64);
  Reply r = h.in(rl, 64);
  ASSERT_TRUE(r.good());
  EXPECT_EQ(load_be32(&r.data[0]), 24u);
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0)).good());
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &h.b).is(SenseKey::unit_attention, Asc::reported_luns_data_changed));
}

TEST_F(LunTest, LunResetEstablishesUnitAttentionAndKeepsReservations) {
  std::vector<uint8_t> reg(24, 0);
  store_be64(&reg[8], 0xabc);
  EXPECT_TRUE(h.out({op::kPrOut, 0, 0, 0, 0, 0, 0, 0, 24, 0}, reg).good());
  h.lun().reset(ResetKind::lun_reset);
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0)).is(SenseKey::unit_attention, Asc::bus_device_reset_function));
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0)).good());
  EXPECT_EQ(h.lun().reservations().registrations(), 1u);
  h.lun().reset(ResetKind::target_reset);
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &h.b).is(SenseKey::unit_attention, Asc::power_on_reset));
}

TEST_F(LunTest, ResidualsForDataIn) {
  // INQUIRY returns less than asked for: underflow of the difference.
  Reply r = h.in(cdb6(op::kInquiry, 0, 255), 255);
  ASSERT_TRUE(r.good());
  EXPECT_EQ(r.residual_kind, Residual::underflow);
  EXPECT_EQ(r.residual, 255u - r.data.size());
  // Allocation length larger than the transport's buffer: overflow.
  r = h.in(cdb6(op::kInquiry, 0, 36), 10);
  EXPECT_EQ(r.data.size(), 10u);
  EXPECT_EQ(r.residual_kind, Residual::overflow);
  EXPECT_EQ(r.residual, 26u);
  // Exact.
  r = h.in(cdb6(op::kInquiry, 0, 36), 36);
  EXPECT_EQ(r.residual_kind, Residual::none);
  // No data expected at all.
  r = h.none(cdb6(op::kInquiry, 0, 36));
  EXPECT_EQ(r.residual_kind, Residual::overflow);
  EXPECT_EQ(r.residual, 36u);
}

TEST_F(LunTest, ResidualsForRead) {
  h.write_blocks(0, pattern(1024, 1));
  Reply r = h.in(cdb10(op::kRead10, 0, 1), 0);  // EDTL 0
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.residual_kind, Residual::overflow);
  EXPECT_EQ(r.residual, 512u);
  r = h.in(cdb10(op::kRead10, 0, 1), 10000);
  EXPECT_EQ(r.residual_kind, Residual::underflow);
  EXPECT_EQ(r.residual, 10000u - 512);
  EXPECT_EQ(r.data.size(), 512u);
  r = h.in(cdb10(op::kRead10, 0, 1), 200);  // cuts a block: the first 200 bytes arrive
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.residual_kind, Residual::overflow);
  EXPECT_EQ(r.residual, 312u);
  auto want = pattern(1024, 1);
  EXPECT_EQ(r.data, std::vector<uint8_t>(want.begin(), want.begin() + 200));
  r = h.in(cdb10(op::kRead10, 0, 2), 712);
  EXPECT_EQ(r.data, std::vector<uint8_t>(want.begin(), want.begin() + 712));
  EXPECT_EQ(r.residual, 312u);
}

TEST_F(LunTest, ResidualsForWrite) {
  h.write_blocks(0, std::vector<uint8_t>(1024, 'a'));
  // EDTL 0: nothing written, GOOD, overflow of one block.
  Reply r = h.run(cdb10(op::kWrite10, 0, 1), DataDir::out, 0, {});
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.residual_kind, Residual::overflow);
  EXPECT_EQ(r.residual, 512u);
  // EDTL two blocks, CDB one block: only one block is written.
  r = h.out(cdb10(op::kWrite10, 0, 1), std::vector<uint8_t>(1024, 'b'));
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.residual_kind, Residual::underflow);
  EXPECT_EQ(r.residual, 512u);
  auto d = h.read_blocks(0, 2);
  EXPECT_EQ(d[0], 'b');
  EXPECT_EQ(d[511], 'b');
  EXPECT_EQ(d[512], 'a');
  // EDTL one block, CDB two blocks: only the first block is written.
  r = h.out(cdb10(op::kWrite10, 0, 2), std::vector<uint8_t>(512, 'c'));
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.residual_kind, Residual::overflow);
  EXPECT_EQ(r.residual, 512u);
  d = h.read_blocks(0, 2);
  EXPECT_EQ(d[0], 'c');
  EXPECT_EQ(d[512], 'a');
  // EDTL 200: partial block is not written.
  r = h.out(cdb10(op::kWrite10, 0, 1), std::vector<uint8_t>(200, 'd'));
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.residual, 312u);
  EXPECT_EQ(h.read_blocks(0, 1)[0], 'c');
}

TEST_F(LunTest, TaskSetFull) {
  LunConfig cfg;
  cfg.max_tasks = 0;
  LunHarness small("ram:size=1M", cfg);
  EXPECT_EQ(small.none(cdb6(op::kTestUnitReady, 0, 0)).status, Status::task_set_full);
}

TEST(LunWithoutLun, AnswersForAnAbsentLun) {
  auto call = [](std::vector<uint8_t> cdb, uint32_t edtl, ScsiTask* t, std::vector<uint8_t>* buf) {
    std::copy(cdb.begin(), cdb.end(), t->cdb);
    t->cdb_len = 16;
    t->dir = DataDir::in;
    t->expected_length = edtl;
    buf->assign(edtl, 0);
    static iovec iov;
    iov = {buf->data(), buf->size()};
    t->iov = &iov;
    t->iovcnt = 1;
    t->done = [](ScsiTask*) {};
    respond_without_lun(t, {0, 3});
  };
  ScsiTask t;
  std::vector<uint8_t> buf;
  call(cdb6(op::kInquiry, 0, 36), 36, &t, &buf);
  EXPECT_EQ(t.status, Status::good);
  EXPECT_EQ(buf[0], 0x7f);
  ScsiTask t2;
  std::vector<uint8_t> rl(12, 0);
  rl[0] = op::kReportLuns;
  store_be32(&rl[6], 64);
  call(rl, 64, &t2, &buf);
  EXPECT_EQ(t2.status, Status::good);
  EXPECT_EQ(load_be32(&buf[0]), 16u);
  EXPECT_EQ(buf[8 + 8 + 1], 3);
  ScsiTask t3;
  call(cdb10(op::kRead10, 0, 1), 512, &t3, &buf);
  EXPECT_EQ(t3.status, Status::check_condition);
  EXPECT_EQ(t3.sense[2], 0x05);
  EXPECT_EQ(t3.sense[12], 0x25);
  ScsiTask t4;
  call(cdb6(op::kRequestSense, 0, 18), 18, &t4, &buf);
  EXPECT_EQ(t4.status, Status::good);
  EXPECT_EQ(buf[12], 0x25);
}

TEST(LunEncoding, LunAddressing) {
  uint8_t e[8];
  encode_lun(5, e);
  EXPECT_EQ(e[0], 0);
  EXPECT_EQ(e[1], 5);
  EXPECT_EQ(decode_lun(e), 5u);
  encode_lun(300, e);
  EXPECT_EQ(e[0], 0x41);
  EXPECT_EQ(e[1], 0x2c);
  EXPECT_EQ(decode_lun(e), 300u);
}

TEST(LunSense, FieldPointerEncoding) {
  uint8_t s[kFixedSenseLen];
  invalid_cdb_field(2, 5).encode(s);
  EXPECT_EQ(s[15], 0x80 | 0x40 | 0x08 | 5);
  EXPECT_EQ(load_be16(s + 16), 2);
  invalid_param_field(20).encode(s);
  EXPECT_EQ(s[15], 0x80);
  EXPECT_EQ(load_be16(s + 16), 20);
  EXPECT_EQ(s[12], 0x26);
}

}  // namespace
}  // namespace vcp::scsi::test
