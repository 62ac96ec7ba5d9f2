// Arbitrary CDBs and parameter data against a small ram LUN, several commands per input so
// that state (reservations, mode pages, unit attentions) carries from one to the next.
//
// Input: a sequence of records
//   u8 flags   bits 0-1 direction (0 none, 1 in, 2 out), bit 2 second nexus,
//              bit 3 LUN reset afterwards, bit 4 split the buffer into two iovecs
//   u16 edtl   (little-endian) expected data transfer length
//   u8 cdb[16]
//   u16 n      (little-endian) data-out bytes that follow (taken up to edtl)
//   u8 data[n]
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backends/block_backend.hpp"
#include "target/scsi/lun.hpp"

using namespace vcp;
using namespace vcp::scsi;

namespace {

struct Done {
  bool done = false;
  int calls = 0;
};

void on_done(ScsiTask* t) {
  auto* d = static_cast<Done*>(t->ctx);
  d->done = true;
  if (++d->calls > 1) __builtin_trap();  // completed twice
  if (t->sense_len != 0 && t->sense_len != kFixedSenseLen) __builtin_trap();
  if (t->data_in_len > t->expected_length) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<BlockBackend> backend = [] {
    std::string err;
    return make_backend("ram:size=64K", &err);
  }();
  LunConfig cfg;
  cfg.target_name = "iqn.2024-01.vcp:fuzz";
  cfg.max_write_same_blocks = 256;
  cfg.max_unmap_blocks = 256;
  auto opened = Lun::open(cfg, *backend);
  if (!opened) return 0;
  Lun& lun = **opened;
  lun.set_reported_luns({0, 1}, false);
  ItNexus nexus[2];
  nexus[0].id = 1;
  nexus[0].initiator_name = "iqn.2024-01.fuzz:a";
  nexus[0].isid = 1;
  nexus[1].id = 2;
  nexus[1].initiator_name = "iqn.2024-01.fuzz:b";
  nexus[1].isid = 2;

  size_t off = 0;
  for (int cmd = 0; cmd < 16 && size - off >= 21; ++cmd) {
    uint8_t flags = data[off];
    uint32_t edtl = data[off + 1] | data[off + 2] << 8;
    ScsiTask task;
    std::memcpy(task.cdb, data + off + 3, 16);
    task.cdb_len = 16;
    size_t n = data[off + 19] | data[off + 20] << 8;
    off += 21;
    n = std::min(n, size - off);
    DataDir dir = (flags & 3) == 1 ? DataDir::in : (flags & 3) == 2 ? DataDir::out : DataDir::none;
    std::vector<uint8_t> buf(edtl, 0);
    if (dir == DataDir::out && !buf.empty() && n > 0) std::memcpy(buf.data(), data + off, std::min<size_t>(n, edtl));
    off += n;
    iovec iov[2];
    size_t half = (flags & 0x10) ? buf.size() / 3 : buf.size();
    iov[0] = {buf.data(), half};
    iov[1] = {buf.data() + half, buf.size() - half};
    task.iov = iov;
    task.iovcnt = (flags & 0x10) ? 2 : 1;
    task.dir = dir;
    task.expected_length = edtl;
    task.nexus = &nexus[(flags >> 2) & 1];
    task.tag = static_cast<uint64_t>(cmd);
    Done d;
    task.done = on_done;
    task.ctx = &d;
    lun.execute(&task);
    lun.commit();
    if (flags & 0x08) lun.reset(ResetKind::lun_reset);
    while (!d.done) lun.poll();
  }
  if (lun.in_flight() != 0) __builtin_trap();
  return 0;
}
