// Hostile and broken initiators: each gets the RFC's answer (Reject, a dropped command, a
// closed connection) and other sessions carry on.
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "harness.hpp"
#include "iscsi/crc32c.hpp"

namespace vcp::target::test {
namespace {

using namespace vcp::iscsi;

std::vector<uint8_t> bhs_of(const Pdu& p) {
  std::vector<uint8_t> b(kBhsSize);
  encode_bhs(p, std::span<uint8_t, kBhsSize>(b.data(), kBhsSize));
  return b;
}

struct LoggedIn : ::testing::Test {
  TargetFixture f;
  Initiator ini{f};
  void SetUp() override {
    ASSERT_EQ(ini.login(), LoginState::FullFeature);
    ini.tur();  // the power-on unit attention
  }
  // The target still answers commands on this connection.
  void expect_alive() {
    EXPECT_FALSE(ini.conn().closing());
    EXPECT_EQ(outcome_of(ini.run(cdb_inquiry(36), true, false, 36)).status, 0);
  }
};

TEST_F(LoggedIn, UnknownOpcodeIsRejectedAndTheConnectionLives) {
  auto b = bhs_of(NopOutPdu{});
  b[0] = 0x1b;  // unassigned initiator opcode
  ini.send_raw(b);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].as<RejectPdu>());
  EXPECT_EQ(got[0].data, b);  // the rejected header comes back
  expect_alive();
}

TEST_F(LoggedIn, ReservedFieldValueIsRejected) {
  TaskMgmtRequestPdu t;
  t.itt = 1;
  t.cmd_sn = ini.cmd_sn();
  auto b = bhs_of(t);
  b[1] = 0x80 | 0x7f;  // function 127: reserved
  ini.send_raw(b);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].as<RejectPdu>());
  expect_alive();
}

TEST_F(LoggedIn, SnackIsRejectedAtErl0) {
  SnackPdu s;
  s.itt = 5;
  ini.send(s);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::SnackReject);
  expect_alive();
}

TEST_F(LoggedIn, OversizedDataSegmentClosesAfterReject) {
  auto b = bhs_of(NopOutPdu{});
  b[5] = 0x10;  // 1 MiB data segment, more than the 256 KiB we declared
  ini.send_raw(b);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::ProtocolError);
  EXPECT_TRUE(ini.conn().closing());
  ini.drop_connection();
  EXPECT_EQ(f.sessions.size(), 0u);
}

TEST_F(LoggedIn, DuplicateTaskTagIsRejected) {
  uint32_t itt = ini.command(cdb_rw16(0x8a, 0, 8), false, true, 4096);
  ASSERT_EQ(ini.take().size(), 1u);  // the R2T
  ScsiCommandPdu c;
  c.itt = itt;
  c.cmd_sn = ini.next_cmd_sn();
  c.cdb[0] = 0x00;
  ini.send(c);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::TaskInProgress);
}

TEST_F(LoggedIn, WrongDataSnEndsTheConnection) {
  uint32_t itt = ini.command(cdb_rw16(0x8a, 0, 16), false, true, 8192);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  uint32_t ttt = got[0].as<R2TPdu>()->ttt;
  auto data = pattern(4096, 0);
  ini.data_out(itt, ttt, 1, 0, data, false);  // DataSN must start at 0
  got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::ProtocolError);
  EXPECT_TRUE(ini.conn().closing());
}

TEST_F(LoggedIn, DataOutBeyondTheR2TEndsTheConnection) {
  uint32_t itt = ini.command(cdb_rw16(0x8a, 0, 8), false, true, 4096);
  auto got = ini.take();
  uint32_t ttt = got[0].as<R2TPdu>()->ttt;
  auto data = pattern(8192, 0);
  ini.data_out(itt, ttt, 0, 0, data, true);
  got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].as<RejectPdu>());
  EXPECT_TRUE(ini.conn().closing());
}

TEST_F(LoggedIn, ImmediateDataLongerThanFirstBurstIsRejected) {
  auto data = pattern(f.settings.limits.first_burst_length + 512, 0);
  ScsiCommandPdu c;
  c.write = true;
  c.itt = ini.next_itt();
  c.cmd_sn = ini.next_cmd_sn();
  c.expected_data_transfer_length = static_cast<uint32_t>(data.size());
  auto cdb = cdb_rw16(0x8a, 0, static_cast<uint32_t>(data.size() / 512));
  std::memcpy(c.cdb.data(), cdb.data(), 16);
  c.data_segment_length = static_cast<uint32_t>(data.size());
  ini.send(c, data);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::ProtocolError);
  expect_alive();  // and the window moved on
}

