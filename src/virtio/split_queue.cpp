#include "virtio/split_queue.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace vcp::virtio {
namespace {

// Ring fields live in memory the driver writes concurrently: every access is atomic.
inline uint16_t load_acquire(const uint16_t* p) {
  return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_acquire);
}
inline uint16_t load_relaxed(const uint16_t* p) {
  return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_relaxed);
}
inline void store_relaxed(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_relaxed); }
// The store-then-load of the notification handshake (publish an index, then read whether the
// peer wants to hear about it) needs store-load ordering: seq_cst on both accesses gives it (a
// locked instruction on x86, like the fence the peer uses) and, unlike a fence, TSan models it.
inline void store_sc(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_seq_cst); }
inline uint16_t load_sc(const uint16_t* p) {
  return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_seq_cst);
}

// The event fields sit just past each ring (virtio 1.x, 2.7.7 / 2.7.10).
inline uint16_t* used_event_ptr(const QueueLayout& l) { return &l.avail->ring[l.size]; }
inline uint16_t* avail_event_ptr(const QueueLayout& l) {
  return reinterpret_cast<uint16_t*>(&l.used->ring[l.size]);
}

// A descriptor copied out of shared memory once, so that it cannot change while we look at it.
inline vring_desc read_desc(const vring_desc* table, uint32_t i) {
  vring_desc d;
  std::memcpy(&d, &table[i], sizeof(d));
  std::atomic_signal_fence(std::memory_order_acquire);
  return d;
}

}  // namespace

const char* to_string(ChainError e) {
  switch (e) {
    case ChainError::none: return "none";
    case ChainError::bad_address: return "a descriptor names memory outside the memory table";
    case ChainError::loop: return "the chain loops (more descriptors than the table holds)";
    case ChainError::too_many_segments: return "more segments than the device accepts";
    case ChainError::nested_indirect: return "an indirect table names another indirect table";
    case ChainError::bad_indirect: return "malformed indirect descriptor (length, or INDIRECT with NEXT)";
    case ChainError::bad_next: return "a next index outside the descriptor table";
    case ChainError::write_before_read: return "a device-readable descriptor follows a device-writable one";
    case ChainError::too_large: return "the chain's total length overflows 32 bits";
  }
  return "unknown";
}

int DeviceQueue::start(const GuestMemory* mem, const QueueLayout& layout, bool event_idx, uint16_t last_avail_idx,
                       InflightQueue* inflight) {
  started_ = false;
  if (!mem || !layout.desc || !layout.avail || !layout.used) return -EINVAL;
  if (layout.size == 0 || layout.size > 32768 || (layout.size & (layout.size - 1))) return -EINVAL;
  // Alignment the split ring requires (2.7): 16 for the table, 2 for avail, 4 for used.
  if (reinterpret_cast<uintptr_t>(layout.desc) % 16 || reinterpret_cast<uintptr_t>(layout.avail) % 2 ||
      reinterpret_cast<uintptr_t>(layout.used) % 4)
    return -EINVAL;
  mem_ = mem;
  used_log_ = nullptr;
  layout_ = layout;
  event_idx_ = event_idx;
  last_avail_ = last_avail_idx;
  // The used index survives a stop/start (GET_VRING_BASE then a new backend): resume from it.
  used_idx_ = load_acquire(&layout.used->idx);
  published_used_ = used_idx_;
  signalled_valid_ = false;
  in_flight_ = 0;
  broken_ = false;
  inflight_ = nullptr;
  if (inflight && inflight->region) {
    inflight_ = inflight;
    InflightQueueSplit* r = inflight->region;
    if (r->version == 0) {
      r->version = 1;
      r->desc_num = layout.size;
      r->used_idx = used_idx_;
    }
    if (r->desc_num < layout.size) {
      inflight_ = nullptr;  // sized for a smaller ring: recording into it would overrun it
      started_ = true;
      return 0;
    }
    // Continue the fetch order after whatever an earlier process recorded.
    uint64_t maxc = 0;
    for (uint32_t i = 0; i < r->desc_num && i < layout.size; ++i)
      if (r->desc[i].inflight && r->desc[i].counter > maxc) maxc = r->desc[i].counter;
    if (inflight->counter <= maxc) inflight->counter = maxc + 1;
  }
  started_ = true;
  return 0;
}

bool DeviceQueue::has_available() const {
  if (!started_ || broken_) return false;
  return load_sc(&layout_.avail->idx) != last_avail_;
}

void DeviceQueue::set_notification(bool enable) {
  if (!started_) return;
  if (event_idx_) {
    // Kick me when you put entry last_avail_ in the ring. Disabling needs no write: the driver
    // kicks at most once more, when it passes the old value.
    if (enable) {
      store_sc(avail_event_ptr(layout_), last_avail_);
      log_used(offsetof(vring_used, ring) + sizeof(vring_used_elem) * layout_.size, sizeof(uint16_t));
    }
  } else if (enable) {
    store_sc(&layout_.used->flags, 0);
    log_used(offsetof(vring_used, flags), sizeof(uint16_t));
  } else {
    store_relaxed(&layout_.used->flags, VRING_USED_F_NO_NOTIFY);
    log_used(offsetof(vring_used, flags), sizeof(uint16_t));
  }
  // When enabling, our store is ordered before the caller's next has_available() (seq_cst both):
  // pairs with the driver's barrier between writing avail->idx and reading flags / avail_event.
}

