// The data path over ram and file backends: READ/WRITE in every size, VERIFY, WRITE SAME,
// UNMAP, COMPARE AND WRITE, SYNCHRONIZE CACHE, and task management with I/O in flight.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "harness.hpp"

namespace vcp::scsi::test {
namespace {

class BlockIoTest : public ::testing::Test {
 protected:
  void SetUp() override { h.clear_ua(); }
  LunHarness h;  // ram, 4 MiB, 512-byte blocks: 8192 blocks
};

TEST_F(BlockIoTest, WriteThenReadInEverySize) {
  auto d = pattern(4096, 3);
  EXPECT_TRUE(h.out(cdb6(op::kWrite6, 10, 8), d).good());
  EXPECT_EQ(h.in(cdb6(op::kRead6, 10, 8), 4096).data, d);
  EXPECT_TRUE(h.out(cdb10(op::kWrite10, 100, 8), d).good());
  EXPECT_EQ(h.in(cdb10(op::kRead10, 100, 8), 4096).data, d);
  EXPECT_TRUE(h.out(cdb12(op::kWrite12, 200, 8), d).good());
  EXPECT_EQ(h.in(cdb12(op::kRead12, 200, 8), 4096).data, d);
  EXPECT_TRUE(h.out(cdb16(op::kWrite16, 300, 8), d).good());
  EXPECT_EQ(h.in(cdb16(op::kRead16, 300, 8), 4096).data, d);
  EXPECT_TRUE(h.out(cdb10(op::kWriteVerify10, 400, 8), d).good());
  EXPECT_TRUE(h.out(cdb12(op::kWriteVerify12, 410, 8), d).good());
  EXPECT_TRUE(h.out(cdb16(op::kWriteVerify16, 420, 8), d).good());
  EXPECT_EQ(h.read_blocks(420, 8), d);
}

// A transport that takes data-in in place (the iSCSI target without data digests) gets READs
// of whole blocks as a view of the ram disk: no backend request, no copy. Everything else
// still fills the task's buffers.
TEST_F(BlockIoTest, ReadsOfWholeBlocksComeInPlaceWhenTheTransportTakesThem) {
  auto d = pattern(8192, 21);
  h.write_blocks(64, d);
  h.accept_view = true;
  Reply r = h.in(cdb16(op::kRead16, 64, 16), 8192);
  EXPECT_TRUE(r.good());
  EXPECT_TRUE(r.in_place);
  EXPECT_EQ(r.data, d);
  r = h.in(cdb10(op::kRead10, 64, 16), 4000);  // EDTL cuts a block: the partial block is copied
  EXPECT_TRUE(r.good());
  EXPECT_FALSE(r.in_place);
  EXPECT_EQ(r.residual_kind, Residual::overflow);
  EXPECT_EQ(r.data, std::vector<uint8_t>(d.begin(), d.begin() + 4000));
  r = h.in(cdb16(op::kRead16, 64, 2), 4096);  // EDTL larger than the command: underflow, in place
  EXPECT_TRUE(r.in_place);
  EXPECT_EQ(r.residual_kind, Residual::underflow);
  EXPECT_EQ(r.data, std::vector<uint8_t>(d.begin(), d.begin() + 1024));
  // Out of range: sense, no data, no view.
  r = h.in(cdb16(op::kRead16, h.lun().blocks() - 1, 2), 1024);
  EXPECT_TRUE(r.is(SenseKey::illegal_request, Asc::lba_out_of_range));
  EXPECT_FALSE(r.in_place);
  EXPECT_TRUE(r.data.empty());
  // A later write shows through the next read's view.
  auto e = pattern(512, 77);
  EXPECT_TRUE(h.out(cdb16(op::kWrite16, 64, 1), e).good());
  r = h.in(cdb16(op::kRead16, 64, 1), 512);
  EXPECT_TRUE(r.in_place);
  EXPECT_EQ(r.data, e);
  h.accept_view = false;
  r = h.in(cdb16(op::kRead16, 64, 1), 512);
  EXPECT_FALSE(r.in_place);
  EXPECT_EQ(r.data, e);
}

TEST_F(BlockIoTest, Read6TransferLengthZeroMeans256Blocks) {
  auto d = pattern(256 * 512, 9);
  h.write_blocks(0, d);
  Reply r = h.in(cdb6(op::kRead6, 0, 0), 256 * 512);
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.data, d);
  EXPECT_EQ(r.residual_kind, Residual::none);
  EXPECT_TRUE(h.out(cdb6(op::kWrite6, 0, 0), pattern(256 * 512, 1)).good());
}

TEST_F(BlockIoTest, TransferLengthZeroIsNotAnError) {
  EXPECT_TRUE(h.in(cdb10(op::kRead10, 0, 0), 0).good());
  EXPECT_TRUE(h.in(cdb12(op::kRead12, 0, 0), 0).good());
  EXPECT_TRUE(h.in(cdb16(op::kRead16, 0, 0), 0).good());
  EXPECT_TRUE(h.none(cdb10(op::kWrite10, 0, 0)).good());
  EXPECT_TRUE(h.none(cdb16(op::kWrite16, 0, 0)).good());
  // ...but the LBA is still checked.
  uint64_t n = h.lun().blocks();
  EXPECT_TRUE(h.in(cdb16(op::kRead16, n, 0), 0).good());
  EXPECT_TRUE(h.in(cdb16(op::kRead16, n + 1, 0), 0).is(SenseKey::illegal_request, Asc::lba_out_of_range));
}

TEST_F(BlockIoTest, LbaOutOfRange) {
  uint64_t n = h.lun().blocks();
  EXPECT_TRUE(h.in(cdb10(op::kRead10, static_cast<uint32_t>(n - 1), 2), 1024).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  EXPECT_TRUE(h.in(cdb16(op::kRead16, ~uint64_t{0}, 1), 512).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  EXPECT_TRUE(h.in(cdb16(op::kRead16, n - 1, 1), 512).good());
  EXPECT_TRUE(h.out(cdb16(op::kWrite16, n, 1), pattern(512, 1)).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  EXPECT_TRUE(h.in(cdb6(op::kRead6, 0x1fffff, 1), 512).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  EXPECT_TRUE(h.none(cdb10(op::kVerify10, static_cast<uint32_t>(n), 1)).is(SenseKey::illegal_request, Asc::lba_out_of_range));
}

TEST_F(BlockIoTest, ProtectionFieldsAreRejected) {
  Reply r = h.in(cdb10(op::kRead10, 0, 1, 0x20), 512);
  EXPECT_TRUE(r.invalid_field(1));
  EXPECT_TRUE(h.out(cdb16(op::kWrite16, 0, 1, 0x40), pattern(512, 1)).invalid_field(1));
  EXPECT_TRUE(h.out(cdb16(op::kWriteVerify16, 0, 1, 0x04), pattern(512, 1)).invalid_field(1));  // BYTCHK 10b
}

TEST_F(BlockIoTest, DpoAndFuaAreAccepted) {
  auto d = pattern(512, 4);
  EXPECT_TRUE(h.out(cdb10(op::kWrite10, 0, 1, 0x18), d).good());
  EXPECT_TRUE(h.out(cdb16(op::kWrite16, 0, 1, 0x08), d).good());
  EXPECT_EQ(h.in(cdb10(op::kRead10, 0, 1, 0x18), 512).data, d);
}

TEST_F(BlockIoTest, MaximumTransferLength) {
  LunConfig cfg;
  cfg.max_transfer_blocks = 16;
  LunHarness small("ram:size=1M", cfg);
  small.clear_ua();
  EXPECT_TRUE(small.in(cdb10(op::kRead10, 0, 16), 16 * 512).good());
  EXPECT_TRUE(small.in(cdb10(op::kRead10, 0, 17), 17 * 512).invalid_field(7));
  EXPECT_TRUE(small.in(cdb16(op::kRead16, 0, 17), 17 * 512).invalid_field(10));
}

TEST_F(BlockIoTest, ScatteredBuffersAreUsedInPlace) {
  // 3 iovecs of odd sizes that together hold 4 blocks; blocks straddle iovec borders.
  auto d = pattern(2048, 5);
  std::vector<uint8_t> a(d.begin(), d.begin() + 700), b(d.begin() + 700, d.begin() + 1300), c(d.begin() + 1300, d.end());
  iovec iov[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  ScsiTask t;
  auto cdb = cdb16(op::kWrite16, 7, 4);
  std::copy(cdb.begin(), cdb.end(), t.cdb);
  t.cdb_len = 16;
  t.nexus = &h.a;
  t.dir = DataDir::out;
  t.expected_length = 2048;
  t.iov = iov;
  t.iovcnt = 3;
  bool done = false;
  t.ctx = &done;
  t.done = [](ScsiTask* x) { *static_cast<bool*>(x->ctx) = true; };
  h.lun().execute(&t);
  ASSERT_TRUE(done);
  EXPECT_EQ(t.status, Status::good);
  EXPECT_EQ(h.read_blocks(7, 4), d);
}

TEST_F(BlockIoTest, BackendReadOnly) {
  LunConfig cfg;
  cfg.read_only = true;
  LunHarness ro("ram:size=1M", cfg);
  ro.clear_ua();
  Reply r = ro.out(cdb10(op::kWrite10, 0, 1), pattern(512, 1));
  EXPECT_TRUE(r.is(SenseKey::data_protect, Asc::write_protected));
  EXPECT_TRUE(ro.out(cdb16(op::kWriteSame16, 0, 1), pattern(512, 1)).is(SenseKey::data_protect, Asc::write_protected));
  std::vector<uint8_t> caw = pattern(1024, 1);
  auto c = cdb16(op::kCompareAndWrite, 0, 0);
  c[13] = 1;
  EXPECT_TRUE(ro.out(c, caw).is(SenseKey::data_protect, Asc::write_protected));
  EXPECT_TRUE(ro.in(cdb10(op::kRead10, 0, 1), 512).good());
  // MODE SENSE reports WP.
  Reply m = ro.in({op::kModeSense6, 0, 0x3f, 0, 255, 0}, 255);
  EXPECT_EQ(m.data[2] & 0x80, 0x80);
}

TEST_F(BlockIoTest, VerifyBytchk) {
  auto d = pattern(2048, 11);
  h.write_blocks(50, d);
  EXPECT_TRUE(h.none(cdb10(op::kVerify10, 50, 4)).good());  // BYTCHK 0: medium check only
  EXPECT_TRUE(h.out(cdb10(op::kVerify10, 50, 4, 0x02), d).good());
  EXPECT_TRUE(h.out(cdb12(op::kVerify12, 50, 4, 0x02), d).good());
  EXPECT_TRUE(h.out(cdb16(op::kVerify16, 50, 4, 0x02), d).good());
  auto bad = d;
  bad[1500] ^= 0xff;
  Reply r = h.out(cdb10(op::kVerify10, 50, 4, 0x02), bad);
  EXPECT_TRUE(r.is(SenseKey::miscompare, Asc::miscompare_during_verify));
  EXPECT_EQ(r.sense[0], 0xf0);  // VALID: INFORMATION holds the offset
  EXPECT_EQ(r.information(), 1500u);
  EXPECT_TRUE(h.none(cdb10(op::kVerify10, 50, 4, 0x04)).invalid_field(1));  // BYTCHK 10b reserved
  // BYTCHK 11b: one block compared with every block.
  std::vector<uint8_t> same(512, 0x5a);
  h.write_blocks(60, std::vector<uint8_t>(3 * 512, 0x5a));
  EXPECT_TRUE(h.out(cdb10(op::kVerify10, 60, 3, 0x06), same).good());
  h.write_blocks(61, std::vector<uint8_t>(512, 0x5b));
  r = h.out(cdb10(op::kVerify10, 60, 3, 0x06), same);
  EXPECT_TRUE(r.is(SenseKey::miscompare, Asc::miscompare_during_verify));
  EXPECT_EQ(r.information(), 512u);
}

TEST_F(BlockIoTest, SynchronizeCache) {
  EXPECT_TRUE(h.none(cdb10(op::kSyncCache10, 0, 0)).good());
  EXPECT_TRUE(h.none(cdb16(op::kSyncCache16, 0, 100)).good());
  EXPECT_TRUE(h.none(cdb10(op::kSyncCache10, 0, 0, 0x02)).good());  // IMMED
  uint64_t n = h.lun().blocks();
  EXPECT_TRUE(h.none(cdb16(op::kSyncCache16, n, 0)).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  EXPECT_TRUE(h.none(cdb16(op::kSyncCache16, n - 1, 2)).is(SenseKey::illegal_request, Asc::lba_out_of_range));
}

TEST_F(BlockIoTest, PreFetch) {
  uint64_t n = h.lun().blocks();
  EXPECT_TRUE(h.none(cdb10(op::kPreFetch10, 0, 256)).good());
  EXPECT_TRUE(h.none(cdb10(op::kPreFetch10, static_cast<uint32_t>(n - 1), 1, 0x02)).good());  // IMMED
  EXPECT_TRUE(h.none(cdb16(op::kPreFetch16, n - 8, 8)).good());
  EXPECT_TRUE(h.none(cdb16(op::kPreFetch16, n, 1)).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  EXPECT_TRUE(h.none(cdb10(op::kPreFetch10, static_cast<uint32_t>(n) + 1, 0)).is(SenseKey::illegal_request, Asc::lba_out_of_range));
}

TEST_F(BlockIoTest, WriteSamePattern) {
  auto block = pattern(512, 21);
  EXPECT_TRUE(h.out(cdb10(op::kWriteSame10, 1000, 5), block).good());
  auto d = h.read_blocks(999, 7);
  for (int i = 1; i <= 5; ++i) EXPECT_TRUE(std::equal(block.begin(), block.end(), d.begin() + i * 512)) << i;
  EXPECT_FALSE(std::equal(block.begin(), block.end(), d.begin()));
  // Large enough to need more than one scratch-sized piece.
  EXPECT_TRUE(h.out(cdb16(op::kWriteSame16, 2000, 4096), block).good());
  d = h.read_blocks(2000 + 4095, 1);
  EXPECT_EQ(d, block);
}

TEST_F(BlockIoTest, WriteSameZeroUnmapAndNdob) {
  h.write_blocks(10, pattern(4 * 512, 1));
  EXPECT_TRUE(h.out(cdb16(op::kWriteSame16, 10, 2, 0x08), std::vector<uint8_t>(512, 0)).good());  // UNMAP
  auto d = h.read_blocks(10, 4);
  EXPECT_TRUE(std::all_of(d.begin(), d.begin() + 1024, [](uint8_t b) { return b == 0; }));
  EXPECT_NE(d[1024 + 3], 0);
  EXPECT_TRUE(h.none(cdb16(op::kWriteSame16, 12, 2, 0x09)).good());  // UNMAP + NDOB
  d = h.read_blocks(12, 2);
  EXPECT_TRUE(std::all_of(d.begin(), d.end(), [](uint8_t b) { return b == 0; }));
  h.write_blocks(20, pattern(512, 1));
  EXPECT_TRUE(h.none(cdb16(op::kWriteSame16, 20, 1, 0x01)).good());  // NDOB alone writes zeros
  d = h.read_blocks(20, 1);
  EXPECT_TRUE(std::all_of(d.begin(), d.end(), [](uint8_t b) { return b == 0; }));
  EXPECT_TRUE(h.out(cdb10(op::kWriteSame10, 20, 1, 0x08), std::vector<uint8_t>(512, 0)).good());
}

TEST_F(BlockIoTest, WriteSameLimits) {
  auto block = pattern(512, 2);
  EXPECT_TRUE(h.out(cdb10(op::kWriteSame10, 0, 0), block).invalid_field(7));  // WSNZ
  EXPECT_TRUE(h.out(cdb16(op::kWriteSame16, 0, 0), block).invalid_field(10));
  EXPECT_TRUE(h.out(cdb10(op::kWriteSame10, 0, 1, 0x10), block).invalid_field(1));  // ANCHOR
  EXPECT_TRUE(h.out(cdb10(op::kWriteSame10, 0, 1, 0x04), block).invalid_field(1));  // PBDATA
  EXPECT_TRUE(h.out(cdb10(op::kWriteSame10, 0, 1, 0x02), block).invalid_field(1));  // LBDATA
  uint64_t n = h.lun().blocks();
  EXPECT_TRUE(h.out(cdb16(op::kWriteSame16, n - 1, 2), block).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  LunConfig cfg;
  cfg.max_write_same_blocks = 8;
  LunHarness small("ram:size=1M", cfg);
  small.clear_ua();
  EXPECT_TRUE(small.out(cdb16(op::kWriteSame16, 0, 9), block).invalid_field(10));
  EXPECT_TRUE(small.out(cdb16(op::kWriteSame16, 0, 8), block).good());
}

std::vector<uint8_t> unmap_list(std::vector<std::pair<uint64_t, uint32_t>> ranges) {
  std::vector<uint8_t> p(8 + 16 * ranges.size(), 0);
  store_be16(&p[0], static_cast<uint16_t>(p.size() - 2));
  store_be16(&p[2], static_cast<uint16_t>(16 * ranges.size()));
  for (size_t i = 0; i < ranges.size(); ++i) {
    store_be64(&p[8 + 16 * i], ranges[i].first);
    store_be32(&p[8 + 16 * i + 8], ranges[i].second);
  }
  return p;
}

std::vector<uint8_t> unmap_cdb(size_t plen, uint8_t b1 = 0) {
  std::vector<uint8_t> c(10, 0);
  c[0] = op::kUnmap;
  c[1] = b1;
  store_be16(&c[7], static_cast<uint16_t>(plen));
  return c;
}

TEST_F(BlockIoTest, UnmapThenReadZeros) {
  h.write_blocks(100, pattern(8 * 512, 7));
  auto p = unmap_list({{100, 2}, {104, 3}, {0, 0}});
  EXPECT_TRUE(h.out(unmap_cdb(p.size()), p).good());
  auto d = h.read_blocks(100, 8);
  auto zero = [&](int blk) { return std::all_of(d.begin() + blk * 512, d.begin() + (blk + 1) * 512, [](uint8_t b) { return b == 0; }); };
  EXPECT_TRUE(zero(0));
  EXPECT_TRUE(zero(1));
  EXPECT_FALSE(zero(2));
  EXPECT_FALSE(zero(3));
  EXPECT_TRUE(zero(4));
  EXPECT_TRUE(zero(6));
  EXPECT_FALSE(zero(7));
}

TEST_F(BlockIoTest, UnmapParameterListChecks) {
  EXPECT_TRUE(h.none(unmap_cdb(0)).good());  // nothing to do
  auto p = unmap_list({{0, 1}});
  EXPECT_TRUE(h.out(unmap_cdb(p.size(), 0x01), p).invalid_field(1));  // ANCHOR
  EXPECT_TRUE(h.out(unmap_cdb(4), std::vector<uint8_t>(4, 0)).is(SenseKey::illegal_request, Asc::parameter_list_length_error));
  auto bad = p;
  store_be16(&bad[2], 32);  // claims two descriptors, carries one
  Reply r = h.out(unmap_cdb(bad.size()), bad);
  EXPECT_TRUE(r.is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
  EXPECT_EQ(r.sense[15] & 0x40, 0);  // C/D: the pointer is into the parameter list
  uint64_t n = h.lun().blocks();
  auto oob = unmap_list({{n - 1, 2}});
  EXPECT_TRUE(h.out(unmap_cdb(oob.size()), oob).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  LunConfig cfg;
  cfg.max_unmap_blocks = 4;
  cfg.max_unmap_descriptors = 2;
  LunHarness small("ram:size=1M", cfg);
  small.clear_ua();
  auto many = unmap_list({{0, 1}, {2, 1}, {4, 1}});
  EXPECT_TRUE(small.out(unmap_cdb(many.size()), many).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
  auto big = unmap_list({{0, 5}});
  EXPECT_TRUE(small.out(unmap_cdb(big.size()), big).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
}

TEST_F(BlockIoTest, UnmapIsAnInvalidOpcodeWithoutThinProvisioning) {
  LunConfig cfg;
  cfg.thin_provisioning = false;
  LunHarness thick("ram:size=1M", cfg);
  thick.clear_ua();
  auto p = unmap_list({{0, 1}});
  EXPECT_TRUE(thick.out(unmap_cdb(p.size()), p).is(SenseKey::illegal_request, Asc::invalid_opcode));
  EXPECT_TRUE(thick.out(cdb16(op::kWriteSame16, 0, 1, 0x08), std::vector<uint8_t>(512, 0)).invalid_field(1));
}

std::vector<uint8_t> caw_cdb(uint64_t lba, uint8_t n, uint8_t b1 = 0) {
  auto c = cdb16(op::kCompareAndWrite, lba, 0, b1);
  c[13] = n;
  return c;
}

TEST_F(BlockIoTest, CompareAndWrite) {
  auto old = pattern(1024, 31), fresh = pattern(1024, 77);
  h.write_blocks(40, old);
  std::vector<uint8_t> buf(old);
  buf.insert(buf.end(), fresh.begin(), fresh.end());
  EXPECT_TRUE(h.out(caw_cdb(40, 2), buf).good());
  EXPECT_EQ(h.read_blocks(40, 2), fresh);
  // Miscompare: the medium is untouched, INFORMATION is the offset of the first difference.
  Reply r = h.out(caw_cdb(40, 2), buf);
  EXPECT_TRUE(r.is(SenseKey::miscompare, Asc::miscompare_during_verify));
  EXPECT_EQ(r.sense[0] & 0x80, 0x80);
  size_t first = 0;
  while (old[first] == fresh[first]) ++first;
  EXPECT_EQ(r.information(), first);
  EXPECT_EQ(h.read_blocks(40, 2), fresh);
  auto late = fresh;
  late[700] ^= 1;
  std::vector<uint8_t> buf2(late);
  buf2.insert(buf2.end(), old.begin(), old.end());
  r = h.out(caw_cdb(40, 2), buf2);
  EXPECT_EQ(r.information(), 700u);
}

TEST_F(BlockIoTest, CompareAndWriteChecks) {
  EXPECT_TRUE(h.none(caw_cdb(0, 0)).good());
  EXPECT_TRUE(h.out(caw_cdb(0, 1, 0x20), pattern(1024, 1)).invalid_field(1));
  uint64_t n = h.lun().blocks();
  EXPECT_TRUE(h.out(caw_cdb(n, 1), pattern(1024, 1)).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  LunConfig cfg;
  cfg.max_compare_write_blocks = 1;
  LunHarness small("ram:size=1M", cfg);
  small.clear_ua();
  EXPECT_TRUE(small.out(caw_cdb(0, 2), pattern(2048, 1)).invalid_field(13));
  // The data-out buffer must be exactly two halves of NUMBER OF LOGICAL BLOCKS.
  EXPECT_TRUE(h.out(caw_cdb(0, 1), pattern(4 * 512, 1)).invalid_field(13));
  EXPECT_TRUE(h.out(caw_cdb(0, 3), pattern(4 * 512, 1)).invalid_field(13));
  // A count of 0 with data attached (256 wrapped in the one-byte field): the counts disagree.
  EXPECT_TRUE(h.out(caw_cdb(0, 0), pattern(512 * 512, 1)).invalid_field(13));
}

// ORWRITE(16): the medium becomes itself OR the data-out, in pieces of the scratch buffer for
// a range larger than one (kScratchChunk), whole blocks of a shorter data-out only.
TEST_F(BlockIoTest, OrWrite) {
  auto old = pattern(4096, 5), mask = pattern(4096, 91);
  h.write_blocks(16, old);
  EXPECT_TRUE(h.out(cdb16(op::kOrWrite16, 16, 8), mask).good());
  auto want = old;
  for (size_t i = 0; i < want.size(); ++i) want[i] |= mask[i];
  EXPECT_EQ(h.read_blocks(16, 8), want);
  EXPECT_EQ(h.read_blocks(15, 1), std::vector<uint8_t>(512, 0)) << "nothing outside the range";
  EXPECT_EQ(h.read_blocks(24, 1), std::vector<uint8_t>(512, 0));
  // 4 MiB minus one block: several scratch pieces.
  const uint64_t n = h.lun().blocks() - 1;
  auto big_old = pattern(n * 512, 7), big_mask = pattern(n * 512, 8);
  h.write_blocks(1, big_old);
  EXPECT_TRUE(h.out(cdb16(op::kOrWrite16, 1, static_cast<uint32_t>(n), 0x18), big_mask).good()) << "DPO and FUA";
  for (size_t i = 0; i < big_old.size(); ++i) big_old[i] |= big_mask[i];
  EXPECT_EQ(h.read_blocks(1, n), big_old);
  // A data-out of one and a half blocks: the whole block is ORed, the half is a residual.
  h.write_blocks(0, std::vector<uint8_t>(1024, 0x0f));
  Reply r = h.out(cdb16(op::kOrWrite16, 0, 2), std::vector<uint8_t>(768, 0xf0));
  EXPECT_TRUE(r.good());
  auto got = h.read_blocks(0, 2);
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + 512), std::vector<uint8_t>(512, 0xff));
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + 512, got.end()), std::vector<uint8_t>(512, 0x0f));
}

TEST_F(BlockIoTest, OrWriteChecks) {
  EXPECT_TRUE(h.none(cdb16(op::kOrWrite16, 0, 0)).good()) << "zero blocks: nothing to do";
  EXPECT_TRUE(h.out(cdb16(op::kOrWrite16, 0, 1, 0x20), pattern(512, 1)).invalid_field(1)) << "ORPROTECT";
  uint64_t n = h.lun().blocks();
  EXPECT_TRUE(h.out(cdb16(op::kOrWrite16, n - 1, 2), pattern(1024, 1)).is(SenseKey::illegal_request, Asc::lba_out_of_range));
  LunConfig cfg;
  cfg.max_transfer_blocks = 4;
  LunHarness small("ram:size=1M", cfg);
  small.clear_ua();
  EXPECT_TRUE(small.out(cdb16(op::kOrWrite16, 0, 5), pattern(5 * 512, 1)).invalid_field(10));
}

TEST_F(BlockIoTest, WriteSameDataOutMustBeOneBlock) {
  EXPECT_TRUE(h.out(cdb10(op::kWriteSame10, 0, 1), pattern(1024, 1)).invalid_field(7));
  EXPECT_TRUE(h.out(cdb16(op::kWriteSame16, 0, 1), pattern(100, 1)).invalid_field(10));
}

// ---- File backend: asynchronous completions ----

class FileLunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() / ("vcp_scsi_" + std::to_string(getpid()) + ".img");
    int fd = ::open(path_.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 2 << 20), 0);
    ::close(fd);
    h = std::make_unique<LunHarness>("file:path=" + path_.string());
    h->clear_ua(&h->a);
    h->clear_ua(&h->b);
  }
  void TearDown() override {
    h.reset();
    std::filesystem::remove(path_);
  }
  std::filesystem::path path_;
  std::unique_ptr<LunHarness> h;
};

struct Pending {
  ScsiTask task;
  std::vector<uint8_t> buf;
  iovec iov{};
  bool done = false;
};

void start(Lun& lun, Pending& p, std::vector<uint8_t> cdb, DataDir dir, std::vector<uint8_t> data, const ItNexus* n,
           uint64_t tag) {
  std::copy(cdb.begin(), cdb.end(), p.task.cdb);
  p.task.cdb_len = 16;
  p.task.nexus = n;
  p.task.tag = tag;
  p.task.dir = dir;
  p.buf = std::move(data);
  p.task.expected_length = static_cast<uint32_t>(p.buf.size());
  p.iov = {p.buf.data(), p.buf.size()};
  p.task.iov = &p.iov;
  p.task.iovcnt = 1;
  p.task.ctx = &p;
  p.task.done = [](ScsiTask* t) { static_cast<Pending*>(t->ctx)->done = true; };
  lun.execute(&p.task);
}

void wait_for(Lun& lun, const Pending& p) {
  lun.commit();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!p.done && std::chrono::steady_clock::now() < deadline) lun.poll();
  ASSERT_TRUE(p.done);
}

TEST_F(FileLunTest, ReadWriteUnmapAndWriteSame) {
  auto d = pattern(8192, 42);
  h->write_blocks(3, d);
  EXPECT_EQ(h->read_blocks(3, 16), d);
  auto p = unmap_list({{3, 8}});
  EXPECT_TRUE(h->out(unmap_cdb(p.size()), p).good());
  auto z = h->read_blocks(3, 8);
  EXPECT_TRUE(std::all_of(z.begin(), z.end(), [](uint8_t b) { return b == 0; }));
  auto block = pattern(512, 8);
  EXPECT_TRUE(h->out(cdb16(op::kWriteSame16, 100, 300), block).good());
  EXPECT_EQ(h->read_blocks(399, 1), block);
  EXPECT_TRUE(h->none(cdb10(op::kSyncCache10, 0, 0)).good());
  Reply r = h->in(cdb10(op::kRead10, 3 + 8, 1), 100);  // partial block through a whole-block read
  EXPECT_EQ(r.data, std::vector<uint8_t>(d.begin() + 8 * 512, d.begin() + 8 * 512 + 100));
}

// A buffered file shows its page cache through a read-only shared mapping: READs come in
// place and see every write made through the file (pwritev inline or io_uring).
TEST_F(FileLunTest, ReadsInPlaceSeeTheWritesBeforeThem) {
  h->accept_view = true;
  for (int round = 0; round < 3; ++round) {
    auto d = pattern(65536, 30 + round);
    h->write_blocks(256, d);
    Reply r = h->in(cdb16(op::kRead16, 256, 128), 65536);
    EXPECT_TRUE(r.good());
    EXPECT_TRUE(r.in_place);
    EXPECT_EQ(r.data, d);
  }
  auto p = unmap_list({{256, 8}});
  EXPECT_TRUE(h->out(unmap_cdb(p.size()), p).good());
  Reply r = h->in(cdb16(op::kRead16, 256, 8), 4096);
  EXPECT_TRUE(r.in_place);
  EXPECT_EQ(r.data, std::vector<uint8_t>(4096, 0));  // a punched hole reads as zeros
}

TEST_F(FileLunTest, CompareAndWriteWaitsForOverlappingWrites) {
  Lun& lun = h->lun();
  h->write_blocks(0, std::vector<uint8_t>(512, 'x'));
  Pending w, caw;
  start(lun, w, cdb16(op::kWrite16, 0, 1), DataDir::out, std::vector<uint8_t>(512, 'a'), &h->a, 1);
  std::vector<uint8_t> buf(512, 'a');
  buf.insert(buf.end(), 512, 'b');
  start(lun, caw, caw_cdb(0, 1), DataDir::out, buf, &h->a, 2);
  EXPECT_FALSE(caw.done);
  wait_for(lun, w);
  wait_for(lun, caw);
  EXPECT_EQ(caw.task.status, Status::good);
  EXPECT_EQ(h->read_blocks(0, 1), std::vector<uint8_t>(512, 'b'));
  EXPECT_EQ(lun.in_flight(), 0u);
}

TEST_F(FileLunTest, OrWriteWaitsForOverlappingWritesAndTheyForIt) {
  Lun& lun = h->lun();
  h->write_blocks(0, std::vector<uint8_t>(1024, 0x01));
  Pending w, orw, w2;
  start(lun, w, cdb16(op::kWrite16, 0, 1), DataDir::out, std::vector<uint8_t>(512, 0x02), &h->a, 1);
  start(lun, orw, cdb16(op::kOrWrite16, 0, 2), DataDir::out, std::vector<uint8_t>(1024, 0x10), &h->a, 2);
  start(lun, w2, cdb16(op::kWrite16, 1, 1), DataDir::out, std::vector<uint8_t>(512, 0x40), &h->b, 3);
  EXPECT_FALSE(orw.done);
  wait_for(lun, w);
  wait_for(lun, orw);
  wait_for(lun, w2);
  EXPECT_EQ(orw.task.status, Status::good);
  // The first write landed before the ORWRITE read its block; the second, issued after the
  // ORWRITE took its range, landed after it wrote.
  EXPECT_EQ(h->read_blocks(0, 1), std::vector<uint8_t>(512, 0x12));
  EXPECT_EQ(h->read_blocks(1, 1), std::vector<uint8_t>(512, 0x40));
  EXPECT_EQ(lun.in_flight(), 0u);
}

TEST_F(FileLunTest, AbortTaskWithIoInFlight) {
  Lun& lun = h->lun();
  Pending r1, r2, r3;
  start(lun, r1, cdb16(op::kRead16, 0, 8), DataDir::in, std::vector<uint8_t>(4096), &h->a, 11);
  start(lun, r2, cdb16(op::kRead16, 8, 8), DataDir::in, std::vector<uint8_t>(4096), &h->a, 12);
  start(lun, r3, cdb16(op::kRead16, 16, 8), DataDir::in, std::vector<uint8_t>(4096), &h->b, 13);
  EXPECT_EQ(lun.in_flight(), 3u);
  EXPECT_TRUE(lun.abort_task(h->a, 11));
  EXPECT_FALSE(lun.abort_task(h->a, 99));
  EXPECT_FALSE(lun.abort_task(h->b, 12));  // another nexus's tag
  wait_for(lun, r1);
  wait_for(lun, r2);
  wait_for(lun, r3);
  EXPECT_TRUE(r1.task.aborted);
  EXPECT_EQ(r1.task.status, Status::task_aborted);
  EXPECT_FALSE(r2.task.aborted);
  EXPECT_EQ(r2.task.status, Status::good);
  EXPECT_EQ(r3.task.status, Status::good);
}

TEST_F(FileLunTest, AbortTaskSetAndLunReset) {
  Lun& lun = h->lun();
  Pending r1, r2, r3;
  start(lun, r1, cdb16(op::kRead16, 0, 8), DataDir::in, std::vector<uint8_t>(4096), &h->a, 1);
  start(lun, r2, cdb16(op::kRead16, 8, 8), DataDir::in, std::vector<uint8_t>(4096), &h->a, 2);
  start(lun, r3, cdb16(op::kRead16, 16, 8), DataDir::in, std::vector<uint8_t>(4096), &h->b, 3);
  EXPECT_EQ(lun.abort_task_set(h->a), 2u);
  wait_for(lun, r1);
  wait_for(lun, r2);
  wait_for(lun, r3);
  EXPECT_TRUE(r1.task.aborted && r2.task.aborted);
  EXPECT_FALSE(r3.task.aborted);
  Pending r4;
  start(lun, r4, cdb16(op::kRead16, 0, 8), DataDir::in, std::vector<uint8_t>(4096), &h->b, 4);
  lun.reset(ResetKind::lun_reset);
  wait_for(lun, r4);
  EXPECT_TRUE(r4.task.aborted);
  EXPECT_TRUE(h->none(cdb6(op::kTestUnitReady, 0, 0)).is(SenseKey::unit_attention, Asc::bus_device_reset_function));
}

TEST_F(FileLunTest, AbortWhileParkedBehindCompareAndWrite) {
  Lun& lun = h->lun();
  Pending caw, w;
  std::vector<uint8_t> buf(1024, 0);
  start(lun, caw, caw_cdb(0, 1), DataDir::out, buf, &h->a, 1);
  start(lun, w, cdb16(op::kWrite16, 0, 1), DataDir::out, std::vector<uint8_t>(512, 'z'), &h->b, 2);
  EXPECT_FALSE(w.done);
  EXPECT_EQ(lun.abort_task_set(h->b), 1u);
  EXPECT_TRUE(w.done);  // parked tasks end at once
  EXPECT_TRUE(w.task.aborted);
  wait_for(lun, caw);
  EXPECT_EQ(caw.task.status, Status::good);
}

// A backend whose writes find no space (the file system under a file LUN is full).
class NoSpaceBackend final : public BlockBackend {
 public:
  NoSpaceBackend() : inner_(make_backend("ram:size=4M", &err_)) {}
  const BackendInfo& info() const override { return inner_->info(); }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned index) override {
    auto q = inner_->open_queue(index);
    if (!q) return Err(q.error());
    return std::unique_ptr<BackendQueue>(new Queue(std::move(*q)));
  }

 private:
  struct Queue final : BackendQueue {
    explicit Queue(std::unique_ptr<BackendQueue> q) : inner(std::move(q)) {}
    void submit(BlockRequest* req) override {
      if (req->op == BlockOp::write || req->op == BlockOp::write_zeroes) return req->done(req, -ENOSPC);
      inner->submit(req);
    }
    void commit() override { inner->commit(); }
    int poll() override { return inner->poll(); }
    uint32_t in_flight() const override { return inner->in_flight(); }
    std::unique_ptr<BackendQueue> inner;
  };
  std::string err_;
  std::unique_ptr<BlockBackend> inner_;
};

TEST(NoSpaceLun, WritesFailWithSpaceAllocationFailed) {
  LunHarness h(std::make_unique<NoSpaceBackend>());
  h.clear_ua();
  EXPECT_TRUE(h.out(cdb10(op::kWrite10, 0, 1), pattern(512, 1))
                  .is(SenseKey::data_protect, Asc::space_allocation_failed_write_protect));
  EXPECT_TRUE(h.out(cdb16(op::kWrite16, 8, 2), pattern(1024, 2))
                  .is(SenseKey::data_protect, Asc::space_allocation_failed_write_protect));
  EXPECT_TRUE(h.in(cdb10(op::kRead10, 0, 1), 512).good());  // reads go on
}

TEST_F(FileLunTest, ReadOnlyFileBackend) {
  h.reset();
  h = std::make_unique<LunHarness>("file:path=" + path_.string() + ",ro=on");
  h->clear_ua();
  EXPECT_TRUE(h->out(cdb10(op::kWrite10, 0, 1), pattern(512, 1)).is(SenseKey::data_protect, Asc::write_protected));
  EXPECT_TRUE(h->in(cdb10(op::kRead10, 0, 1), 512).good());
}

}  // namespace
}  // namespace vcp::scsi::test
