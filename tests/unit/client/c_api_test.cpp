// The C API over a unix socket path.
#include "vcp/vcp.h"

#include "harness.hpp"

namespace vcp::client::test {
namespace {

TEST(CApi, ConnectReadWriteClose) {
  DeviceServer s({});
  UnixListener l;
  ASSERT_TRUE(l.ok);
  l.serve(*s.device);

  vcp_options o;
  vcp_options_init(&o);
  o.queue_size = 32;
  vcp_client* c = nullptr;
  ASSERT_EQ(vcp_connect(l.path.c_str(), &o, &c), 0);
  l.accepted();
  vcp_info info;
  ASSERT_EQ(vcp_get_info(c, &info), 0);
  EXPECT_EQ(info.capacity_bytes, 16u << 20);
  EXPECT_EQ(info.block_size, 512u);
  EXPECT_EQ(vcp_physical_block_size(c), 512u) << "a ram device's physical block is its logical one";
  EXPECT_EQ(vcp_num_queues(c), 1u);
  vcp_queue* q = vcp_get_queue(c, 0);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(vcp_get_queue(c, 1), nullptr);

  auto* buf = static_cast<uint8_t*>(vcp_alloc(c, 8192));
  ASSERT_NE(buf, nullptr);
  EXPECT_TRUE(vcp_is_zero_copy(c, buf, 8192));
  fill_pattern(buf, 8192, 0, 5);
  EXPECT_EQ(vcp_write_sync(q, 0, buf, 8192), 0);
  EXPECT_EQ(vcp_flush_sync(q), 0);
  std::memset(buf, 0, 8192);
  ASSERT_EQ(vcp_read(q, 0, buf, 8192, buf, nullptr), 0);
  vcp_completion done[4];
  ASSERT_EQ(vcp_wait(q, done, 4, 1, 10000), 1);
  EXPECT_EQ(done[0].user, buf);
  EXPECT_EQ(done[0].result, 0);
  EXPECT_TRUE(check_pattern(buf, 8192, 0, 5));
  char id[20];
  ASSERT_EQ(vcp_get_id(q, id, nullptr, nullptr), 0);
  EXPECT_EQ(vcp_wait(q, done, 4, 1, 10000), 1);
  EXPECT_EQ(vcp_poll(q, done, 4), 0);
  EXPECT_GE(vcp_config_fd(c), 0);
  EXPECT_EQ(vcp_update_config(c), 0) << "the capacity did not change";
  EXPECT_EQ(vcp_error(c), 0);
  vcp_free(c, buf);
  vcp_close(c);
}

TEST(CApi, ThePhysicalBlockIsTheDevices) {
  DeviceOptions d;
  d.spec = "ram:size=16M,physical_block_size=4k";
  DeviceServer s(d);
  UnixListener l;
  ASSERT_TRUE(l.ok);
  l.serve(*s.device);
  vcp_client* c = nullptr;
  ASSERT_EQ(vcp_connect(l.path.c_str(), nullptr, &c), 0);
  l.accepted();
  vcp_info info;
  ASSERT_EQ(vcp_get_info(c, &info), 0);
  EXPECT_EQ(info.block_size, 512u);
  EXPECT_EQ(vcp_physical_block_size(c), 4096u);
  vcp_close(c);
}

}  // namespace
}  // namespace vcp::client::test
