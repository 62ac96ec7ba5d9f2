// One logical unit served by two Luns (as two I/O threads of the target do): reservations,
// RESERVE(6), unit attentions and mode pages made through one are seen through the other;
// resets and PREEMPT AND ABORT reach the other's tasks by message; a task management wait ends
// only when the aborted backend requests have. The last test runs the two Luns on two real
// threads (meant for TSan).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "harness.hpp"
#include "held_backend.hpp"

namespace vcp::scsi::test {
namespace {

constexpr uint8_t kRegister = 0, kReserve = 1, kRelease = 2, kPreemptAbort = 5;
constexpr uint8_t kExclusiveAccess = 3;

// A task started but not waited for (its backend request may be held).
struct Started {
  ScsiTask t;
  std::vector<uint8_t> buf;
  iovec iov{};
  int done = 0;
};

class SharedLuTest : public ::testing::Test {
 protected:
  SharedLuTest() : backend(4 << 20) {
    a = make_nexus(1, "iqn.2024-01.test:a", 0x23d000000001);
    b = make_nexus(2, "iqn.2024-01.test:b", 0x23d000000002);
    shared = std::make_shared<SharedLuState>(ModePages{backend.info().volatile_cache});
    qa = open(0);
    qb = open(1);
    LunConfig cfg;
    cfg.target_name = "iqn.2024-01.vcp:target";
    la = std::make_unique<Lun>(cfg, backend, *qa, shared);
    lb = std::make_unique<Lun>(cfg, backend, *qb, shared);
    clear_ua(*la, a);
    clear_ua(*lb, b);
  }
  std::unique_ptr<HeldBackend::Queue> open(unsigned i) {
    auto q = backend.open_queue(i);
    EXPECT_TRUE(q.ok());
    return std::unique_ptr<HeldBackend::Queue>(static_cast<HeldBackend::Queue*>(q->release()));
  }
  static void clear_ua(Lun& l, const ItNexus& n) {
    for (int i = 0; i < 16; ++i)
      if (run_on(l, cdb6(op::kTestUnitReady, 0, 0), DataDir::none, 0, {}, &n).good()) return;
    ADD_FAILURE() << "unit attentions never cleared";
  }
  static Reply tur(Lun& l, const ItNexus& n) { return run_on(l, cdb6(op::kTestUnitReady, 0, 0), DataDir::none, 0, {}, &n); }
  static Reply read(Lun& l, const ItNexus& n) { return run_on(l, cdb16(op::kRead16, 0, 1), DataDir::in, 512, {}, &n); }
  static Reply write(Lun& l, const ItNexus& n) {
    return run_on(l, cdb16(op::kWrite16, 0, 1), DataDir::out, 512, std::vector<uint8_t>(512, 7), &n);
  }
  static Reply prout(Lun& l, const ItNexus& n, uint8_t action, uint8_t type, uint64_t key, uint64_t sa_key) {
    std::vector<uint8_t> cdb = {op::kPrOut, action, type, 0, 0, 0, 0, 0, 24, 0};
    std::vector<uint8_t> p(24, 0);
    store_be64(&p[0], key);
    store_be64(&p[8], sa_key);
    return run_on(l, cdb, DataDir::out, 24, p, &n);
  }
  static std::vector<uint64_t> keys(Lun& l, const ItNexus& n) {
    Reply r = run_on(l, {op::kPrIn, 0, 0, 0, 0, 0, 0, 0x04, 0x00, 0}, DataDir::in, 1024, {}, &n);
    std::vector<uint64_t> k;
    for (size_t off = 8; off + 8 <= r.data.size(); off += 8) k.push_back(load_be64(&r.data[off]));
    return k;
  }
  // Starts a one-block READ through `n` without waiting for it.
  static void start_read(Lun& l, const ItNexus& n, Started& s, uint64_t tag) {
    auto c = cdb16(op::kRead16, 8, 1);
    std::copy(c.begin(), c.end(), s.t.cdb);
    s.t.cdb_len = 16;
    s.t.tag = tag;
    s.t.nexus = &n;
    s.t.dir = DataDir::in;
    s.t.expected_length = 512;
    s.buf.assign(512, 0);
    s.iov = {s.buf.data(), s.buf.size()};
    s.t.iov = &s.iov;
    s.t.iovcnt = 1;
    s.t.ctx = &s;
    s.t.done = [](ScsiTask* t) { ++static_cast<Started*>(t->ctx)->done; };
    l.execute(&s.t);
    l.commit();
  }

