// parse_message(): sizes, fd counts and size-deciding fields, on bytes built by hand.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "vhost/protocol.hpp"

namespace vcp::vhost {
namespace {

std::vector<uint8_t> build(Request r, const void* payload, size_t len, uint32_t flags = kVersion) {
  MsgHeader h{static_cast<uint32_t>(r), flags, static_cast<uint32_t>(len)};
  std::vector<uint8_t> out(sizeof(h) + len);
  std::memcpy(out.data(), &h, sizeof(h));
  if (len) std::memcpy(out.data() + sizeof(h), payload, len);
  return out;
}

int parse(const std::vector<uint8_t>& m, int nfds, ParsedMessage* out) {
  return parse_message(m.data(), m.size(), nfds, out);
}

TEST(ParseMessage, DecodesTypedPayloads) {
  ParsedMessage m;
  vhost_vring_addr a{1, 0, 0x1000, 0x3000, 0x2000, 0};
  ASSERT_EQ(parse(build(Request::set_vring_addr, &a, sizeof(a), kVersion | kFlagNeedReply), 0, &m), 0);
  EXPECT_TRUE(m.known);
  EXPECT_TRUE(m.need_reply());
  EXPECT_EQ(m.request, Request::set_vring_addr);
  EXPECT_EQ(m.payload.addr.index, 1u);
  EXPECT_EQ(m.payload.addr.avail_user_addr, 0x2000u);

  ConfigMsg c{};
  c.offset = 4;
  c.size = 8;
  ASSERT_EQ(parse(build(Request::get_config, &c, kConfigHeaderSize + 8), 0, &m), 0);
  EXPECT_EQ(m.payload.config.offset, 4u);
  EXPECT_EQ(m.payload.config.size, 8u);

  InflightMsg in{0, 0, 2, 128, 0};
  ASSERT_EQ(parse(build(Request::get_inflight_fd, &in, kInflightFieldsSize), 0, &m), 0);
  EXPECT_EQ(m.payload.inflight.queue_size, 128);
  ASSERT_EQ(parse(build(Request::set_inflight_fd, &in, sizeof(in)), 1, &m), 0);
  EXPECT_EQ(m.payload.inflight.num_queues, 2);
}

TEST(ParseMessage, MemTableSizeFollowsTheRegionCount) {
  MemTable t{};
  t.nregions = 2;
  ParsedMessage m;
  EXPECT_EQ(parse(build(Request::set_mem_table, &t, 8 + 2 * sizeof(MemRegion)), 2, &m), 0);
  EXPECT_EQ(parse(build(Request::set_mem_table, &t, sizeof(t)), 2, &m), 0) << "full-size table";
  EXPECT_EQ(parse(build(Request::set_mem_table, &t, 8 + sizeof(MemRegion)), 2, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::set_mem_table, &t, 8 + 2 * sizeof(MemRegion)), 1, &m), -EBADF);
  EXPECT_EQ(parse(build(Request::set_mem_table, &t, 8 + 2 * sizeof(MemRegion)), 3, &m), -EBADF);
  t.nregions = 9;
  EXPECT_EQ(parse(build(Request::set_mem_table, &t, sizeof(t)), 8, &m), -EINVAL);
  t.nregions = 0;
  EXPECT_EQ(parse(build(Request::set_mem_table, &t, 8), 0, &m), 0);
  EXPECT_EQ(parse(build(Request::set_mem_table, &t, 4), 0, &m), -EBADMSG);
}

TEST(ParseMessage, VringFdMessagesMatchTheNoFdFlag) {
  ParsedMessage m;
  uint64_t v = 1;
  EXPECT_EQ(parse(build(Request::set_vring_kick, &v, 8), 1, &m), 0);
  EXPECT_EQ(parse(build(Request::set_vring_kick, &v, 8), 0, &m), -EBADF);
  v = 1 | kVringNofdMask;
  EXPECT_EQ(parse(build(Request::set_vring_call, &v, 8), 0, &m), 0);
  EXPECT_EQ(parse(build(Request::set_vring_call, &v, 8), 1, &m), -EBADF);
  v = 1ull << 20;
  EXPECT_EQ(parse(build(Request::set_vring_err, &v, 8), 1, &m), -EINVAL) << "reserved bits";
}

TEST(ParseMessage, SizesPerRequest) {
  ParsedMessage m;
  uint8_t zero[64] = {};
  EXPECT_EQ(parse(build(Request::get_features, zero, 0), 0, &m), 0);
  EXPECT_EQ(parse(build(Request::get_features, zero, 8), 0, &m), 0);
  EXPECT_EQ(parse(build(Request::get_features, zero, 16), 0, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::set_features, zero, 4), 0, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::set_vring_num, zero, 12), 0, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::set_vring_addr, zero, 32), 0, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::add_mem_reg, zero, 32), 1, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::add_mem_reg, zero, 40), 0, &m), -EBADF);
  EXPECT_EQ(parse(build(Request::rem_mem_reg, zero, 40), 0, &m), 0);
  EXPECT_EQ(parse(build(Request::rem_mem_reg, zero, 40), 1, &m), 0) << "the spec tolerates one stray fd";
  EXPECT_EQ(parse(build(Request::rem_mem_reg, zero, 40), 2, &m), -EBADF);
  EXPECT_EQ(parse(build(Request::get_inflight_fd, zero, 16), 0, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::set_features, zero, 8), 1, &m), -EBADF);
}

