#include "virtio/blk.hpp"

#include <endian.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

namespace vcp::virtio {
namespace {

// Builds chains directly from segments, as DeviceQueue::pop() would hand them over.
struct Chain {
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<Segment> segs;
  DescriptorChain c;
  void add(std::vector<uint8_t> bytes, bool writable) {
    bufs.push_back(std::move(bytes));
    segs.push_back({bufs.back().data(), static_cast<uint32_t>(bufs.back().size())});
    if (writable) {
      ++c.num_writable;
      c.writable_bytes += segs.back().len;
    } else {
      ++c.num_readable;
      c.readable_bytes += segs.back().len;
    }
  }
  DescriptorChain& chain() {
    // Pointers into bufs are stable only once all are added.
    for (size_t i = 0; i < segs.size(); ++i) segs[i].addr = bufs[i].data();
    c.segs = segs.data();
    return c;
  }
};

std::vector<uint8_t> header(uint32_t type, uint64_t sector) {
  virtio_blk_outhdr h{htole32(type), 0, htole64(sector)};
  std::vector<uint8_t> v(sizeof(h));
  std::memcpy(v.data(), &h, sizeof(h));
  return v;
}

std::vector<uint8_t> range(uint64_t sector, uint32_t n, uint32_t flags) {
  virtio_blk_discard_write_zeroes r{htole64(sector), htole32(n), htole32(flags)};
  std::vector<uint8_t> v(sizeof(r));
  std::memcpy(v.data(), &r, sizeof(r));
  return v;
}

TEST(BlkParse, Read) {
  Chain ch;
  ch.bufs.reserve(8);
  ch.add(header(VIRTIO_BLK_T_IN, 8), false);
  ch.add(std::vector<uint8_t>(4096), true);
  ch.add(std::vector<uint8_t>(1, 0xff), true);
  BlkRequestView v;
  ASSERT_EQ(parse_blk_request(ch.chain(), &v), 0);
  EXPECT_EQ(v.type, VIRTIO_BLK_T_IN);
  EXPECT_EQ(v.sector, 8u);
  EXPECT_EQ(v.num_data, 1);
  EXPECT_EQ(v.data_len, 4096u);
  EXPECT_EQ(v.status, ch.bufs[2].data());
}

TEST(BlkParse, WriteWithHeaderAndDataInOneBufferAndStatusSharingTheLastWritable) {
  Chain ch;
  ch.bufs.reserve(8);
  auto hd = header(VIRTIO_BLK_T_OUT, 3);
  hd.resize(16 + 1024, 0xab);  // header and data in one descriptor
  ch.add(hd, false);
  ch.add(std::vector<uint8_t>(1), true);
  BlkRequestView v;
  ASSERT_EQ(parse_blk_request(ch.chain(), &v), 0);
  EXPECT_EQ(v.type, VIRTIO_BLK_T_OUT);
  ASSERT_EQ(v.num_data, 1);
  EXPECT_EQ(v.data[0].addr, ch.bufs[0].data() + 16);
  EXPECT_EQ(v.data_len, 1024u);

  // A read whose status byte is the last byte of its data buffer.
  Chain r;
  r.bufs.reserve(8);
  r.add(header(VIRTIO_BLK_T_IN, 0), false);
  r.add(std::vector<uint8_t>(513), true);
  ASSERT_EQ(parse_blk_request(r.chain(), &v), 0);
  EXPECT_EQ(v.data_len, 512u);
  EXPECT_EQ(v.status, r.bufs[1].data() + 512);
}

TEST(BlkParse, HeaderSplitAcrossBuffers) {
  Chain ch;
  ch.bufs.reserve(8);
  auto hd = header(VIRTIO_BLK_T_IN, 0x1122334455);
  ch.add({hd.begin(), hd.begin() + 5}, false);
  ch.add({hd.begin() + 5, hd.end()}, false);
  ch.add(std::vector<uint8_t>(512), true);
  ch.add(std::vector<uint8_t>(1), true);
  BlkRequestView v;
  ASSERT_EQ(parse_blk_request(ch.chain(), &v), 0);
  EXPECT_EQ(v.sector, 0x1122334455u);
  EXPECT_EQ(v.data_len, 512u);
}

TEST(BlkParse, MalformedRequestsAreRefusedWithStatusWhenPossible) {
  BlkRequestView v;
  {  // no writable byte: not even a status to answer with
    Chain ch;
    ch.bufs.reserve(8);
    ch.add(header(VIRTIO_BLK_T_IN, 0), false);
    EXPECT_EQ(parse_blk_request(ch.chain(), &v), -EINVAL);
    EXPECT_EQ(v.status, nullptr);
  }
  {  // short header
    Chain ch;
    ch.bufs.reserve(8);
    ch.add(std::vector<uint8_t>(8), false);
    ch.add(std::vector<uint8_t>(1), true);
    EXPECT_EQ(parse_blk_request(ch.chain(), &v), -EINVAL);
    EXPECT_EQ(v.status, ch.bufs[1].data());
  }
  {  // a read whose data arrives device-readable
    Chain ch;
    ch.bufs.reserve(8);
    ch.add(header(VIRTIO_BLK_T_IN, 0), false);
    ch.add(std::vector<uint8_t>(512), false);
    ch.add(std::vector<uint8_t>(1), true);
    EXPECT_EQ(parse_blk_request(ch.chain(), &v), -EINVAL);
    EXPECT_NE(v.status, nullptr);
  }
  {  // a write with device-writable data
    Chain ch;
    ch.bufs.reserve(8);
    ch.add(header(VIRTIO_BLK_T_OUT, 0), false);
    ch.add(std::vector<uint8_t>(513), true);
    EXPECT_EQ(parse_blk_request(ch.chain(), &v), -EINVAL);
  }
  {  // flush with data
    Chain ch;
    ch.bufs.reserve(8);
    ch.add(header(VIRTIO_BLK_T_FLUSH, 0), false);
    ch.add(std::vector<uint8_t>(512), false);
    ch.add(std::vector<uint8_t>(1), true);
    EXPECT_EQ(parse_blk_request(ch.chain(), &v), -EINVAL);
  }
  {  // discard payload not whole ranges
    Chain ch;
    ch.bufs.reserve(8);
    ch.add(header(VIRTIO_BLK_T_DISCARD, 0), false);
    ch.add(std::vector<uint8_t>(20), false);
    ch.add(std::vector<uint8_t>(1), true);
    EXPECT_EQ(parse_blk_request(ch.chain(), &v), -EINVAL);
  }
}

TEST(BlkParse, UnknownTypeParsesForAnUnsuppAnswer) {
  Chain ch;
  ch.bufs.reserve(8);
  ch.add(header(99, 0), false);
  ch.add(std::vector<uint8_t>(1), true);
  BlkRequestView v;
  EXPECT_EQ(parse_blk_request(ch.chain(), &v), 0);
  EXPECT_EQ(v.type, 99u);
}

TEST(BlkRanges, DiscardAndWriteZeroes) {
  Chain ch;
  ch.bufs.reserve(8);
  ch.add(header(VIRTIO_BLK_T_WRITE_ZEROES, 0), false);
  auto r1 = range(100, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
  auto r2 = range(200, 16, 0);
  std::vector<uint8_t> both(r1);
  both.insert(both.end(), r2.begin(), r2.end());
  // Split in the middle of the second range.
  ch.add({both.begin(), both.begin() + 20}, false);
  ch.add({both.begin() + 20, both.end()}, false);
  ch.add(std::vector<uint8_t>(1), true);
  BlkRequestView v;
  ASSERT_EQ(parse_blk_request(ch.chain(), &v), 0);
  BlkRange out[4];
  uint32_t n = 0;
  ASSERT_EQ(parse_blk_ranges(v, true, out, 4, &n), 0);
  ASSERT_EQ(n, 2u);
  EXPECT_EQ(out[0].sector, 100u);
  EXPECT_EQ(out[0].flags, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
  EXPECT_EQ(out[1].sector, 200u);
  EXPECT_EQ(out[1].num_sectors, 16u);
  EXPECT_EQ(parse_blk_ranges(v, true, out, 1, &n), -E2BIG);
  // The UNMAP flag means nothing on a discard: the device answers UNSUPP.
  EXPECT_EQ(parse_blk_ranges(v, false, out, 4, &n), -EOPNOTSUPP);
}

TEST(BlkConfig, LittleEndianFields) {
  BlkConfigParams p;
  p.capacity_sectors = 1 << 21;
  p.blk_size = 4096;
  p.seg_max = 126;
  p.num_queues = 2;
  p.max_discard_sectors = 1 << 16;
  p.max_discard_seg = 1;
  virtio_blk_config c = make_blk_config(p);
  EXPECT_EQ(le64toh(c.capacity), 1u << 21);
  EXPECT_EQ(le32toh(c.blk_size), 4096u);
  EXPECT_EQ(le32toh(c.seg_max), 126u);
  EXPECT_EQ(le16toh(c.num_queues), 2);
  EXPECT_EQ(le32toh(c.max_discard_seg), 1u);
  EXPECT_EQ(c.physical_block_exp, 0);
  EXPECT_EQ(le16toh(c.min_io_size), 1);
}

TEST(BlkConfig, TopologyNamesThePhysicalBlock) {
  // 512-byte blocks on 4 KiB physical ones: a guest aligns to 4 KiB and does no less.
  BlkConfigParams p;
  p.capacity_sectors = 1 << 21;
  p.blk_size = 512;
  p.physical_block_exp = 3;
  virtio_blk_config c = make_blk_config(p);
  EXPECT_EQ(c.physical_block_exp, 3);
  EXPECT_EQ(c.alignment_offset, 0);
  EXPECT_EQ(le16toh(c.min_io_size), 8);
  p.physical_block_exp = 200;  // nonsense is written as it is, without an overflowing shift
  c = make_blk_config(p);
  EXPECT_EQ(c.physical_block_exp, 200);
  EXPECT_EQ(le16toh(c.min_io_size), 1);
}

}  // namespace
}  // namespace vcp::virtio
