// The data path: READ/WRITE/WRITE AND VERIFY, VERIFY, SYNCHRONIZE CACHE, WRITE SAME, UNMAP and
// COMPARE AND WRITE as sequences of backend requests.
//
// Each command is a small state machine stepped by advance(): a step either submits one
// backend request or completes the task. Backends may complete inside submit(), so advance()
// loops instead of recursing. READ and WRITE hand the task's own iovecs to the backend (or a
// window onto them when split); only the rarer commands use a scratch buffer.
#include <algorithm>
#include <cstring>
#include <new>

#include "target/scsi/cdb.hpp"
#include "target/scsi/commands.hpp"
#include "target/scsi/iov.hpp"
#include "target/scsi/lun.hpp"

namespace vcp::scsi {
namespace {

constexpr uint64_t kScratchChunk = 1 << 20;  // VERIFY and WRITE SAME work in pieces this big

struct RangeArgs {
  uint64_t lba = 0;
  uint64_t blocks = 0;
  uint16_t length_field = 0;  // the CDB byte where the length starts (for field pointers)
};

// LBA and length of the READ/WRITE/VERIFY/SYNCHRONIZE CACHE shapes, by CDB size.
RangeArgs decode_range(const uint8_t* cdb) {
  RangeArgs a;
  switch (cdb_length_for(cdb[0])) {
    case 6:
      a.lba = load_be24(cdb + 1) & 0x1fffff;
      a.blocks = cdb[4] ? cdb[4] : 256;  // READ(6)/WRITE(6): 0 means 256 blocks
      a.length_field = 4;
      break;
    case 10:
      a.lba = load_be32(cdb + 2);
      a.blocks = load_be16(cdb + 7);
      a.length_field = 7;
      break;
    case 12:
      a.lba = load_be32(cdb + 2);
      a.blocks = load_be32(cdb + 6);
      a.length_field = 6;
      break;
    default:
      a.lba = load_be64(cdb + 2);
      a.blocks = load_be32(cdb + 10);
      a.length_field = 10;
      break;
  }
  return a;
}

bool is_write_opcode(uint8_t opc) {
  switch (opc) {
    case op::kWrite6: case op::kWrite10: case op::kWrite12: case op::kWrite16:
    case op::kWriteVerify10: case op::kWriteVerify12: case op::kWriteVerify16:
      return true;
    default:
      return false;
  }
}

bool is_write_and_verify(uint8_t opc) {
  return opc == op::kWriteVerify10 || opc == op::kWriteVerify12 || opc == op::kWriteVerify16;
}

// Offset of the first byte where the iovecs (from offset) and buf differ, or -1.
int64_t first_difference(const ScsiTask* t, uint64_t offset, const uint8_t* buf, uint64_t len) {
  int64_t at = -1;
  walk_iov(t->iov, t->iovcnt, offset, len, [&](const uint8_t* seg, uint64_t done, uint64_t n) {
    if (std::memcmp(seg, buf + done, n) == 0) return true;
    for (uint64_t k = 0; k < n && at < 0; ++k)
      if (seg[k] != buf[done + k]) at = static_cast<int64_t>(done + k);
    return false;
  });
  return at;
}

// ORs `len` bytes of the iovecs (from offset) into buf.
void or_from_iov(const ScsiTask* t, uint64_t offset, uint8_t* buf, uint64_t len) {
  walk_iov(t->iov, t->iovcnt, offset, len, [&](const uint8_t* seg, uint64_t done, uint64_t n) {
    for (uint64_t k = 0; k < n; ++k) buf[done + k] |= seg[k];
    return true;
  });
}

// The commands that hold their range against every overlapping write while they run: their
// read and their write must not have another write land between them.
bool holds_range(uint8_t opc) { return opc == op::kCompareAndWrite || opc == op::kOrWrite16; }

Sense miscompare_at(uint64_t offset) {
  Sense s{SenseKey::miscompare, Asc::miscompare_during_verify};
  s.info_valid = true;
  s.information = static_cast<uint32_t>(offset);
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Engine.

uint64_t Lun::scratch_chunk(uint64_t total) const {
  return std::min<uint64_t>(total, std::max<uint64_t>(kScratchChunk / block_size_, 1) * block_size_);
}

// Submits the next piece of a scratch-buffer transfer (VERIFY reads, WRITE SAME writes).
void Lun::submit_scratch(ScsiTask* t, BlockOp op) {
  auto& p = t->priv;
  uint64_t n = std::min(p.bytes_left, p.scratch_len);
  if (max_io_bytes_ && n > max_io_bytes_) n = max_io_bytes_ - max_io_bytes_ % block_size_;
  submit_from_scratch(t, op, p.next_lba, n);
}

// A request on the first n bytes of the task's scratch buffer.
void Lun::submit_from_scratch(ScsiTask* t, BlockOp op, uint64_t lba, uint64_t n) {
  auto& p = t->priv;
  p.window[0] = {p.scratch.get(), n};
  p.req.iov = p.window;
  p.req.iovcnt = 1;
  submit(t, op, lba, n);
}

bool Lun::alloc_scratch(ScsiTask* t, uint64_t len) {
  t->priv.scratch.reset(new (std::nothrow) uint8_t[len]);
  t->priv.scratch_len = t->priv.scratch ? len : 0;
  return t->priv.scratch != nullptr;
}

void Lun::submit(ScsiTask* t, BlockOp op, uint64_t lba, uint64_t bytes, bool unmap) {
  auto& p = t->priv;
  BlockRequest& r = p.req;
  r.op = op;
  r.fua = op == BlockOp::write && p.fua;
  r.unmap = unmap;
  r.offset = lba * block_size_;
  r.length = bytes;
  if (op != BlockOp::read && op != BlockOp::write) {
    r.iov = nullptr;
    r.iovcnt = 0;
  }
  r.done = on_block_done;
  r.ctx = t;
  p.io_bytes = bytes;
  p.io_status = 0;
  p.in_io = true;
  queue_->submit(&r);
}

void Lun::on_block_done(BlockRequest* req, int status) {
  auto* t = static_cast<ScsiTask*>(req->ctx);
  t->priv.io_status = status;
  if (t->priv.in_advance) {  // completed inside submit(): the loop in advance() goes on
    t->priv.again = true;
    return;
  }
  t->priv.lun->advance(t);
}

void Lun::advance(ScsiTask* t) {
  for (;;) {
    t->priv.in_advance = true;
    t->priv.again = false;
    if (!step(t)) return;  // completed: the task is the transport's again
    t->priv.in_advance = false;
    if (!t->priv.again) return;  // in flight; on_block_done() resumes
  }
}

bool Lun::step(ScsiTask* t) {
  switch (t->priv.cmd->opcode) {
    case op::kVerify10: case op::kVerify12: case op::kVerify16:
      return step_verify(t);
    case op::kSyncCache10: case op::kSyncCache16:
      return step_flush(t);
    case op::kWriteSame10: case op::kWriteSame16:
      return step_write_same(t);
    case op::kUnmap:
      return step_unmap(t);
    case op::kCompareAndWrite:
      return step_compare_and_write(t);
    case op::kOrWrite16:
      return step_orwrite(t);
    default:
      return step_rw(t);
  }
}

Sense Lun::io_error(const ScsiTask* t, int status) const {
  if (status == -EROFS) return sense(SenseKey::data_protect, Asc::write_protected);
  // The file system under the LUN is full (or over quota): SBC-4 4.7.3.6's answer for a write
  // that finds no space, which initiators tell apart from a medium error (Linux: -ENOSPC).
  if (status == -ENOSPC || status == -EDQUOT)
    return sense(SenseKey::data_protect, Asc::space_allocation_failed_write_protect);
  if (t->priv.req.op == BlockOp::read) return sense(SenseKey::medium_error, Asc::unrecovered_read_error);
  return sense(SenseKey::medium_error, Asc::write_error);
}

void Lun::seek(ScsiTask* t, uint64_t offset) {
  t->priv.cursor = {};
  skip(t, offset);
}

void Lun::skip(ScsiTask* t, uint64_t bytes) {
  auto& c = t->priv.cursor;
  while (bytes > 0 && c.index < t->iovcnt) {
    uint64_t avail = t->iov[c.index].iov_len - c.offset;
    if (bytes < avail) {
      c.offset += bytes;
      return;
    }
    bytes -= avail;
    ++c.index;
    c.offset = 0;
  }
}

// Points the request at the next whole blocks of the task's buffer (at most max_bytes, 0: no
// limit), through the task's window of iovecs. False when not even one block fits.
bool Lun::fill_window(ScsiTask* t, uint64_t max_bytes, uint64_t* got) {
  auto& p = t->priv;
  uint64_t limit = p.bytes_left;
  if (max_bytes) limit = std::min(limit, max_bytes);
  unsigned n = 0;
  uint64_t total = 0;
  uint32_t idx = p.cursor.index;
  uint64_t off = p.cursor.offset;
  while (n < detail::kWindowIov && total < limit && idx < t->iovcnt) {
    uint64_t len = std::min(t->iov[idx].iov_len - off, limit - total);
    if (len > 0) {
      p.window[n].iov_base = static_cast<uint8_t*>(t->iov[idx].iov_base) + off;
      p.window[n].iov_len = len;
      ++n;
      total += len;
    }
    ++idx;
    off = 0;
  }
  uint64_t excess = total % block_size_;
  total -= excess;
  while (excess > 0) {
    iovec& last = p.window[n - 1];
    if (last.iov_len <= excess) {
      excess -= last.iov_len;
      --n;
    } else {
      last.iov_len -= excess;
      excess = 0;
    }
  }
  if (total == 0) return false;
  p.req.iov = p.window;
  p.req.iovcnt = n;
  *got = total;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Ordering against COMPARE AND WRITE and ORWRITE: neither may interleave with a write to its
// blocks.

bool Lun::must_wait(const ScsiTask* t) const {
  const auto& p = t->priv;
  if (!p.writes) return false;
  bool holder = holds_range(p.cmd->opcode);
  if (!holder && caw_active_ == 0) return false;
  for (const ScsiTask* u = active_head_; u; u = u->priv.next) {
    const auto& q = u->priv;
    if (u == t || q.waiting || !q.writes) continue;
    if (!holder && !q.holds_range) continue;
    if (p.lba < q.lba + q.blocks && q.lba < p.lba + p.blocks) return true;
  }
  return false;
}

void Lun::park(ScsiTask* t) {
  t->priv.waiting = true;
  t->priv.wait_next = nullptr;
  if (wait_tail_) wait_tail_->priv.wait_next = t;
  else wait_head_ = t;
  wait_tail_ = t;
}

void Lun::start_io(ScsiTask* t) {
  if (must_wait(t)) return park(t);
  if (holds_range(t->priv.cmd->opcode)) {
    t->priv.holds_range = true;
    ++caw_active_;
  }
  advance(t);
}

void Lun::release_waiters() {
  if (draining_) return;  // the loop below is already running further up the stack
  draining_ = true;
  for (bool progress = true; progress;) {
    progress = false;
    ScsiTask* prev = nullptr;
    for (ScsiTask* w = wait_head_; w; prev = w, w = w->priv.wait_next) {
      if (must_wait(w)) continue;
      if (prev) prev->priv.wait_next = w->priv.wait_next;
      else wait_head_ = w->priv.wait_next;
      if (wait_tail_ == w) wait_tail_ = prev;
      w->priv.wait_next = nullptr;
      w->priv.waiting = false;
      start_io(w);
      progress = true;
      break;
    }
  }
  draining_ = false;
}

// ---------------------------------------------------------------------------------------------
// READ / WRITE / WRITE AND VERIFY (6, 10, 12, 16).

void Lun::cmd_read_write(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  auto& p = t->priv;
  bool writing = is_write_opcode(cdb[0]);
  bool six = cdb_length_for(cdb[0]) == 6;
  if (!six && (cdb[1] >> 5)) return finish_sense(t, invalid_cdb_field(1, 7));  // no protection information
  if (is_write_and_verify(cdb[0]) && ((cdb[1] >> 1) & 0x03) > 1) return finish_sense(t, invalid_cdb_field(1, 2));
  RangeArgs a = decode_range(cdb);
  if (max_transfer_blocks_ && a.blocks > max_transfer_blocks_) return finish_sense(t, invalid_cdb_field(a.length_field));
  if (!range_ok(a.lba, a.blocks)) return finish_sense(t, illegal(Asc::lba_out_of_range));
  if (writing && read_only_) return finish_sense(t, sense(SenseKey::data_protect, Asc::write_protected));
  uint64_t cdb_bytes = a.blocks * block_size_;
  p.want = cdb_bytes;
  if (t->dir != (writing ? DataDir::out : DataDir::in)) p.data_len = 0;
  uint64_t xfer = std::min(cdb_bytes, p.data_len);
  p.lba = p.next_lba = a.lba;
  p.blocks = a.blocks;
  p.bytes_left = xfer - xfer % block_size_;
  p.tail = writing ? 0 : static_cast<uint32_t>(xfer % block_size_);  // a partial block is never written
  p.writes = writing;
  p.fua = writing && (is_write_and_verify(cdb[0]) || (!six && (cdb[1] & 0x08)) || !shared_->wce());
  if (p.bytes_left == 0 && p.tail == 0) return finish(t, ok());
  start_io(t);
}

bool Lun::step_rw(ScsiTask* t) {
  auto& p = t->priv;
  if (p.in_io) {
    p.in_io = false;
    if (p.io_status < 0) return fail(t, check(io_error(t, p.io_status)));
    if (p.phase == 1) {  // the partial last block, read whole into scratch
      copy_to_iov(t, p.buffer_off, p.scratch.get(), p.tail);
      p.buffer_off += p.tail;
      p.tail = 0;
    } else {
      skip(t, p.io_bytes);
      p.next_lba += p.io_bytes / block_size_;
      p.bytes_left -= p.io_bytes;
      p.buffer_off += p.io_bytes;
    }
  }
  if (t->aborted) return complete(t), false;
  BlockOp op = p.writes ? BlockOp::write : BlockOp::read;
  if (p.bytes_left > 0 && !p.writes && t->accept_view && p.tail == 0 && p.buffer_off == 0) {
    // A READ of whole blocks, from a backend that can show them in place: no request, no copy.
    if (const uint8_t* v = queue_->read_view(p.next_lba * block_size_, p.bytes_left)) {
      t->data_in_view = v;
      t->data_in_fd = queue_->read_view_fd();
      t->data_in_offset = p.next_lba * block_size_;
      t->data_in_len = static_cast<uint32_t>(p.bytes_left);
      return fail(t, ok());
    }
  }
  if (p.bytes_left > 0) {
    uint64_t n = p.bytes_left;
    bool whole = p.cursor.index == 0 && p.cursor.offset == 0 && n == p.iov_sum &&
                 (max_io_bytes_ == 0 || n <= max_io_bytes_);
    if (whole) {  // the common case: the task's iovecs are the request's
      p.req.iov = t->iov;
      p.req.iovcnt = t->iovcnt;
    } else if (!fill_window(t, max_io_bytes_ - max_io_bytes_ % block_size_, &n)) {
      return fail(t, check(sense(SenseKey::hardware_error, Asc::internal_target_failure)));
    }
    submit(t, op, p.next_lba, n);
    return true;
  }
  if (p.tail > 0) {
    if (!alloc_scratch(t, block_size_)) return fail(t, Outcome{Status::busy, {}});
    p.phase = 1;
    submit_from_scratch(t, BlockOp::read, p.next_lba, block_size_);
    return true;
  }
  if (!p.writes) t->data_in_len = static_cast<uint32_t>(p.buffer_off);
  return fail(t, ok());
}

// ---------------------------------------------------------------------------------------------
// VERIFY (10, 12, 16): BYTCHK 00b checks the range only, 01b compares the data-out buffer with
// the medium, 11b compares one block of data-out with every block of the range.

void Lun::cmd_verify(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  auto& p = t->priv;
  if (cdb[1] >> 5) return finish_sense(t, invalid_cdb_field(1, 7));
  uint8_t bytchk = (cdb[1] >> 1) & 0x03;
  if (bytchk == 2) return finish_sense(t, invalid_cdb_field(1, 2));
  RangeArgs a = decode_range(cdb);
  if (bytchk && max_transfer_blocks_ && a.blocks > max_transfer_blocks_)
    return finish_sense(t, invalid_cdb_field(a.length_field));
  if (!range_ok(a.lba, a.blocks)) return finish_sense(t, illegal(Asc::lba_out_of_range));
  if (bytchk == 0 || a.blocks == 0) return finish(t, ok());
  p.want = bytchk == 1 ? a.blocks * block_size_ : block_size_;
  if (t->dir != DataDir::out) p.data_len = 0;
  uint64_t total = 0;
  if (bytchk == 1) {
    total = std::min(a.blocks * block_size_, p.data_len);
    total -= total % block_size_;
  } else if (p.data_len >= block_size_) {
    total = a.blocks * block_size_;
  }
  if (total == 0) return finish(t, ok());
  if (!alloc_scratch(t, scratch_chunk(total)))
    return finish(t, Outcome{Status::busy, {}});
  p.next_lba = a.lba;
  p.bytes_left = total;
  p.phase = bytchk;
  advance(t);
}

bool Lun::step_verify(ScsiTask* t) {
  auto& p = t->priv;
  if (p.in_io) {
    p.in_io = false;
    if (p.io_status < 0) return fail(t, check(io_error(t, p.io_status)));
    const uint8_t* got = p.scratch.get();
    if (p.phase == 1) {
      int64_t at = first_difference(t, p.buffer_off, got, p.io_bytes);
      if (at >= 0) return fail(t, check(miscompare_at(p.buffer_off + static_cast<uint64_t>(at))));
    } else {
      for (uint64_t b = 0; b < p.io_bytes; b += block_size_) {
        int64_t at = first_difference(t, 0, got + b, block_size_);
        if (at >= 0) return fail(t, check(miscompare_at(p.buffer_off + b + static_cast<uint64_t>(at))));
      }
    }
    p.next_lba += p.io_bytes / block_size_;
    p.bytes_left -= p.io_bytes;
    p.buffer_off += p.io_bytes;
  }
  if (t->aborted) return complete(t), false;
  if (p.bytes_left == 0) return fail(t, ok());
  submit_scratch(t, BlockOp::read);
  return true;
}

// ---------------------------------------------------------------------------------------------
// SYNCHRONIZE CACHE (10, 16): the whole cache is flushed whatever the range.

void Lun::cmd_sync_cache(ScsiTask* t) {
  RangeArgs a = decode_range(t->cdb);
  if (a.blocks == 0 ? a.lba >= blocks_ : !range_ok(a.lba, a.blocks))
    return finish_sense(t, illegal(Asc::lba_out_of_range));
  advance(t);
}

bool Lun::step_flush(ScsiTask* t) {
  auto& p = t->priv;
  if (p.in_io) {
    p.in_io = false;
    if (p.io_status < 0 && p.io_status != -EOPNOTSUPP) return fail(t, check(io_error(t, p.io_status)));
    return fail(t, ok());
  }
  if (t->aborted) return complete(t), false;
  submit(t, BlockOp::flush, 0, 0);
  return true;
}

// PRE-FETCH (10, 16): there is no cache to load, so GOOD (not CONDITION MET) once the range
// checks out (SBC-4 5.8).
void Lun::cmd_prefetch(ScsiTask* t) {
  RangeArgs a = decode_range(t->cdb);
  if (!range_ok(a.lba, a.blocks)) return finish_sense(t, illegal(Asc::lba_out_of_range));
  finish(t, ok());
}

// ---------------------------------------------------------------------------------------------
// WRITE SAME (10, 16). Zeros (or NDOB) go to the backend as write-zeroes, deallocating when
// UNMAP is set; any other pattern is replicated into a scratch buffer and written in pieces.

void Lun::cmd_write_same(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  auto& p = t->priv;
  bool sixteen = cdb[0] == op::kWriteSame16;
  uint8_t f = cdb[1];
  if (f >> 5) return finish_sense(t, invalid_cdb_field(1, 7));
  if (f & 0x10) return finish_sense(t, invalid_cdb_field(1, 4));  // ANCHOR: ANC_SUP = 0
  if (f & 0x04) return finish_sense(t, invalid_cdb_field(1, 2));  // PBDATA
  if (f & 0x02) return finish_sense(t, invalid_cdb_field(1, 1));  // LBDATA
  bool unmap = f & 0x08;
  bool ndob = sixteen && (f & 0x01);
  if (unmap && !thin_) return finish_sense(t, invalid_cdb_field(1, 3));
  RangeArgs a = decode_range(cdb);
  if (a.blocks == 0 || a.blocks > cfg_.max_write_same_blocks)  // WSNZ = 1
    return finish_sense(t, invalid_cdb_field(a.length_field));
  if (!range_ok(a.lba, a.blocks)) return finish_sense(t, illegal(Asc::lba_out_of_range));
  if (read_only_) return finish_sense(t, sense(SenseKey::data_protect, Asc::write_protected));
  p.want = ndob ? 0 : block_size_;
  if (t->dir != DataDir::out) p.data_len = 0;
  if (!ndob && (t->expected_length != block_size_ || p.data_len < block_size_))  // exactly one block
    return finish_sense(t, invalid_cdb_field(a.length_field));

  uint64_t total = a.blocks * block_size_;
  bool zero = ndob;
  if (!ndob) {
    uint64_t chunk = scratch_chunk(total);
    if (!alloc_scratch(t, chunk)) return finish(t, Outcome{Status::busy, {}});
    uint8_t* s = p.scratch.get();
    copy_from_iov(t, 0, s, block_size_);
    zero = std::all_of(s, s + block_size_, [](uint8_t b) { return b == 0; });
    for (uint64_t off = block_size_; off < chunk; off += block_size_) std::memcpy(s + off, s, block_size_);
  }
  const BackendInfo& info = backend_.info();
  if (zero && info.write_zeroes) {
    p.phase = unmap ? 2 : 1;  // write-zeroes (2: may deallocate)
  } else if (ndob) {
    if (!alloc_scratch(t, scratch_chunk(total)))
      return finish(t, Outcome{Status::busy, {}});
    std::memset(p.scratch.get(), 0, p.scratch_len);
  }
  p.lba = p.next_lba = a.lba;
  p.blocks = a.blocks;
  p.bytes_left = total;
  p.writes = true;
  p.fua = !shared_->wce();
  start_io(t);
}

bool Lun::step_write_same(ScsiTask* t) {
  auto& p = t->priv;
  if (p.in_io) {
    p.in_io = false;
    if (p.io_status == -EOPNOTSUPP && p.phase != 0) {
      // The backend cannot write zeroes after all: write them as a pattern.
      uint64_t chunk = scratch_chunk(p.bytes_left);
      if (!alloc_scratch(t, chunk)) return fail(t, Outcome{Status::busy, {}});
      std::memset(p.scratch.get(), 0, chunk);
      p.phase = 0;
    } else if (p.io_status < 0) {
      return fail(t, check(io_error(t, p.io_status)));
    } else {
      p.next_lba += p.io_bytes / block_size_;
      p.bytes_left -= p.io_bytes;
    }
  }
  if (t->aborted) return complete(t), false;
  if (p.bytes_left == 0) return fail(t, ok());
  if (p.phase == 0) {
    submit_scratch(t, BlockOp::write);
    return true;
  }
  uint64_t n = p.bytes_left;
  uint64_t limit = backend_.info().max_write_zeroes_bytes;
  if (limit && n > limit) n = limit - limit % block_size_;
  submit(t, BlockOp::write_zeroes, p.next_lba, n, p.phase == 2);
  return true;
}

// ---------------------------------------------------------------------------------------------
// UNMAP: every descriptor checked before any block is touched, then deallocated in order.

void Lun::cmd_unmap(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  auto& p = t->priv;
  if (cdb[1] & 0x01) return finish_sense(t, invalid_cdb_field(1, 0));  // ANCHOR: ANC_SUP = 0
  uint32_t plen = load_be16(cdb + 7);
  p.want = plen;
  if (read_only_) return finish_sense(t, sense(SenseKey::data_protect, Asc::write_protected));
  if (plen == 0) return finish(t, ok());
  if (t->dir != DataDir::out) p.data_len = 0;
  if (plen < 8 || p.data_len < plen) return finish_sense(t, illegal(Asc::parameter_list_length_error));
  uint8_t hdr[8];
  copy_from_iov(t, 0, hdr, sizeof(hdr));
  uint32_t bd_len = load_be16(hdr + 2);
  if (bd_len > plen - 8) return finish_sense(t, invalid_param_field(2));
  uint32_t count = bd_len / 16;
  if (count > cfg_.max_unmap_descriptors) return finish_sense(t, invalid_param_field(2));
  if (count == 0) return finish(t, ok());
  if (!alloc_scratch(t, uint64_t{count} * 16)) return finish(t, Outcome{Status::busy, {}});
  copy_from_iov(t, 8, p.scratch.get(), uint64_t{count} * 16);
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* d = p.scratch.get() + i * 16;
    uint64_t lba = load_be64(d);
    uint32_t n = load_be32(d + 8);
    if (!range_ok(lba, n)) return finish_sense(t, illegal(Asc::lba_out_of_range));
    if (n > cfg_.max_unmap_blocks) return finish_sense(t, invalid_param_field(static_cast<uint16_t>(8 + i * 16 + 8)));
  }
  p.lba = 0;  // orders against COMPARE AND WRITE as if it touched everything
  p.blocks = blocks_;
  p.writes = true;
  p.buffer_off = 0;  // the next descriptor
  p.bytes_left = 0;
  start_io(t);
}

bool Lun::step_unmap(ScsiTask* t) {
  auto& p = t->priv;
  if (p.in_io) {
    p.in_io = false;
    // Deallocation is advisory; a backend that cannot discard leaves the data in place.
    if (p.io_status < 0 && !(p.io_status == -EOPNOTSUPP && !lbprz_)) return fail(t, check(io_error(t, p.io_status)));
    p.next_lba += p.io_bytes / block_size_;
    p.bytes_left -= p.io_bytes;
  }
  if (t->aborted) return complete(t), false;
  while (p.bytes_left == 0) {
    if (p.buffer_off * 16 >= p.scratch_len) return fail(t, ok());
    const uint8_t* d = p.scratch.get() + p.buffer_off * 16;
    ++p.buffer_off;
    p.next_lba = load_be64(d);
    p.bytes_left = uint64_t{load_be32(d + 8)} * block_size_;
  }
  const BackendInfo& info = backend_.info();
  uint64_t limit = lbprz_ ? info.max_write_zeroes_bytes : info.max_discard_bytes;
  uint64_t n = p.bytes_left;
  if (limit && n > limit) n = limit - limit % block_size_;
  submit(t, lbprz_ ? BlockOp::write_zeroes : BlockOp::discard, p.next_lba, n, true);
  return true;
}

// ---------------------------------------------------------------------------------------------
// COMPARE AND WRITE: read, compare with the first half of data-out, write the second half.
// Overlapping writes wait (must_wait), so nothing lands between the read and the write.

void Lun::cmd_compare_and_write(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  auto& p = t->priv;
  if (cdb[1] >> 5) return finish_sense(t, invalid_cdb_field(1, 7));
  uint64_t lba = load_be64(cdb + 2);
  uint32_t n = cdb[13];
  p.want = uint64_t{n} * 2 * block_size_;
  if (n > cfg_.max_compare_write_blocks) return finish_sense(t, invalid_cdb_field(13));
  if (!range_ok(lba, n)) return finish_sense(t, illegal(Asc::lba_out_of_range));
  if (read_only_) return finish_sense(t, sense(SenseKey::data_protect, Asc::write_protected));
  if (n == 0) {
    // Nothing to compare or write; data sent along with it means the initiator's count and
    // ours disagree (a count of 256 wrapped to 0 in the one-byte field, say).
    if (t->expected_length != 0) return finish_sense(t, invalid_cdb_field(13));
    return finish(t, ok());
  }
  if (t->dir != DataDir::out) p.data_len = 0;
  // The data-out buffer must hold exactly the verify and the write data.
  if (t->expected_length != p.want || p.data_len < p.want) return finish_sense(t, invalid_cdb_field(13));
  if (!alloc_scratch(t, uint64_t{n} * block_size_)) return finish(t, Outcome{Status::busy, {}});
  start_read_modify_write(t, lba, n);
}

// COMPARE AND WRITE and ORWRITE: the range they hold, FUA from byte 1, then in line.
void Lun::start_read_modify_write(ScsiTask* t, uint64_t lba, uint64_t blocks) {
  auto& p = t->priv;
  p.lba = p.next_lba = lba;
  p.blocks = blocks;
  p.writes = true;
  p.fua = (t->cdb[1] & 0x08) || !shared_->wce();
  p.phase = 0;
  start_io(t);
}

bool Lun::step_compare_and_write(ScsiTask* t) {
  auto& p = t->priv;
  uint64_t half = p.blocks * block_size_;
  if (p.in_io) {
    p.in_io = false;
    if (p.io_status < 0) return fail(t, check(io_error(t, p.io_status)));
    if (p.phase == 0) {
      int64_t at = first_difference(t, 0, p.scratch.get(), half);
      if (at >= 0) return fail(t, check(miscompare_at(static_cast<uint64_t>(at))));
      p.phase = 1;
      seek(t, half);
      p.bytes_left = half;
    } else {
      skip(t, p.io_bytes);
      p.next_lba += p.io_bytes / block_size_;
      p.bytes_left -= p.io_bytes;
    }
  } else if (p.phase == 0 && !t->aborted) {
    submit_from_scratch(t, BlockOp::read, p.lba, half);
    return true;
  }
  if (t->aborted) return complete(t), false;
  if (p.bytes_left == 0) return fail(t, ok());
  uint64_t n = 0;
  if (!fill_window(t, max_io_bytes_ - max_io_bytes_ % block_size_, &n))
    return fail(t, check(sense(SenseKey::hardware_error, Asc::internal_target_failure)));
  submit(t, BlockOp::write, p.next_lba, n);
  return true;
}

// ---------------------------------------------------------------------------------------------
// ORWRITE (16): each block of the range becomes itself OR the data-out block, as one
// uninterrupted series (SBC-4 5.9). The range is held against overlapping writes (must_wait, as
// for COMPARE AND WRITE) while it goes through a scratch buffer a piece at a time: read the
// piece, OR the data-out into it, write it back. No protection information (ORPROTECT 0); the
// change generations of ORWRITE(32) are not offered.

void Lun::cmd_orwrite(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  auto& p = t->priv;
  if (cdb[1] >> 5) return finish_sense(t, invalid_cdb_field(1, 7));
  RangeArgs a = decode_range(cdb);
  if (max_transfer_blocks_ && a.blocks > max_transfer_blocks_) return finish_sense(t, invalid_cdb_field(a.length_field));
  if (!range_ok(a.lba, a.blocks)) return finish_sense(t, illegal(Asc::lba_out_of_range));
  if (read_only_) return finish_sense(t, sense(SenseKey::data_protect, Asc::write_protected));
  p.want = a.blocks * block_size_;
  if (t->dir != DataDir::out) p.data_len = 0;
  // As for a WRITE: the whole blocks that came are written (a shorter data-out is a residual).
  uint64_t total = std::min(p.want, p.data_len);
  total -= total % block_size_;
  if (total == 0) return finish(t, ok());
  if (!alloc_scratch(t, scratch_chunk(total))) return finish(t, Outcome{Status::busy, {}});
  p.bytes_left = total;
  start_read_modify_write(t, a.lba, a.blocks);
}

bool Lun::step_orwrite(ScsiTask* t) {
  auto& p = t->priv;
  if (p.in_io) {
    p.in_io = false;
    if (p.io_status < 0) return fail(t, check(io_error(t, p.io_status)));
    if (p.phase == 0 && !t->aborted) {  // the piece is read: OR it and write it back
      const uint64_t n = p.io_bytes;
      or_from_iov(t, p.buffer_off, p.scratch.get(), n);
      p.phase = 1;
      submit_from_scratch(t, BlockOp::write, p.next_lba, n);
      return true;
    }
    if (p.phase == 1) {
      p.next_lba += p.io_bytes / block_size_;
      p.bytes_left -= p.io_bytes;
      p.buffer_off += p.io_bytes;
      p.phase = 0;
    }
  }
  if (t->aborted) return complete(t), false;
  if (p.bytes_left == 0) return fail(t, ok());
  submit_scratch(t, BlockOp::read);
  return true;
}

}  // namespace vcp::scsi
