// VhostUserBackend driven by FrontendChannel over a socketpair, with a recording fake device:
// the QEMU 7.2 vhost-user-blk sequence, then every way a front-end can get it wrong.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "harness.hpp"
#include "virtio/inflight.hpp"

namespace vcp::vhost::test {
namespace {

std::vector<uint8_t> raw_message(Request r, const void* payload, size_t len, uint32_t flags = kVersion,
                                 uint32_t declared = UINT32_MAX) {
  MsgHeader h{static_cast<uint32_t>(r), flags, declared == UINT32_MAX ? static_cast<uint32_t>(len) : declared};
  std::vector<uint8_t> out(sizeof(h) + len);
  std::memcpy(out.data(), &h, sizeof(h));
  if (len) std::memcpy(out.data() + sizeof(h), payload, len);
  return out;
}

class BackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    loop = std::make_unique<BackendLoop>(dev, UniqueFd(sv[0]));
    fe = std::make_unique<FrontendChannel>(UniqueFd(sv[1]), 2000);
    ASSERT_NE(mem.p, nullptr);
  }
  void TearDown() override {
    fe.reset();
    loop.reset();
  }

  // QEMU 7.2's start-up: GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES.
  void negotiate(bool reply_ack = true, bool protocol_features = true) {
    auto f = fe->get_features();
    ASSERT_TRUE(f);
    auto pf = fe->get_protocol_features();
    ASSERT_TRUE(pf);
    ASSERT_EQ(fe->set_protocol_features(reply_ack ? *pf : *pf & ~bit(kProtoReplyAck)), 0);
    ASSERT_EQ(fe->set_owner(), 0);
    ASSERT_EQ(fe->set_features(FakeDevice::kFeatures | (protocol_features ? bit(kFeatureProtocolFeatures) : 0)), 0);
  }
  void set_memory(const SharedMemory& m) {
    FrontendChannel::RegionFd r{m.region(0), m.fd.get()};
    ASSERT_EQ(fe->set_mem_table({&r, 1}), 0);
  }
  // What QEMU's vhost_virtqueue_start sends for one ring.
  void setup_ring(const SharedMemory& m, unsigned i, unsigned num = 128, unsigned base = 0) {
    ASSERT_EQ(fe->set_vring_num(i, num), 0);
    ASSERT_EQ(fe->set_vring_base(i, base), 0);
    ASSERT_EQ(fe->set_vring_addr(ring_addr(m, i)), 0);
    ASSERT_EQ(fe->set_vring_kick(i, kick.get()), 0);
    ASSERT_EQ(fe->set_vring_call(i, call.get()), 0);
  }
  void start_ring(unsigned i) {
    setup_ring(mem, i);
    ASSERT_EQ(fe->set_vring_enable(i, true), 0);
    ASSERT_TRUE(dev.is_running(i));
  }
  // The back-end's table; read only while its thread waits for the next message.
  size_t backend_memory_regions() { return loop->backend().memory().size(); }
  // A round trip: everything sent before has been handled.
  bool alive() { return fe->get_features().ok(); }
  int send_raw(const std::vector<uint8_t>& m, std::span<const int> fds = {}) {
    return fe->send_raw(m.data(), m.size(), fds);
  }

  FakeDevice dev;
  SharedMemory mem{1 << 20};
  UniqueFd kick{eventfd(0, EFD_CLOEXEC)};
  UniqueFd call{eventfd(0, EFD_CLOEXEC)};
  std::unique_ptr<BackendLoop> loop;
  std::unique_ptr<FrontendChannel> fe;
};

// ---- the normal sequence ----

TEST_F(BackendTest, NegotiationOffersDeviceAndProtocolFeatures) {
  auto f = fe->get_features();
  ASSERT_TRUE(f);
  EXPECT_EQ(*f, FakeDevice::kFeatures | bit(kFeatureProtocolFeatures) | bit(kFeatureLogAll));
  auto pf = fe->get_protocol_features();
  ASSERT_TRUE(pf);
  EXPECT_EQ(*pf, kBackendProtocolFeatures);
  for (unsigned b :
       {kProtoMq, kProtoLogShmfd, kProtoReplyAck, kProtoConfig, kProtoInflightShmfd, kProtoConfigureMemSlots})
    EXPECT_TRUE(*pf & bit(b)) << b;
  auto qn = fe->get_queue_num();
  ASSERT_TRUE(qn);
  EXPECT_EQ(*qn, FakeDevice::kQueues);
  auto slots = fe->get_max_mem_slots();
  ASSERT_TRUE(slots);
  EXPECT_EQ(*slots, virtio::GuestMemory::kMaxRegions);
  negotiate();
  EXPECT_TRUE(fe->reply_ack());
  EXPECT_EQ(dev.acked_features, FakeDevice::kFeatures);  // the protocol bit is not the device's
  loop->destroy_backend();
}

TEST_F(BackendTest, RingStartsOnlyAfterEnableWithTranslatedLayout) {
  negotiate();
  set_memory(mem);
  mem.p[0x10000] = 0xd5;  // first byte of ring 0's descriptor table
  setup_ring(mem, 0, 128, 7);
  EXPECT_TRUE(dev.get_starts().empty()) << "started before SET_VRING_ENABLE 1";
  ASSERT_EQ(fe->set_vring_enable(0, true), 0);
  auto starts = dev.get_starts();
  ASSERT_EQ(starts.size(), 1u);
  const QueueStart& q = starts[0];
  EXPECT_EQ(q.index, 0u);
  EXPECT_EQ(q.layout.size, 128);
  EXPECT_EQ(q.last_avail_idx, 7);
  EXPECT_TRUE(q.event_idx);
  EXPECT_GE(q.kick_fd, 0);
  EXPECT_GE(q.call_fd, 0);
  EXPECT_EQ(q.inflight, nullptr);
  ASSERT_NE(q.memory, nullptr);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(q.layout.desc)[0], 0xd5);  // the same memfd, mapped by the back-end
  EXPECT_EQ(reinterpret_cast<uint8_t*>(q.layout.avail), reinterpret_cast<uint8_t*>(q.layout.desc) + 0x1000);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(q.layout.used), reinterpret_cast<uint8_t*>(q.layout.desc) + 0x2000);
  EXPECT_FALSE(dev.is_running(1));
}