TEST_F(LoggedIn, HugeTransferLengthFailsTheCommandOnly) {
  auto o = outcome_of(ini.run(cdb_rw16(0x88, 0, 1u << 20), true, false, 0x7fffffff));
  EXPECT_EQ(o.status, 2);
  expect_alive();
}

TEST(TargetBadInput, HeaderDigestErrorClosesOnlyThatConnection) {
  TargetFixture f;
  SessionOptions o;
  o.limits.header_digest = DigestPolicy::Require;
  Initiator bad(f, o);
  SessionOptions o2 = o;
  o2.isid = {0x80, 0, 0, 0, 0, 7};
  Initiator good(f, o2);
  ASSERT_EQ(bad.login(), LoginState::FullFeature);
  ASSERT_EQ(good.login(), LoginState::FullFeature);
  ScsiCommandPdu c;
  c.itt = 1;
  c.cmd_sn = bad.cmd_sn();
  std::vector<uint8_t> wire(kBhsSize + 4);
  encode_pdu(c, {}, {}, Digests{true, false}, wire);
  wire[kBhsSize] ^= 0xff;
  bad.send_raw(wire);
  EXPECT_TRUE(bad.take().empty());  // nothing can be trusted: no Reject either
  EXPECT_TRUE(bad.conn().closing());
  good.tur();
  EXPECT_EQ(outcome_of(good.run(cdb_inquiry(36), true, false, 36)).status, 0);
}

TEST(TargetBadInput, DataDigestErrorIsRejected) {
  TargetFixture f;
  SessionOptions o;
  o.limits.data_digest = DigestPolicy::Require;
  Initiator ini(f, o);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  NopOutPdu n;
  n.immediate = true;
  n.itt = 3;
  n.data_segment_length = 4;
  const uint8_t d[4] = {1, 2, 3, 4};
  std::vector<uint8_t> wire(kBhsSize + 8);
  encode_pdu(n, {}, d, Digests{false, true}, wire);
  wire.back() ^= 1;
  ini.send_raw(wire);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::DataDigestError);
  EXPECT_TRUE(ini.conn().closing());
}

TEST(TargetBadInput, NonLoginPduDuringLoginCloses) {
  TargetFixture f;
  Initiator ini(f);
  NopOutPdu n;
  n.immediate = true;
  n.itt = 1;
  ini.send(n);
  EXPECT_TRUE(ini.take().empty());
  EXPECT_TRUE(ini.conn().closing());
}

TEST(TargetBadInput, GarbageDuringLoginCloses) {
  TargetFixture f;
  Initiator ini(f);
  std::vector<uint8_t> junk(kBhsSize, 0xff);
  ini.send_raw(junk);
  EXPECT_TRUE(ini.conn().closing());
}

TEST(TargetBadInput, LoginWithATsihIsRefused) {
  TargetFixture f;
  Initiator ini(f);
  LoginRequestPdu rq;
  rq.tsih = 77;
  rq.version_max = rq.version_min = 0;
  rq.itt = 1;
  const char kv[] = "InitiatorName=iqn.x\0SessionType=Normal\0TargetName=iqn.2024-01.org.vcp:test";
  rq.data_segment_length = sizeof(kv);
  ini.send(rq, {reinterpret_cast<const uint8_t*>(kv), sizeof(kv)});
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].as<LoginResponsePdu>());
  EXPECT_EQ(got[0].as<LoginResponsePdu>()->status_class, 2);
  EXPECT_TRUE(ini.conn().closing());
}

TEST(TargetBadInput, ByteAtATimeStillParses) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  NopOutPdu n;
  n.immediate = true;
  n.itt = 9;
  std::vector<uint8_t> wire(kBhsSize);
  encode_pdu(n, {}, {}, {}, wire);
  for (uint8_t b : wire) ini.send_raw({&b, 1});
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].as<NopInPdu>());
}

