// libvcp against the real VCP runtime (BlkDevice) in this process: negotiation, every request
// type, copy and zero-copy paths, splitting, multi-queue, poll modes.
#include <fcntl.h>
#include <sys/stat.h>

#include <cstdlib>
#include <vector>

#include "client/arena.hpp"
#include "harness.hpp"

namespace vcp::client::test {
namespace {

constexpr int kWaitMs = 10000;  // a bound against hangs, never a timing assertion

struct Connected {
  explicit Connected(const DeviceOptions& d, ClientOptions co = {}) : server(d) {
    std::string why;
    rc = server.connect(co, &client, &why);
    EXPECT_EQ(rc, 0) << why;
  }
  Queue& q(unsigned i = 0) { return client->queue(i); }
  DeviceServer server;
  std::unique_ptr<Client> client;
  int rc = -1;
};

TEST(ClientConnect, NegotiatesAndReadsConfig) {
  DeviceOptions d;
  d.spec = "ram:size=16M";
  d.queues = 2;
  ClientOptions co;
  co.num_queues = 0;  // all
  Connected c(d, co);
  ASSERT_EQ(c.rc, 0);
  const DeviceInfo& i = c.client->info();
  EXPECT_EQ(i.capacity_bytes, 16u << 20);
  EXPECT_EQ(i.block_size, 512u);
  EXPECT_EQ(i.physical_block_size, 512u);
  EXPECT_TRUE(i.features & (1ull << VIRTIO_BLK_F_TOPOLOGY));
  EXPECT_EQ(i.num_queues, 2);
  EXPECT_EQ(c.client->num_queues(), 2u);
  EXPECT_EQ(i.seg_max, 128u);
  EXPECT_EQ(i.size_max, 64u << 10);
  EXPECT_TRUE(i.flush);
  EXPECT_TRUE(i.discard);
  EXPECT_TRUE(i.write_zeroes);
  EXPECT_FALSE(i.read_only);
  EXPECT_TRUE(i.features & (1ull << VIRTIO_RING_F_EVENT_IDX));
  EXPECT_TRUE(i.features & (1ull << VIRTIO_RING_F_INDIRECT_DESC));
  EXPECT_TRUE(i.protocol_features & (1ull << vhost::kProtoReplyAck));
  // The inflight region stays mapped for a later recovery.
  EXPECT_TRUE(i.inflight);
  EXPECT_GE(c.client->inflight_fd(), 0);
  EXPECT_NE(c.client->inflight_region(), nullptr);
  EXPECT_GT(c.client->inflight_size(), 0u);
  EXPECT_EQ(c.client->error(), 0);
}

TEST(ClientConnect, TakesThePhysicalBlock) {
  DeviceOptions d;
  d.spec = "ram:size=16M,physical_block_size=4k";
  Connected c(d, ClientOptions{});
  ASSERT_EQ(c.rc, 0);
  EXPECT_EQ(c.client->info().block_size, 512u);
  EXPECT_EQ(c.client->info().physical_block_size, 4096u);
}

// The device grows under a connected client: `vcp serve`'s SIGHUP path (BlkDevice::grow, then
// CONFIG_CHANGE_MSG on the back-end channel) makes config_fd() readable, update_config() takes
// the new capacity and requests up to it are accepted.
TEST(ClientConfig, AGrownDeviceIsSeenThroughTheBackendChannel) {
  char path[] = "/tmp/libvcp-grow-XXXXXX";
  UniqueFd fd(mkstemp(path));
  ASSERT_TRUE(fd);
  ASSERT_EQ(ftruncate(fd.get(), 1 << 20), 0);
  DeviceOptions d;
  d.spec = std::string("file:path=") + path;
  Connected c(d);
  unlink(path);
  ASSERT_EQ(c.rc, 0);
  ASSERT_GE(c.client->config_fd(), 0) << "vcp serve offers the back-end channel";
  EXPECT_TRUE(c.client->info().protocol_features & (1ull << vhost::kProtoBackendReq));
  EXPECT_EQ(c.client->capacity_bytes(), 1u << 20);
  std::vector<char> block(4096, 'g');
  EXPECT_EQ(c.q().write_sync(1 << 20, block.data(), block.size()), -EINVAL) << "past the end";
  EXPECT_EQ(c.client->update_config(), 0) << "nothing changed";

  ASSERT_EQ(ftruncate(fd.get(), 2 << 20), 0);
  int sent = 1;
  c.server.loop->run_on_loop([&](vhost::VhostUserBackend& b) {
    ASSERT_TRUE(c.server.device->grow());
    sent = b.config_changed();
  });
  ASSERT_EQ(sent, 0);
  pollfd p{c.client->config_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, kWaitMs), 1);
  EXPECT_EQ(c.client->update_config(), 1);
  EXPECT_EQ(c.client->capacity_bytes(), 2u << 20);
  EXPECT_EQ(c.client->info().capacity_bytes, 1u << 20) << "info() is what was said at connect";
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "the notice was taken";
  EXPECT_EQ(c.q().write_sync(1 << 20, block.data(), block.size()), 0);
  std::vector<char> back(4096);
  EXPECT_EQ(c.q().read_sync((2 << 20) - 4096, back.data(), back.size()), 0);
  EXPECT_EQ(c.q().read_sync(2 << 20, back.data(), back.size()), -EINVAL);
  EXPECT_EQ(c.client->error(), 0);
}

// What comes on the back-end channel is another domain's word: a notice asking for a reply is
// answered (0, or ENOSYS for a request we do not know), a flood is taken 64 at a time, and a
// message that breaks the framing closes the channel, not the connection.
TEST(ClientConfig, TheBackendChannelIsReadWithCare) {
  Connected c(DeviceOptions{});
  ASSERT_EQ(c.rc, 0);
  int chan = -1;
  c.server.loop->run_on_loop([&](vhost::VhostUserBackend& b) { chan = ::dup(b.backend_channel_fd()); });
  ASSERT_GE(chan, 0);
  UniqueFd theirs(chan);
  auto send = [&](uint32_t request, uint32_t flags, uint32_t size = 0) {
    const vhost::MsgHeader h{request, flags, size};
    std::vector<uint8_t> m(sizeof h + size, 0x77);
    std::memcpy(m.data(), &h, sizeof h);
    ASSERT_EQ(::write(theirs.get(), m.data(), m.size()), static_cast<ssize_t>(m.size()));
  };
  auto reply = [&]() -> uint64_t {
    vhost::MsgHeader h{};
    uint64_t v = ~0ull;
    EXPECT_EQ(::read(theirs.get(), &h, sizeof h), static_cast<ssize_t>(sizeof h));
    EXPECT_EQ(h.flags, vhost::kVersion | vhost::kFlagReply);
    EXPECT_EQ(h.size, sizeof v);
    EXPECT_EQ(::read(theirs.get(), &v, sizeof v), static_cast<ssize_t>(sizeof v));
    return v;
  };
  const auto config_change = static_cast<uint32_t>(vhost::BackendRequest::config_change_msg);
  send(config_change, vhost::kVersion | vhost::kFlagNeedReply);
  send(99, vhost::kVersion | vhost::kFlagNeedReply, 8);
  EXPECT_EQ(c.client->update_config(), 0) << "the capacity is the same";
  EXPECT_EQ(reply(), 0u);
  EXPECT_EQ(reply(), static_cast<uint64_t>(ENOSYS));
  // A flood: 200 notices, taken 64 per call; the rest keep config_fd() readable.
  for (int i = 0; i < 200; ++i) send(config_change, vhost::kVersion);
  EXPECT_EQ(c.client->update_config(), 0);
  pollfd p{c.client->config_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.client->update_config(), 0);
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "all 200 taken in four calls";
  // A payload larger than any message: the channel goes, the connection stays.
  send(config_change, vhost::kVersion, 8192);
  EXPECT_EQ(c.client->update_config(), 0);
  EXPECT_EQ(c.client->config_fd(), -1);
  EXPECT_EQ(c.client->error(), 0);
  std::vector<char> block(4096, 'k');
  EXPECT_EQ(c.q().write_sync(0, block.data(), block.size()), 0);
}

TEST(ClientConnect, RefusesMoreQueuesThanTheDeviceHas) {
  DeviceOptions d;
  ClientOptions co;
  co.num_queues = 3;
  DeviceServer s(d);
  std::unique_ptr<Client> client;
  std::string why;
  EXPECT_EQ(s.connect(co, &client, &why), -EINVAL);
  EXPECT_NE(why.find("queues"), std::string::npos) << why;
}

TEST(ClientConnect, ThroughAUnixSocketPath) {
  DeviceOptions o;
  o.spec = "ram:size=16M,serial=unix-path-disk";
  DeviceServer s(o);
  UnixListener l;
  ASSERT_TRUE(l.ok);
  l.serve(*s.device);
  std::unique_ptr<Client> client;
  std::string why;
  ASSERT_EQ(Client::connect(l.path, {}, &client, &why), 0) << why;
  l.accepted();
  char id[20] = {};
  EXPECT_EQ(client->queue(0).get_id_sync(id), 0);
  EXPECT_EQ(std::string(id, strnlen(id, 20)), "unix-path-disk");
}

TEST(ClientIo, ZeroCopyAndBouncedBuffersRoundTrip) {
  Connected c({});
  ASSERT_EQ(c.rc, 0);
  const size_t len = 64 << 10;
  auto* arena_buf = static_cast<uint8_t*>(c.client->alloc(len));
  ASSERT_NE(arena_buf, nullptr);
  std::vector<uint8_t> heap(len);
  EXPECT_TRUE(c.client->is_zero_copy(arena_buf, len));
  EXPECT_FALSE(c.client->is_zero_copy(heap.data(), len));
  EXPECT_FALSE(c.client->is_zero_copy(arena_buf, (64u << 20) + 1));

  fill_pattern(arena_buf, len, 0, 1);
  ASSERT_EQ(c.q().write_sync(0, arena_buf, len), 0);
  fill_pattern(heap.data(), len, len, 2);
  ASSERT_EQ(c.q().write_sync(len, heap.data(), len), 0);

  // Read each back through the other path.
  std::memset(arena_buf, 0, len);
  ASSERT_EQ(c.q().read_sync(len, arena_buf, len), 0);
  EXPECT_TRUE(check_pattern(arena_buf, len, len, 2));
  std::fill(heap.begin(), heap.end(), 0);
  ASSERT_EQ(c.q().read_sync(0, heap.data(), len), 0);
  EXPECT_TRUE(check_pattern(heap.data(), len, 0, 1));
  c.client->free(arena_buf);
}

// The arena is the guest memory the VCP maps: sealed so that its size never changes under a
// mapping (a shrink would make the VCP's accesses raise SIGBUS).
TEST(ClientArena, MemfdIsSealed) {
  Arena a;
  ASSERT_EQ(a.init(4096, 1 << 20), 0);
  const int seals = fcntl(a.fd(), F_GET_SEALS);
  EXPECT_EQ(seals, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_NE(ftruncate(a.fd(), 4096), 0);
  EXPECT_NE(ftruncate(a.fd(), 4 << 20), 0);
}

TEST(ClientIo, ArenaAllocatorReusesFreedSpace) {
  ClientOptions co;
  co.buffer_bytes = 1 << 20;
  Connected c({}, co);
  ASSERT_EQ(c.rc, 0);
  void* a = c.client->alloc(512 << 10);
  void* b = c.client->alloc(512 << 10);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(c.client->alloc(4096), nullptr);  // full
  c.client->free(a);
  c.client->free(b);
  void* whole = c.client->alloc(1 << 20);
  EXPECT_NE(whole, nullptr);  // the two halves merged again
  void* aligned = nullptr;
  c.client->free(whole);
  aligned = c.client->alloc(4096, 64 << 10);
  ASSERT_NE(aligned, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(aligned) % (64 << 10), 0u);
}

// Many requests in flight at once, completions both polled and by callback.
TEST(ClientIo, AsyncQueueDepthWithPolledAndCallbackCompletions) {
  ClientOptions co;
  co.queue_size = 64;
  Connected c({}, co);
  ASSERT_EQ(c.rc, 0);
  Queue& q = c.q();
  EXPECT_EQ(q.capacity(), 64u);
  const size_t bs = 4096;
  auto* buf = static_cast<uint8_t*>(c.client->alloc(bs * 128));
  for (unsigned i = 0; i < 128; ++i) fill_pattern(buf + i * bs, bs, i * bs, 7);
  // 64 writes fill the queue; the 65th is refused until something completes.
  for (unsigned i = 0; i < 64; ++i) ASSERT_EQ(q.write(i * bs, buf + i * bs, bs, reinterpret_cast<void*>(uintptr_t{i})), 0);
  EXPECT_EQ(q.write(64 * bs, buf + 64 * bs, bs, nullptr), -EAGAIN);
  EXPECT_EQ(q.outstanding(), 64u);
  std::vector<bool> seen(64);
  Completion out[16];
  unsigned got = 0;
  while (got < 64) {
    int n = q.wait(out, 16, 1, kWaitMs);
    ASSERT_GT(n, 0);
    for (int k = 0; k < n; ++k) {
      EXPECT_EQ(out[k].result, 0);
      auto i = reinterpret_cast<uintptr_t>(out[k].user);
      ASSERT_LT(i, 64u);
      EXPECT_FALSE(seen[i]);
      seen[i] = true;
    }
    got += static_cast<unsigned>(n);
  }
  EXPECT_EQ(q.outstanding(), 0u);

  // The other 64 by callback, resubmitting from inside the callback.
  struct Ctx {
    Queue* q;
    uint8_t* buf;
    unsigned next = 64, done = 0;
    int errors = 0;
  } ctx{&q, buf};
  auto cb = +[](void* u, int r) {
    auto* x = static_cast<Ctx*>(u);
    if (r != 0) ++x->errors;
    ++x->done;
    if (x->next < 128) {
      const unsigned i = x->next++;
      if (x->q->write(i * 4096, x->buf + i * 4096, 4096, x, nullptr) != 0) ++x->errors;
    }
  };
  for (unsigned k = 0; k < 4; ++k) ASSERT_EQ(q.flush(&ctx, cb), 0);
  while (ctx.done < 4) ASSERT_GE(q.wait(nullptr, 0, 1, kWaitMs), 0);
  // The writes submitted from callbacks had no callback: they come out of poll.
  unsigned polled = 0;
  while (polled < 4) {
    int n = q.wait(out, 16, 1, kWaitMs);
    ASSERT_GT(n, 0);
    polled += static_cast<unsigned>(n);
  }
  EXPECT_EQ(ctx.errors, 0);
  for (unsigned i = 0; i < 68; ++i) {
    std::vector<uint8_t> r(bs);
    ASSERT_EQ(q.read_sync(i * bs, r.data(), bs), 0);
    EXPECT_TRUE(check_pattern(r.data(), bs, i * bs, 7)) << "block " << i;
  }
}

// A device with small limits: every large request is cut into pieces and completes once.
TEST(ClientIo, LargeRequestsAreSplitBySegMaxAndSizeMax) {
  DeviceOptions d;
  d.seg_max = 4;
  d.size_max = 4096;
  ClientOptions co;
  co.bounce_bytes = 8192;
  co.queue_size = 8;  // fewer chains than pieces: the rest waits in the backlog
  Connected c(d, co);
  ASSERT_EQ(c.rc, 0);
  EXPECT_EQ(c.client->info().max_transfer, 16384u);
  const size_t len = 1 << 20;
  auto* zc = static_cast<uint8_t*>(c.client->alloc(len));
  fill_pattern(zc, len, 0, 3);
  const uint64_t before = c.server.device->worker(0).stats().requests.load();
  ASSERT_EQ(c.q().write_sync(0, zc, len), 0);
  EXPECT_EQ(c.server.device->worker(0).stats().requests.load() - before, len / 16384);
  std::vector<uint8_t> heap(len);
  ASSERT_EQ(c.q().read_sync(0, heap.data(), len), 0);  // bounced: 8 KiB pieces
  EXPECT_TRUE(check_pattern(heap.data(), len, 0, 3));
  EXPECT_EQ(c.server.device->worker(0).stats().requests.load() - before, len / 16384 + len / 8192);
  EXPECT_EQ(c.server.device->worker(0).stats().bad_requests.load(), 0u);
}

TEST(ClientIo, DiscardAndWriteZeroesReadBackZeros) {
  Connected c({});
  ASSERT_EQ(c.rc, 0);
  const size_t len = 256 << 10;
  std::vector<uint8_t> data(len, 0xab), back(len);
  ASSERT_EQ(c.q().write_sync(0, data.data(), len), 0);
  ASSERT_EQ(c.q().write_sync(len, data.data(), len), 0);
  ASSERT_EQ(c.q().discard_sync(0, len), 0);
  ASSERT_EQ(c.q().write_zeroes_sync(len, len, false), 0);
  ASSERT_EQ(c.q().read_sync(0, back.data(), 2 * len / 2), 0);
  EXPECT_EQ(std::count(back.begin(), back.end(), 0), static_cast<long>(len));
  ASSERT_EQ(c.q().read_sync(len, back.data(), len), 0);
  EXPECT_EQ(std::count(back.begin(), back.end(), 0), static_cast<long>(len));
  ASSERT_EQ(c.q().write_zeroes_sync(0, 4096, true), 0);
}

TEST(ClientIo, FlushAndGetIdOnAFile) {
  TempImage img(8 << 20);
  ASSERT_TRUE(img.ok);
  DeviceOptions d;
  d.spec = "file:path=" + img.path + ",serial=disk-0123456789abcde";  // 20 bytes: no NUL
  {
    Connected c(d);
    ASSERT_EQ(c.rc, 0);
    std::vector<uint8_t> w(8192), r(8192);
    fill_pattern(w.data(), w.size(), 4096, 9);
    ASSERT_EQ(c.q().write_sync(4096, w.data(), w.size()), 0);
    EXPECT_EQ(c.q().flush_sync(), 0);
    ASSERT_EQ(c.q().read_sync(4096, r.data(), r.size()), 0);
    EXPECT_EQ(r, w);
    char id[20];
    // get_id into an arena buffer takes the zero-copy path.
    auto* zid = static_cast<char*>(c.client->alloc(4096));
    EXPECT_EQ(c.q().get_id_sync(id), 0);
    EXPECT_EQ(c.q().get_id_sync(zid), 0);
    EXPECT_EQ(std::string(id, strnlen(id, 20)), "disk-0123456789abcde");
    EXPECT_EQ(std::string(zid, strnlen(zid, 20)), "disk-0123456789abcde");
  }
}

TEST(ClientIo, ReadOnlyDeviceRefusesWrites) {
  TempImage img(1 << 20);
  ASSERT_TRUE(img.ok);
  DeviceOptions d;
  d.spec = "file:path=" + img.path + ",ro=on";
  {
    Connected c(d);
    ASSERT_EQ(c.rc, 0);
    EXPECT_TRUE(c.client->info().read_only);
    std::vector<uint8_t> b(4096);
    EXPECT_EQ(c.q().write_sync(0, b.data(), b.size()), -EROFS);
    EXPECT_EQ(c.q().discard_sync(0, 4096), -EROFS);
    EXPECT_EQ(c.q().read_sync(0, b.data(), b.size()), 0);
  }
}

TEST(ClientIo, BadArgumentsAreRefusedAtSubmit) {
  Connected c({});
  ASSERT_EQ(c.rc, 0);
  std::vector<uint8_t> b(4096);
  Queue& q = c.q();
  EXPECT_EQ(q.read(100, b.data(), 512, nullptr), -EINVAL);            // misaligned offset
  EXPECT_EQ(q.read(0, b.data(), 100, nullptr), -EINVAL);              // partial block
  EXPECT_EQ(q.read(0, b.data(), 0, nullptr), -EINVAL);                // empty
  EXPECT_EQ(q.read(16u << 20, b.data(), 512, nullptr), -EINVAL);      // past the end
  EXPECT_EQ(q.write((16u << 20) - 512, b.data(), 1024, nullptr), -EINVAL);
  EXPECT_EQ(q.read(0, nullptr, 512, nullptr), -EINVAL);
  EXPECT_EQ(q.outstanding(), 0u);
}

// The null backend moves no data: what the channel costs alone, every request kind accepted.
TEST(ClientIo, NullBackendCompletesEverything) {
  DeviceOptions d;
  d.spec = "null:size=1G";
  Connected c(d);
  ASSERT_EQ(c.rc, 0);
  EXPECT_EQ(c.client->info().capacity_bytes, 1ull << 30);
  auto* buf = static_cast<uint8_t*>(c.client->alloc(1 << 20));
  EXPECT_EQ(c.q().read_sync(0, buf, 1 << 20), 0);
  EXPECT_EQ(c.q().write_sync(512 << 20, buf, 1 << 20), 0);
  EXPECT_EQ(c.q().discard_sync(0, 1 << 30), 0);  // split by the device's discard limit, if any
  EXPECT_EQ(c.q().flush_sync(), 0);
}

// One thread per queue, each on its own part of the device.
TEST(ClientIo, MultiQueueOnThreads) {
  DeviceOptions d;
  d.queues = 4;
  d.spec = "ram:size=32M";
  ClientOptions co;
  co.num_queues = 4;
  co.queue_size = 32;
  Connected c(d, co);
  ASSERT_EQ(c.rc, 0);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Queue& q = c.client->queue(t);
      const uint64_t base = uint64_t{t} * (8u << 20);
      auto* buf = static_cast<uint8_t*>(c.client->alloc(32 * 4096));
      if (!buf) {
        ++failures;
        return;
      }
      for (int round = 0; round < 8; ++round) {
        for (unsigned i = 0; i < 32; ++i) {
          fill_pattern(buf + i * 4096, 4096, base + i * 4096, static_cast<uint32_t>(round + t));
          if (q.write(base + i * 4096, buf + i * 4096, 4096, nullptr) != 0) ++failures;
        }
        Completion out[32];
        unsigned got = 0;
        while (got < 32) {
          int n = q.wait(out, 32, 32 - got, kWaitMs);
          if (n <= 0) {
            ++failures;
            return;
          }
          for (int k = 0; k < n; ++k)
            if (out[k].result != 0) ++failures;
          got += static_cast<unsigned>(n);
        }
        std::memset(buf, 0, 32 * 4096);
        if (q.read_sync(base, buf, 32 * 4096) != 0) ++failures;
        for (unsigned i = 0; i < 32; ++i)
          if (!check_pattern(buf + i * 4096, 4096, base + i * 4096, static_cast<uint32_t>(round + t))) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  for (unsigned t = 0; t < 4; ++t) EXPECT_GT(c.server.device->worker(t).stats().requests.load(), 0u) << t;
}

// Every client poll mode against every VCP poll mode.
class PollModes : public ::testing::TestWithParam<std::tuple<PollMode, vcp::PollMode>> {};

TEST_P(PollModes, RequestsComplete) {
  DeviceOptions d;
  d.poll = std::get<1>(GetParam());
  ClientOptions co;
  co.poll = std::get<0>(GetParam());
  co.spin_us = 10;
  co.queue_size = 16;
  Connected c(d, co);
  ASSERT_EQ(c.rc, 0);
  auto* buf = static_cast<uint8_t*>(c.client->alloc(16 * 4096));
  for (int i = 0; i < 100; ++i) {
    fill_pattern(buf, 4096, 0, static_cast<uint32_t>(i));
    ASSERT_EQ(c.q().write_sync(0, buf, 4096), 0);
    std::memset(buf, 0, 4096);
    ASSERT_EQ(c.q().read_sync(0, buf, 4096), 0);
    ASSERT_TRUE(check_pattern(buf, 4096, 0, static_cast<uint32_t>(i)));
  }
  for (int round = 0; round < 20; ++round) {
    for (unsigned i = 0; i < 16; ++i) ASSERT_EQ(c.q().read(i * 4096, buf + i * 4096, 4096, nullptr), 0);
    Completion out[16];
    unsigned got = 0;
    while (got < 16) {
      int n = c.q().wait(out, 16, 16 - got, kWaitMs);
      ASSERT_GT(n, 0);
      got += static_cast<unsigned>(n);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, PollModes,
                         ::testing::Combine(::testing::Values(PollMode::always, PollMode::adaptive, PollMode::never),
                                            ::testing::Values(vcp::PollMode::always, vcp::PollMode::adaptive,
                                                              vcp::PollMode::never)));

TEST(ClientPollMode, ParsesNames) {
  PollMode m;
  EXPECT_TRUE(parse_poll_mode("never", &m));
  EXPECT_EQ(m, PollMode::never);
  EXPECT_STREQ(to_string(PollMode::always), "always");
  EXPECT_FALSE(parse_poll_mode("sometimes", &m));
}

}  // namespace
}  // namespace vcp::client::test
