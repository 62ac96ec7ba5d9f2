#include "virtio/driver_queue.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>

namespace vcp::virtio {
namespace {

constexpr size_t align_up(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }

size_t avail_offset(uint16_t size) { return sizeof(vring_desc) * size; }
size_t used_offset(uint16_t size) {
  return align_up(avail_offset(size) + sizeof(vring_avail) + sizeof(uint16_t) * (size + 1u), 64);
}

inline uint16_t load_acquire(const uint16_t* p) {
  return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_acquire);
}
inline void store_relaxed(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_relaxed); }
// The store-then-load of the notification handshake (publish an index, then read whether the
// peer wants to hear about it) needs store-load ordering: seq_cst on both accesses gives it (a
// locked instruction on x86, like the fence the peer uses) and, unlike a fence, TSan models it.
inline void store_sc(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_seq_cst); }
inline uint16_t load_sc(const uint16_t* p) {
  return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_seq_cst);
}

}  // namespace

size_t DriverQueue::ring_bytes(uint16_t size) {
  return align_up(used_offset(size) + sizeof(vring_used) + sizeof(vring_used_elem) * size + sizeof(uint16_t), 64);
}

int DriverQueue::init(uint8_t* host, uint64_t addr, uint16_t size, bool event_idx, uint8_t* indirect_host,
                      uint64_t indirect_addr, uint16_t max_indirect) {
  if (!host || size == 0 || size > 32768 || (size & (size - 1))) return -EINVAL;
  if (reinterpret_cast<uintptr_t>(host) % 64 || addr % 64) return -EINVAL;
  std::memset(host, 0, ring_bytes(size));
  base_ = host;
  addr_ = addr;
  size_ = size;
  event_idx_ = event_idx;
  broken_ = false;
  desc_ = reinterpret_cast<vring_desc*>(host);
  avail_ = reinterpret_cast<vring_avail*>(host + avail_offset(size));
  used_ = reinterpret_cast<vring_used*>(host + used_offset(size));
  ind_host_ = indirect_host;
  ind_addr_ = indirect_addr;
  max_indirect_ = indirect_host ? max_indirect : 0;
  heads_ = std::make_unique<HeadState[]>(size);
  next_ = std::make_unique<uint16_t[]>(size);
  // Free descriptors are chained through their next links.
  for (uint16_t i = 0; i < size; ++i) next_[i] = static_cast<uint16_t>(i + 1 < size ? i + 1 : 0);
  free_head_ = 0;
  num_free_ = size;
  avail_idx_ = published_avail_ = last_used_ = 0;
  interrupts_ = true;
  return 0;
}

int DriverQueue::add(const DriverBuffer* bufs, uint16_t n, void* token, bool indirect) {
  if (broken_) return -EPROTO;
  if (n == 0) return -EINVAL;
  for (uint16_t i = 1; i < n; ++i)
    if (bufs[i - 1].device_writable && !bufs[i].device_writable) return -EINVAL;
  const bool use_indirect = indirect && max_indirect_ >= n && n > 1;
  const uint16_t need = use_indirect ? 1 : n;
  if (num_free_ < need) return -ENOSPC;

  const uint16_t head = free_head_;
  if (use_indirect) {
    auto* table = reinterpret_cast<vring_desc*>(ind_host_ + size_t{head} * max_indirect_ * sizeof(vring_desc));
    for (uint16_t i = 0; i < n; ++i) {
      table[i].addr = bufs[i].addr;
      table[i].len = bufs[i].len;
      table[i].flags = static_cast<uint16_t>((bufs[i].device_writable ? VRING_DESC_F_WRITE : 0) |
                                             (i + 1 < n ? VRING_DESC_F_NEXT : 0));
      table[i].next = static_cast<uint16_t>(i + 1);
    }
    vring_desc& d = desc_[head];
    free_head_ = next_[head];
    d.addr = ind_addr_ + size_t{head} * max_indirect_ * sizeof(vring_desc);
    d.len = static_cast<uint32_t>(n * sizeof(vring_desc));
    d.flags = VRING_DESC_F_INDIRECT;
  } else {
    uint16_t idx = head;
    for (uint16_t i = 0; i < n; ++i) {
      vring_desc& d = desc_[idx];
      d.addr = bufs[i].addr;
      d.len = bufs[i].len;
      d.flags = static_cast<uint16_t>((bufs[i].device_writable ? VRING_DESC_F_WRITE : 0) |
                                      (i + 1 < n ? VRING_DESC_F_NEXT : 0));
      // The free list's link doubles as the chain's.
      d.next = next_[idx];
      if (i + 1 < n) idx = next_[idx];
    }
    free_head_ = next_[idx];
  }
  num_free_ = static_cast<uint16_t>(num_free_ - need);
  heads_[head] = HeadState{token, need, true};
  avail_->ring[avail_idx_ & (size_ - 1)] = head;
  ++avail_idx_;
  return head;
}

