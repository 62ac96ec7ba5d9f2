// The commands that move no blocks: READ CAPACITY, TEST UNIT READY, REQUEST SENSE,
// START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, REPORT SUPPORTED OPERATION CODES / TASK
// MANAGEMENT FUNCTIONS, PERSISTENT RESERVE IN/OUT and RESERVE/RELEASE(6/10).
#include <algorithm>
#include <cstring>

#include "target/scsi/cdb.hpp"
#include "target/scsi/commands.hpp"
#include "target/scsi/lun.hpp"

namespace vcp::scsi {

void Lun::cmd_test_unit_ready(ScsiTask* t) { finish(t, ok()); }

void Lun::cmd_request_sense(ScsiTask* t) {
  // Sense is returned with each command (autosense); all that waits here are unit attentions.
  // DESC=1 asks for descriptor format, which is optional: fixed format is returned.
  NexusRecord& ns = *nexus_state(*t->nexus).rec;
  Asc ua;
  Sense s = ns.ua_pending.load(std::memory_order_acquire) != 0 && shared_->take_ua(ns, &ua)
                ? sense(SenseKey::unit_attention, ua)
                : Sense{};
  uint8_t d[kFixedSenseLen];
  s.encode(d);
  finish_data_in(t, d, sizeof(d), t->cdb[4]);
}

void Lun::cmd_read_capacity10(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  if (!(cdb[8] & 0x01) && load_be32(cdb + 2) != 0) return finish_sense(t, invalid_cdb_field(2));
  uint8_t d[8];
  store_be32(d, static_cast<uint32_t>(std::min<uint64_t>(blocks_ - 1, 0xffffffff)));
  store_be32(d + 4, block_size_);
  finish_data_in(t, d, sizeof(d), sizeof(d));
}

void Lun::cmd_service_action_in16(ScsiTask* t) {
  if ((t->cdb[1] & 0x1f) == sa::kGetLbaStatus) return get_lba_status(t);
  // READ CAPACITY(16)
  uint8_t d[32] = {};
  store_be64(d, blocks_ - 1);
  store_be32(d + 8, block_size_);
  d[13] = physical_block_exponent(backend_.info());  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT; LBA 0 aligned
  if (thin_) d[14] = static_cast<uint8_t>(0x80 | (lbprz_ ? 0x40 : 0));  // LBPME, LBPRZ
  finish_data_in(t, d, sizeof(d), load_be32(t->cdb + 10));
}

// GET LBA STATUS: the backend interface cannot tell allocated from deallocated blocks, so one
// descriptor says "mapped or unknown" (SBC-4 provisioning status 0h) from the LBA to the end.
void Lun::get_lba_status(ScsiTask* t) {
  uint64_t lba = load_be64(t->cdb + 2);
  if (lba >= blocks_) return finish_sense(t, illegal(Asc::lba_out_of_range));
  uint8_t d[24] = {};
  store_be32(d, sizeof(d) - 4);
  store_be64(d + 8, lba);
  store_be32(d + 16, static_cast<uint32_t>(std::min<uint64_t>(blocks_ - lba, 0xffffffff)));
  finish_data_in(t, d, sizeof(d), load_be32(t->cdb + 10));
}

void Lun::cmd_start_stop_unit(ScsiTask* t) {
  // A fixed disk: there is no medium to load or eject and no power state to change.
  uint8_t pc = t->cdb[4] >> 4;
  switch (pc) {
    case 0x0: case 0x1: case 0x2: case 0x3: case 0x7: case 0xa: case 0xb:
      return finish(t, ok());
    default:
      return finish_sense(t, invalid_cdb_field(4, 7));
  }
}

void Lun::cmd_prevent_allow(ScsiTask* t) {
  if ((t->cdb[4] & 0x03) > 1) return finish_sense(t, invalid_cdb_field(4, 1));
  finish(t, ok());
}

void Lun::cmd_maintenance_in(ScsiTask* t) {
  if ((t->cdb[1] & 0x1f) == sa::kReportSupportedOpcodes) return report_opcodes(t);
  report_tmfs(t);
}

void Lun::report_tmfs(ScsiTask* t) {
  uint8_t d[16] = {};
  d[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02;  // ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LU RESET, TARGET RESET
  bool repd = t->cdb[2] & 0x80;
  if (repd) d[3] = 0x0c;
  finish_data_in(t, d, repd ? 16 : 4, load_be32(t->cdb + 6));
}

void Lun::report_opcodes(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  bool rctd = cdb[2] & 0x80;
  uint8_t options = cdb[2] & 0x07;
  uint8_t req_op = cdb[3];
  uint16_t req_sa = load_be16(cdb + 4);
  uint32_t alloc = load_be32(cdb + 6);
  auto append_timeouts = [&] {
    uint8_t td[12] = {};
    store_be16(td, 0x0a);
    store_be32(td + 8, 30);  // recommended command timeout, seconds
    response_.insert(response_.end(), td, td + sizeof(td));
  };
  auto visible = [&](const CommandInfo& c) { return !c.needs_thin || thin_; };

  response_.clear();
  if (options == 0) {
    response_.resize(4, 0);
    for (const CommandInfo& c : CommandTable::all()) {
      if (!visible(c)) continue;
      uint8_t d[8] = {c.opcode, 0, 0, c.service_action, 0, 0, 0, 0};
      d[5] = static_cast<uint8_t>((rctd ? 0x02 : 0) | (c.has_sa ? 0x01 : 0));
      store_be16(d + 6, c.cdb_len);
      response_.insert(response_.end(), d, d + 8);
      if (rctd) append_timeouts();
    }
    store_be32(response_.data(), static_cast<uint32_t>(response_.size() - 4));
    return finish_data_in(t, response_.data(), response_.size(), alloc);
  }
  if (options > 3) return finish_sense(t, invalid_cdb_field(2, 2));
  // One command: find the opcode, then decide whether its service action matters.
  const CommandInfo* match = nullptr;
  bool opcode_has_sa = false, opcode_known = false;
  for (const CommandInfo& c : CommandTable::all()) {
    if (c.opcode != req_op || !visible(c)) continue;
    opcode_known = true;
    opcode_has_sa = c.has_sa;
    if (!c.has_sa || c.service_action == req_sa) match = &c;
  }
  if (options == 1 && opcode_has_sa) return finish_sense(t, invalid_cdb_field(3));
  if (options == 2 && opcode_known && !opcode_has_sa) return finish_sense(t, invalid_cdb_field(3));
  if (options == 3 && !opcode_has_sa && req_sa != 0) match = nullptr;
  response_.assign(4, 0);
  if (!match) {
    response_[1] = 0x01;  // SUPPORT: not supported
    return finish_data_in(t, response_.data(), response_.size(), alloc);
  }
  response_[1] = static_cast<uint8_t>((rctd ? 0x80 : 0) | 0x03);  // CTDP, SUPPORT: as in the standard
  store_be16(response_.data() + 2, match->cdb_len);
  response_.insert(response_.end(), match->usage, match->usage + match->cdb_len);
  if (rctd) append_timeouts();
  finish_data_in(t, response_.data(), response_.size(), alloc);
}

void Lun::cmd_pr_in(ScsiTask* t) {
  Outcome o = shared_->pr_in(t->cdb, response_);
  if (!o.good()) return finish(t, o);
  finish_data_in(t, response_.data(), response_.size(), load_be16(t->cdb + 7));
}

void Lun::cmd_pr_out(ScsiTask* t) {
  uint32_t plen = load_be32(t->cdb + 5);
  uint8_t param[24] = {};
  uint64_t got = copy_from_iov(t, 0, param, std::min<uint64_t>({plen, t->priv.data_len, sizeof(param)}));
  t->priv.want = plen;
  uint32_t avail = static_cast<uint32_t>(std::min<uint64_t>(plen, t->priv.data_len));
  if (got < std::min<uint64_t>(avail, sizeof(param))) avail = static_cast<uint32_t>(got);
  std::vector<Registration> abort_here;  // PREEMPT AND ABORT: tasks of this thread to abort
  Outcome o = shared_->pr_out(mailbox_, *t->nexus, t->cdb, param, avail, abort_here);
  for (const Registration& who : abort_here) abort_registration(who);
  finish(t, o);
}

void Lun::cmd_reserve(ScsiTask* t) {
  if (t->cdb[0] == op::kReserve10 && (t->cdb[1] & 0x12)) return finish_sense(t, invalid_cdb_field(1, 4));
  finish(t, shared_->reserve6(*t->nexus));
}

void Lun::cmd_release(ScsiTask* t) {
  if (t->cdb[0] == op::kRelease10 && (t->cdb[1] & 0x12)) return finish_sense(t, invalid_cdb_field(1, 4));
  shared_->release6(*t->nexus);
  finish(t, ok());
}

}  // namespace vcp::scsi
