// virtio-blk requests on top of a descriptor chain (virtio 1.x, section 5.2).
//
// A request is: a 16-byte header (type, ioprio, sector) the device reads, then data (read by the
// device for OUT/DISCARD/WRITE_ZEROES, written by it for IN/GET_ID), then one status byte the
// device writes. The driver may cut these pieces across descriptors any way it likes, so the
// parser works on bytes, not on descriptor boundaries. What it cannot make sense of is refused.
#pragma once

#include <linux/virtio_blk.h>

#include <cstdint>

#include "virtio/split_queue.hpp"

namespace vcp::virtio {

struct BlkRequestView {
  uint32_t type = 0;          // VIRTIO_BLK_T_*; unknown types parse fine (the device answers UNSUPP)
  uint64_t sector = 0;        // in 512-byte units, whatever the block size
  Segment* data = nullptr;    // the data segments (pointing into the chain's segment storage)
  uint16_t num_data = 0;
  uint32_t data_len = 0;      // bytes in data[]
  uint8_t* status = nullptr;  // the status byte; set whenever the chain has a writable byte
};

// Parses `chain` (whose segments it trims in place). 0 on success; -EINVAL when the request is
// malformed: header short, no status byte, data in the wrong direction for the type, a DISCARD or
// WRITE_ZEROES payload that is not whole 16-byte ranges. out->status is set even on failure when
// the chain has a writable byte, so the caller can answer IOERR.
int parse_blk_request(DescriptorChain& chain, BlkRequestView* out);

struct BlkRange {
  uint64_t sector = 0;
  uint32_t num_sectors = 0;
  uint32_t flags = 0;  // VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
};

// Reads the ranges of a DISCARD (`write_zeroes` false) or WRITE_ZEROES request into out[0..max).
// 0 with *count set; -E2BIG when there are more than `max`; -EOPNOTSUPP for flags the request
// type does not allow (the UNMAP flag on a DISCARD, any reserved bit): the device answers UNSUPP.
int parse_blk_ranges(const BlkRequestView& req, bool write_zeroes, BlkRange* out, uint32_t max, uint32_t* count);

struct BlkConfigParams {
  uint64_t capacity_sectors = 0;
  uint32_t blk_size = 512;
  uint32_t seg_max = 0;
  uint32_t size_max = 0;
  uint16_t num_queues = 1;
  uint32_t opt_io_size_blocks = 0;
  uint8_t physical_block_exp = 0;  // log2(physical block / blk_size), at most 15
  uint32_t max_discard_sectors = 0;
  uint32_t max_discard_seg = 0;
  uint32_t discard_sector_alignment = 0;
  uint32_t max_write_zeroes_sectors = 0;
  uint32_t max_write_zeroes_seg = 0;
  bool write_zeroes_may_unmap = false;
};

// The config space, little-endian as virtio 1.x requires.
virtio_blk_config make_blk_config(const BlkConfigParams& p);

const char* blk_type_name(uint32_t type);

}  // namespace vcp::virtio
