// Dispatch, completion, the task list, unit attentions and task management.
#include "target/scsi/lun.hpp"

#include <algorithm>
#include <cstring>

#include "target/scsi/cdb.hpp"
#include "target/scsi/commands.hpp"
#include "target/scsi/iov.hpp"

namespace vcp::scsi {
namespace {
const ItNexus kAnonymousNexus{};
}  // namespace

// ---------------------------------------------------------------------------------------------

Result<std::unique_ptr<Lun>> Lun::open(LunConfig cfg, BlockBackend& backend) {
  auto q = backend.open_queue(0);
  if (!q) return Err(q.error());
  std::unique_ptr<BackendQueue> queue = std::move(*q);
  auto lun = std::make_unique<Lun>(std::move(cfg), backend, *queue);
  lun->owned_queue_ = std::move(queue);
  return lun;
}

Lun::Lun(LunConfig cfg, BlockBackend& backend, BackendQueue& queue, std::shared_ptr<SharedLuState> shared)
    : cfg_(std::move(cfg)), backend_(backend), queue_(&queue), shared_(std::move(shared)) {
  const BackendInfo& info = backend_.info();
  block_size_ = info.block_size;
  blocks_ = info.capacity_bytes / info.block_size;
  read_only_ = cfg_.read_only || info.read_only;
  thin_ = cfg_.thin_provisioning && (info.write_zeroes || info.discard);
  lbprz_ = info.write_zeroes;
  max_io_bytes_ = info.max_transfer_bytes;
  max_transfer_blocks_ = cfg_.max_transfer_blocks;
  if (!shared_) shared_ = std::make_shared<SharedLuState>(ModePages{info.volatile_cache});
  mailbox_ = shared_->join();
  // The unit serial number is the backend's: the disk's own name (serial= or one the backend
  // made: of the file's path, or random for ram), which no other LUN anywhere shares by chance,
  // so that multipath initiators group paths by it safely.
  if (cfg_.serial.empty()) {
    char lun_hex[24];
    std::snprintf(lun_hex, sizeof(lun_hex), "%04llx", static_cast<unsigned long long>(cfg_.lun));
    cfg_.serial = info.serial.empty() ? std::string("vcp-") + lun_hex : info.serial;
  }
  if (cfg_.target_port_name.empty() && !cfg_.target_name.empty()) {
    char port[16];
    std::snprintf(port, sizeof(port), ",t,0x%04x", cfg_.target_port_group);
    cfg_.target_port_name = cfg_.target_name + port;
  }
  response_.reserve(4096);
}

Lun::~Lun() {
  handle_mail();
  // Requests still in the backend complete into tasks the transport owns: reap them first.
  while (active_count_ > 0 && queue_->in_flight() > 0) queue_->poll();
  // Whatever this Lun still owes the other threads is as done as it will get.
  for (const OwedAck& a : owed_acks_) shared_->post_ack(a.to, mailbox_->id, a.seq);
  shared_->leave(mailbox_);
}

int Lun::poll() {
  // Acquire: pairs with the release in SharedLuState::post_locked(); the inbox itself is
  // taken under the state's lock.
  if (mailbox_->pending.load(std::memory_order_acquire)) handle_mail();
  int n = queue_->poll();
  queue_->commit();
  return n;
}

void Lun::set_wake(std::function<void()> wake) { shared_->set_wake(mailbox_, std::move(wake)); }

void Lun::set_capacity(uint64_t capacity_bytes, bool announce) {
  blocks_ = capacity_bytes / block_size_;
  if (announce) shared_->ua_all(Asc::capacity_data_changed, nullptr);
}

void Lun::set_reported_luns(std::vector<uint64_t> luns, bool changed) {
  reported_luns_ = std::move(luns);
  if (changed) shared_->ua_all(Asc::reported_luns_data_changed, nullptr);
}

// ---------------------------------------------------------------------------------------------
// I_T nexuses and their unit attentions.

Lun::NexusState& Lun::nexus_state(const ItNexus& n) {
  for (auto& s : nexuses_)
    if (s.id == n.id) return s;
  nexuses_.push_back(NexusState{n.id, shared_->nexus(n), {}});
  return nexuses_.back();
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

void Lun::link(ScsiTask* t) {
  t->priv.prev = nullptr;
  t->priv.next = active_head_;
  if (active_head_) active_head_->priv.prev = t;
  active_head_ = t;
  ++active_count_;
}

void Lun::unlink(ScsiTask* t) {
  auto& p = t->priv;
  if (p.prev) p.prev->priv.next = p.next;
  else active_head_ = p.next;
  if (p.next) p.next->priv.prev = p.prev;
  p.prev = p.next = nullptr;
  --active_count_;
}

// The fast path compares the shared reservations' generation with the one this nexus's verdict
// was computed at; the lock only when they differ (the reservations changed since).
bool Lun::access_conflict(const ScsiTask* t, const CommandInfo* cmd, NexusState& ns) const {
  if (shared_->access_gen() != ns.access.gen) shared_->access_verdict(*t->nexus, &ns.access);
  if (!cmd->legacy_allowed && ns.access.legacy_conflict) return true;
  PrAccess access = cmd->pr;
  if (cmd->opcode == op::kStartStopUnit && (t->cdb[4] & 0x01) && (t->cdb[4] >> 4) == 0) access = PrAccess::allowed;
  if (cmd->opcode == op::kPreventAllow && (t->cdb[4] & 0x03) == 0) access = PrAccess::allowed;
  switch (access) {
    case PrAccess::read: return ns.access.read_conflict;
    case PrAccess::write: return ns.access.write_conflict;
    case PrAccess::allowed: break;
  }
  return false;
}

void Lun::execute(ScsiTask* t) {
  t->status = Status::good;
  t->sense_len = 0;
  t->residual_kind = Residual::none;
  t->residual = 0;
  t->data_in_len = 0;
  t->aborted = false;
  if (!t->nexus) t->nexus = &kAnonymousNexus;
  auto& p = t->priv;
  p.lun = this;
  p.cmd = nullptr;
  p.lba = p.blocks = p.next_lba = p.bytes_left = p.buffer_off = 0;
  p.cursor = {};
  p.tail = 0;
  p.want = 0;
  p.io_bytes = 0;
  p.io_status = 0;
  p.phase = 0;
  p.fua = p.writes = p.waiting = p.in_io = p.holds_range = p.in_advance = p.again = false;
  p.wait_next = nullptr;
  p.iov_sum = 0;
  for (uint32_t i = 0; i < t->iovcnt; ++i) p.iov_sum += t->iov[i].iov_len;
  p.data_len = std::min<uint64_t>(p.iov_sum, t->expected_length);
  link(t);

  if (active_count_ > cfg_.max_tasks) {
    finish(t, Outcome{Status::task_set_full, {}});
    return;
  }
  NexusState& ns = nexus_state(*t->nexus);
  bool opcode_known = false;
  const CommandInfo* cmd = CommandTable::find(t->cdb, &opcode_known);
  if (cmd && cmd->needs_thin && !thin_) cmd = nullptr, opcode_known = false;
  // Acquire: pairs with NexusRecord::publish(); the lock is taken only when one is pending.
  Asc ua;
  if (!(cmd && cmd->ua_exempt) && ns.rec->ua_pending.load(std::memory_order_acquire) != 0 &&
      shared_->take_ua(*ns.rec, &ua)) {
    finish_sense(t, sense(SenseKey::unit_attention, ua));
    return;
  }
  if (!cmd) {
    finish_sense(t, opcode_known ? invalid_cdb_field(1, 4) : illegal(Asc::invalid_opcode));
    return;
  }
  p.cmd = cmd;
  if (t->cdb_len < cmd->cdb_len) {
    finish_sense(t, illegal(Asc::invalid_opcode));
    return;
  }
  uint8_t control = t->cdb[cmd->cdb_len - 1];
  if (control & 0x04) {  // NACA: auto contingent allegiance is not supported
    finish_sense(t, invalid_cdb_field(cmd->cdb_len - 1, 2));
    return;
  }
  if (control & 0x01) {  // LINK (obsolete)
    finish_sense(t, invalid_cdb_field(cmd->cdb_len - 1, 0));
    return;
  }
  if (access_conflict(t, cmd, ns)) {
    finish(t, conflict());
    return;
  }
  (this->*cmd->handler)(t);
}

// ---------------------------------------------------------------------------------------------
// Completion.

void Lun::finish(ScsiTask* t, const Outcome& o) {
  t->status = o.status;
  if (o.status == Status::check_condition) {
    o.sense.encode(t->sense);
    t->sense_len = kFixedSenseLen;
  }
  complete(t);
}

void Lun::complete(ScsiTask* t) {
  auto& p = t->priv;
  unlink(t);
  bool quiesce_check = false;
  if (t->aborted) {
    t->status = Status::task_aborted;
    t->sense_len = 0;
    quiesce_check = !waits_.empty() || !owed_acks_.empty();
  }
  uint64_t edtl = t->expected_length;
  if (t->status == Status::good || t->status == Status::condition_met) {
    if (p.want > edtl) {
      t->residual_kind = Residual::overflow;
      t->residual = static_cast<uint32_t>(std::min<uint64_t>(p.want - edtl, UINT32_MAX));
    } else if (p.want < edtl) {
      t->residual_kind = Residual::underflow;
      t->residual = static_cast<uint32_t>(edtl - p.want);
    }
  } else {
    t->data_in_len = 0;
    if (edtl) {
      t->residual_kind = Residual::underflow;
      t->residual = static_cast<uint32_t>(edtl);
    }
  }
  if (p.holds_range) {
    p.holds_range = false;
    --caw_active_;
  }
  bool wake = p.writes && wait_head_;
  p.scratch.reset();
  p.scratch_len = 0;
  t->done(t);
  if (wake) release_waiters();
  if (quiesce_check) check_quiesced();
}

uint64_t Lun::copy_to_iov(ScsiTask* t, uint64_t offset, const uint8_t* src, uint64_t len) {
  return walk_iov(t->iov, t->iovcnt, offset, len, [src](uint8_t* seg, uint64_t done, uint64_t n) {
    std::memcpy(seg, src + done, n);
    return true;
  });
}

uint64_t Lun::copy_from_iov(const ScsiTask* t, uint64_t offset, uint8_t* dst, uint64_t len) const {
  return walk_iov(t->iov, t->iovcnt, offset, len, [dst](uint8_t* seg, uint64_t done, uint64_t n) {
    std::memcpy(dst + done, seg, n);
    return true;
  });
}

void Lun::finish_data_in(ScsiTask* t, const uint8_t* data, uint64_t len, uint64_t alloc_len) {
  uint64_t want = std::min(len, alloc_len);
  uint64_t n = std::min(want, t->priv.data_len);
  if (t->dir != DataDir::in) n = 0;
  t->data_in_len = static_cast<uint32_t>(copy_to_iov(t, 0, data, n));
  t->priv.want = want;
  finish(t, ok());
}

// ---------------------------------------------------------------------------------------------
// Task management.

uint32_t Lun::abort_matching(const ItNexus* nexus, bool by_tag, uint64_t tag, const ItNexus* cleared_from) {
  uint32_t count = 0;
  const uint64_t gen = ++abort_gen_;
  ScsiTask* parked = nullptr;  // parked tasks complete now, after the walk
  std::vector<const ItNexus*> cleared;  // (rare: CLEAR TASK SET only)
  for (ScsiTask* t = active_head_; t; t = t->priv.next) {
    if (t->aborted) continue;
    if (nexus && !t->nexus->same_port_as(*nexus)) continue;
    if (by_tag && t->tag != tag) continue;
    if (cleared_from && !t->nexus->same_port_as(*cleared_from) &&
        std::none_of(cleared.begin(), cleared.end(), [&](const ItNexus* n) { return n->same_port_as(*t->nexus); }))
      cleared.push_back(t->nexus);
    t->aborted = true;
    t->priv.abort_gen = gen;
    ++count;
    if (t->priv.waiting) {
      ScsiTask** pp = &wait_head_;
      ScsiTask* prev = nullptr;
      while (*pp != t) {
        prev = *pp;
        pp = &(*pp)->priv.wait_next;
      }
      *pp = t->priv.wait_next;
      if (wait_tail_ == t) wait_tail_ = prev;
      t->priv.waiting = false;
      t->priv.wait_next = parked;
      parked = t;
    }
  }
  // Before the aborted tasks complete: the transport may free a nexus with its last task.
  for (const ItNexus* n : cleared) shared_->ua_one(*n, Asc::commands_cleared_by_another_initiator);
  while (parked) {
    ScsiTask* t = parked;
    parked = t->priv.wait_next;
    t->priv.wait_next = nullptr;
    complete(t);
  }
  return count;
}

bool Lun::abort_task(const ItNexus& nexus, uint64_t tag) { return abort_matching(&nexus, true, tag) > 0; }

uint32_t Lun::abort_task_set(const ItNexus& nexus) { return abort_matching(&nexus, false, 0); }

// The task set is the logical unit's: the other threads' tasks go too (by message).
uint32_t Lun::clear_task_set(const ItNexus& issuer) {
  uint32_t n = abort_matching(nullptr, false, 0, &issuer);
  const uint64_t seq = ++reset_seq_;
  if (uint32_t peers = shared_->clear_everywhere(mailbox_, seq, issuer)) barriers_.push_back(ResetBarrier{seq, peers});
  return n;
}

void Lun::reset(ResetKind kind) {
  abort_matching(nullptr, false, 0);
  // The reservation, the unit attentions and the other threads' tasks: through the shared state.
  const uint64_t seq = ++reset_seq_;
  if (uint32_t peers = shared_->reset(mailbox_, kind, seq)) barriers_.push_back(ResetBarrier{seq, peers});
}

void Lun::nexus_lost(const ItNexus& nexus) {
  abort_matching(&nexus, false, 0);
  shared_->nexus_lost(nexus);
  std::erase_if(nexuses_, [&](const NexusState& s) { return s.id == nexus.id; });
}

void Lun::abort_registration(const Registration& who) {
  const ItNexus n = who.port();
  abort_matching(&n, false, 0);
}

// ---------------------------------------------------------------------------------------------
// Messages from the other threads' Luns, and quiescence.

void Lun::handle_mail() {
  shared_->take_mail(mailbox_, mail_);
  for (const LunMessage& m : mail_) {
    switch (m.kind) {
      case LunMessage::Kind::abort_all:
        abort_matching(nullptr, false, 0);
        owed_acks_.push_back(OwedAck{m.from, m.seq, abort_gen_});
        break;
      case LunMessage::Kind::clear_all: {
        const ItNexus issuer = m.who.port();
        abort_matching(nullptr, false, 0, &issuer);
        owed_acks_.push_back(OwedAck{m.from, m.seq, abort_gen_});
        break;
      }
      case LunMessage::Kind::abort_nexus:
        abort_registration(m.who);
        break;
      case LunMessage::Kind::ack:
        for (size_t i = 0; i < barriers_.size(); ++i) {
          if (barriers_[i].seq != m.seq) continue;
          if (--barriers_[i].acks_left == 0) barriers_.erase(barriers_.begin() + static_cast<long>(i));
          break;
        }
        break;
    }
  }
  mail_.clear();
  check_quiesced();
}

void Lun::when_quiesced(QuiesceWait* w) {
  w->abort_gen = abort_gen_;
  w->reset_seq = reset_seq_;
  waits_.push_back(w);
  check_quiesced();
}

void Lun::cancel_wait(QuiesceWait* w) { std::erase(waits_, w); }

// Aborted tasks end in any order: what has ended is everything aborted before the oldest
// generation still in flight; a reset sent to the other threads has ended when all acked it.
void Lun::check_quiesced() {
  if (waits_.empty() && owed_acks_.empty()) return;
  uint64_t live = ~uint64_t{0};
  for (ScsiTask* t = active_head_; t; t = t->priv.next)
    if (t->aborted) live = std::min(live, t->priv.abort_gen);
  for (size_t i = 0; i < owed_acks_.size();) {
    if (owed_acks_[i].abort_gen < live) {
      shared_->post_ack(owed_acks_[i].to, mailbox_->id, owed_acks_[i].seq);
      owed_acks_.erase(owed_acks_.begin() + static_cast<long>(i));
    } else {
      ++i;
    }
  }
  uint64_t unacked = ~uint64_t{0};
  for (const ResetBarrier& b : barriers_) unacked = std::min(unacked, b.seq);
  // done() may call back into this Lun: take the ready waits off the list first.
  QuiesceWait* ready[16];
  size_t n = 0;
  for (size_t i = 0; i < waits_.size() && n < std::size(ready);) {
    QuiesceWait* w = waits_[i];
    if (w->abort_gen < live && w->reset_seq < unacked) {
      ready[n++] = w;
      waits_.erase(waits_.begin() + static_cast<long>(i));
    } else {
      ++i;
    }
  }
  for (size_t i = 0; i < n; ++i) ready[i]->done(ready[i]);
  if (n == std::size(ready)) check_quiesced();
}

// ---------------------------------------------------------------------------------------------

void encode_lun(uint64_t lun, uint8_t out[8]) {
  std::memset(out, 0, 8);
  if (lun < 256) {
    out[1] = static_cast<uint8_t>(lun);
  } else {
    store_be16(out, static_cast<uint16_t>(0x4000 | (lun & 0x3fff)));
  }
}

uint64_t decode_lun(const uint8_t in[8]) {
  switch (in[0] >> 6) {
    case 0: return in[1];
    case 1: return load_be16(in) & 0x3fff;
    default: return ~uint64_t{0};
  }
}

}  // namespace vcp::scsi
