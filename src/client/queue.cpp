// One virtqueue, driver side: requests cut into chains that fit the device, completions
// reassembled, waiting as the poll mode says. Nothing here allocates, throws or locks.
#include <linux/virtio_blk.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "base/clock.hpp"
#include "base/cpu.hpp"
#include "client/internal.hpp"

namespace vcp::client {
namespace {

int64_t now_ns() { return static_cast<int64_t>(vcp::now_ns()); }

// Preset before a chain goes out: a device that returns the chain without writing a status
// (it refused the chain itself) leaves this, which reads as an I/O error.
constexpr uint8_t kStatusUnset = 0xff;

int status_to_result(uint8_t status) {
  switch (status) {
    case VIRTIO_BLK_S_OK: return 0;
    case VIRTIO_BLK_S_UNSUPP: return -EOPNOTSUPP;
    default: return -EIO;
  }
}

// Idle polls between two looks at the socket while spinning (a back-end that died).
constexpr uint32_t kSocketCheckEvery = 4096;

}  // namespace

Queue::Impl::Impl(Client::Impl* c, const QueueSetup& s, UniqueFd kick, UniqueFd call, PollMode m, uint32_t spin_us)
    : client(c),
      setup(s),
      info(c->info),
      kick_fd(std::move(kick)),
      call_fd(std::move(call)),
      mode(m),
      spin_ns(int64_t{spin_us} * 1000) {
  nslots = s.size;
  slots = std::make_unique<Slot[]>(nslots);
  chains = std::make_unique<Chain[]>(nslots);
  bufs = std::make_unique<virtio::DriverBuffer[]>(s.segs_per_piece + 2);
  done_ring = std::make_unique<uint16_t[]>(nslots);
  for (uint16_t i = 0; i < nslots; ++i) {
    slots[i].next = static_cast<uint16_t>(i + 1 < nslots ? i + 1 : kNone);
    chains[i].next_free = static_cast<uint16_t>(i + 1 < nslots ? i + 1 : kNone);
  }
  free_slot = free_chain = 0;
  chains_free = nslots;
}

int Queue::Impl::check_failed() {
  if (error) return error;
  if (int f = client->fatal.load(std::memory_order_relaxed); f != 0) fail(f);
  return error;
}

// Every request not yet delivered completes with `err`; the ring is never touched again (its
// heads may still be the device's).
void Queue::Impl::fail(int err) {
  if (error) return;
  error = err;
  client->fail(err);
  backlog_head = backlog_tail = kNone;
  for (uint16_t i = 0; i < nslots; ++i) {
    Slot& s = slots[i];
    if (s.state != SlotState::active) continue;
    s.result = err;
    finish(i);
  }
}

int Queue::Impl::submit(uint32_t type, uint64_t offset, uint8_t* buf, uint64_t len, bool unmap, void* user,
                        Callback cb) {
  if (int e = check_failed()) return e;
  const uint64_t bs = info.block_size;
  switch (type) {
    case VIRTIO_BLK_T_OUT:
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      if (info.read_only) return -EROFS;
      [[fallthrough]];
    case VIRTIO_BLK_T_IN:
      if (type == VIRTIO_BLK_T_DISCARD && !info.discard) return -EOPNOTSUPP;
      if (type == VIRTIO_BLK_T_WRITE_ZEROES && !info.write_zeroes) return -EOPNOTSUPP;
      if (const uint64_t cap = client->capacity.load(std::memory_order_relaxed);
          len == 0 || offset % bs || len % bs || offset > cap || len > cap - offset)
        return -EINVAL;
      if ((type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_OUT) && !buf) return -EINVAL;
      break;
    case VIRTIO_BLK_T_GET_ID:
      if (!buf) return -EINVAL;
      len = kGetIdBytes;
      break;
    default:
      break;
  }
  if (free_slot == kNone) return -EAGAIN;
  const uint16_t i = free_slot;
  Slot& s = slots[i];
  free_slot = s.next;
  s = Slot{};
  s.cb = cb;
  s.user = user;
  s.buf = buf;
  s.offset = offset;
  s.len = len;
  s.type = type;
  s.unmap = unmap;
  s.zero_copy = buf == nullptr || client->arena.in_buffers(buf, len);
  s.state = SlotState::active;
  s.next = kNone;
  ++outstanding;
  if (type == VIRTIO_BLK_T_FLUSH && !info.flush) {
    // Without VIRTIO_BLK_F_FLUSH the device writes through: nothing to ask for.
    s.all_issued = true;
    finish(i);
    return 0;
  }
  if (backlog_tail == kNone)
    backlog_head = i;
  else
    slots[backlog_tail].next = i;
  backlog_tail = i;
  pump();
  return 0;
}

// Issues pieces of the backlog in order while descriptors and chains last.
void Queue::Impl::pump() {
  while (backlog_head != kNone) {
    const uint16_t i = backlog_head;
    int rc = issue_piece(slots[i], i);
    if (rc < 0) return;  // no room: resumes when completions free some
    if (rc == 1) {
      backlog_head = slots[i].next;
      if (backlog_head == kNone) backlog_tail = kNone;
    }
  }
}

// Adds the next piece of `s` to the ring. 1: that was the last piece; 0: more remain;
// -ENOSPC: no chain or descriptors free.
int Queue::Impl::issue_piece(Slot& s, uint16_t slot_index) {
  if (free_chain == kNone) return -ENOSPC;
  const uint16_t c = free_chain;
  uint8_t* meta = setup.meta + size_t{c} * kMetaBytes;
  uint8_t* bounce = setup.bounce + size_t{c} * setup.bounce_piece;
  const Arena& arena = client->arena;

  uint64_t piece = 0;
  uint16_t n = 0;
  bufs[n++] = {arena.gpa(meta), sizeof(virtio_blk_outhdr), false};
  switch (s.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
      const bool writable = s.type == VIRTIO_BLK_T_IN;
      piece = std::min<uint64_t>(s.len - s.issued, s.zero_copy ? setup.max_piece : setup.bounce_piece);
      const uint8_t* data = s.zero_copy ? s.buf + s.issued : bounce;
      uint64_t gpa = arena.gpa(data);
      for (uint64_t left = piece; left > 0;) {
        const uint32_t d = static_cast<uint32_t>(std::min<uint64_t>(left, setup.size_max));
        bufs[n++] = {gpa, d, writable};
        gpa += d;
        left -= d;
      }
      break;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
      const uint32_t max_sectors =
          s.type == VIRTIO_BLK_T_DISCARD ? info.max_discard_sectors : info.max_write_zeroes_sectors;
      piece = std::min<uint64_t>(s.len - s.issued, uint64_t{max_sectors} << 9);
      virtio_blk_discard_write_zeroes r{};
      r.sector = (s.offset + s.issued) >> 9;
      r.num_sectors = static_cast<uint32_t>(piece >> 9);
      r.flags = s.unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
      std::memcpy(meta + kMetaRangeOff, &r, sizeof(r));
      bufs[n++] = {arena.gpa(meta + kMetaRangeOff), sizeof(r), false};
      break;
    }
    case VIRTIO_BLK_T_GET_ID:
      piece = kGetIdBytes;
      bufs[n++] = {arena.gpa(s.zero_copy ? s.buf : bounce), kGetIdBytes, true};
      break;
    default:  // FLUSH: header and status only
      break;
  }
  bufs[n++] = {arena.gpa(meta + kMetaStatusOff), 1, true};

