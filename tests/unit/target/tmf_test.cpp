// Task management responses wait for the aborted tasks to end (SAM-5 7.1): the LUN sits on a
// backend whose completions the test releases. And two "I/O threads" (two ThreadContexts whose
// Luns share one logical unit state): a reservation and a LUN RESET made through a session on
// one are seen by a session on the other.
#include <gtest/gtest.h>

#include "../scsi/held_backend.hpp"
#include "harness.hpp"

namespace vcp::target::test {
namespace {

using namespace vcp::iscsi;
using scsi::test::HeldBackend;

// Replaces the fixture's LUN 0 with one over a held backend.
struct HeldLun {
  explicit HeldLun(TargetFixture& f) : backend(4 << 20) {
    auto q = backend.open_queue(0);
    EXPECT_TRUE(q.ok());
    queue.reset(static_cast<HeldBackend::Queue*>(q->release()));
    scsi::LunConfig cfg;
    cfg.target_name = f.settings.iqn;
    lun = std::make_unique<scsi::Lun>(cfg, backend, *queue);
    lun->set_reported_luns({0}, false);
    f.ctx.served.at(0).luns.at(0).lun = lun.get();
  }
  HeldBackend backend;
  std::unique_ptr<HeldBackend::Queue> queue;
  std::unique_ptr<scsi::Lun> lun;
};

int count_for(const std::vector<Received>& pdus, uint32_t itt) {
  int n = 0;
  for (const auto& r : pdus) {
    if (const auto* d = r.as<DataInPdu>(); d && d->itt == itt) ++n;
    if (const auto* s = r.as<ScsiResponsePdu>(); s && s->itt == itt) ++n;
  }
  return n;
}

const TaskMgmtResponsePdu* tmf_response(const std::vector<Received>& pdus, uint32_t itt) {
  for (const auto& r : pdus)
    if (const auto* t = r.as<TaskMgmtResponsePdu>(); t && t->itt == itt) return t;
  return nullptr;
}

// Logs in, takes the power-on unit attention and starts a READ that the held backend keeps;
// returns its ITT.
uint32_t held_read(HeldLun& held, Initiator& ini) {
  EXPECT_EQ(ini.login(), LoginState::FullFeature);
  ini.tur();
  held.queue->held = true;
  const uint32_t itt = ini.command(cdb_rw16(0x88, 0, 8), true, false, 4096);
  EXPECT_TRUE(ini.take().empty());
  EXPECT_EQ(held.queue->in_flight(), 1u);
  return itt;
}

class TmfQuiesceTest : public ::testing::TestWithParam<TmfFunction> {};

TEST_P(TmfQuiesceTest, ResponseFollowsTheAbortedBackendRequest) {
  TargetFixture f;
  HeldLun held(f);
  Initiator ini(f);
  const uint32_t itt = held_read(held, ini);

  const uint32_t tmf = ini.send_tmf(GetParam(), 0, itt, ini.cmd_sn() - 1);
  EXPECT_TRUE(ini.take().empty()) << "TMF answered while the aborted READ is still in the backend";
  held.lun->poll();
  EXPECT_TRUE(ini.take().empty());

  held.queue->release();
  held.lun->poll();
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  const TaskMgmtResponsePdu* r = tmf_response(got, tmf);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->response, TmfResponse::Complete);
  EXPECT_EQ(count_for(got, itt), 0);  // the aborted READ never answers
  EXPECT_EQ(ini.conn().tasks_in_flight(), 0u);

