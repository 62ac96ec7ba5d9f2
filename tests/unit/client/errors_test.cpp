// Back-ends that misbehave: the client reports a clear error, never hangs (every wait is
// bounded, and a bound reached fails the test through the value it returns) or crashes.
#include <atomic>

#include "harness.hpp"

namespace vcp::client::test {
namespace {

constexpr int kWaitMs = 10000;

// A client connected to `dev` (connect_over_socketpair). The client goes before the loop
// (members end in reverse order).
struct Connection {
  std::unique_ptr<ServerLoop> loop;
  std::unique_ptr<Client> client;
  int rc = -1;  // Client::connect_fd's
  std::string why;
};
Connection connect_to(vhost::Device& dev, const ClientOptions& co = {}) {
  Connection c;
  c.rc = connect_over_socketpair(dev, co, &c.loop, &c.client, &c.why);
  return c;
}

class SilentServer : public ::testing::Test {
 protected:
  void connect(ClientOptions co = {}) {
    Connection c = connect_to(dev, co);
    loop = std::move(c.loop);
    client = std::move(c.client);
    ASSERT_EQ(c.rc, 0) << c.why;
  }
  // Collects n completions (bounded); returns them.
  std::vector<Completion> collect(Queue& q, unsigned n) {
    std::vector<Completion> all;
    Completion out[32];
    while (all.size() < n) {
      int r = q.wait(out, 32, 1, kWaitMs);
      if (r <= 0) {
        ADD_FAILURE() << "wait returned " << r << " with " << all.size() << " of " << n;
        break;
      }
      all.insert(all.end(), out, out + r);
    }
    return all;
  }
  void TearDown() override {
    client.reset();
    loop.reset();
  }

  SilentDevice dev;
  std::unique_ptr<ServerLoop> loop;
  std::unique_ptr<Client> client;
};

TEST_F(SilentServer, BackendClosingTheSocketFailsOutstandingAndLaterRequests) {
  for (auto mode : {PollMode::always, PollMode::adaptive, PollMode::never}) {
    SCOPED_TRACE(to_string(mode));
    ClientOptions co;
    co.poll = mode;
    co.spin_us = 10;
    connect(co);
    Queue& q = client->queue(0);
    std::vector<uint8_t> b(8 * 4096);
    for (unsigned i = 0; i < 8; ++i) ASSERT_EQ(q.read(i * 4096, b.data() + i * 4096, 4096, reinterpret_cast<void*>(uintptr_t{i + 1})), 0);
    ASSERT_EQ(q.commit(), 0);
    EXPECT_EQ(q.poll(nullptr, 0), 0);  // nothing: the device never answers
    loop->stop();                       // the VCP is gone
    auto done = collect(q, 8);
    ASSERT_EQ(done.size(), 8u);
    for (const auto& c : done) EXPECT_EQ(c.result, -ECONNRESET);
    EXPECT_EQ(q.read(0, b.data(), 4096, nullptr), -ECONNRESET);
    EXPECT_EQ(q.read_sync(0, b.data(), 4096), -ECONNRESET);
    EXPECT_EQ(client->error(), -ECONNRESET);
    // The other queue learns it on its next look.
    EXPECT_EQ(client->queue(0).error(), -ECONNRESET);
    client.reset();
    loop.reset();
  }
}

TEST_F(SilentServer, BogusUsedEntryFailsTheQueueWithEproto) {
  ClientOptions co;
  co.num_queues = 2;
  co.queue_size = 16;
  connect(co);
  Queue& q = client->queue(0);
  std::vector<uint8_t> b(4 * 4096);
  std::atomic<int> callback_result{1};
  auto cb = +[](void* u, int r) { static_cast<std::atomic<int>*>(u)->store(r); };
  ASSERT_EQ(q.read(0, b.data(), 4096, nullptr), 0);
  ASSERT_EQ(q.read(4096, b.data() + 4096, 4096, &callback_result, cb), 0);
  ASSERT_EQ(q.commit(), 0);
  // Play a broken device: a used entry naming head 9, which is not in flight.
  vhost::QueueStart st = dev.start(0);
  ASSERT_NE(st.layout.used, nullptr);
  vring_used* used = st.layout.used;
  used->ring[0].id = 9;
  used->ring[0].len = 1;
  std::atomic_ref<uint16_t>(used->idx).store(1, std::memory_order_release);
  auto done = collect(q, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result, -EPROTO);
  EXPECT_EQ(callback_result.load(), -EPROTO);
  EXPECT_EQ(q.error(), -EPROTO);
  EXPECT_EQ(q.write(0, b.data(), 4096, nullptr), -EPROTO);
  EXPECT_EQ(q.poll(nullptr, 0), -EPROTO);
  // The whole connection is done for: the other queue refuses too.
  EXPECT_EQ(client->error(), -EPROTO);
  EXPECT_EQ(client->queue(1).read(0, b.data(), 4096, nullptr), -EPROTO);
}

TEST_F(SilentServer, UsedIndexRunningAheadFailsWithEproto) {
  ClientOptions co;
  co.queue_size = 16;
  connect(co);
  Queue& q = client->queue(0);
  std::vector<uint8_t> b(4096);
  ASSERT_EQ(q.read(0, b.data(), 4096, nullptr), 0);
  ASSERT_EQ(q.commit(), 0);
  vring_used* used = dev.start(0).layout.used;
  std::atomic_ref<uint16_t>(used->idx).store(100, std::memory_order_release);  // > ring size ahead
  auto done = collect(q, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result, -EPROTO);
}

TEST_F(SilentServer, SyncHelperTimesOutAndFailsTheConnection) {
  ClientOptions co;
  co.sync_timeout_ms = 100;
  co.poll = PollMode::never;
  connect(co);
  std::vector<uint8_t> b(4096);
  EXPECT_EQ(client->queue(0).read_sync(0, b.data(), 4096), -ETIMEDOUT);
  EXPECT_EQ(client->error(), -ETIMEDOUT);
  EXPECT_EQ(client->queue(0).flush_sync(), -ETIMEDOUT);
}

TEST_F(SilentServer, WaitTimeoutLeavesRequestsOutstanding) {
  ClientOptions co;
  co.poll = PollMode::adaptive;
  co.spin_us = 5;
  connect(co);
  std::vector<uint8_t> b(4096);
  ASSERT_EQ(client->queue(0).read(0, b.data(), 4096, nullptr), 0);
  Completion out[1];
  EXPECT_EQ(client->queue(0).wait(out, 1, 1, 20), -ETIMEDOUT);
  EXPECT_EQ(client->queue(0).outstanding(), 1u);
  EXPECT_EQ(client->error(), 0);
  client->disconnect();
  EXPECT_EQ(client->queue(0).wait(out, 1, 1, kWaitMs), 1);
  EXPECT_EQ(out[0].result, -ECONNRESET);
}

// A back-end that accepts the connection and never answers: control messages time out.
TEST(ClientControl, UnansweredControlMessageTimesOut) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd mute(sv[0]);
  ClientOptions co;
  co.control_timeout_ms = 100;
  std::unique_ptr<Client> client;
  std::string why;
  EXPECT_EQ(Client::connect_fd(sv[1], co, &client, &why), -ETIMEDOUT);
  EXPECT_NE(why.find("GET_FEATURES"), std::string::npos) << why;
  EXPECT_EQ(client, nullptr);
}

TEST(ClientControl, BackendThatHangsUpDuringNegotiation) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  close(sv[0]);
  std::unique_ptr<Client> client;
  std::string why;
  const int rc = Client::connect_fd(sv[1], {}, &client, &why);
  EXPECT_TRUE(rc == -ECONNRESET || rc == -EPIPE) << rc << " " << why;
}

