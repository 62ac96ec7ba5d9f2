// The data path against a backend with limits and failures: requests are split to the
// backend's maximum transfer, completions arrive later (from poll), and I/O errors become
// MEDIUM ERROR sense.
#include <gtest/gtest.h>

#include <deque>

#include "harness.hpp"

namespace vcp::scsi::test {
namespace {

// Memory-backed, completes from poll() only, fails any request touching a poisoned block.
class FaultyBackend final : public BlockBackend, public BackendQueue {
 public:
  FaultyBackend(uint64_t blocks, uint32_t max_transfer) : mem_(blocks * 512) {
    info_.capacity_bytes = blocks * 512;
    info_.block_size = 512;
    info_.max_transfer_bytes = max_transfer;
    info_.write_zeroes = true;
    info_.volatile_cache = true;
    info_.serial = "faulty";
  }
  const BackendInfo& info() const override { return info_; }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned) override { return Err(ENOTSUP); }

  void submit(BlockRequest* req) override {
    ++submitted;
    if (info_.max_transfer_bytes && req->length > info_.max_transfer_bytes) ++oversized;
    pending_.push_back(req);
  }
  int poll() override {
    int n = 0;
    while (!pending_.empty()) {
      BlockRequest* r = pending_.front();
      pending_.pop_front();
      r->done(r, run(r));
      ++n;
    }
    return n;
  }
  uint32_t in_flight() const override { return static_cast<uint32_t>(pending_.size()); }

  uint64_t poisoned = ~uint64_t{0};
  int submitted = 0;
  int oversized = 0;

 private:
  int run(BlockRequest* r) {
    uint64_t first = r->offset / 512, last = (r->offset + r->length + 511) / 512;
    if (poisoned >= first && poisoned < last) return -EIO;
    uint64_t off = r->offset;
    switch (r->op) {
      case BlockOp::read:
      case BlockOp::write: {
        uint64_t sum = 0;
        for (uint32_t i = 0; i < r->iovcnt; ++i) {
          if (r->op == BlockOp::read) std::memcpy(r->iov[i].iov_base, &mem_[off], r->iov[i].iov_len);
          else std::memcpy(&mem_[off], r->iov[i].iov_base, r->iov[i].iov_len);
          off += r->iov[i].iov_len;
          sum += r->iov[i].iov_len;
        }
        return sum == r->length ? 0 : -EINVAL;
      }
      case BlockOp::write_zeroes:
      case BlockOp::discard:
        std::memset(&mem_[off], 0, r->length);
        return 0;
      default:
        return 0;
    }
  }
  BackendInfo info_;
  std::vector<uint8_t> mem_;
  std::deque<BlockRequest*> pending_;
};

class FaultTest : public ::testing::Test {
 protected:
  FaultTest() : backend(2048, 4096), lun(LunConfig{}, backend, backend) {}

  Reply run(std::vector<uint8_t> cdb, DataDir dir, std::vector<uint8_t> buf, std::vector<size_t> cuts = {}) {
    ScsiTask t;
    std::copy(cdb.begin(), cdb.end(), t.cdb);
    t.cdb_len = 16;
    t.nexus = &nexus;
    t.dir = dir;
    t.expected_length = static_cast<uint32_t>(buf.size());
    // Cut the buffer into pieces at the given offsets.
    std::vector<iovec> iov;
    size_t prev = 0;
    cuts.push_back(buf.size());
    for (size_t c : cuts) {
      iov.push_back({buf.data() + prev, c - prev});
      prev = c;
    }
    t.iov = iov.data();
    t.iovcnt = static_cast<uint32_t>(iov.size());
    bool done = false;
    t.ctx = &done;
    t.done = [](ScsiTask* x) { *static_cast<bool*>(x->ctx) = true; };
    lun.execute(&t);
    for (int i = 0; i < 10000 && !done; ++i) lun.poll();
    EXPECT_TRUE(done);
    Reply r;
    r.status = t.status;
    r.sense.assign(t.sense, t.sense + t.sense_len);
    if (t.sense_len) {
      r.key = t.sense[2] & 0x0f;
      r.asc = t.sense[12];
      r.ascq = t.sense[13];
    }
    if (dir == DataDir::in) r.data.assign(buf.begin(), buf.begin() + t.data_in_len);
    return r;
  }
  void SetUp() override {
    nexus = make_nexus(1, "iqn.2024-01.test:f", 1);
    run(cdb6(op::kTestUnitReady, 0, 0), DataDir::none, {});
  }

  FaultyBackend backend;
  Lun lun;
  ItNexus nexus;
};

TEST_F(FaultTest, LargeTransfersAreSplitToTheBackendLimit) {
  auto d = pattern(64 * 512, 13);
  // Ragged iovecs: blocks straddle every border.
  EXPECT_TRUE(run(cdb16(op::kWrite16, 5, 64), DataDir::out, d, {100, 3000, 3001, 9000, 20000}).good());
  EXPECT_GE(backend.submitted, 8);
  EXPECT_EQ(backend.oversized, 0);
  Reply r = run(cdb16(op::kRead16, 5, 64), DataDir::in, std::vector<uint8_t>(64 * 512), {7, 5000, 17000});
  EXPECT_TRUE(r.good());
  EXPECT_EQ(r.data, d);
  EXPECT_EQ(backend.oversized, 0);
  EXPECT_TRUE(run(cdb16(op::kWriteSame16, 100, 64), DataDir::out, pattern(512, 1)).good());
  EXPECT_TRUE(run(cdb16(op::kVerify16, 5, 64, 0x02), DataDir::out, d, {1000}).good());
  EXPECT_EQ(backend.oversized, 0);
}

TEST_F(FaultTest, ReadErrorIsMediumErrorUnrecoveredRead) {
  backend.poisoned = 10;
  Reply r = run(cdb10(op::kRead10, 8, 4), DataDir::in, std::vector<uint8_t>(2048));
  EXPECT_TRUE(r.is(SenseKey::medium_error, Asc::unrecovered_read_error));
  EXPECT_TRUE(r.data.empty());
}

TEST_F(FaultTest, WriteErrorIsMediumErrorWriteError) {
  backend.poisoned = 10;
  Reply r = run(cdb10(op::kWrite10, 8, 4), DataDir::out, pattern(2048, 1));
  EXPECT_TRUE(r.is(SenseKey::medium_error, Asc::write_error));
  auto c = cdb16(op::kCompareAndWrite, 10, 0);
  c[13] = 1;
  EXPECT_TRUE(run(c, DataDir::out, std::vector<uint8_t>(1024, 0)).is(SenseKey::medium_error, Asc::unrecovered_read_error));
  EXPECT_TRUE(run(cdb16(op::kWriteSame16, 9, 2), DataDir::out, pattern(512, 1)).is(SenseKey::medium_error, Asc::write_error));
  EXPECT_EQ(lun.in_flight(), 0u);
}

}  // namespace
}  // namespace vcp::scsi::test
