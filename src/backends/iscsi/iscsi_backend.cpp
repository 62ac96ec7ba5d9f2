// iscsi: the iSCSI initiator as a block backend (RFC 7143 over kernel TCP driven by io_uring).
//
// At creation a short-lived probe session logs in, reads the LUN's shape (READ CAPACITY(16),
// the Block Limits, Logical Block Provisioning and Unit Serial Number VPD pages) and logs out;
// a login failure (wrong secret, unknown target, nothing listening) is reported there, in words.
// Each queue then opens its own session (session.hpp): one TCP connection per queue thread, so
// queues share nothing. ISIDs differ per queue (the qualifier is the queue index) so that the
// sessions never reinstate each other; the same queue reconnects with the same ISID, which is
// what reinstates its session on the target.
#include <sys/random.h>

#include <algorithm>

#include "backends/factories.hpp"
#include "backends/iscsi/session.hpp"
#include "base/log.hpp"

namespace vcp::backends {
namespace {

using iscsi::Session;

class IscsiQueue final : public BackendQueue {
 public:
  explicit IscsiQueue(std::unique_ptr<Session> s) : s_(std::move(s)) {}
  ~IscsiQueue() override { s_->logout(1000); }
  void submit(BlockRequest* req) override { s_->submit(req); }
  void commit() override { s_->commit(); }
  int poll() override { return s_->poll(); }
  int wait_fd() const override { return s_->wait_fd(); }
  void clear_wait_fd() override {}  // the session's io_uring fd: poll() clears it
  uint32_t in_flight() const override { return s_->in_flight(); }

 private:
  std::unique_ptr<Session> s_;
};

class IscsiBackend final : public BlockBackend {
 public:
  IscsiBackend(iscsi::IscsiConfig cfg, vcp::iscsi::Isid isid, BackendInfo info, iscsi::LunShape shape)
      : cfg_(std::move(cfg)), isid_(isid), info_(std::move(info)), shape_(shape) {}
  const BackendInfo& info() const override { return info_; }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned index) override {
    vcp::iscsi::Isid isid = isid_;
    isid[4] = static_cast<uint8_t>(index >> 8);
    isid[5] = static_cast<uint8_t>(index);
    auto s = std::make_unique<Session>(cfg_, isid, "iscsi q" + std::to_string(index), shape_);
    int rc = s->start();
    if (rc == 0) rc = s->wait_logged_in();
    if (rc < 0) {
      VCP_LOG_ERROR("iscsi q{}: {}", index, s->error());
      return Err(-rc);
    }
    return std::unique_ptr<BackendQueue>(std::make_unique<IscsiQueue>(std::move(s)));
  }

 private:
  iscsi::IscsiConfig cfg_;
  vcp::iscsi::Isid isid_;
  BackendInfo info_;
  iscsi::LunShape shape_;
};

// One SCSI command on the probe session, waited for.
struct ProbeCommand {
  BlockRequest req;
  iovec iov{};
  int status = 1;  // 1: pending
};

int run_probe(Session& s, const iscsi::Cdb& cdb, bool read, std::vector<uint8_t>& buf, uint32_t timeout_ms) {
  ProbeCommand c;
  c.iov = {buf.data(), buf.size()};
  c.req.op = BlockOp::read;
  c.req.iov = &c.iov;
  c.req.iovcnt = buf.empty() ? 0 : 1;
  c.req.length = buf.size();
  c.req.ctx = &c;
  c.req.done = [](BlockRequest* r, int status) { static_cast<ProbeCommand*>(r->ctx)->status = status; };
  s.submit_cdb(&c.req, cdb, read, false);
  s.run_until_idle(timeout_ms);
  if (c.status == 1) return -ETIMEDOUT;  // the session destructor cancels what is left
  if (c.status == 0) buf.resize(c.req.length);
  return c.status;
}

}  // namespace

