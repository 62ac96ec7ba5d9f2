// iscsi: the iSCSI initiator as a block backend (RFC 7143 over kernel TCP driven by io_uring).
//
// At creation a short-lived probe session logs in, reads the LUN's shape (READ CAPACITY(16),
// the Block Limits, Logical Block Provisioning and Unit Serial Number VPD pages) and logs out;
// a login failure (wrong secret, unknown target, nothing listening) is reported there, in words.
// Each queue then opens its own session (session.hpp): one TCP connection per queue thread, so
// queues share nothing. ISIDs differ per queue (the qualifier is the queue index) so that the
// sessions never reinstate each other; the same queue reconnects with the same ISID, which is
// what reinstates its session on the target. The probe's qualifier is 0xffff, no queue's.
//
// The LUN growing: the target reports it with the unit attention CAPACITY DATA HAS CHANGED
// (2Ah/09h). The queue session that meets it retries its command as for any unit attention and
// adds 1 to resize_fd(), an eventfd every queue session shares. vcp serve then has grow() run
// (on a thread of its own: BlkDevice::start_grow), which logs a probe session in again (the
// start-up ISID: it can only reinstate an earlier probe, never a queue's session), reads the
// capacity and takes a larger one. The queues never read the capacity, so nothing else
// changes for them.
#include <sys/eventfd.h>
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
  std::string status() const override { return s_->status_line(); }
  void abandon() override { s_->abandon(); }

 private:
  std::unique_ptr<Session> s_;
};

class IscsiBackend final : public BlockBackend {
 public:
  IscsiBackend(iscsi::IscsiConfig cfg, vcp::iscsi::Isid isid, BackendInfo info, iscsi::LunShape shape,
               UniqueFd resize_fd)
      : cfg_(std::move(cfg)), isid_(isid), info_(std::move(info)), shape_(shape), resize_fd_(std::move(resize_fd)) {
    shape_.capacity_changed_fd = resize_fd_.get();
  }
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
  uint64_t grow(bool* shrunk) override;
  int resize_fd() const override { return resize_fd_.get(); }

 private:
  iscsi::IscsiConfig cfg_;
  vcp::iscsi::Isid isid_;  // the probe's (qualifier 0xffff)
  BackendInfo info_;
  iscsi::LunShape shape_;
  UniqueFd resize_fd_;
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

// How long grow()'s probe may take to log in, and each of its commands.
constexpr uint32_t kGrowProbeTimeoutMs = 5000;

std::string where_of(const iscsi::IscsiConfig& cfg) {
  return iscsi::portal_name({cfg.host, cfg.port}) + "/" + cfg.target + "/" + std::to_string(cfg.lun);
}

// A probe session logged in, with the LUN's capacity read: at start-up and for grow(). The
// session has no capacity_changed_fd: it reads the capacity anyway, and a unit attention it
// takes must not start another grow(). Every step is bounded (the login by login_timeout_ms,
// each command by timeout_ms); on failure ok() is false and error says why.
class CapacityProbe {
 public:
  CapacityProbe(const iscsi::IscsiConfig& cfg, vcp::iscsi::Isid isid)
      : timeout_ms_(cfg.timeout_ms), s_(cfg, isid, "iscsi probe", iscsi::LunShape{}) {
    int rc = s_.start();
    if (rc == 0) rc = s_.wait_logged_in();
    if (rc < 0) {
      error = s_.error();
      return;
    }
    logged_in_ = true;
    std::vector<uint8_t> buf;
    // TEST UNIT READY first: it takes the unit attention a new I_T nexus starts with.
    rc = run(iscsi::build_test_unit_ready(), false, buf);
    buf.assign(iscsi::kReadCapacity16Length, 0);
    rc = run(iscsi::build_read_capacity16(iscsi::kReadCapacity16Length), true, buf);
    if (rc == 0) capacity = iscsi::parse_read_capacity16(buf);
    if (!capacity)
      error = "READ CAPACITY(16) on " + where_of(cfg) + " failed" + (rc < 0 ? ": " + errno_str(rc) : "") +
              " (is LUN " + std::to_string(cfg.lun) + " a block device?)";
  }
  ~CapacityProbe() {
    if (logged_in_) s_.logout(1000);
  }
  CapacityProbe(const CapacityProbe&) = delete;
  CapacityProbe& operator=(const CapacityProbe&) = delete;

  bool ok() const { return capacity.has_value(); }
  // The configured portal it logged in through.
  size_t portal() const { return s_.portal(); }
  // Another command on the probe session; buf is cut to the bytes the target sent.
  int run(const iscsi::Cdb& cdb, bool read, std::vector<uint8_t>& buf) {
    return run_probe(s_, cdb, read, buf, timeout_ms_);
  }