TEST_F(BackendTest, WithoutProtocolFeaturesTheRingStartsOnKick) {
  negotiate(true, false);
  set_memory(mem);
  setup_ring(mem, 1);
  ASSERT_EQ(dev.get_starts().size(), 1u);
  EXPECT_EQ(dev.get_starts()[0].index, 1u);
}

TEST_F(BackendTest, AddressesBeforeMemoryAreTranslatedAtStart) {
  negotiate();
  setup_ring(mem, 0);
  ASSERT_EQ(fe->set_vring_enable(0, true), 0);
  EXPECT_FALSE(dev.is_running(0)) << "no memory yet";
  set_memory(mem);
  EXPECT_TRUE(dev.is_running(0));
}

TEST_F(BackendTest, GetVringBaseStopsTheRingAndReportsLastAvail) {
  negotiate();
  set_memory(mem);
  start_ring(0);
  dev.stop_value[0] = 42;
  auto base = fe->get_vring_base(0);
  ASSERT_TRUE(base);
  EXPECT_EQ(*base, 42);
  EXPECT_FALSE(dev.is_running(0));
  // A stopped ring waits for a new kick fd, then resumes where the front-end says.
  ASSERT_EQ(fe->set_vring_base(0, 42), 0);
  EXPECT_FALSE(dev.is_running(0));
  ASSERT_EQ(fe->set_vring_kick(0, kick.get()), 0);
  ASSERT_TRUE(dev.is_running(0));
  EXPECT_EQ(dev.get_starts().back().last_avail_idx, 42);
}

TEST_F(BackendTest, GetVringBaseOfAStoppedRingReturnsItsBase) {
  negotiate();
  ASSERT_EQ(fe->set_vring_base(1, 9), 0);
  auto base = fe->get_vring_base(1);
  ASSERT_TRUE(base);
  EXPECT_EQ(*base, 9);
}

TEST_F(BackendTest, DisableStopsAndEnableResumesFromTheStopPoint) {
  negotiate();
  set_memory(mem);
  start_ring(0);
  dev.stop_value[0] = 17;
  ASSERT_EQ(fe->set_vring_enable(0, false), 0);
  EXPECT_FALSE(dev.is_running(0));
  ASSERT_EQ(fe->set_vring_enable(0, true), 0);
  EXPECT_TRUE(dev.is_running(0));
  EXPECT_EQ(dev.get_starts().back().last_avail_idx, 17);
}

TEST_F(BackendTest, NoFdKickMeansPolling) {
  negotiate();
  set_memory(mem);
  ASSERT_EQ(fe->set_vring_num(0, 64), 0);
  ASSERT_EQ(fe->set_vring_addr(ring_addr(mem, 0)), 0);
  ASSERT_EQ(fe->set_vring_kick(0, -1), 0);
  ASSERT_EQ(fe->set_vring_enable(0, true), 0);
  auto starts = dev.get_starts();
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(starts[0].kick_fd, -1);
  EXPECT_EQ(starts[0].call_fd, -1);
}

TEST_F(BackendTest, CallFdOfARunningRingIsHandedToTheDevice) {
  negotiate();
  set_memory(mem);
  start_ring(0);
  UniqueFd other(eventfd(0, EFD_CLOEXEC));
  ASSERT_EQ(fe->set_vring_call(0, other.get()), 0);
  ASSERT_EQ(fe->set_vring_call(0, -1), 0);
  std::lock_guard lk(dev.mu);
  ASSERT_EQ(dev.call_fds.size(), 2u);
  EXPECT_EQ(dev.call_fds[0].first, 0u);
  EXPECT_GE(dev.call_fds[0].second, 0);
  EXPECT_EQ(dev.call_fds[1].second, -1);
}

TEST_F(BackendTest, KickFdOfARunningRingRestartsIt) {
  negotiate();
  set_memory(mem);
  start_ring(0);
  dev.stop_value[0] = 3;
  UniqueFd other(eventfd(0, EFD_CLOEXEC));
  ASSERT_EQ(fe->set_vring_kick(0, other.get()), 0);
  auto log = dev.get_log();
  ASSERT_GE(log.size(), 2u);
  EXPECT_EQ(log[log.size() - 2], "stop 0");
  EXPECT_EQ(log.back(), "start 0");
  EXPECT_EQ(dev.get_starts().back().last_avail_idx, 3);
}

TEST_F(BackendTest, ConfigSpaceReadsAndWrites) {
  negotiate();
  uint8_t buf[16];
  ASSERT_EQ(fe->get_config(8, buf), 0);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(buf[i], 8 + i);
  uint8_t big[60];
  EXPECT_EQ(fe->get_config(32, big), -EIO) << "past the end of config space: empty reply";
  const uint8_t wce = 1;
  ASSERT_EQ(fe->set_config(32, {&wce, 1}), 0);
  EXPECT_EQ(fe->set_config(32, {&wce, 1}, 2), -EINVAL) << "unknown flags";
  EXPECT_EQ(fe->set_config(64, {&wce, 1}), -EINVAL);
  std::lock_guard lk(dev.mu);
  ASSERT_EQ(dev.config_writes.size(), 1u);
  EXPECT_EQ(dev.config_writes[0].first, 32u);
  EXPECT_EQ(dev.config_writes[0].second, std::vector<uint8_t>{1});
}

// The back-end channel: QEMU hands it over before SET_OWNER; a config change goes out on it
// as CONFIG_CHANGE_MSG without asking for a reply (QEMU's answer would wait on a GET_CONFIG
// this thread serves).
TEST_F(BackendTest, ConfigChangeGoesOutOnTheBackendChannel) {
  auto pf = fe->get_protocol_features();
  ASSERT_TRUE(pf);
  ASSERT_TRUE(*pf & bit(kProtoBackendReq));
  ASSERT_EQ(fe->set_protocol_features(*pf), 0);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd ours(sv[0]), theirs(sv[1]);
  ASSERT_EQ(fe->set_backend_req_fd(theirs.get()), 0) << "allowed before SET_OWNER";
  theirs.reset();
  ASSERT_EQ(fe->set_owner(), 0);
  ASSERT_TRUE(alive());
  EXPECT_TRUE(loop->backend().has_backend_channel());
  ASSERT_EQ(loop->backend().config_changed(), 0);
  MsgHeader h{};
  uint8_t payload[16];
  ASSERT_EQ(FrontendChannel::receive_backend_request(ours.get(), &h, payload, 1000), 0);
  EXPECT_EQ(h.request, static_cast<uint32_t>(BackendRequest::config_change_msg));
  EXPECT_EQ(h.flags, kVersion) << "no NEED_REPLY: QEMU would answer only after its GET_CONFIG";
  // The front-end went away: the send fails, the channel is closed, the connection stays.
  ours.reset();
  EXPECT_EQ(loop->backend().config_changed(), -EPIPE);
  EXPECT_FALSE(loop->backend().has_backend_channel());
  EXPECT_EQ(loop->backend().config_changed(), -ENOTCONN);
  EXPECT_TRUE(alive());
}