TEST(ParseMessage, ConfigLengthMustMatch) {
  ParsedMessage m;
  ConfigMsg c{};
  c.size = 8;
  EXPECT_EQ(parse(build(Request::set_config, &c, kConfigHeaderSize + 4), 0, &m), -EBADMSG);
  c.size = kMaxConfigSize + 1;
  std::vector<uint8_t> big(kConfigHeaderSize + kMaxConfigSize + 1);
  std::memcpy(big.data(), &c, kConfigHeaderSize);
  EXPECT_EQ(parse(build(Request::get_config, big.data(), big.size()), 0, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::get_config, &c, kConfigHeaderSize), 0, &m), -EINVAL);
}

TEST(ParseMessage, HeaderChecks) {
  ParsedMessage m;
  auto ok = build(Request::get_features, nullptr, 0);
  EXPECT_EQ(parse_message(ok.data(), 11, 0, &m), -EBADMSG) << "shorter than a header";
  EXPECT_EQ(parse_message(nullptr, 0, 0, &m), -EBADMSG);
  EXPECT_EQ(parse(build(Request::get_features, nullptr, 0, 0), 0, &m), -EPROTO) << "version 0";
  EXPECT_EQ(parse(build(Request::get_features, nullptr, 0, kVersion | kFlagReply), 0, &m), -EPROTO);
  auto longer = build(Request::set_features, "12345678", 8);
  longer.push_back(0);
  EXPECT_EQ(parse(longer, 0, &m), -EBADMSG) << "length disagrees with the header";
  MsgHeader huge{1, kVersion, kMaxPayloadSize + 1};
  EXPECT_EQ(check_header(huge), -EMSGSIZE);
  EXPECT_EQ(parse(build(Request::get_features, nullptr, 0), -1, &m), -EBADMSG);
}

TEST(ParseMessage, UnknownRequestsParseAsUnknown) {
  ParsedMessage m;
  uint8_t payload[100] = {};
  ASSERT_EQ(parse(build(static_cast<Request>(77), payload, sizeof(payload)), 3, &m), 0);
  EXPECT_FALSE(m.known);
  EXPECT_EQ(m.size, sizeof(payload));
  ASSERT_EQ(parse(build(Request::set_log_fd, payload, 8), 1, &m), 0);
  EXPECT_FALSE(m.known) << "the log's eventfd is not used";
  ASSERT_EQ(parse(build(Request::postcopy_advise, nullptr, 0), 0, &m), 0);
  EXPECT_FALSE(m.known) << "postcopy is not offered";
  EXPECT_STREQ(to_string(Request::get_inflight_fd), "GET_INFLIGHT_FD");
  EXPECT_STREQ(to_string(static_cast<Request>(77)), "UNKNOWN");
}

}  // namespace
}  // namespace vcp::vhost