// A connection nobody has logged in on costs little: a flood of them (idle, or stopped part way
// through a header) holds 4 KiB of receive buffer each, not the 64 KiB a session receives into.
TEST(TargetBadInput, ConnectionsNotLoggedInHoldLittleMemory) {
  TargetFixture f;
  Initiator ini(f);
  auto offered = [&] {
    iovec iov[TargetConnection::kRxIov];
    const size_t n = ini.conn().rx_iov(iov);
    size_t room = 0;
    for (size_t i = 0; i < n; ++i) room += iov[i].iov_len;
    return room;
  };
  EXPECT_LE(ini.conn().rx_buffer_bytes(), 4096u);
  EXPECT_LE(offered(), 4096u);
  const std::vector<uint8_t> part(41, 0x43);  // most of a Login Request header
  ini.send_raw(part);
  EXPECT_FALSE(ini.conn().closing());
  EXPECT_LE(ini.conn().rx_buffer_bytes(), 4096u);
  EXPECT_LE(offered(), 4096u - part.size());

  // A login PDU larger than that buffer still gets through (the buffer grows while it is full):
  // the first Login Request with 6 KiB of private keys the target does not know.
  Initiator big(f);
  InitiatorLoginConfig cfg;
  cfg.initiator_name = kInitiator;
  cfg.target_name = kIqn;
  cfg.isid = Isid{0x80, 0, 0, 0, 0, 7};
  cfg.limits = SessionOptions::initiator_limits();
  InitiatorLogin login(cfg);
  LoginRequestOut rq = login.start();
  for (int k = 0; k < 30; ++k) {
    const std::string kv = "X-org.vcp.pad" + std::to_string(k) + "=" + std::string(190, 'p');
    rq.data.insert(rq.data.end(), kv.begin(), kv.end());
    rq.data.push_back(0);
  }
  ASSERT_GT(rq.data.size(), 6000u);
  rq.bhs.data_segment_length = static_cast<uint32_t>(rq.data.size());
  big.send_raw(to_wire(rq));
  auto got = big.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].as<LoginResponsePdu>());
  EXPECT_EQ(got[0].as<LoginResponsePdu>()->status_class, 0);
  EXPECT_FALSE(big.conn().closing());

  // In Full Feature Phase each receive is offered the session's room.
  Initiator session(f, {.isid = Isid{0x80, 0, 0, 0, 0, 8}});
  ASSERT_EQ(session.login(), LoginState::FullFeature);
  iovec iov[TargetConnection::kRxIov];
  ASSERT_EQ(session.conn().rx_iov(iov), 1u);
  EXPECT_EQ(iov[0].iov_len, 64u * 1024);
}

// A peer that sends READs and never reads the answers: the target stops wanting input once
// TargetConnection::kMaxUnsent bytes wait (the server then posts no receive: the peer's sends
// block, its answers pin nothing more). Before, every command was read and answered into memory:
// 640 MB for 640 1 MiB reads on a direct=on file LUN, without end.
TEST(TargetBadInput, APeerThatDoesNotReadIsNotReadFrom) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  ini.tur();  // the power-on unit attention
  (void)ini.take();
  constexpr uint32_t kRead = 64 * 1024;
  int commands = 0;
  while (ini.conn().wants_input() && commands < 1000) {
    ini.command(cdb_rw16(0x88, 0, kRead / 512), true, false, kRead);
    ++commands;
  }
  EXPECT_FALSE(ini.conn().wants_input());
  EXPECT_FALSE(ini.conn().closing());
  EXPECT_LT(commands, 1000);
  EXPECT_GE(ini.conn().unsent_bytes(), TargetConnection::kMaxUnsent);
  EXPECT_LE(ini.conn().unsent_bytes(), TargetConnection::kMaxUnsent + kRead + 1024);

  // While paused, a peer that takes output now and then is alive: no ping, no close, however
  // long the pause. One that takes nothing is pinged and, unanswered, dropped.
  const auto& s = f.settings;
  for (int i = 0; i < 3; ++i) {
    iovec iov[4];
    ASSERT_GT(ini.conn().output_iov(iov), 0u);
    ini.conn().output_sent(100);
    ini.now += s.nop_interval_ms + s.nop_timeout_ms;
    ini.conn().tick(ini.now);
    EXPECT_FALSE(ini.conn().closing()) << "round " << i;
  }
  ini.now += s.nop_interval_ms + 1;
  ini.conn().tick(ini.now);  // pings (queued behind the backlog)
  ini.now += s.nop_timeout_ms + 1;
  ini.conn().tick(ini.now);
  EXPECT_TRUE(ini.conn().closing());

  // A peer that reads everything is read from again.
  Initiator other(f, {.isid = Isid{0x80, 0, 0, 0, 0, 2}});
  ASSERT_EQ(other.login(), LoginState::FullFeature);
  other.tur();
  (void)other.take();
  for (int i = 0; i < commands; ++i) other.command(cdb_rw16(0x88, 0, kRead / 512), true, false, kRead);
  EXPECT_FALSE(other.conn().wants_input());
  (void)other.take();
  EXPECT_EQ(other.conn().unsent_bytes(), 0u);
  EXPECT_TRUE(other.conn().wants_input());
}