TEST_F(BackendTest, ConfigChangeNeedsTheChannelAndConfig) {
  negotiate();
  EXPECT_EQ(loop->backend().config_changed(), -ENOTCONN) << "no channel given";
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd ours(sv[0]), theirs(sv[1]);
  ASSERT_EQ(fe->set_protocol_features(kBackendProtocolFeatures & ~bit(kProtoConfig)), 0);
  ASSERT_EQ(fe->set_backend_req_fd(theirs.get()), 0);
  ASSERT_TRUE(alive());
  EXPECT_EQ(loop->backend().config_changed(), -ENOTCONN) << "CONFIG not negotiated";
  // Refused: the channel without BACKEND_REQ, and a descriptor that is not a socket.
  ASSERT_EQ(fe->set_protocol_features(kBackendProtocolFeatures & ~bit(kProtoBackendReq)), 0);
  EXPECT_EQ(fe->set_backend_req_fd(theirs.get()), -EINVAL);
  ASSERT_EQ(fe->set_protocol_features(kBackendProtocolFeatures), 0);
  EXPECT_EQ(fe->set_backend_req_fd(kick.get()), -EINVAL) << "an eventfd is not a socket";
  auto m = raw_message(Request::set_backend_req_fd, nullptr, 0, kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m), 0);
  EXPECT_EQ(fe->receive_ack(Request::set_backend_req_fd), -EBADF) << "no descriptor";
  EXPECT_TRUE(alive());
}

TEST_F(BackendTest, InflightRegionIsCreatedZeroedAndMappedPerQueue) {
  negotiate();
  auto region = fe->get_inflight_fd(2, 128);
  ASSERT_TRUE(region);
  const size_t per_queue = virtio::inflight_queue_bytes(128);
  EXPECT_EQ(region->mmap_size, 2 * per_queue);
  EXPECT_EQ(region->mmap_offset, 0u);
  EXPECT_EQ(region->num_queues, 2);
  EXPECT_EQ(region->queue_size, 128);
  ASSERT_TRUE(region->fd);
  struct stat st {};
  ASSERT_EQ(fstat(region->fd.get(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), 2 * per_queue);
  auto* p = static_cast<uint8_t*>(
      mmap(nullptr, region->mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, region->fd.get(), 0));
  ASSERT_NE(p, MAP_FAILED);
  for (size_t i = 0; i < region->mmap_size; ++i) ASSERT_EQ(p[i], 0) << i;
  // What a back-end that crashed left behind in queue 1: head 3 in flight, fetched 7th.
  auto* q1 = reinterpret_cast<virtio::InflightQueueSplit*>(p + per_queue);
  q1->version = 1;
  q1->desc_num = 128;
  q1->desc[3].inflight = 1;
  q1->desc[3].counter = 7;
  // A slice claiming more descriptors than it has room for is refused.
  q1->desc_num = 256;
  EXPECT_EQ(fe->set_inflight_fd(*region), -EINVAL);
  q1->desc_num = 128;
  ASSERT_EQ(fe->set_inflight_fd(*region), 0);

  set_memory(mem);
  start_ring(1);
  start_ring(0);
  auto starts = dev.get_starts();
  ASSERT_EQ(starts.size(), 2u);
  ASSERT_NE(starts[0].inflight, nullptr);
  ASSERT_NE(starts[1].inflight, nullptr);
  EXPECT_EQ(starts[0].inflight->region->desc[3].counter, 7u) << "queue 1's slice";
  EXPECT_EQ(starts[1].inflight->region->version, 0) << "queue 0 starts uninitialised";
  EXPECT_EQ(reinterpret_cast<uint8_t*>(starts[0].inflight->region) - reinterpret_cast<uint8_t*>(starts[1].inflight->region),
            static_cast<ptrdiff_t>(per_queue));
  munmap(p, region->mmap_size);
}

TEST_F(BackendTest, InflightRequestsOutOfShapeAreRefused) {
  negotiate();
  auto none = fe->get_inflight_fd(3, 128);  // the device has 2 queues
  ASSERT_TRUE(none);
  EXPECT_EQ(none->mmap_size, 0u);
  EXPECT_FALSE(none->fd);
  auto odd = fe->get_inflight_fd(1, 100);
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd->mmap_size, 0u);

  auto region = fe->get_inflight_fd(2, 128);
  ASSERT_TRUE(region);
  InflightRegion small{UniqueFd(dup(region->fd.get())), region->mmap_size - 64, 0, 2, 128};
  EXPECT_EQ(fe->set_inflight_fd(small), -EINVAL);
  InflightRegion past_end{UniqueFd(dup(region->fd.get())), region->mmap_size, 4096, 2, 128};
  EXPECT_EQ(fe->set_inflight_fd(past_end), -EINVAL);
  InflightRegion not_a_file{UniqueFd(eventfd(0, 0)), region->mmap_size, 0, 2, 128};
  EXPECT_EQ(fe->set_inflight_fd(not_a_file), -EINVAL);
  // A ring bigger than the inflight region's queue size cannot use it.
  ASSERT_EQ(fe->set_inflight_fd(*region), 0);
  set_memory(mem);
  setup_ring(mem, 0, 256);
  EXPECT_EQ(fe->set_vring_enable(0, true), -EINVAL);
  EXPECT_FALSE(dev.is_running(0));
}