  // Short chains go straight into the ring (one less indirection for the device); long ones,
  // or any when the ring is short of descriptors, through the head's indirect table.
  const bool indirect = setup.max_indirect >= n && (n > 3 || dq.num_free() < n);
  if (dq.num_free() < (indirect ? 1 : n)) return -ENOSPC;

  virtio_blk_outhdr hdr{};
  hdr.type = s.type;
  hdr.sector = (s.type == VIRTIO_BLK_T_IN || s.type == VIRTIO_BLK_T_OUT) ? (s.offset + s.issued) >> 9 : 0;
  std::memcpy(meta, &hdr, sizeof(hdr));
  meta[kMetaStatusOff] = kStatusUnset;
  if (s.type == VIRTIO_BLK_T_OUT && !s.zero_copy) std::memcpy(bounce, s.buf + s.issued, piece);

  Chain& ch = chains[c];
  int head = dq.add(bufs.get(), n, &ch, indirect);
  if (head < 0) {
    if (head == -EPROTO) fail(-EPROTO);
    return -ENOSPC;
  }
  free_chain = ch.next_free;
  --chains_free;
  ch.slot = slot_index;
  ch.pos = s.issued;
  ch.len = static_cast<uint32_t>(piece);
  s.issued += piece;
  ++s.pieces_out;
  if (s.issued >= s.len) {
    s.all_issued = true;
    return 1;
  }
  return 0;
}