// A session on a target whose connections have 1 MiB of buffer room.
struct SmallBufferRoom : ::testing::Test {
  static TargetSettings settings() {
    TargetSettings s = TargetFixture::default_settings();
    s.connection_buffer_bytes = 1u << 20;
    return s;
  }
  TargetFixture f{settings()};
  const TargetSettings& s = f.settings;
  Initiator ini{f};
  void SetUp() override {
    ASSERT_EQ(ini.login(), LoginState::FullFeature);
    ini.tur();  // the power-on unit attention
    (void)ini.take();
  }
};

// An initiator that sends more READ data than the connection's buffer room in one go and does
// not read it: the commands beyond the room wait, holding no buffer, until earlier answers have
// been sent; then each runs in turn. Before, every command got its buffer at once: 128 READs of
// 16 MiB made the target hold 2 GiB for one initiator that read none of it.
TEST_F(SmallBufferRoom, ReadsBeyondTheRoomWaitTheirTurn) {
  constexpr uint32_t kDisk = 4u << 20, kRead = 512u << 10;
  const auto disk = pattern(kDisk, 7);
  // One command larger than the whole room runs: alone, anything does.
  ASSERT_EQ(outcome_of(ini.run(cdb_rw16(0x8a, 0, kDisk / 512), false, true, kDisk, disk)).status, 0);
  EXPECT_LE(ini.conn().buffer_bytes(), s.connection_buffer_bytes);  // its buffer is not kept

  std::vector<uint32_t> itts;
  for (uint32_t i = 0; i < 8; ++i)
    itts.push_back(ini.command(cdb_rw16(0x88, i * (kRead / 512), kRead / 512), true, false, kRead));
  // Two fit; their answers wait unsent and the other six wait for room.
  EXPECT_LT(ini.conn().unsent_bytes(), 2 * kRead + 16384);
  EXPECT_EQ(ini.conn().tasks_waiting_for_buffers(), 6u);
  EXPECT_EQ(ini.conn().stats().buffer_waits, 6u);
  EXPECT_LE(ini.conn().buffer_bytes(), s.connection_buffer_bytes);
  // A waiting command can be aborted: it ends unanswered, at once.
  const uint32_t tmf = ini.send_tmf(TmfFunction::AbortTask, 0, itts[7], ini.cmd_sn() - 1);
  EXPECT_EQ(ini.conn().tasks_waiting_for_buffers(), 5u);

  // Reading the answers makes room: the others run, in the order they came.
  std::map<uint32_t, std::vector<Received>> answers;
  std::vector<uint32_t> order;
  int tmf_responses = 0;
  for (auto& r : ini.take()) {
    if (const auto* d = r.as<DataInPdu>()) {
      if (order.empty() || order.back() != d->itt) order.push_back(d->itt);
      answers[d->itt].push_back(r);
    } else if (const auto* m = r.as<TaskMgmtResponsePdu>()) {
      EXPECT_EQ(m->itt, tmf);
      EXPECT_EQ(m->response, TmfResponse::Complete);
      ++tmf_responses;
    } else {
      ADD_FAILURE() << "unexpected PDU, opcode " << int(opcode_of(r.header));
    }
  }
  EXPECT_EQ(tmf_responses, 1);
  EXPECT_EQ(order, std::vector<uint32_t>(itts.begin(), itts.begin() + 7));
  for (uint32_t i = 0; i < 7; ++i) {
    const Outcome o = outcome_of(answers[itts[i]]);
    EXPECT_TRUE(o.have_status) << i;
    EXPECT_EQ(o.status, 0) << i;
    EXPECT_TRUE(std::equal(o.data.begin(), o.data.end(), disk.begin() + i * kRead) && o.data.size() == kRead) << i;
  }
  EXPECT_FALSE(answers.contains(itts[7]));
  EXPECT_EQ(ini.conn().tasks_waiting_for_buffers(), 0u);
  EXPECT_EQ(ini.conn().tasks_in_flight(), 0u);
  EXPECT_LE(ini.conn().buffer_bytes(), s.connection_buffer_bytes);
  EXPECT_FALSE(ini.conn().closing());
}