TEST_F(BackendTest, AddAndRemoveMemoryRegions) {
  negotiate();
  SharedMemory second(1 << 16);
  ASSERT_EQ(fe->add_mem_reg(mem.region(0), mem.fd.get()), 0);
  ASSERT_EQ(fe->add_mem_reg(second.region(1ull << 32), second.fd.get()), 0);
  EXPECT_EQ(fe->add_mem_reg(second.region((1ull << 32) + 4096), second.fd.get()), -EINVAL) << "overlaps";
  // A ring in the second region.
  second.p[0] = 0x5a;
  vhost_vring_addr a{0, 0, second.uva(0), second.uva(0x2000), second.uva(0x1000), 0};
  ASSERT_EQ(fe->set_vring_num(0, 64), 0);
  ASSERT_EQ(fe->set_vring_addr(a), 0);
  ASSERT_EQ(fe->set_vring_kick(0, kick.get()), 0);
  ASSERT_EQ(fe->set_vring_enable(0, true), 0);
  ASSERT_TRUE(dev.is_running(0));
  EXPECT_EQ(reinterpret_cast<uint8_t*>(dev.get_starts().back().layout.desc)[0], 0x5a);
  ASSERT_EQ(fe->get_vring_base(0).ok(), true);

  EXPECT_EQ(fe->rem_mem_reg(second.region(1ull << 32)), 0);
  EXPECT_EQ(fe->rem_mem_reg(second.region(1ull << 32)), -ENOENT);
  MemRegion wrong_uva = mem.region(0);
  wrong_uva.user_addr += 4096;
  EXPECT_EQ(fe->rem_mem_reg(wrong_uva), -ENOENT);
  loop->destroy_backend();
}

TEST_F(BackendTest, MemoryTableChangeRestartsRunningRingsWhilePaused) {
  negotiate();
  set_memory(mem);
  start_ring(0);
  dev.stop_value[0] = 5;
  // The same user addresses now backed by a different memfd.
  SharedMemory fresh(1 << 20);
  fresh.p[0x10000] = 0x77;
  MemRegion r = mem.region(0);
  FrontendChannel::RegionFd rf{r, fresh.fd.get()};
  ASSERT_EQ(fe->set_mem_table({&rf, 1}), 0);
  auto log = dev.get_log();
  ASSERT_GE(log.size(), 4u);
  EXPECT_EQ(std::vector<std::string>(log.end() - 4, log.end()),
            (std::vector<std::string>{"pause", "stop 0", "start 0", "resume"}));
  auto q = dev.get_starts().back();
  EXPECT_EQ(q.last_avail_idx, 5);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(q.layout.desc)[0], 0x77);
}

TEST_F(BackendTest, ResetDeviceStopsRingsAndForgetsFeatures) {
  negotiate();
  set_memory(mem);
  start_ring(0);
  ASSERT_EQ(fe->reset_device(), 0);
  EXPECT_EQ(dev.resets, 1);
  EXPECT_FALSE(dev.is_running(0));
  ASSERT_TRUE(alive());
  loop->destroy_backend();
}

TEST_F(BackendTest, DestroyingTheBackendStopsRunningRings) {
  negotiate();
  set_memory(mem);
  start_ring(1);
  fe.reset();
  EXPECT_EQ(loop->join(), -ECONNRESET);
  loop->destroy_backend();
  EXPECT_FALSE(dev.is_running(1));
  EXPECT_EQ(dev.get_log().back(), "stop 1");
}

TEST_F(BackendTest, ReplyAckCarriesErrorsAndTheConnectionStays) {
  negotiate();
  EXPECT_EQ(fe->set_vring_num(0, 3), -EINVAL);
  EXPECT_EQ(fe->set_vring_num(0, 512), -EINVAL) << "larger than the device's max";
  EXPECT_EQ(fe->set_vring_num(FakeDevice::kQueues, 64), -EINVAL);
  EXPECT_EQ(fe->set_vring_base(0, 0x10000), -EINVAL);
  EXPECT_EQ(fe->set_vring_enable(0, false), 0);
  EXPECT_TRUE(alive());
}

TEST_F(BackendTest, ErrorWithoutReplyAckDropsTheConnection) {
  negotiate(false);
  EXPECT_FALSE(fe->reply_ack());
  ASSERT_EQ(fe->set_vring_num(0, 3), 0);  // no ack asked for: the send succeeds
  EXPECT_EQ(loop->join(), -EINVAL);
}

// ---- hostile front-ends ----

TEST_F(BackendTest, OrderlyEofIsConnReset) {
  fe.reset();
  EXPECT_EQ(loop->join(), -ECONNRESET);
}

TEST_F(BackendTest, TruncatedHeaderDrops) {
  auto m = raw_message(Request::get_features, nullptr, 0);
  ASSERT_EQ(fe->send_raw(m.data(), 6), 0);
  fe.reset();
  EXPECT_EQ(loop->join(), -EBADMSG);
}

TEST_F(BackendTest, EofMidPayloadDrops) {
  MemTable t{};
  auto m = raw_message(Request::set_mem_table, &t, sizeof(t));
  ASSERT_EQ(fe->send_raw(m.data(), kHeaderSize + 100), 0);
  fe.reset();
  EXPECT_EQ(loop->join(), -EBADMSG);
}

TEST_F(BackendTest, StalledPayloadTimesOut) {
  uint64_t v = 0;
  auto m = raw_message(Request::set_features, &v, sizeof(v));
  ASSERT_EQ(fe->send_raw(m.data(), kHeaderSize + 3), 0);
  EXPECT_EQ(loop->join(), -ETIMEDOUT);
}

TEST_F(BackendTest, DeclaredSizeBeyondTheMaximumDrops) {
  auto m = raw_message(Request::set_features, nullptr, 0, kVersion, kMaxPayloadSize + 1);
  ASSERT_EQ(send_raw(m), 0);
  EXPECT_EQ(loop->join(), -EMSGSIZE);
}

TEST_F(BackendTest, WrongVersionDrops) {
  auto m = raw_message(Request::get_features, nullptr, 0, 2);
  ASSERT_EQ(send_raw(m), 0);
  EXPECT_EQ(loop->join(), -EPROTO);
}

TEST_F(BackendTest, WrongPayloadSizeForTheRequest) {
  negotiate();
  uint32_t half = 64;
  auto m = raw_message(Request::set_vring_num, &half, sizeof(half), kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m), 0);
  EXPECT_EQ(fe->receive_ack(Request::set_vring_num), -EBADMSG);
  ASSERT_TRUE(alive());
  auto silent = raw_message(Request::set_vring_num, &half, sizeof(half));
  ASSERT_EQ(send_raw(silent), 0);
  EXPECT_EQ(loop->join(), -EBADMSG);
}