int Queue::Impl::commit() {
  if (error) return error;
  if (dq.publish()) {
    const uint64_t one = 1;
    // A failed kick means the back-end closed its end; the socket check reports that.
    (void)!::write(kick_fd.get(), &one, sizeof(one));
  }
  return 0;
}

// Takes the device's completions. Returns how many chains completed (or the failure).
int Queue::Impl::reap() {
  int n = 0;
  for (;;) {
    void* token;
    uint32_t used_len;
    const int rc = dq.get_used(&token, &used_len);
    if (rc == -EAGAIN) break;
    if (rc < 0) {
      fail(rc);
      return rc;
    }
    ++n;
    Chain& ch = *static_cast<Chain*>(token);
    const uint16_t c = static_cast<uint16_t>(&ch - chains.get());
    Slot& s = slots[ch.slot];
    const uint8_t* meta = setup.meta + size_t{c} * kMetaBytes;
    const uint8_t* bounce = setup.bounce + size_t{c} * setup.bounce_piece;
    const int res = status_to_result(meta[kMetaStatusOff]);
    if (res == 0 && !s.zero_copy && (s.type == VIRTIO_BLK_T_IN || s.type == VIRTIO_BLK_T_GET_ID))
      std::memcpy(s.buf + ch.pos, bounce, ch.len);
    if (res < 0 && s.result == 0) s.result = res;
    ch.next_free = free_chain;
    free_chain = c;
    ++chains_free;
    if (--s.pieces_out == 0 && s.all_issued) finish(ch.slot);
  }
  if (n) {
    if (!interrupts_on) suppress_interrupts();
    pump();
  }
  return n;
}

// While we poll, interrupts would only cost the device an eventfd write per batch.
// DriverQueue keeps them off (EVENT_IDX: used_event behind what we have seen; otherwise the
// NO_INTERRUPT flag) until they are asked for again.
void Queue::Impl::suppress_interrupts() { dq.enable_interrupts(false); }

void Queue::Impl::finish(uint16_t i) {
  slots[i].state = SlotState::done;
  done_ring[(done_head + done_count) % nslots] = i;
  ++done_count;
}

// Hands finished requests over: callbacks run, others go to out[] while there is room (those
// that do not fit stay, in order, for the next call).
int Queue::Impl::deliver(Completion* out, unsigned max, unsigned* delivered) {
  int n = 0;
  const uint32_t count = done_count;
  for (uint32_t k = 0; k < count; ++k) {
    const uint16_t i = done_ring[done_head];
    done_head = (done_head + 1) % nslots;
    --done_count;
    Slot& s = slots[i];
    if (!s.cb && *delivered >= max) {
      done_ring[(done_head + done_count) % nslots] = i;
      ++done_count;
      continue;
    }
    const Callback cb = s.cb;
    void* user = s.user;
    const int result = s.result;
    // Free first, so that the callback may submit again.
    s.state = SlotState::free;
    s.next = free_slot;
    free_slot = i;
    --outstanding;
    ++n;
    if (cb)
      cb(user, result);
    else
      out[(*delivered)++] = Completion{user, result};
  }
  return n;
}

void Queue::Impl::check_socket() {
  const int fd = client->sock();
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  // Nothing comes on this socket unasked once the queues run: readable means EOF or junk.
  if (fd < 0 || (::poll(&p, 1, 0) > 0 && p.revents)) fail(-ECONNRESET);
}