// WRITEs ask for their data as the room allows: R2Ts go out for the commands that fit, the
// others get theirs once earlier writes have finished. Before, each command got its buffer and
// its R2Ts at once.
TEST_F(SmallBufferRoom, WritesBeyondTheRoomAreSolicitedInTurn) {
  constexpr uint32_t kWrite = 512u << 10;
  const auto data = pattern(4 * kWrite, 3);
  std::vector<uint32_t> itts;
  for (uint32_t i = 0; i < 4; ++i)
    itts.push_back(ini.command(cdb_rw16(0x8a, i * (kWrite / 512), kWrite / 512), false, true, kWrite));
  EXPECT_EQ(ini.conn().tasks_waiting_for_buffers(), 2u);
  std::set<uint32_t> done;
  for (int round = 0; round < 200 && done.size() < itts.size(); ++round) {
    auto got = ini.take();
    ASSERT_FALSE(got.empty()) << "no progress in round " << round;
    for (auto& r : got) {
      if (const auto* r2t = r.as<R2TPdu>()) {
        const size_t i = std::find(itts.begin(), itts.end(), r2t->itt) - itts.begin();
        ASSERT_LT(i, itts.size());
        if (round == 0) {
          EXPECT_LT(i, 2u) << "R2T for a write beyond the room";
        }
        uint32_t off = r2t->buffer_offset, end = off + r2t->desired_data_transfer_length, sn = 0;
        while (off < end) {
          const uint32_t n = std::min(end - off, ini.params().max_send_data_segment_length);
          ini.data_out(r2t->itt, r2t->ttt, sn++, off, std::span(data).subspan(i * kWrite + off, n), off + n == end);
          off += n;
        }
      } else if (const auto* rsp = r.as<ScsiResponsePdu>()) {
        EXPECT_EQ(rsp->status, 0);
        done.insert(rsp->itt);
      } else {
        ADD_FAILURE() << "unexpected PDU, opcode " << int(opcode_of(r.header));
      }
    }
  }
  EXPECT_EQ(done.size(), itts.size());
  EXPECT_LE(ini.conn().buffer_bytes(), s.connection_buffer_bytes);
  const Outcome back = outcome_of(ini.run(cdb_rw16(0x88, 0, 4 * kWrite / 512), true, false, 4 * kWrite));
  EXPECT_EQ(back.status, 0);
  EXPECT_TRUE(back.data == data);
}

// Three sessions on one I/O thread whose buffer room (buffer_bytes, here one thread's whole
// share) is 1 MiB, as is each connection's.
struct SmallThreadRoom : ::testing::Test {
  static TargetSettings settings() {
    TargetSettings s = TargetFixture::default_settings();
    s.connection_buffer_bytes = 1u << 20;
    s.buffer_bytes = 1u << 20;
    return s;
  }
  static SessionOptions named(const char* name, uint8_t isid) {
    SessionOptions o;
    o.initiator = name;
    o.isid = {0x80, 0, 0, 0, 0, isid};
    return o;
  }
  static constexpr uint32_t kDisk = 4u << 20;
  TargetFixture f{settings()};
  const ThreadBufferRoom& room = f.ctx.buffers;
  Initiator a{f, named("iqn.2024-01.org.vcp:a", 1)};
  Initiator b{f, named("iqn.2024-01.org.vcp:b", 2)};
  Initiator c{f, named("iqn.2024-01.org.vcp:c", 3)};
  const std::vector<uint8_t> disk = pattern(kDisk, 5);
  void SetUp() override {
    for (Initiator* i : {&a, &b, &c}) {
      ASSERT_EQ(i->login(), LoginState::FullFeature);
      i->tur();  // the power-on unit attention
      (void)i->take();
    }
    // One command larger than the thread's whole room runs: alone on the thread, anything does.
    ASSERT_EQ(outcome_of(a.run(cdb_rw16(0x8a, 0, kDisk / 512), false, true, kDisk, disk)).status, 0);
    EXPECT_LE(room.used(), room.budget);
  }
  uint32_t read(Initiator& i, uint32_t offset, uint32_t len) {
    return i.command(cdb_rw16(0x88, offset / 512, len / 512), true, false, len);
  }
  // The data of one READ taken from `got`, checked against the disk.
  void expect_read(const std::vector<Received>& got, uint32_t itt, uint32_t offset, uint32_t len) {
    std::vector<Received> mine;
    for (const auto& r : got)
      if (const auto* d = r.as<DataInPdu>(); d && d->itt == itt) mine.push_back(r);
    const Outcome o = outcome_of(mine);
    EXPECT_TRUE(o.have_status) << "itt " << itt;
    EXPECT_EQ(o.status, 0) << "itt " << itt;
    EXPECT_EQ(o.data.size(), len) << "itt " << itt;
    EXPECT_TRUE(o.data.size() == len && std::equal(o.data.begin(), o.data.end(), disk.begin() + offset))
        << "itt " << itt;
  }
};