TEST_F(BackendTest, WrongFdCountsAreRefusedAndClosed) {
  negotiate();
  const size_t before = open_fd_count();
  // SET_MEM_TABLE naming two regions with one fd.
  MemTable t{};
  t.nregions = 2;
  t.regions[0] = mem.region(0);
  t.regions[1] = mem.region(1ull << 32);
  int one = mem.fd.get();
  auto m = raw_message(Request::set_mem_table, &t, 8 + 2 * sizeof(MemRegion), kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m, {&one, 1}), 0);
  EXPECT_EQ(fe->receive_ack(Request::set_mem_table), -EBADF);
  // A kick without an fd and without the no-fd flag; a call with both.
  uint64_t v = 0;
  m = raw_message(Request::set_vring_kick, &v, sizeof(v), kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m), 0);
  EXPECT_EQ(fe->receive_ack(Request::set_vring_kick), -EBADF);
  v = kVringNofdMask;
  int ev = kick.get();
  m = raw_message(Request::set_vring_call, &v, sizeof(v), kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m, {&ev, 1}), 0);
  EXPECT_EQ(fe->receive_ack(Request::set_vring_call), -EBADF);
  // ADD_MEM_REG without its fd; SET_FEATURES with eight it does not take.
  SingleMemRegion r{0, mem.region(0)};
  m = raw_message(Request::add_mem_reg, &r, sizeof(r), kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m), 0);
  EXPECT_EQ(fe->receive_ack(Request::add_mem_reg), -EBADF);
  int eight[8];
  for (int& fd : eight) fd = kick.get();
  uint64_t features = FakeDevice::kFeatures;
  m = raw_message(Request::set_features, &features, sizeof(features), kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m, eight), 0);
  EXPECT_EQ(fe->receive_ack(Request::set_features), -EBADF);
  ASSERT_TRUE(alive());
  EXPECT_EQ(open_fd_count(), before) << "every fd that came with a refused message is closed";
  EXPECT_EQ(backend_memory_regions(), 0u);
}

TEST_F(BackendTest, MoreFdsThanAnyMessageTakesAreRefusedAndClosed) {
  negotiate();
  const size_t before = open_fd_count();
  // Twelve fds on one ADD_MEM_REG: more than a message may carry, so the control data is cut.
  SingleMemRegion r{0, mem.region(0)};
  auto m = raw_message(Request::add_mem_reg, &r, sizeof(r), kVersion | kFlagNeedReply);
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * 12)];
  iovec iov{m.data(), m.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * 12);
  const int fd = mem.fd.get();
  for (int i = 0; i < 12; ++i) std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
  ASSERT_EQ(sendmsg(fe->fd(), &mh, 0), static_cast<ssize_t>(m.size()));
  EXPECT_EQ(fe->receive_ack(Request::add_mem_reg), -EBADF);
  ASSERT_TRUE(alive());
  EXPECT_EQ(backend_memory_regions(), 0u);
  EXPECT_EQ(open_fd_count(), before);
}

TEST_F(BackendTest, QueueIndexOutOfRange) {
  negotiate();
  set_memory(mem);
  vhost_vring_addr a = ring_addr(mem, 0);
  a.index = FakeDevice::kQueues;
  EXPECT_EQ(fe->set_vring_addr(a), -EINVAL);
  EXPECT_EQ(fe->set_vring_kick(9, kick.get()), -EINVAL);
  EXPECT_EQ(fe->set_vring_call(255, -1), -EINVAL);
  EXPECT_EQ(fe->set_vring_enable(2, true), -EINVAL);
  ASSERT_TRUE(alive());
  // GET_VRING_BASE has a reply of its own: a bad index cannot be answered and drops.
  EXPECT_FALSE(fe->get_vring_base(7).ok());
  EXPECT_EQ(loop->join(), -EINVAL);
}

TEST_F(BackendTest, RingAddressesOutsideMemoryOrMisaligned) {
  negotiate();
  set_memory(mem);
  ASSERT_EQ(fe->set_vring_num(0, 128), 0);
  vhost_vring_addr a = ring_addr(mem, 0);
  a.desc_user_addr = mem.uva(mem.size - 1024);  // 2 KiB table in the last 1 KiB
  EXPECT_EQ(fe->set_vring_addr(a), -EFAULT);
  a = ring_addr(mem, 0);
  a.used_user_addr = mem.uva() - 4096;
  EXPECT_EQ(fe->set_vring_addr(a), -EFAULT);
  a = ring_addr(mem, 0);
  a.desc_user_addr += 8;
  EXPECT_EQ(fe->set_vring_addr(a), -EINVAL);
  a = ring_addr(mem, 0);
  a.used_user_addr += 2;
  EXPECT_EQ(fe->set_vring_addr(a), -EINVAL);
  a = ring_addr(mem, 0);
  a.flags = 2;  // VHOST_VRING_F_LOG is the only flag
  EXPECT_EQ(fe->set_vring_addr(a), -EINVAL);
  a.flags = 1u << VHOST_VRING_F_LOG;
  EXPECT_EQ(fe->set_vring_addr(a), 0);
  EXPECT_EQ(fe->set_vring_addr(ring_addr(mem, 0)), 0);
}

TEST_F(BackendTest, DeferredAddressesThatNeverTranslateFailTheMemoryTable) {
  negotiate();
  ASSERT_EQ(fe->set_vring_num(0, 128), 0);
  vhost_vring_addr a = ring_addr(mem, 0);
  a.desc_user_addr = 0x1000;  // nowhere
  ASSERT_EQ(fe->set_vring_addr(a), 0);
  ASSERT_EQ(fe->set_vring_kick(0, kick.get()), 0);
  ASSERT_EQ(fe->set_vring_enable(0, true), 0);
  FrontendChannel::RegionFd r{mem.region(0), mem.fd.get()};
  EXPECT_EQ(fe->set_mem_table({&r, 1}), -EFAULT);
  EXPECT_FALSE(dev.is_running(0));
}