int Queue::Impl::poll(Completion* out, unsigned max) {
  unsigned delivered = 0;
  const int n = poll_step(out, max, &delivered);
  return n < 0 ? n : static_cast<int>(delivered);
}

// One look: commit, reap, deliver. Returns how many requests finished (callbacks and out[]),
// *delivered counting those stored in out[]; the failure when nothing finished after one.
int Queue::Impl::poll_step(Completion* out, unsigned max, unsigned* delivered) {
  if (check_failed() == 0) {
    commit();
    if (reap() == 0 && done_count == 0 && outstanding > 0 && ++idle_polls % kSocketCheckEvery == 0) check_socket();
    if (!error) commit();  // pieces pump() added after completions freed room
  }
  const int n = deliver(out, max, delivered);
  if (n == 0 && error) return error;
  return n;
}

// Sleeps on the call eventfd (and the socket, to notice a back-end that dies) until `want`
// completions may be there: the device is asked (EVENT_IDX) to interrupt after that many, at
// most as many as are in flight, so a caller waiting for a batch costs the device one call
// and itself one wake-up per batch. 0, or -ETIMEDOUT at the deadline (0: none).
int Queue::Impl::sleep_until(int64_t deadline_ns, unsigned want) {
  const unsigned in_flight = static_cast<unsigned>(nslots - chains_free);
  const auto n = static_cast<uint16_t>(std::clamp(want, 1u, std::max(in_flight, 1u)));
  interrupts_on = true;
  if (dq.enable_interrupts_after(n)) return 0;  // they arrived meanwhile
  int timeout_ms = -1;
  if (deadline_ns) {
    const int64_t left = deadline_ns - now_ns();
    if (left <= 0) return -ETIMEDOUT;
    timeout_ms = static_cast<int>((left + 999'999) / 1'000'000);
  }
  pollfd p[2] = {{call_fd.get(), POLLIN, 0}, {client->sock(), POLLIN | POLLRDHUP, 0}};
  const int rc = ::poll(p, 2, timeout_ms);
  if (rc > 0 && p[0].revents) {
    uint64_t v;
    (void)!::read(call_fd.get(), &v, sizeof(v));
  }
  if (rc > 0 && p[1].revents) fail(-ECONNRESET);
  if (mode != PollMode::never) {
    interrupts_on = false;
    suppress_interrupts();
  }
  return 0;
}

int Queue::Impl::wait(Completion* out, unsigned max, unsigned min, int timeout_ms) {
  // The clock is read only where it matters (a deadline, adaptive spinning): polling always
  // with no deadline spends nothing on it.
  const bool timed = timeout_ms >= 0 || mode == PollMode::adaptive;
  const int64_t start = timed ? now_ns() : 0;
  const int64_t deadline = timeout_ms < 0 ? 0 : start + int64_t{timeout_ms} * 1'000'000 + (timeout_ms == 0);
  int64_t last_progress = start;
  unsigned total = 0, delivered = 0;  // delivered: how many went into out[]
  uint32_t spins = 0;
  for (;;) {
    const int n = poll_step(out, max, &delivered);
    if (n < 0) return total ? static_cast<int>(delivered) : n;
    if (n > 0) {
      total += static_cast<unsigned>(n);
      if (mode == PollMode::adaptive) last_progress = now_ns();
    }
    if (total >= min || (outstanding == 0 && done_count == 0)) return static_cast<int>(delivered);
    if (error) return total ? static_cast<int>(delivered) : error;
    const bool may_sleep =
        mode == PollMode::never || (mode == PollMode::adaptive && now_ns() - last_progress > spin_ns);
    if (may_sleep) {
      if (sleep_until(deadline, min - total) == -ETIMEDOUT) return total ? static_cast<int>(delivered) : -ETIMEDOUT;
      continue;
    }
    cpu_relax();
    if (deadline && (++spins & 255) == 0 && now_ns() > deadline) return total ? static_cast<int>(delivered) : -ETIMEDOUT;
  }
}

}  // namespace vcp::client