DeviceQueue::Pop DeviceQueue::pop(DescriptorChain* out, Segment* storage, uint32_t capacity) {
  if (!started_) return Pop::empty;
  if (broken_) return Pop::broken;
  const uint16_t avail_idx = load_acquire(&layout_.avail->idx);
  const uint16_t pending = static_cast<uint16_t>(avail_idx - last_avail_);
  if (pending == 0) return Pop::empty;
  if (pending > layout_.size) {
    broken_ = true;  // the driver claims more entries than the ring holds
    return Pop::broken;
  }
  const uint16_t head = load_relaxed(&layout_.avail->ring[last_avail_ & (layout_.size - 1)]);
  if (head >= layout_.size) {
    broken_ = true;  // not a descriptor we could ever hand back
    return Pop::broken;
  }
  ++last_avail_;
  ++in_flight_;
  if (inflight_) {
    InflightDescSplit& d = inflight_->region->desc[head];
    d.counter = inflight_->counter++;
    d.inflight = 1;
  }
  *out = DescriptorChain{};
  out->head = head;
  out->segs = storage;
  if (walk(head, out, storage, capacity) < 0) return Pop::bad_chain;
  return Pop::chain;
}

int DeviceQueue::walk(uint16_t head, DescriptorChain* out, Segment* storage, uint32_t capacity) {
  const vring_desc* table = layout_.desc;
  uint32_t table_size = layout_.size;
  bool indirect = false;
  uint32_t idx = head;
  uint32_t visited = 0;
  uint32_t nsegs = 0;
  uint64_t readable = 0, writable = 0;

  auto fail = [&](ChainError e) {
    out->error = e;
    out->num_readable = out->num_writable = 0;
    out->readable_bytes = out->writable_bytes = 0;
    return -EINVAL;
  };

  for (;;) {
    if (++visited > table_size) return fail(ChainError::loop);
    const vring_desc d = read_desc(table, idx);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      if (indirect) return fail(ChainError::nested_indirect);
      if (d.flags & VRING_DESC_F_NEXT) return fail(ChainError::bad_indirect);
      if (d.len == 0 || d.len % sizeof(vring_desc) != 0 || d.len / sizeof(vring_desc) > 32768)
        return fail(ChainError::bad_indirect);
      // The table itself must be in one region: we index it as an array.
      uint8_t* t = mem_->translate(d.addr, d.len);
      if (!t) return fail(ChainError::bad_address);
      if (reinterpret_cast<uintptr_t>(t) % alignof(uint64_t)) return fail(ChainError::bad_indirect);
      table = reinterpret_cast<const vring_desc*>(t);
      table_size = d.len / sizeof(vring_desc);
      indirect = true;
      idx = 0;
      visited = 0;
      continue;
    }
    const bool w = d.flags & VRING_DESC_F_WRITE;
    if (!w && writable > 0) return fail(ChainError::write_before_read);
    if (d.len > 0) {
      // A buffer may run across adjacent regions: one segment per contiguous piece.
      uint64_t addr = d.addr;
      uint64_t left = d.len;
      if (addr + left < addr) return fail(ChainError::bad_address);
      while (left > 0) {
        uint64_t piece = 0;
        uint8_t* p = mem_->translate_partial(addr, left, &piece);
        if (!p || piece == 0) return fail(ChainError::bad_address);
        if (nsegs >= capacity) return fail(ChainError::too_many_segments);
        storage[nsegs++] = Segment{p, static_cast<uint32_t>(piece)};
        ++(w ? out->num_writable : out->num_readable);
        addr += piece;
        left -= piece;
      }
      (w ? writable : readable) += d.len;
      if (readable + writable > UINT32_MAX) return fail(ChainError::too_large);
    }
    if (!(d.flags & VRING_DESC_F_NEXT)) break;
    if (d.next >= table_size) return fail(ChainError::bad_next);
    idx = d.next;
  }
  // num_readable/num_writable count segments (pieces), not descriptors.
  out->readable_bytes = static_cast<uint32_t>(readable);
  out->writable_bytes = static_cast<uint32_t>(writable);
  return 0;
}

void DeviceQueue::push(uint16_t head, uint32_t written) {
  vring_used_elem* e = &layout_.used->ring[used_idx_ & (layout_.size - 1)];
  // Plain stores: the release store of used->idx in publish_used() orders them.
  e->id = head;
  e->len = written;
  ++used_idx_;
  if (in_flight_ > 0) --in_flight_;
  if (inflight_) inflight_->region->last_batch_head = head;
}

bool DeviceQueue::publish_used() {
  if (!started_ || used_idx_ == published_used_) return false;
  const uint16_t old = published_used_;
  store_sc(&layout_.used->idx, used_idx_);
  published_used_ = used_idx_;
  if (used_log_) {
    for (uint16_t i = old; i != used_idx_; ++i)
      log_used(offsetof(vring_used, ring) + sizeof(vring_used_elem) * (i & (layout_.size - 1)),
               sizeof(vring_used_elem));
    log_used(offsetof(vring_used, idx), sizeof(uint16_t));
  }
  if (inflight_) {
    // After the used ring is updated, the heads are no longer in flight (vhost-user spec order).
    InflightQueueSplit* r = inflight_->region;
    for (uint16_t i = old; i != used_idx_; ++i) {
      uint32_t id = layout_.used->ring[i & (layout_.size - 1)].id;
      if (id < layout_.size) r->desc[id].inflight = 0;
    }
    r->used_idx = used_idx_;
  }
  // The used->idx store (seq_cst) is ordered before these reads of what the driver asked for.
  if (event_idx_) {
    const uint16_t prev = signalled_used_;
    const bool valid = signalled_valid_;
    signalled_used_ = used_idx_;
    signalled_valid_ = true;
    if (!valid) return true;
    return vring_need_event(load_sc(used_event_ptr(layout_)), used_idx_, prev);
  }
  return !(load_sc(&layout_.avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
}

}  // namespace vcp::virtio