// Initiators that hold the thread's room (answers not read yet) make the others' commands wait,
// and these run in the order their connections began to wait: a 512 KiB READ does not pass a
// 1 MiB one that waits ahead of it. Before, each connection had only its own room: N initiators
// could make the target hold N times 64 MiB.
TEST_F(SmallThreadRoom, ConnectionsWaitForTheThreadsRoomInTurn) {
  const uint32_t a1 = read(a, 0, 512u << 10), a2 = read(a, 512u << 10, 512u << 10);
  EXPECT_EQ(room.started, 1u << 20);  // a's answers, unsent
  const uint32_t b1 = read(b, 1u << 20, 1u << 20);
  EXPECT_TRUE(b.conn().waiting_for_thread_room());
  const uint32_t c1 = read(c, 2u << 20, 512u << 10);
  EXPECT_TRUE(c.conn().waiting_for_thread_room());
  EXPECT_EQ(room.waiting.size(), 2u);
  EXPECT_EQ(room.waits, 2u);
  EXPECT_TRUE(b.take().empty());
  EXPECT_TRUE(c.take().empty());
  EXPECT_LE(room.used(), room.budget);

  // a reads its answers: b's READ takes the room; c's, smaller, still waits behind it.
  const auto got_a = a.take();
  expect_read(got_a, a1, 0, 512u << 10);
  expect_read(got_a, a2, 512u << 10, 512u << 10);
  EXPECT_FALSE(b.conn().waiting_for_thread_room());
  EXPECT_EQ(b.conn().tasks_waiting_for_buffers(), 0u);
  EXPECT_TRUE(c.conn().waiting_for_thread_room());
  EXPECT_LE(room.used(), room.budget);
  EXPECT_TRUE(c.take().empty());

  // b reads its answer: c's READ runs.
  expect_read(b.take(), b1, 1u << 20, 1u << 20);
  EXPECT_TRUE(room.waiting.empty());
  expect_read(c.take(), c1, 2u << 20, 512u << 10);
  EXPECT_LE(room.used(), room.budget);
  for (Initiator* i : {&a, &b, &c}) {
    EXPECT_EQ(i->conn().tasks_in_flight(), 0u);
    EXPECT_FALSE(i->conn().closing());
  }
  EXPECT_EQ(room.started, 0u);
}