  HeldBackend backend;
  std::shared_ptr<SharedLuState> shared;
  std::unique_ptr<HeldBackend::Queue> qa, qb;
  std::unique_ptr<Lun> la, lb;  // "thread A" and "thread B"
  ItNexus a, b;
};

struct WaitFlag {
  QuiesceWait w;
  int calls = 0;
  WaitFlag() {
    w.ctx = this;
    w.done = [](QuiesceWait* x) { ++static_cast<WaitFlag*>(x->ctx)->calls; };
  }
};

TEST_F(SharedLuTest, PersistentReservationMadeOnAIsEnforcedOnB) {
  ASSERT_TRUE(prout(*la, a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(*lb, b, kRegister, 0, 0, 0xb1).good());
  EXPECT_EQ(keys(*lb, b), (std::vector<uint64_t>{0xa1, 0xb1}));  // one registration list
  ASSERT_TRUE(prout(*la, a, kReserve, kExclusiveAccess, 0xa1, 0).good());
  EXPECT_EQ(read(*lb, b).status, Status::reservation_conflict);
  EXPECT_EQ(write(*lb, b).status, Status::reservation_conflict);
  EXPECT_TRUE(read(*la, a).good());
  // The reservation is one: B cannot take another, A's release frees B.
  EXPECT_EQ(prout(*lb, b, kReserve, kExclusiveAccess, 0xb1, 0).status, Status::reservation_conflict);
  ASSERT_TRUE(prout(*la, a, kRelease, kExclusiveAccess, 0xa1, 0).good());
  EXPECT_TRUE(read(*lb, b).good());
  EXPECT_TRUE(write(*lb, b).good());
}

TEST_F(SharedLuTest, Reserve6MadeOnAIsEnforcedOnB) {
  ASSERT_TRUE(run_on(*la, cdb6(op::kReserve6, 0, 0), DataDir::none, 0, {}, &a).good());
  EXPECT_EQ(write(*lb, b).status, Status::reservation_conflict);
  EXPECT_EQ(read(*lb, b).status, Status::reservation_conflict);
  EXPECT_EQ(run_on(*lb, cdb6(op::kReserve6, 0, 0), DataDir::none, 0, {}, &b).status, Status::reservation_conflict);
  EXPECT_TRUE(write(*la, a).good());
  // B's RELEASE does nothing (not the holder); A's frees B.
  EXPECT_TRUE(run_on(*lb, cdb6(op::kRelease6, 0, 0), DataDir::none, 0, {}, &b).good());
  EXPECT_EQ(write(*lb, b).status, Status::reservation_conflict);
  EXPECT_TRUE(run_on(*la, cdb6(op::kRelease6, 0, 0), DataDir::none, 0, {}, &a).good());
  EXPECT_TRUE(write(*lb, b).good());
}

TEST_F(SharedLuTest, LunResetOnAAbortsBsTasksAndRaisesUnitAttentionOnB) {
  ASSERT_TRUE(run_on(*lb, cdb6(op::kReserve6, 0, 0), DataDir::none, 0, {}, &b).good());
  qb->held = true;
  Started s;
  start_read(*lb, b, s, 0x77);
  ASSERT_EQ(lb->in_flight(), 1u);
  ASSERT_EQ(qb->in_flight(), 1u);

  la->reset(ResetKind::lun_reset);
  WaitFlag wf;
  la->when_quiesced(&wf.w);
  EXPECT_EQ(wf.calls, 0);  // B has not even seen the reset yet
  lb->poll();              // B takes the message: its task is aborted, its request still held
  EXPECT_TRUE(s.t.aborted);
  EXPECT_EQ(s.done, 0);
  la->poll();
  EXPECT_EQ(wf.calls, 0);  // B has not acked: its aborted request is still in the backend
  qb->release();
  lb->poll();
  EXPECT_EQ(s.done, 1);
  EXPECT_EQ(s.t.status, Status::task_aborted);
  EXPECT_EQ(wf.calls, 0);  // the ack is on its way to A
  la->poll();
  EXPECT_EQ(wf.calls, 1);

  // The reset dropped B's RESERVE(6) and left BUS DEVICE RESET FUNCTION OCCURRED for both.
  EXPECT_TRUE(tur(*lb, b).is(SenseKey::unit_attention, Asc::bus_device_reset_function));
  EXPECT_TRUE(tur(*la, a).is(SenseKey::unit_attention, Asc::bus_device_reset_function));
  EXPECT_TRUE(write(*la, a).good());
}

TEST_F(SharedLuTest, TargetResetOnARaisesPowerOnResetOnB) {
  la->reset(ResetKind::target_reset);
  lb->poll();
  EXPECT_TRUE(tur(*lb, b).is(SenseKey::unit_attention, Asc::power_on_reset));
  EXPECT_TRUE(tur(*lb, b).good());
  WaitFlag wf;
  la->when_quiesced(&wf.w);
  la->poll();  // B had nothing in flight: it acked when it read the message
  EXPECT_EQ(wf.calls, 1);
}

TEST_F(SharedLuTest, ClearTaskSetOnAClearsBsTasks) {
  qb->held = true;
  Started s;
  start_read(*lb, b, s, 0x79);
  la->clear_task_set(a);
  WaitFlag wf;
  la->when_quiesced(&wf.w);
  lb->poll();
  EXPECT_TRUE(s.t.aborted);
  la->poll();
  EXPECT_EQ(wf.calls, 0);
  qb->release();
  lb->poll();
  la->poll();
  EXPECT_EQ(s.done, 1);
  EXPECT_EQ(wf.calls, 1);
  // B lost a task to A's CLEAR TASK SET (TAS 0: no status for it): SAM-5's unit attention,
  // once; A, which cleared, gets none.
  EXPECT_TRUE(tur(*lb, b).is(SenseKey::unit_attention, Asc::commands_cleared_by_another_initiator));
  EXPECT_TRUE(tur(*lb, b).good());
  EXPECT_TRUE(tur(*la, a).good());
}

// On one Lun: the nexuses that lost tasks get the unit attention, the one that cleared and one
// that had nothing in flight do not.
TEST_F(SharedLuTest, ClearTaskSetRaisesCommandsClearedOnlyWhereTasksWent) {
  ItNexus c = make_nexus(3, "iqn.2024-01.test:c", 0x23d000000003);
  clear_ua(*la, c);
  qa->held = true;
  Started sa, sb, sb2;
  start_read(*la, a, sa, 0x81);
  start_read(*la, b, sb, 0x82);
  start_read(*la, b, sb2, 0x83);
  EXPECT_EQ(la->clear_task_set(a), 3u);
  EXPECT_TRUE(sa.t.aborted && sb.t.aborted && sb2.t.aborted);
  qa->release();
  la->poll();
  EXPECT_EQ(sa.done + sb.done + sb2.done, 3);
  EXPECT_TRUE(tur(*la, b).is(SenseKey::unit_attention, Asc::commands_cleared_by_another_initiator));
  EXPECT_TRUE(tur(*la, b).good());  // one condition for two tasks
  EXPECT_TRUE(tur(*la, a).good());
  EXPECT_TRUE(tur(*la, c).good());
}

TEST_F(SharedLuTest, ModePageChangeOnAIsSeenOnB) {
  const bool wce = lb->mode().wce;
  std::vector<uint8_t> p(4 + 20, 0);
  p[4] = 0x08;
  p[5] = 0x12;
  if (!wce) p[6] = 0x04;
  ASSERT_TRUE(run_on(*la, {op::kModeSelect6, 0x10, 0, 0, static_cast<uint8_t>(p.size()), 0}, DataDir::out,
                     static_cast<uint32_t>(p.size()), p, &a)
                  .good());
  EXPECT_EQ(lb->mode().wce, !wce);
  EXPECT_TRUE(tur(*lb, b).is(SenseKey::unit_attention, Asc::mode_parameters_changed));
  Reply cur = run_on(*lb, {op::kModeSense6, 0x08, 0x08, 0, 255, 0}, DataDir::in, 255, {}, &b);
  ASSERT_GT(cur.data.size(), 6u);
  EXPECT_EQ((cur.data[6] & 0x04) != 0, !wce);
  EXPECT_TRUE(tur(*la, a).good());  // the changer gets no unit attention
}

TEST_F(SharedLuTest, PreemptAndAbortOnAAbortsTasksOnB) {
  ASSERT_TRUE(prout(*la, a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(*lb, b, kRegister, 0, 0, 0xb1).good());
  ASSERT_TRUE(prout(*lb, b, kReserve, kExclusiveAccess, 0xb1, 0).good());
  qb->held = true;
  Started s;
  start_read(*lb, b, s, 0x78);
  ASSERT_TRUE(prout(*la, a, kPreemptAbort, kExclusiveAccess, 0xa1, 0xb1).good());
  lb->poll();
  EXPECT_TRUE(s.t.aborted);
  qb->release();
  lb->poll();
  EXPECT_EQ(s.done, 1);
  EXPECT_EQ(keys(*la, a), (std::vector<uint64_t>{0xa1}));
  EXPECT_TRUE(tur(*lb, b).is(SenseKey::unit_attention, Asc::registrations_preempted));
}

TEST_F(SharedLuTest, QuiesceWaitsForTheAbortedBackendRequest) {
  qa->held = true;
  Started s;
  start_read(*la, a, s, 0x10);
  ASSERT_TRUE(la->abort_task(a, 0x10));
  WaitFlag wf;
  la->when_quiesced(&wf.w);
  la->poll();
  EXPECT_EQ(wf.calls, 0);
  EXPECT_EQ(s.done, 0);
  qa->release();
  la->poll();
  EXPECT_EQ(s.done, 1);
  EXPECT_EQ(wf.calls, 1);
  // Nothing aborted: answered at once. A cancelled wait is never called.
  WaitFlag now;
  la->when_quiesced(&now.w);
  EXPECT_EQ(now.calls, 1);
  qa->held = true;
  Started s2;
  start_read(*la, a, s2, 0x11);
  la->abort_task_set(a);
  WaitFlag gone;
  la->when_quiesced(&gone.w);
  la->cancel_wait(&gone.w);
  qa->release();
  la->poll();
  EXPECT_EQ(s2.done, 1);
  EXPECT_EQ(gone.calls, 0);
}

// Two real threads: B's thread polls its Lun and runs READs through nexus b while the main
// thread changes the shared state through A. Meant for TSan; it also checks what B sees.
TEST_F(SharedLuTest, TwoThreads) {
  std::atomic<bool> stop{false};
  std::atomic<int> conflicts{0}, goods{0}, reset_uas{0};
  std::thread tb([&] {
    lb->set_wake([] {});  // this loop polls all the time, as an I/O thread's does when woken
    while (!stop.load(std::memory_order_acquire)) {
      lb->poll();
      Reply r = read(*lb, b);
      if (r.status == Status::reservation_conflict) ++conflicts;
      else if (r.good()) ++goods;
      else if (r.is(SenseKey::unit_attention, Asc::bus_device_reset_function)) ++reset_uas;
    }
  });
  auto wait_for = [](auto pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!pred() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    return pred();
  };
  EXPECT_TRUE(wait_for([&] { return goods.load() > 0; }));
  ASSERT_TRUE(prout(*la, a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(*la, a, kReserve, kExclusiveAccess, 0xa1, 0).good());
  EXPECT_TRUE(wait_for([&] { return conflicts.load() > 0; }));
  ASSERT_TRUE(prout(*la, a, kRelease, kExclusiveAccess, 0xa1, 0).good());
  const int before = goods.load();
  EXPECT_TRUE(wait_for([&] { return goods.load() > before; }));
  la->reset(ResetKind::lun_reset);
  WaitFlag wf;
  la->when_quiesced(&wf.w);
  EXPECT_TRUE(wait_for([&] {
    la->poll();
    return wf.calls == 1;
  }));
  EXPECT_TRUE(wait_for([&] { return reset_uas.load() == 1; }));
  stop.store(true, std::memory_order_release);
  tb.join();
  EXPECT_EQ(reset_uas.load(), 1);
}

}  // namespace
}  // namespace vcp::scsi::test