  std::optional<iscsi::Capacity> capacity;
  std::string error;

 private:
  uint32_t timeout_ms_;
  Session s_;
  bool logged_in_ = false;
};

uint64_t IscsiBackend::grow(bool* shrunk) {
  if (shrunk) *shrunk = false;
  const uint64_t old = info_.capacity_bytes;
  std::optional<iscsi::Capacity> cap;
  {
    // Someone waits (vcp serve's sizing thread, which its shutdown joins; or a caller of
    // BlkDevice::grow()): a target too slow to log in and answer within a few seconds is given
    // up on, not waited for as long as the data path would.
    iscsi::IscsiConfig quick = cfg_;
    quick.login_timeout_ms = std::min(quick.login_timeout_ms, kGrowProbeTimeoutMs);
    quick.timeout_ms = std::min(quick.timeout_ms, kGrowProbeTimeoutMs);
    CapacityProbe probe(quick, isid_);
    if (!probe.ok()) {
      VCP_LOG_WARN("iscsi: {}: capacity not read again, {} bytes kept (SIGHUP to vcp serve tries again): {}",
                   where_of(cfg_), old, probe.error);
      return old;
    }
    cap = probe.capacity;
  }
  if (cap->block_size != info_.block_size) {
    // The guest addresses the disk in the block size it was given: it cannot change under it.
    VCP_LOG_ERROR("iscsi: {}: the block size changed from {} to {} bytes, which cannot be served live: {} bytes kept",
                  where_of(cfg_), info_.block_size, cap->block_size, old);
    return old;
  }
  const uint64_t now = cap->blocks * cap->block_size;
  if (now > old) {
    info_.capacity_bytes = now;
    VCP_LOG_INFO("iscsi: {}: grown from {} to {} bytes", where_of(cfg_), old, now);
  } else if (now < old) {
    // The guest is not told a smaller size: what it reads or writes past the new end fails at
    // the target.
    if (shrunk) *shrunk = true;
    VCP_LOG_WARN("iscsi: {}: shrunk from {} to {} bytes: {} bytes kept", where_of(cfg_), old, now, old);
  }
  return info_.capacity_bytes;
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
  UniqueFd resize_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!resize_fd) {
    *error = "iscsi: eventfd: " + errno_str(-errno);
    return nullptr;
  }

  const std::string where = where_of(*cfg);
  CapacityProbe probe(*cfg, isid);
  if (!probe.ok()) {
    *error = "iscsi: " + probe.error;
    return nullptr;
  }
  const std::optional<iscsi::Capacity>& cap = probe.capacity;
  auto vpd = [&](uint8_t page) -> std::vector<uint8_t> {
    std::vector<uint8_t> b(iscsi::kVpdAllocation, 0);
    if (probe.run(iscsi::build_inquiry_vpd(page, iscsi::kVpdAllocation), true, b) != 0) b.clear();
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
  const bool read_only = probe.run(iscsi::build_mode_sense10_header(), true, mode) == 0 &&
                         iscsi::parse_mode_sense10_write_protect(mode).value_or(false);

  BackendInfo info;
  info.read_only = read_only;
  const uint64_t bs = cap->block_size;
  info.block_size = cap->block_size;
  // The target's physical block (a 512e disk: 4 KiB under 512-byte blocks), passed on to the
  // guest; an exponent past 64 KiB is taken as 64 KiB (never below bs: bs is at most 64 KiB).
  info.physical_block_size = static_cast<uint32_t>(std::min<uint64_t>(bs << cap->physical_block_exponent, 65536));
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
  info.storage = "iscsi " + cfg->target + " LUN " + std::to_string(cfg->lun);
  VCP_LOG_INFO("iscsi: {}: {} blocks of {} bytes, max transfer {}, discard {}, serial '{}'{}", where, cap->blocks,
               cap->block_size, info.max_transfer_bytes, info.discard ? "yes" : "no", info.serial,
               read_only ? ", write-protected: read-only" : "");
  iscsi::LunShape shape{cap->block_size, info.discard, info.write_zeroes};
  // The queues' sessions start at the portal the probe logged in through (a portal that did
  // not answer it is tried last), and go round the others from there.
  if (probe.portal() != 0) {
    VCP_LOG_INFO("iscsi: {}: the queues start at portal {}", where,
                 iscsi::portal_name(iscsi::portal_at(*cfg, probe.portal())));
    cfg->first_portal = probe.portal();
  }
  return std::make_unique<IscsiBackend>(std::move(*cfg), isid, std::move(info), shape, std::move(resize_fd));
}

}  // namespace vcp::backends