// A connection with nothing started runs a small command (at most 256 KiB) whatever the
// thread's room holds and whoever waits for it: one initiator's INQUIRY or 4 KiB read is never
// stalled behind others' large transfers. Such commands are counted outside the room, so a
// stream of them does not keep a command that waits there from its turn either.
TEST_F(SmallThreadRoom, ASmallCommandAloneOnItsConnectionNeverWaits) {
  read(a, 0, 512u << 10);
  read(a, 512u << 10, 512u << 10);
  const uint32_t b1 = read(b, 1u << 20, 1u << 20);
  EXPECT_TRUE(b.conn().waiting_for_thread_room());
  EXPECT_EQ(outcome_of(c.run(cdb_inquiry(96), true, false, 96)).status, 0);
  const uint32_t c1 = read(c, 3u << 20, 256u << 10);
  EXPECT_EQ(room.small, 256u << 10);
  expect_read(c.take(), c1, 3u << 20, 256u << 10);
  // A second one beside it on the same connection is not alone: it waits its turn, behind b,
  // until the first is done.
  const uint32_t c2 = read(c, 0, 64u << 10), c3 = read(c, 64u << 10, 64u << 10);
  EXPECT_TRUE(c.conn().waiting_for_thread_room());
  EXPECT_EQ(c.conn().tasks_waiting_for_buffers(), 1u);
  const auto got_c = c.take();
  expect_read(got_c, c2, 0, 64u << 10);
  expect_read(got_c, c3, 64u << 10, 64u << 10);
  EXPECT_TRUE(b.conn().waiting_for_thread_room());
  // c holds 64 KiB (unread) when a reads its answers: b's 1 MiB READ gets the whole room.
  const uint32_t c4 = read(c, 128u << 10, 64u << 10);
  EXPECT_EQ(room.small, 64u << 10);
  EXPECT_EQ(room.started, 1u << 20);
  (void)a.take();
  EXPECT_FALSE(b.conn().waiting_for_thread_room());
  expect_read(b.take(), b1, 1u << 20, 1u << 20);
  expect_read(c.take(), c4, 128u << 10, 64u << 10);
  EXPECT_TRUE(room.waiting.empty());
  EXPECT_EQ(room.started + room.small, 0u);
}

// Buffers an idle connection keeps for reuse are let go when another connection needs the
// room: the second initiator's READ runs at once.
TEST_F(SmallThreadRoom, KeptBuffersOfIdleConnectionsAreLetGo) {
  const Outcome o = outcome_of(a.run(cdb_rw16(0x88, 0, (1u << 20) / 512), true, false, 1u << 20));
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(a.conn().buffer_bytes(), 1u << 20);  // kept for its next command
  const uint32_t b1 = read(b, 1u << 20, 512u << 10);
  EXPECT_FALSE(b.conn().waiting_for_thread_room());
  EXPECT_EQ(room.waits, 0u);
  EXPECT_EQ(a.conn().buffer_bytes(), 0u);
  expect_read(b.take(), b1, 1u << 20, 512u << 10);
  EXPECT_LE(room.used(), room.budget);
  // A small READ alone on its connection, counted outside the room, is charged what it needs,
  // not the larger buffer its task kept.
  EXPECT_EQ(b.conn().buffer_bytes(), 512u << 10);
  const uint32_t b2 = read(b, 8192, 4096);
  EXPECT_EQ(room.small, 4096u);
  EXPECT_EQ(b.conn().buffer_bytes(), 4096u);
  expect_read(b.take(), b2, 8192, 4096);
}

// A connection that closes while it waits for the thread's room leaves the queue: the one
// behind it runs when the room comes back.
TEST_F(SmallThreadRoom, AConnectionClosingWhileItWaitsLeavesTheQueue) {
  read(a, 0, 512u << 10);
  read(a, 512u << 10, 512u << 10);
  read(b, 1u << 20, 1u << 20);
  const uint32_t c1 = read(c, 2u << 20, 512u << 10);
  EXPECT_EQ(room.waiting.size(), 2u);
  b.conn().shutdown();
  EXPECT_FALSE(b.conn().waiting_for_thread_room());
  EXPECT_EQ(room.waiting.size(), 1u);
  (void)a.take();
  expect_read(c.take(), c1, 2u << 20, 512u << 10);
  EXPECT_TRUE(room.waiting.empty());
  EXPECT_TRUE(b.conn().finished());
}

// Beyond max_connections the server refuses a connection at login: whatever its first Login
// Request asks, the answer is "out of resources" (status 0x0302) and the connection closes.
TEST(TargetLoginRefusal, OutOfResourcesAnswersTheFirstLoginRequest) {
  TargetFixture f;
  for (auto type : {SessionType::Normal, SessionType::Discovery}) {
    SessionOptions o;
    o.type = type;
    Initiator ini(f, o);
    ini.conn().refuse_login("too many connections (max_connections 1)");
    EXPECT_EQ(ini.login(), LoginState::Failed);
    EXPECT_EQ(ini.last_login.status_class, 3);
    EXPECT_EQ(ini.last_login.status_detail, 2);
    EXPECT_TRUE(ini.conn().closing());
    EXPECT_EQ(f.sessions.size(), 0u);
  }
  Initiator ok(f);
  EXPECT_EQ(ok.login(), LoginState::FullFeature);  // the others are not affected
}

}  // namespace
}  // namespace vcp::target::test
