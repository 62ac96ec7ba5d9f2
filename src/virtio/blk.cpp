#include "virtio/blk.hpp"

#include <endian.h>

#include <cerrno>
#include <cstring>

namespace vcp::virtio {
namespace {

// Copies `len` bytes from the front of segs[0..n) into dst without consuming them.
bool gather(const Segment* segs, uint32_t n, uint8_t* dst, uint32_t len) {
  for (uint32_t i = 0; i < n && len > 0; ++i) {
    uint32_t take = segs[i].len < len ? segs[i].len : len;
    std::memcpy(dst, segs[i].addr, take);
    dst += take;
    len -= take;
  }
  return len == 0;
}

// Drops `len` bytes from the front of segs[*first .. end), advancing *first past emptied ones.
void consume_front(Segment* segs, uint32_t* first, uint32_t end, uint32_t len) {
  while (len > 0 && *first < end) {
    Segment& s = segs[*first];
    if (s.len > len) {
      s.addr += len;
      s.len -= len;
      return;
    }
    len -= s.len;
    ++*first;
  }
}

}  // namespace

int parse_blk_request(DescriptorChain& chain, BlkRequestView* out) {
  *out = BlkRequestView{};
  Segment* segs = chain.segs;
  const uint32_t nr = chain.num_readable;
  uint32_t wend = nr + chain.num_writable;

  // The status byte: the last byte the device may write. Without it we cannot even say no.
  if (chain.writable_bytes == 0 || chain.num_writable == 0) return -EINVAL;
  Segment& last = segs[wend - 1];
  out->status = last.addr + last.len - 1;
  if (--last.len == 0) --wend;
  const uint32_t writable_data = chain.writable_bytes - 1;

  virtio_blk_outhdr hdr;
  if (chain.readable_bytes < sizeof(hdr) || !gather(segs, nr, reinterpret_cast<uint8_t*>(&hdr), sizeof(hdr)))
    return -EINVAL;
  uint32_t rfirst = 0;
  consume_front(segs, &rfirst, nr, sizeof(hdr));
  const uint32_t readable_data = chain.readable_bytes - static_cast<uint32_t>(sizeof(hdr));

  out->type = le32toh(hdr.type);
  out->sector = le64toh(hdr.sector);
  switch (out->type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_GET_ID:
      if (readable_data != 0) return -EINVAL;  // data the device should write arrives readable
      out->data = segs + nr;
      out->num_data = static_cast<uint16_t>(wend - nr);
      out->data_len = writable_data;
      return 0;
    case VIRTIO_BLK_T_OUT:
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      if (writable_data != 0) return -EINVAL;  // only the status byte may be device-writable
      if (out->type != VIRTIO_BLK_T_OUT &&
          (readable_data == 0 || readable_data % sizeof(virtio_blk_discard_write_zeroes) != 0))
        return -EINVAL;
      out->data = segs + rfirst;
      out->num_data = static_cast<uint16_t>(nr - rfirst);
      out->data_len = readable_data;
      return 0;
    case VIRTIO_BLK_T_FLUSH:
      if (readable_data != 0 || writable_data != 0) return -EINVAL;
      return 0;
    default:
      // Unknown or unsupported types are not malformed: the device answers UNSUPP.
      return 0;
  }
}

int parse_blk_ranges(const BlkRequestView& req, bool write_zeroes, BlkRange* out, uint32_t max, uint32_t* count) {
  *count = 0;
  const uint32_t n = req.data_len / sizeof(virtio_blk_discard_write_zeroes);
  if (n == 0 || req.data_len % sizeof(virtio_blk_discard_write_zeroes) != 0) return -EINVAL;
  if (n > max) return -E2BIG;
  // Walk the segments; a range may straddle two of them.
  uint32_t seg = 0, off = 0;
  for (uint32_t i = 0; i < n; ++i) {
    virtio_blk_discard_write_zeroes r;
    auto* dst = reinterpret_cast<uint8_t*>(&r);
    uint32_t need = sizeof(r);
    while (need > 0) {
      if (seg >= req.num_data) return -EINVAL;
      uint32_t avail = req.data[seg].len - off;
      uint32_t take = avail < need ? avail : need;
      std::memcpy(dst, req.data[seg].addr + off, take);
      dst += take;
      need -= take;
      off += take;
      if (off == req.data[seg].len) {
        ++seg;
        off = 0;
      }
    }
    out[i].sector = le64toh(r.sector);
    out[i].num_sectors = le32toh(r.num_sectors);
    out[i].flags = le32toh(r.flags);
    const uint32_t allowed = write_zeroes ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
    if (out[i].flags & ~allowed) return -EOPNOTSUPP;
  }
  *count = n;
  return 0;
}

virtio_blk_config make_blk_config(const BlkConfigParams& p) {
  virtio_blk_config c;
  std::memset(&c, 0, sizeof(c));
  c.capacity = htole64(p.capacity_sectors);
  c.size_max = htole32(p.size_max);
  c.seg_max = htole32(p.seg_max);
  c.blk_size = htole32(p.blk_size);
  // Topology: 2^physical_block_exp logical blocks per physical block, the first one aligned;
  // the minimum I/O is a physical block (less is a read-modify-write underneath).
  c.physical_block_exp = p.physical_block_exp;
  c.alignment_offset = 0;
  // (A u16 of blocks holds 2^15 at most; exponents past that come only from tests of what a
  // driver does with nonsense, and get the minimum of one block.)
  c.min_io_size = htole16(static_cast<uint16_t>(p.physical_block_exp < 16 ? 1u << p.physical_block_exp : 1u));
  c.opt_io_size = htole32(p.opt_io_size_blocks);
  c.num_queues = htole16(p.num_queues);
  c.max_discard_sectors = htole32(p.max_discard_sectors);
  c.max_discard_seg = htole32(p.max_discard_seg);
  c.discard_sector_alignment = htole32(p.discard_sector_alignment);
  c.max_write_zeroes_sectors = htole32(p.max_write_zeroes_sectors);
  c.max_write_zeroes_seg = htole32(p.max_write_zeroes_seg);
  c.write_zeroes_may_unmap = p.write_zeroes_may_unmap ? 1 : 0;
  return c;
}

const char* blk_type_name(uint32_t type) {
  switch (type) {
    case VIRTIO_BLK_T_IN: return "read";
    case VIRTIO_BLK_T_OUT: return "write";
    case VIRTIO_BLK_T_FLUSH: return "flush";
    case VIRTIO_BLK_T_GET_ID: return "get-id";
    case VIRTIO_BLK_T_DISCARD: return "discard";
    case VIRTIO_BLK_T_WRITE_ZEROES: return "write-zeroes";
    default: return "unknown";
  }
}

}  // namespace vcp::virtio
