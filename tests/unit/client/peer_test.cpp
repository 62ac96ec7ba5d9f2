// libvcp against a back-end in another process — `vcp serve` or qemu-storage-daemon — started
// by tests/integration/client_test.sh, which says where (VCP_TEST_SOCKET) and what the back-end
// keeps: VCP_TEST_KEEPS_DATA=1 when reads return what was written (not null devices),
// VCP_TEST_DISCARD_ZEROES=1 when discarded blocks read back as zeros.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "vcp/client.hpp"

namespace vcp::client::test {
namespace {

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && std::string(v) == "1";
}

void fill(uint8_t* p, size_t len, uint64_t off, uint32_t seed) {
  for (size_t i = 0; i < len; ++i) p[i] = static_cast<uint8_t>((off + i) * 151 + seed + ((off + i) >> 12));
}
bool same(const uint8_t* p, size_t len, uint64_t off, uint32_t seed) {
  for (size_t i = 0; i < len; ++i)
    if (p[i] != static_cast<uint8_t>((off + i) * 151 + seed + ((off + i) >> 12))) return false;
  return true;
}

class Peer : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* sock = std::getenv("VCP_TEST_SOCKET");
    ASSERT_NE(sock, nullptr) << "VCP_TEST_SOCKET is not set (run through client_test.sh)";
    keeps_data = env_flag("VCP_TEST_KEEPS_DATA");
    discard_zeroes = env_flag("VCP_TEST_DISCARD_ZEROES");
    ClientOptions co;
    co.num_queues = 0;
    co.queue_size = 128;
    co.bounce_bytes = 16 << 10;
    std::string why;
    ASSERT_EQ(Client::connect(sock, co, &client, &why), 0) << why;
  }
  Queue& q(unsigned i = 0) { return client->queue(i); }

  std::unique_ptr<Client> client;
  bool keeps_data = false, discard_zeroes = false;
};

TEST_F(Peer, DescribesItself) {
  const DeviceInfo& i = client->info();
  EXPECT_GE(i.capacity_bytes, 64u << 20);
  EXPECT_GE(i.block_size, 512u);
  EXPECT_GE(client->num_queues(), 1u);
  EXPECT_GT(i.max_transfer, 0u);
  std::printf("peer: %llu bytes, block %u, seg_max %u, size_max %u, max transfer %u, %u queues, flush %d discard %d "
              "write-zeroes %d, inflight %d\n",
              static_cast<unsigned long long>(i.capacity_bytes), i.block_size, i.seg_max, i.size_max, i.max_transfer,
              client->num_queues(), i.flush, i.discard, i.write_zeroes, i.inflight);
}

TEST_F(Peer, ReadsBackWhatItWroteOnBothPaths) {
  const size_t len = 256 << 10;
  auto* zc = static_cast<uint8_t*>(client->alloc(len));
  ASSERT_NE(zc, nullptr);
  std::vector<uint8_t> heap(len);
  fill(zc, len, 0, 1);
  fill(heap.data(), len, len, 2);
  ASSERT_EQ(q().write_sync(0, zc, len), 0);
  ASSERT_EQ(q().write_sync(len, heap.data(), len), 0);
  std::memset(zc, 0, len);
  std::fill(heap.begin(), heap.end(), 0);
  ASSERT_EQ(q().read_sync(len, zc, len), 0);
  ASSERT_EQ(q().read_sync(0, heap.data(), len), 0);
  if (keeps_data) {
    EXPECT_TRUE(same(zc, len, len, 2));
    EXPECT_TRUE(same(heap.data(), len, 0, 1));
  }
  client->free(zc);
}

// Larger than one virtio request may be: split by seg_max/size_max, one completion.
TEST_F(Peer, LargeRequestsSplit) {
  const size_t len = 8 << 20;
  ASSERT_GT(len, client->info().max_transfer);
  auto* zc = static_cast<uint8_t*>(client->alloc(len));
  ASSERT_NE(zc, nullptr);
  fill(zc, len, 1 << 20, 3);
  ASSERT_EQ(q().write_sync(1 << 20, zc, len), 0);
  std::vector<uint8_t> heap(len);
  ASSERT_EQ(q().read_sync(1 << 20, heap.data(), len), 0);
  if (keeps_data) {
    EXPECT_TRUE(same(heap.data(), len, 1 << 20, 3));
  }
  client->free(zc);
}

TEST_F(Peer, QueueDepthAndMultiQueueOnThreads) {
  const unsigned nq = client->num_queues();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (unsigned t = 0; t < nq; ++t)
    threads.emplace_back([&, t] {
      Queue& qq = client->queue(t);
      const uint64_t base = (16ull << 20) + t * (8ull << 20);
      auto* buf = static_cast<uint8_t*>(client->alloc(64 * 4096));
      if (!buf) {
        ++failures;
        return;
      }
      for (unsigned i = 0; i < 64; ++i) {
        fill(buf + i * 4096, 4096, base + i * 4096, t);
        if (qq.write(base + i * 4096, buf + i * 4096, 4096, nullptr) != 0) ++failures;
      }
      Completion out[64];
      for (unsigned got = 0; got < 64;) {
        const int n = qq.wait(out, 64, 64 - got, 10000);
        if (n <= 0) {
          ++failures;
          return;
        }
        for (int k = 0; k < n; ++k) failures += out[k].result != 0;
        got += static_cast<unsigned>(n);
      }
      std::memset(buf, 0, 64 * 4096);
      if (qq.read_sync(base, buf, 64 * 4096) != 0) ++failures;
      if (keeps_data && !same(buf, 64 * 4096, base, t)) ++failures;
      client->free(buf);
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(Peer, DiscardAndWriteZeroesWhereOffered) {
  const DeviceInfo& i = client->info();
  const size_t len = 1 << 20;
  std::vector<uint8_t> data(len, 0x5a), back(len, 0xee);
  const uint64_t off = 48 << 20;
  if (i.write_zeroes) {
    ASSERT_EQ(q().write_sync(off, data.data(), len), 0);
    ASSERT_EQ(q().write_zeroes_sync(off, len, false), 0);
    ASSERT_EQ(q().read_sync(off, back.data(), len), 0);
    if (keeps_data) {
      EXPECT_EQ(std::count(back.begin(), back.end(), 0), static_cast<long>(len));
    }
  } else {
    EXPECT_EQ(q().write_zeroes_sync(off, len, false), -EOPNOTSUPP);
  }
  if (i.discard) {
    ASSERT_EQ(q().write_sync(off, data.data(), len), 0);
    ASSERT_EQ(q().discard_sync(off, len), 0);
    ASSERT_EQ(q().read_sync(off, back.data(), len), 0);
    if (discard_zeroes) {
      EXPECT_EQ(std::count(back.begin(), back.end(), 0), static_cast<long>(len));
    }
  } else {
    EXPECT_EQ(q().discard_sync(off, len), -EOPNOTSUPP);
  }
}

TEST_F(Peer, FlushAndGetId) {
  EXPECT_EQ(q().flush_sync(), 0);
  char id[20] = {};
  const int rc = q().get_id_sync(id);
  EXPECT_EQ(rc, 0);
  std::printf("peer serial: '%.*s'\n", 20, id);
}

}  // namespace
}  // namespace vcp::client::test