TEST_F(BackendTest, RingSizeMustBeAPowerOfTwoAndFixedWhileRunning) {
  negotiate();
  set_memory(mem);
  EXPECT_EQ(fe->set_vring_num(0, 0), -EINVAL);
  EXPECT_EQ(fe->set_vring_num(0, 96), -EINVAL);
  start_ring(0);
  EXPECT_EQ(fe->set_vring_num(0, 64), -EBUSY);
  vhost_vring_addr moved = ring_addr(mem, 0);
  moved.used_user_addr += 0x100;
  EXPECT_EQ(fe->set_vring_addr(moved), -EBUSY) << "a running ring cannot move";
  EXPECT_EQ(fe->set_vring_addr(ring_addr(mem, 0)), 0) << "the same addresses (only the log flag may change)";
  EXPECT_EQ(fe->set_vring_base(0, 1), -EBUSY);
  EXPECT_EQ(fe->set_inflight_fd(*fe->get_inflight_fd(2, 128)), -EBUSY);
  EXPECT_EQ(fe->set_features(FakeDevice::kFeatures), -EBUSY) << "features change under a running ring";
}

TEST_F(BackendTest, TooManyRegions) {
  negotiate();
  MemTable t{};
  t.nregions = kMemTableMaxRegions + 1;
  auto m = raw_message(Request::set_mem_table, &t, sizeof(t), kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m), 0);
  EXPECT_EQ(fe->receive_ack(Request::set_mem_table), -EINVAL);
  // ADD_MEM_REG past the advertised slot count: 4 KiB regions of one memfd.
  for (uint64_t i = 0; i < virtio::GuestMemory::kMaxRegions; ++i) {
    MemRegion r{i * 4096, 4096, mem.uva(i * 4096), i * 4096};
    ASSERT_EQ(fe->add_mem_reg(r, mem.fd.get()), 0) << i;
  }
  MemRegion extra{1ull << 40, 4096, mem.uva(0x80000), 0x80000};
  EXPECT_EQ(fe->add_mem_reg(extra, mem.fd.get()), -ENOSPC);
  loop->destroy_backend();
}

TEST_F(BackendTest, OverlappingRegionsKeepTheOldTable) {
  negotiate();
  set_memory(mem);
  SharedMemory other(1 << 16);
  FrontendChannel::RegionFd rs[2] = {{mem.region(0), mem.fd.get()}, {other.region(4096), other.fd.get()}};
  EXPECT_EQ(fe->set_mem_table(rs), -EINVAL);
  ASSERT_TRUE(alive());
  EXPECT_EQ(backend_memory_regions(), 1u);
  EXPECT_EQ(fe->set_vring_num(0, 128), 0);
  EXPECT_EQ(fe->set_vring_addr(ring_addr(mem, 0)), 0) << "the first table still translates";
}

TEST_F(BackendTest, RegionsOutsideTheirFileOrNotFiles) {
  negotiate();
  MemRegion r = mem.region(0);
  r.mmap_offset = mem.size;  // starts at the end of the file
  FrontendChannel::RegionFd rf{r, mem.fd.get()};
  EXPECT_EQ(fe->set_mem_table({&rf, 1}), -EINVAL);
  r = mem.region(0);
  r.mmap_offset = 4096;  // runs 4 KiB past the end
  rf.region = r;
  EXPECT_EQ(fe->set_mem_table({&rf, 1}), -EINVAL);
  r = mem.region(0);
  r.mmap_offset = ~0ull - 10;  // wraps
  rf.region = r;
  EXPECT_EQ(fe->set_mem_table({&rf, 1}), -EINVAL);
  r = mem.region(0);
  r.size = 0;
  rf.region = r;
  EXPECT_EQ(fe->set_mem_table({&rf, 1}), -EINVAL);
  rf = {mem.region(0), kick.get()};  // an eventfd
  EXPECT_EQ(fe->set_mem_table({&rf, 1}), -EINVAL);
  MemRegion wraps{~0ull - 4095, 8192, mem.uva(), 0};
  EXPECT_EQ(fe->add_mem_reg(wraps, mem.fd.get()), -EINVAL);
  ASSERT_TRUE(alive());
  EXPECT_EQ(backend_memory_regions(), 0u);
}