std::unique_ptr<BlockBackend> make_iscsi(const std::string& url, std::string* error) {
  auto cfg = iscsi::parse_iscsi_url(url, error);
  if (!cfg) return nullptr;
  // ISID, random format (RFC 7143 §11.12.5): T=10b, 22 random bits, the queue as qualifier.
  vcp::iscsi::Isid isid{0x80, 0, 0, 0, 0xff, 0xff};
  uint8_t rnd[3] = {};
  if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
    *error = "getrandom failed";
    return nullptr;
  }
  isid[0] = static_cast<uint8_t>(0x80 | (rnd[0] & 0x3f));
  isid[1] = rnd[1];
  isid[2] = rnd[2];
  isid[3] = static_cast<uint8_t>(getpid());

  const std::string where = cfg->host + ":" + std::to_string(cfg->port) + "/" + cfg->target + "/" +
                            std::to_string(cfg->lun);
  Session probe(*cfg, isid, "iscsi probe", iscsi::LunShape{});
  int rc = probe.start();
  if (rc == 0) rc = probe.wait_logged_in();
  if (rc < 0) {
    *error = "iscsi: " + probe.error();
    return nullptr;
  }
  const uint32_t t = cfg->timeout_ms;
  std::vector<uint8_t> buf;
  // TEST UNIT READY first: it takes the unit attention a new I_T nexus starts with.
  rc = run_probe(probe, iscsi::build_test_unit_ready(), false, buf, t);
  buf.assign(iscsi::kReadCapacity16Length, 0);
  rc = run_probe(probe, iscsi::build_read_capacity16(iscsi::kReadCapacity16Length), true, buf, t);
  std::optional<iscsi::Capacity> cap;
  if (rc == 0) cap = iscsi::parse_read_capacity16(buf);
  if (!cap) {
    *error = "iscsi: READ CAPACITY(16) on " + where + " failed" + (rc < 0 ? ": " + errno_str(rc) : "") +
             " (is LUN " + std::to_string(cfg->lun) + " a block device?)";
    probe.logout(1000);
    return nullptr;
  }
  auto vpd = [&](uint8_t page) -> std::vector<uint8_t> {
    std::vector<uint8_t> b(iscsi::kVpdAllocation, 0);
    if (run_probe(probe, iscsi::build_inquiry_vpd(page, iscsi::kVpdAllocation), true, b, t) != 0) b.clear();
    return b;
  };
  std::vector<uint8_t> supported = vpd(0x00);
  auto has_page = [&](uint8_t page) {
    return supported.size() > 4 && std::find(supported.begin() + 4, supported.end(), page) != supported.end();
  };
  std::optional<iscsi::BlockLimits> limits;
  std::optional<iscsi::Provisioning> prov;
  std::optional<std::string> serial;
  if (has_page(0xb0)) limits = iscsi::parse_block_limits_vpd(vpd(0xb0));
  if (has_page(0xb2)) prov = iscsi::parse_provisioning_vpd(vpd(0xb2));
  if (has_page(0x80)) serial = iscsi::parse_serial_vpd(vpd(0x80));
  // No unit serial: the device identification page names the LU instead. GET_ID carries 20
  // bytes; a long hex designator keeps its end, where the vendor-specific (unique) part is.
  if ((!serial || serial->empty()) && has_page(0x83)) {
    serial = iscsi::parse_device_id_vpd(vpd(0x83));
    if (serial && serial->size() > 20) serial = serial->substr(serial->size() - 20);
  }
  // A write-protected LU is served read-only (virtio-blk RO), so writes are refused in the VCP
  // instead of failing one by one at the target. A target without MODE SENSE: writable.
  std::vector<uint8_t> mode(iscsi::kModeSense10HeaderLength, 0);
  const bool read_only = run_probe(probe, iscsi::build_mode_sense10_header(), true, mode, t) == 0 &&
                         iscsi::parse_mode_sense10_write_protect(mode).value_or(false);
  probe.logout(1000);

  BackendInfo info;
  info.read_only = read_only;
  const uint64_t bs = cap->block_size;
  info.block_size = cap->block_size;
  info.capacity_bytes = cap->blocks * bs;
  info.volatile_cache = true;
  auto bytes = [&](uint64_t blocks) -> uint32_t {
    uint64_t v = blocks * bs;
    uint64_t cap32 = (uint64_t{1} << 31) - bs;  // keep below 2 GiB, a whole number of blocks
    return static_cast<uint32_t>(std::min(v, cap32));
  };
  if (limits) {
    if (limits->max_transfer_blocks) info.max_transfer_bytes = bytes(limits->max_transfer_blocks);
    if (limits->optimal_transfer_blocks) info.optimal_io_bytes = bytes(limits->optimal_transfer_blocks);
    if (limits->max_unmap_blocks && limits->max_unmap_blocks != 0xffffffffu)
      info.max_discard_bytes = bytes(limits->max_unmap_blocks);
    if (limits->unmap_granularity_blocks) info.discard_granularity = bytes(limits->unmap_granularity_blocks);
    if (limits->max_write_same_blocks) info.max_write_zeroes_bytes = bytes(limits->max_write_same_blocks);
  }
  // UNMAP needs logical block provisioning management (LBPME) and the UNMAP bit of page 0xB2.
  info.discard = cap->thin_provisioning_enabled && prov && prov->unmap;
  info.write_zeroes = true;  // WRITE SAME(16) is mandatory-ish in SBC-4; refusals map to UNSUPP
  info.serial = serial ? serial->substr(0, 20) : "";
  info.description = "iscsi " + where;
  VCP_LOG_INFO("iscsi: {}: {} blocks of {} bytes, max transfer {}, discard {}, serial '{}'{}", where, cap->blocks,
               cap->block_size, info.max_transfer_bytes, info.discard ? "yes" : "no", info.serial,
               read_only ? ", write-protected: read-only" : "");
  iscsi::LunShape shape{cap->block_size, info.discard, info.write_zeroes};
  return std::make_unique<IscsiBackend>(std::move(*cfg), isid, std::move(info), shape);
}

}  // namespace vcp::backends