  // The session goes on; after a reset the unit attention comes first.
  auto o = outcome_of(ini.tur());
  if (GetParam() != TmfFunction::LogicalUnitReset && GetParam() != TmfFunction::TargetWarmReset) {
    EXPECT_EQ(o.status, 0);
  } else {
    EXPECT_EQ(o.status, 2);
    EXPECT_EQ(outcome_of(ini.tur()).status, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Functions, TmfQuiesceTest,
                         ::testing::Values(TmfFunction::AbortTask, TmfFunction::AbortTaskSet,
                                           TmfFunction::ClearTaskSet, TmfFunction::LogicalUnitReset,
                                           TmfFunction::TargetWarmReset),
                         [](const ::testing::TestParamInfo<TmfFunction>& i) {
                           switch (i.param) {
                             case TmfFunction::AbortTask: return "AbortTask";
                             case TmfFunction::AbortTaskSet: return "AbortTaskSet";
                             case TmfFunction::ClearTaskSet: return "ClearTaskSet";
                             case TmfFunction::LogicalUnitReset: return "LogicalUnitReset";
                             default: return "TargetWarmReset";
                           }
                         });

// Session reinstatement (RFC 7143 §6.3.5) while the old session's WRITE is at the backend: the
// WRITE is aborted (never answered) but the storage still does it, so the new session's login
// is answered only once it has ended and the old connection is gone. Otherwise the initiator,
// told it is in, reissues and writes anew, and the old WRITE could land after the new one.
// a logs in and writes `data` to blocks 0-7, the held backend keeping the WRITE; then b (one
// initiator name and ISID with a) logs in, reinstating a. Returns the WRITE's ITT.
uint32_t reinstate_over_held_write(HeldLun& held, Initiator& a, Initiator& b, const std::vector<uint8_t>& data) {
  EXPECT_EQ(a.login(), LoginState::FullFeature);
  a.tur();
  held.queue->held = true;
  const uint32_t itt = a.command(cdb_rw16(0x8a, 0, 8), false, true, 4096, data);
  EXPECT_TRUE(a.take().empty());
  EXPECT_EQ(held.queue->in_flight(), 1u);
  EXPECT_EQ(b.login(), LoginState::InProgress) << "answered while the old session's WRITE is at the backend";
  return itt;
}

TEST(TargetTmf, AReinstatingLoginWaitsForTheOldSessionsWrite) {
  TargetFixture f;
  HeldLun held(f);
  Initiator a(f), b(f);
  const auto old_data = pattern(4096, 3);
  const uint32_t itt = reinstate_over_held_write(held, a, b, old_data);
  a.conn().tick(a.now);
  EXPECT_TRUE(a.conn().closing());
  EXPECT_FALSE(a.conn().finished());
  b.conn().tick(b.now);
  EXPECT_EQ(b.finish_login(), LoginState::InProgress);
  const std::string waiting = b.conn().describe(b.now + 5);
  EXPECT_NE(waiting.find("waiting 5 ms for the session it reinstates to end"), std::string::npos) << waiting;

  held.queue->release();
  held.lun->poll();  // the WRITE ends (aborted: no answer)
  EXPECT_EQ(count_for(a.take(), itt), 0);
  EXPECT_TRUE(a.conn().finished());
  const int wakes = f.wakes;
  a.drop_connection();  // the thread frees it: the login waiting for it is woken
  EXPECT_GT(f.wakes, wakes);
  b.conn().tick(b.now);
  ASSERT_EQ(b.finish_login(), LoginState::FullFeature);
  const Outcome o = outcome_of(b.run(cdb_rw16(0x88, 0, 8), true, false, 4096));
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.data, old_data) << "the old WRITE is in the storage before the new session reads";
}

TEST(TargetTmf, AReinstatingLoginFailsWhenTheOldSessionDoesNotEnd) {
  TargetFixture f;
  HeldLun held(f);
  Initiator a(f), b(f);
  reinstate_over_held_write(held, a, b, pattern(4096, 4));
  a.conn().tick(a.now);
  b.conn().tick(b.now + f.settings.login_timeout_ms / 2);
  EXPECT_FALSE(b.conn().closing());
  b.conn().tick(b.now + f.settings.login_timeout_ms + 1);
  EXPECT_TRUE(b.conn().closing());
  EXPECT_EQ(b.conn().close_reason(), "the session it reinstates did not end within " +
                                         std::to_string(f.settings.login_timeout_ms / 1000) + " s");
  EXPECT_TRUE(b.take().empty()) << "no Login Response: the initiator tries again";
  held.queue->release();
  held.lun->poll();
}

TEST(TargetTmf, APduBeforeTheHeldLoginAnswerClosesTheConnection) {
  TargetFixture f;
  HeldLun held(f);
  Initiator a(f), b(f);
  reinstate_over_held_write(held, a, b, pattern(4096, 5));
  NopOutPdu n;
  n.immediate = true;
  n.itt = b.next_itt();
  n.ttt = kReservedTag;
  b.send(n);
  EXPECT_TRUE(b.conn().closing());
  EXPECT_EQ(b.conn().close_reason(), "a NOP-Out PDU before the answer to its login");
  held.queue->release();
  held.lun->poll();
}

// A LUN removed while a READ of it is in the backend (the I/O thread moves it from the
// target's LUNs to `draining`): a TARGET WARM RESET still aborts that READ and answers only once
// it has ended, and the READ never answers.
TEST(TargetTmf, TargetResetReachesARemovedLunStillDraining) {
  TargetFixture f;
  HeldLun held(f);
  Initiator ini(f);
  const uint32_t itt = held_read(held, ini);
  ThreadContext::Target& tt = f.ctx.served.at(0);
  tt.luns.clear();
  tt.lun_numbers.clear();
  tt.draining.push_back(held.lun.get());
  ini.conn().forget_lun(held.lun.get());
  EXPECT_TRUE(ini.conn().uses_lun(held.lun.get()));

  const uint32_t tmf = ini.send_tmf(TmfFunction::TargetWarmReset);
  EXPECT_TRUE(ini.take().empty()) << "TARGET WARM RESET answered while the READ is still in the removed LUN";
  held.queue->release();
  held.lun->poll();
  auto got = ini.take();
  const TaskMgmtResponsePdu* r = tmf_response(got, tmf);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->response, TmfResponse::Complete);
  EXPECT_EQ(count_for(got, itt), 0);
  EXPECT_FALSE(ini.conn().uses_lun(held.lun.get()));
}

TEST(TargetTmf, ConnectionDropsWhileTheResponseWaits) {
  TargetFixture f;
  HeldLun held(f);
  auto ini = std::make_unique<Initiator>(f);
  ASSERT_EQ(ini->login(), LoginState::FullFeature);
  ini->tur();
  held.queue->held = true;
  const uint32_t itt = ini->command(cdb_rw16(0x88, 0, 8), true, false, 4096);
  ini->send_tmf(TmfFunction::AbortTask, 0, itt, ini->cmd_sn() - 1);
  EXPECT_TRUE(ini->take().empty());
  ini->conn().shutdown();
  EXPECT_FALSE(ini->conn().finished());  // the READ is still inside the Lun
  held.queue->release();
  held.lun->poll();
  EXPECT_TRUE(ini->conn().finished());
  EXPECT_TRUE(ini->take().empty());  // closing: neither the TMF nor the READ answers
  ini.reset();                       // the Lun holds nothing of it any more (ASan would say)
  held.queue->held = true;           // and the Lun still works for others
  Initiator other(f, SessionOptions{.isid = {0x80, 0, 0, 0, 0, 7}});
  ASSERT_EQ(other.login(), LoginState::FullFeature);
  other.tur();
  held.queue->release();
  EXPECT_EQ(outcome_of(other.tur()).status, 0);
}

// Two I/O threads' worth of target sharing LUN 0's state, a session logged in on each (the
// power-on unit attention collected).
class TargetThreads : public ::testing::Test {
 protected:
  void SetUp() override {
    scsi::LunConfig cfg;
    cfg.target_name = t2.settings.iqn;
    t2.lun = std::make_unique<scsi::Lun>(cfg, *t2.backend, *t2.queue, t1.lun->shared());
    t2.lun->set_reported_luns({0}, false);
    t2.ctx.served.at(0).luns.at(0).lun = t2.lun.get();
    a = std::make_unique<Initiator>(t1);
    b = std::make_unique<Initiator>(t2, SessionOptions{.isid = {0x80, 0, 0, 0, 0, 2}});
    ASSERT_EQ(a->login(), LoginState::FullFeature);
    ASSERT_EQ(b->login(), LoginState::FullFeature);
    a->tur();
    b->tur();
  }
  void TearDown() override {
    a.reset();
    b.reset();
  }
  TargetFixture t1, t2;
  std::unique_ptr<Initiator> a, b;
};

std::vector<uint8_t> prout_param(uint64_t key, uint64_t sa_key) {
  std::vector<uint8_t> p(24, 0);
  for (int i = 0; i < 8; ++i) {
    p[i] = static_cast<uint8_t>(key >> (56 - 8 * i));
    p[8 + i] = static_cast<uint8_t>(sa_key >> (56 - 8 * i));
  }
  return p;
}

TEST_F(TargetThreads, ReservationOnOneThreadConflictsOnTheOther) {
  auto reg = prout_param(0, 0xa1);
  EXPECT_EQ(outcome_of(a->run({0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0}, false, true, 24, reg)).status, 0);
  auto res = prout_param(0xa1, 0);
  EXPECT_EQ(outcome_of(a->run({0x5f, 0x01, 0x03, 0, 0, 0, 0, 0, 24, 0}, false, true, 24, res)).status, 0);
  EXPECT_EQ(outcome_of(b->run(cdb_rw16(0x88, 0, 1), true, false, 512)).status, 0x18);  // RESERVATION CONFLICT
  EXPECT_EQ(outcome_of(a->run(cdb_rw16(0x88, 0, 1), true, false, 512)).status, 0);
}

TEST_F(TargetThreads, LunResetOnOneThreadReachesTheOther) {
  EXPECT_EQ(outcome_of(b->tur()).status, 0);
  const uint32_t tmf = a->send_tmf(TmfFunction::LogicalUnitReset);
  EXPECT_TRUE(a->take().empty()) << "answered before the other thread quiesced";
  t2.lun->poll();  // thread 2 takes the reset message: nothing in flight, it acks
  t1.lun->poll();  // thread 1 takes the ack
  auto got = a->take();
  ASSERT_NE(tmf_response(got, tmf), nullptr);
  EXPECT_EQ(tmf_response(got, tmf)->response, TmfResponse::Complete);
  auto o = outcome_of(b->tur());
  EXPECT_EQ(o.status, 2);
  ASSERT_GE(o.sense.size(), 14u);
  EXPECT_EQ(o.sense[2] & 0x0f, 0x06);  // UNIT ATTENTION
  EXPECT_EQ(o.sense[12], 0x29);        // POWER ON, RESET, OR BUS DEVICE RESET OCCURRED
  EXPECT_EQ(o.sense[13], 0x03);        // BUS DEVICE RESET FUNCTION OCCURRED
}

}  // namespace
}  // namespace vcp::target::test