// A frontend that shrinks guest memory under the VCP's mapping would make its next access
// raise SIGBUS: a memfd that allows sealing is sealed against shrinking when it is mapped.
TEST_F(BackendTest, GuestMemoryIsSealedAgainstShrinking) {
  negotiate();
  SharedMemory sealable(1 << 20, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_NE(sealable.p, nullptr);
  ASSERT_EQ(fcntl(sealable.fd.get(), F_GET_SEALS), 0);
  FrontendChannel::RegionFd rf{sealable.region(0), sealable.fd.get()};
  ASSERT_EQ(fe->set_mem_table({&rf, 1}), 0);
  EXPECT_EQ(fcntl(sealable.fd.get(), F_GET_SEALS), F_SEAL_SHRINK);
  errno = 0;
  EXPECT_NE(ftruncate(sealable.fd.get(), 4096), 0) << "the guest memory could still shrink";
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(ftruncate(sealable.fd.get(), 2 << 20), 0) << "growing stays allowed";

  // Sealed the way QEMU seals its memfds (seal=on): taken as it is.
  SharedMemory qemu_like(1 << 20, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(fcntl(qemu_like.fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
  FrontendChannel::RegionFd rq{qemu_like.region(1ull << 32), qemu_like.fd.get()};
  ASSERT_EQ(fe->set_mem_table({&rq, 1}), 0);

  // Not sealable (no MFD_ALLOW_SEALING: F_SEAL_SEAL from birth): still mapped, with a warning.
  FrontendChannel::RegionFd rm{mem.region(0), mem.fd.get()};
  ASSERT_EQ(fe->set_mem_table({&rm, 1}), 0);
  EXPECT_EQ(backend_memory_regions(), 1u);
  ASSERT_TRUE(alive());
}

// A memory file that cannot be sealed (here: a memfd without MFD_ALLOW_SEALING), shrunk by the
// front-end under the VCP: the VCP's next access past the new end would raise SIGBUS. It reads
// zeros instead, and the back-end drops the front-end with a clear error.
TEST_F(BackendTest, AFrontendThatShrinksUnsealableMemoryIsDroppedAndTheVcpLives) {
  negotiate();
  ASSERT_LT(fcntl(mem.fd.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0) << "the test needs a file that cannot be sealed";
  set_memory(mem);
  start_ring(0);
  auto* desc = reinterpret_cast<volatile uint8_t*>(dev.get_starts().back().layout.desc);
  mem.p[0x10000] = 0x5a;  // ring_addr(): ring 0's descriptor table is at 64 KiB
  EXPECT_EQ(desc[0], 0x5a) << "the device's view is the front-end's memory";
  pollfd pf[VhostUserBackend::kPollFds];
  loop->backend().poll_fds(pf);
  ASSERT_GE(pf[1].fd, 0) << "the back-end has its fault eventfd";

  ASSERT_EQ(ftruncate(mem.fd.get(), 0x8000), 0);  // the rings are gone from the file
  // What a queue thread of the VCP would do next: read the ring. (This test's own mapping of
  // the file, mem.p, is not guarded and is not touched past the new end again.)
  EXPECT_EQ(desc[0], 0) << "the page past the new end reads as zeros";
  desc[1] = 0x77;  // and a write there stays in the VCP
  EXPECT_EQ(loop->join(), -EFAULT) << "the front-end is dropped";
  EXPECT_FALSE(alive()) << "and sees its connection closed";
}

// The inflight region a front-end hands over at reconnection is guarded the same way.
TEST_F(BackendTest, AnUnsealableInflightRegionShrunkUnderTheVcpIsSurvived) {
  negotiate();
  const size_t bytes = 2 * virtio::inflight_queue_bytes(128);
  SharedMemory region((bytes + 4095) & ~size_t{4095});
  ASSERT_NE(region.p, nullptr);
  region.p[8] = 0x42;
  InflightRegion in;
  in.fd.reset(dup(region.fd.get()));
  in.mmap_size = bytes;
  in.num_queues = 2;
  in.queue_size = 128;
  ASSERT_EQ(fe->set_inflight_fd(in), 0);
  set_memory(mem);
  start_ring(0);
  const auto start = dev.get_starts().back();
  ASSERT_NE(start.inflight, nullptr);
  auto* rec = reinterpret_cast<volatile uint8_t*>(start.inflight->region);
  EXPECT_EQ(rec[8], 0x42);
  ASSERT_EQ(ftruncate(region.fd.get(), 0), 0);
  EXPECT_EQ(rec[8], 0) << "what a queue thread reads of the records past the new end";
  EXPECT_EQ(loop->join(), -EFAULT) << "the front-end is dropped";
}

// ---- live migration: the dirty page log ----

// A log the way QEMU makes it (vhost_log_alloc with LOG_SHMFD): a sealed memfd.
struct LogFile {
  explicit LogFile(size_t bytes) : mem(bytes, MFD_CLOEXEC | MFD_ALLOW_SEALING) {
    if (mem.fd) (void)fcntl(mem.fd.get(), F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
  }
  bool bit(uint64_t page) const { return (mem.p[page / 8] >> (page % 8)) & 1; }
  SharedMemory mem;
};

// QEMU's order when a migration starts on a running device: SET_LOG_BASE, then SET_FEATURES
// with LOG_ALL, then SET_VRING_ADDR with VHOST_VRING_F_LOG for each ring; the reverse when it
// ends. Each running queue is told, and marks land in the front-end's memory.
TEST_F(BackendTest, DirtyLoggingFollowsLogAllTheLogAndTheRingFlag) {
  negotiate();
  set_memory(mem);
  start_ring(0);
  ASSERT_EQ(dev.get_starts().back().dirty.log, nullptr) << "no logging before a migration";

  LogFile log(4096);  // 32768 pages: guest addresses up to 128 MiB
  ASSERT_NE(log.mem.p, nullptr);
  ASSERT_EQ(fe->set_log_base(log.mem.fd.get(), log.mem.size), 0);
  ASSERT_TRUE(alive());
  std::vector<std::pair<unsigned, DirtyLogState>> calls;
  {
    std::lock_guard lk(dev.mu);
    calls = dev.dirty_logs;
  }
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].second.log, nullptr) << "a log alone does not turn logging on";

  const uint64_t all = FakeDevice::kFeatures | bit(kFeatureProtocolFeatures);
  ASSERT_EQ(fe->set_features(all | bit(kFeatureLogAll)), 0) << "LOG_ALL may change under a running ring";
  vhost_vring_addr a = ring_addr(mem, 0);
  a.flags = 1u << VHOST_VRING_F_LOG;
  a.log_guest_addr = 0x12000;
  ASSERT_EQ(fe->set_vring_addr(a), 0);
  {
    std::lock_guard lk(dev.mu);
    calls = dev.dirty_logs;
  }
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[1].first, 0u);
  ASSERT_NE(calls[1].second.log, nullptr);
  EXPECT_FALSE(calls[1].second.log_used);
  const DirtyLogState on = calls[2].second;
  ASSERT_NE(on.log, nullptr);
  EXPECT_TRUE(on.log_used);
  EXPECT_EQ(on.used_gpa, 0x12000u);
  EXPECT_EQ(on.log->covers(), uint64_t{128} << 20);
  // What a queue thread does with it: the bit lands in the front-end's log.
  on.log->mark(0x5000, 0x2001);  // pages 5, 6 and 7
  EXPECT_FALSE(log.bit(4));
  EXPECT_TRUE(log.bit(5) && log.bit(6) && log.bit(7));
  EXPECT_FALSE(log.bit(8));
  on.log->mark(uint64_t{128} << 20, 1);
  EXPECT_EQ(on.log->missed(), 1u) << "a page past the log is counted, not written";

  // A ring started while logging is on gets the state with its start.
  setup_ring(mem, 1);
  vhost_vring_addr a1 = ring_addr(mem, 1);
  a1.flags = 1u << VHOST_VRING_F_LOG;
  a1.log_guest_addr = 0x16000;
  ASSERT_EQ(fe->set_vring_addr(a1), 0);
  ASSERT_EQ(fe->set_vring_enable(1, true), 0);
  ASSERT_TRUE(dev.is_running(1));
  EXPECT_EQ(dev.get_starts().back().dirty.log, on.log);
  EXPECT_EQ(dev.get_starts().back().dirty.used_gpa, 0x16000u);

  // QEMU grows the log while the rings run: every ring moves to the new one.
  LogFile bigger(8192);
  ASSERT_EQ(fe->set_log_base(bigger.mem.fd.get(), bigger.mem.size), 0);
  {
    std::lock_guard lk(dev.mu);
    calls = dev.dirty_logs;
  }
  ASSERT_EQ(calls.size(), 5u);
  for (size_t i = 3; i < 5; ++i) {
    ASSERT_NE(calls[i].second.log, nullptr);
    EXPECT_EQ(calls[i].second.log->covers(), uint64_t{256} << 20);
  }

  // The migration ends: LOG_ALL off, then the ring flags.
  ASSERT_EQ(fe->set_features(all), 0);
  {
    std::lock_guard lk(dev.mu);
    calls = dev.dirty_logs;
  }
  ASSERT_EQ(calls.size(), 7u);
  EXPECT_EQ(calls[5].second.log, nullptr);
  EXPECT_EQ(calls[6].second.log, nullptr);
  ASSERT_EQ(fe->set_vring_addr(ring_addr(mem, 0)), 0);
  EXPECT_EQ(dev.acked_features, FakeDevice::kFeatures) << "the device never sees LOG_ALL";
}

TEST_F(BackendTest, ALogBaseWithoutLogShmfdIsRefused) {
  auto pf = fe->get_protocol_features();
  ASSERT_TRUE(pf);
  ASSERT_EQ(fe->set_protocol_features(*pf & ~bit(kProtoLogShmfd)), 0);
  ASSERT_EQ(fe->set_owner(), 0);
  LogFile log(4096);
  EXPECT_NE(fe->set_log_base(log.mem.fd.get(), log.mem.size), 0);
  EXPECT_EQ(loop->join(), -EINVAL) << "dropped: QEMU waits for an answer that would be a lie";
}

TEST_F(BackendTest, ALogLargerThanItsFileIsRefused) {
  negotiate();
  LogFile log(4096);
  EXPECT_NE(fe->set_log_base(log.mem.fd.get(), 8192), 0);
  EXPECT_EQ(loop->join(), -EINVAL);
}

TEST_F(BackendTest, RegionWithUnalignedMmapOffsetMapsTheRightBytes) {
  negotiate();
  mem.p[0x10000 + 0x200] = 0x3c;
  // The region starts 512 bytes into the file; its user address is where that byte is mapped.
  MemRegion r{0, mem.size - 0x200, mem.uva(0x200), 0x200};
  FrontendChannel::RegionFd rf{r, mem.fd.get()};
  ASSERT_EQ(fe->set_mem_table({&rf, 1}), 0);
  ASSERT_EQ(fe->set_vring_num(0, 64), 0);
  vhost_vring_addr a{0, 0, mem.uva(0x10200), mem.uva(0x12200), mem.uva(0x11200), 0};
  ASSERT_EQ(fe->set_vring_addr(a), 0);
  ASSERT_EQ(fe->set_vring_kick(0, -1), 0);
  ASSERT_EQ(fe->set_vring_enable(0, true), 0);
  ASSERT_TRUE(dev.is_running(0));
  EXPECT_EQ(reinterpret_cast<uint8_t*>(dev.get_starts().back().layout.desc)[0], 0x3c);
}

TEST_F(BackendTest, MessagesBeforeSetOwnerAreRefused) {
  ASSERT_TRUE(fe->get_features().ok());
  ASSERT_EQ(fe->set_protocol_features(kBackendProtocolFeatures), 0) << "allowed before SET_OWNER";
  EXPECT_EQ(fe->set_vring_num(0, 64), -EPERM);
  FrontendChannel::RegionFd rf{mem.region(0), mem.fd.get()};
  EXPECT_EQ(fe->set_mem_table({&rf, 1}), -EPERM);
  EXPECT_EQ(fe->set_features(FakeDevice::kFeatures), -EPERM);
  ASSERT_EQ(fe->set_owner(), 0);
  EXPECT_EQ(fe->set_vring_num(0, 64), 0);
}

TEST_F(BackendTest, MessagesBeforeSetOwnerWithoutReplyAckDrop) {
  ASSERT_EQ(fe->set_vring_num(0, 64), 0);
  EXPECT_EQ(loop->join(), -EPERM);
}

TEST_F(BackendTest, FeaturesNeverOfferedAreRefused) {
  negotiate();
  EXPECT_EQ(fe->set_features(FakeDevice::kFeatures | (1ull << 27) /* ANY_LAYOUT */), -EINVAL);
  EXPECT_EQ(fe->set_protocol_features(kBackendProtocolFeatures | bit(kProtoPagefault)), -EINVAL);
  EXPECT_EQ(dev.acked_features, FakeDevice::kFeatures);
}

TEST_F(BackendTest, UnknownRequestsAreIgnoredOrAnswered) {
  negotiate();
  uint64_t v = 1500;
  auto m = raw_message(Request::net_set_mtu, &v, sizeof(v));
  ASSERT_EQ(send_raw(m), 0);
  ASSERT_TRUE(alive());
  m = raw_message(static_cast<Request>(200), &v, sizeof(v), kVersion | kFlagNeedReply);
  ASSERT_EQ(send_raw(m), 0);
  EXPECT_EQ(fe->receive_ack(static_cast<Request>(200)), -ENOSYS);
  int fd = kick.get();
  m = raw_message(Request::set_log_fd, nullptr, 0);
  ASSERT_EQ(send_raw(m, {&fd, 1}), 0);
  ASSERT_TRUE(alive());
}

TEST(FrontendChannel, ConnectsToAListeningBackend) {
  const std::string dir = "/tmp/vhost-test-" + std::to_string(getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  const std::string path = dir + "/sock";
  UniqueFd lfd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(bind(lfd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(lfd.get(), 1), 0);
  auto connected = FrontendChannel::connect(path);
  ASSERT_TRUE(connected);
  auto ch = std::make_unique<FrontendChannel>(std::move(*connected));
  FakeDevice dev;
  {
    BackendLoop loop(dev, UniqueFd(accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC)));
    auto qn = ch->get_queue_num();
    ASSERT_TRUE(qn);
    EXPECT_EQ(*qn, FakeDevice::kQueues);
    ch.reset();
    EXPECT_EQ(loop.join(), -ECONNRESET);
  }
  EXPECT_FALSE(FrontendChannel::connect(dir + "/none").ok());
  unlink(path.c_str());
  rmdir(dir.c_str());
}

}  // namespace
}  // namespace vcp::vhost::test
