#include "harness.hpp"

#include <chrono>

namespace vcp::scsi::test {

bool Reply::invalid_field(uint16_t byte) const {
  return is(SenseKey::illegal_request, Asc::invalid_field_in_cdb) && (sense[15] & 0xc0) == 0xc0 &&
         load_be16(&sense[16]) == byte;
}

ItNexus make_nexus(uint64_t id, const std::string& name, uint64_t isid) {
  ItNexus n;
  n.id = id;
  n.initiator_name = name;
  n.isid = isid;
  n.target_port = 1;
  return n;
}

LunHarness::LunHarness(const std::string& spec, LunConfig cfg) {
  std::string err;
  auto backend = make_backend(spec, &err);
  if (!backend) {
    ADD_FAILURE() << err;
    return;
  }
  open(std::move(backend), std::move(cfg));
}

LunHarness::LunHarness(std::unique_ptr<BlockBackend> backend, LunConfig cfg) {
  open(std::move(backend), std::move(cfg));
}

void LunHarness::open(std::unique_ptr<BlockBackend> backend, LunConfig cfg) {
  a = make_nexus(1, "iqn.2024-01.test:a", 0x23d000000001);
  b = make_nexus(2, "iqn.2024-01.test:b", 0x23d000000002);
  backend_ = std::move(backend);
  if (cfg.target_name.empty()) cfg.target_name = "iqn.2024-01.vcp:target";
  auto l = Lun::open(cfg, *backend_);
  if (!l) {
    ADD_FAILURE() << "open: " << l.error();
    return;
  }
  lun_ = std::move(*l);
}

namespace {
struct Waiter {
  bool done = false;
  int calls = 0;
};
void on_done(ScsiTask* t) {
  auto* w = static_cast<Waiter*>(t->ctx);
  w->done = true;
  ++w->calls;
}
}  // namespace

Reply LunHarness::run(std::vector<uint8_t> cdb, DataDir dir, uint32_t edtl, std::vector<uint8_t> data_out,
                      const ItNexus* nexus) {
  return run_on(*lun_, std::move(cdb), dir, edtl, std::move(data_out), nexus ? nexus : &a, accept_view);
}

Reply run_on(Lun& lun, std::vector<uint8_t> cdb, DataDir dir, uint32_t edtl, std::vector<uint8_t> data_out,
             const ItNexus* nexus, bool accept_view) {
  ScsiTask t;
  t.accept_view = accept_view;
  std::copy(cdb.begin(), cdb.end(), t.cdb);
  t.cdb_len = 16;
  t.nexus = nexus;
  t.dir = dir;
  t.expected_length = edtl;
  std::vector<uint8_t> buf = dir == DataDir::out ? data_out : std::vector<uint8_t>(edtl, 0xcc);
  iovec iov{buf.data(), buf.size()};
  if (!buf.empty()) {
    t.iov = &iov;
    t.iovcnt = 1;
  }
  Waiter w;
  t.done = on_done;
  t.ctx = &w;
  lun.execute(&t);
  lun.commit();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!w.done && std::chrono::steady_clock::now() < deadline) lun.poll();
  EXPECT_TRUE(w.done) << "task never completed";
  EXPECT_EQ(w.calls, 1);
  Reply r;
  r.status = t.status;
  r.sense.assign(t.sense, t.sense + t.sense_len);
  if (t.sense_len >= 14) {
    r.key = t.sense[2] & 0x0f;
    r.asc = t.sense[12];
    r.ascq = t.sense[13];
  }
  r.in_place = t.data_in_view != nullptr;
  EXPECT_TRUE(accept_view || !r.in_place) << "data-in in place though the task did not accept it";
  if (dir == DataDir::in && r.in_place) r.data.assign(t.data_in_view, t.data_in_view + t.data_in_len);
  else if (dir == DataDir::in) r.data.assign(buf.begin(), buf.begin() + t.data_in_len);
  r.residual_kind = t.residual_kind;
  r.residual = t.residual;
  r.aborted = t.aborted;
  return r;
}

void LunHarness::clear_ua(const ItNexus* n) {
  for (int i = 0; i < 16; ++i)
    if (none(cdb6(op::kTestUnitReady, 0, 0), n).good()) return;
  ADD_FAILURE() << "unit attentions never cleared";
}

std::vector<uint8_t> LunHarness::read_blocks(uint64_t lba, uint32_t n, const ItNexus* nx) {
  Reply r = in(cdb16(op::kRead16, lba, n), n * lun_->block_size(), nx);
  EXPECT_TRUE(r.good()) << "read at " << lba;
  return r.data;
}

void LunHarness::write_blocks(uint64_t lba, const std::vector<uint8_t>& data, const ItNexus* nx) {
  Reply r = out(cdb16(op::kWrite16, lba, static_cast<uint32_t>(data.size() / lun_->block_size())), data, nx);
  EXPECT_TRUE(r.good()) << "write at " << lba;
}

std::vector<uint8_t> cdb6(uint8_t op, uint32_t lba, uint8_t len, uint8_t b1) {
  std::vector<uint8_t> c(6, 0);
  c[0] = op;
  store_be24(&c[1], lba & 0x1fffff);
  c[1] |= b1;
  c[4] = len;
  return c;
}

std::vector<uint8_t> cdb10(uint8_t op, uint32_t lba, uint16_t len, uint8_t b1) {
  std::vector<uint8_t> c(10, 0);
  c[0] = op;
  c[1] = b1;
  store_be32(&c[2], lba);
  store_be16(&c[7], len);
  return c;
}

std::vector<uint8_t> cdb12(uint8_t op, uint32_t lba, uint32_t len, uint8_t b1) {
  std::vector<uint8_t> c(12, 0);
  c[0] = op;
  c[1] = b1;
  store_be32(&c[2], lba);
  store_be32(&c[6], len);
  return c;
}

std::vector<uint8_t> cdb16(uint8_t op, uint64_t lba, uint32_t len, uint8_t b1) {
  std::vector<uint8_t> c(16, 0);
  c[0] = op;
  c[1] = b1;
  store_be64(&c[2], lba);
  store_be32(&c[10], len);
  return c;
}

std::vector<uint8_t> pattern(size_t len, uint8_t seed) {
  std::vector<uint8_t> v(len);
  for (size_t i = 0; i < len; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return v;
}

}  // namespace vcp::scsi::test