// A device whose config would have the client allocate by absurd sizes, or compute with a
// capacity that overflows, is refused at connect with the reason.
TEST(ClientControl, NonsenseDeviceConfigIsRefused) {
  struct Case {
    const char* why;
    void (*set)(virtio::BlkConfigParams&);
  };
  const Case cases[] = {
      {"block size (1048576)", [](virtio::BlkConfigParams& p) { p.blk_size = 1u << 20; }},
      {"block size (256)", [](virtio::BlkConfigParams& p) { p.blk_size = 256; }},
      {"block size (4097)", [](virtio::BlkConfigParams& p) { p.blk_size = 4097; }},
      {"capacity", [](virtio::BlkConfigParams& p) { p.capacity_sectors = UINT64_MAX; }},
      {"capacity", [](virtio::BlkConfigParams& p) {
         p.blk_size = 4096;
         p.capacity_sectors = 9;  // 4.5 blocks
       }},
  };
  for (const Case& c : cases) {
    SilentDevice dev;
    c.set(dev.config);
    Connection conn = connect_to(dev);
    EXPECT_EQ(conn.rc, -EPROTO) << c.why;
    EXPECT_NE(conn.why.find(c.why), std::string::npos) << conn.why;
    EXPECT_FALSE(conn.client);
  }
  {  // a device offering 1000 queues: "all of them" opens 64 at most
    SilentDevice many;
    many.config.num_queues = 1000;
    ClientOptions co;
    co.num_queues = 0;
    co.queue_size = 16;
    Connection conn = connect_to(many, co);
    ASSERT_EQ(conn.rc, 0) << conn.why;
    EXPECT_EQ(conn.client->num_queues(), 64u);
  }
  {  // a physical block past 1 GiB is nonsense: the logical one is what to align to
    SilentDevice odd;
    odd.config.physical_block_exp = 200;
    Connection conn = connect_to(odd);
    ASSERT_EQ(conn.rc, 0) << conn.why;
    EXPECT_EQ(conn.client->info().physical_block_size, 512u);
  }
  SilentDevice fine;  // and the largest block size we take is taken
  fine.config.blk_size = 64u << 10;
  fine.config.physical_block_exp = 2;
  Connection conn = connect_to(fine);
  ASSERT_EQ(conn.rc, 0) << conn.why;
  EXPECT_EQ(conn.client->info().block_size, 64u << 10);
  EXPECT_EQ(conn.client->info().physical_block_size, 256u << 10);
}

TEST(ClientControl, NoSuchSocket) {
  std::unique_ptr<Client> client;
  std::string why;
  EXPECT_EQ(Client::connect("/nonexistent/libvcp.sock", {}, &client, &why), -ENOENT);
  EXPECT_FALSE(why.empty());
}

}  // namespace
}  // namespace vcp::client::test