bool DriverQueue::publish() {
  if (avail_idx_ == published_avail_) return false;
  const uint16_t old = published_avail_;
  // seq_cst store then seq_cst loads: our avail->idx is ordered before we read whether the
  // device wants a kick (pairs with the device's store of avail_event / flags, then its re-check).
  store_sc(&avail_->idx, avail_idx_);
  published_avail_ = avail_idx_;
  if (event_idx_) {
    const uint16_t ev = load_sc(reinterpret_cast<uint16_t*>(&used_->ring[size_]));
    return vring_need_event(ev, avail_idx_, old);
  }
  return !(load_sc(&used_->flags) & VRING_USED_F_NO_NOTIFY);
}

int DriverQueue::get_used(void** token, uint32_t* len) {
  if (broken_) return -EPROTO;
  const uint16_t used_idx = load_acquire(&used_->idx);
  if (used_idx == last_used_) return -EAGAIN;
  if (static_cast<uint16_t>(used_idx - last_used_) > size_) {
    broken_ = true;
    return -EPROTO;
  }
  const vring_used_elem e = used_->ring[last_used_ & (size_ - 1)];
  if (e.id >= size_ || !heads_[e.id].busy) {
    broken_ = true;
    return -EPROTO;
  }
  ++last_used_;
  HeadState& h = heads_[e.id];
  *token = h.token;
  *len = e.len;
  // Give the chain back to the free list.
  uint16_t idx = static_cast<uint16_t>(e.id);
  for (uint16_t i = 1; i < h.ndesc; ++i) idx = next_[idx];
  next_[idx] = free_head_;
  free_head_ = static_cast<uint16_t>(e.id);
  num_free_ = static_cast<uint16_t>(num_free_ + h.ndesc);
  h = HeadState{};
  // With EVENT_IDX, used_event says when to interrupt us: at the next completion while we want
  // interrupts, otherwise one behind what we have seen (the device passes it only after 65535
  // more completions: at worst one spurious interrupt).
  if (event_idx_) store_relaxed(&avail_->ring[size_], static_cast<uint16_t>(interrupts_ ? last_used_ : last_used_ - 1));
  return 0;
}

bool DriverQueue::enable_interrupts_after(uint16_t n) {
  if (!event_idx_ || n <= 1) return enable_interrupts(true);
  interrupts_ = true;
  // The device interrupts when used->idx moves past used_event: at last_used_ + n.
  store_sc(&avail_->ring[size_], static_cast<uint16_t>(last_used_ + n - 1));
  return static_cast<uint16_t>(load_sc(&used_->idx) - last_used_) >= n;
}

bool DriverQueue::enable_interrupts(bool enable) {
  interrupts_ = enable;
  if (event_idx_) {
    if (!enable) {
      store_relaxed(&avail_->ring[size_], static_cast<uint16_t>(last_used_ - 1));
      return false;
    }
    store_sc(&avail_->ring[size_], last_used_);
  } else if (enable) {
    store_sc(&avail_->flags, 0);
  } else {
    store_relaxed(&avail_->flags, VRING_AVAIL_F_NO_INTERRUPT);
    return false;
  }
  return load_sc(&used_->idx) != last_used_;
}

}  // namespace vcp::virtio
