// Persistent reservations through the Lun: the service actions, the conflict matrix per
// reservation type, the unit attentions they raise, and RESERVE/RELEASE(6/10).
#include <gtest/gtest.h>

#include "harness.hpp"

namespace vcp::scsi::test {
namespace {

constexpr uint8_t kRegister = 0, kReserve = 1, kRelease = 2, kClear = 3, kPreempt = 4, kPreemptAbort = 5,
                  kRegisterIgnore = 6;

class PrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    c = make_nexus(3, "iqn.2024-01.test:c", 0x23d000000003);
    h.clear_ua(&h.a);
    h.clear_ua(&h.b);
    h.clear_ua(&c);
  }
  Reply prout(const ItNexus& n, uint8_t action, uint8_t type, uint64_t key, uint64_t sa_key, uint8_t flags = 0,
              uint32_t plen = 24) {
    std::vector<uint8_t> cdb = {op::kPrOut, action, type, 0, 0, 0, 0, 0, 0, 0};
    store_be32(&cdb[5], plen);
    std::vector<uint8_t> p(plen, 0);
    if (plen >= 24) {
      store_be64(&p[0], key);
      store_be64(&p[8], sa_key);
      p[20] = flags;
    }
    return h.out(cdb, p, &n);
  }
  Reply prin(const ItNexus& n, uint8_t action, uint16_t alloc = 1024) {
    std::vector<uint8_t> cdb = {op::kPrIn, action, 0, 0, 0, 0, 0, 0, 0, 0};
    store_be16(&cdb[7], alloc);
    return h.in(cdb, alloc, &n);
  }
  std::vector<uint64_t> keys(const ItNexus& n) {
    Reply r = prin(n, 0);
    std::vector<uint64_t> k;
    for (size_t off = 8; off + 8 <= r.data.size(); off += 8) k.push_back(load_be64(&r.data[off]));
    return k;
  }
  bool can_read(const ItNexus& n) { return h.in(cdb16(op::kRead16, 0, 1), 512, &n).good(); }
  bool can_write(const ItNexus& n) { return h.out(cdb16(op::kWrite16, 0, 1), std::vector<uint8_t>(512, 1), &n).good(); }
  Status read_status(const ItNexus& n) { return h.in(cdb16(op::kRead16, 0, 1), 512, &n).status; }

  LunHarness h;
  ItNexus c;
};

TEST_F(PrTest, RegisterAndReadKeys) {
  EXPECT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  EXPECT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  EXPECT_EQ(keys(h.a), (std::vector<uint64_t>{0xa1, 0xb1}));
  Reply r = prin(h.a, 0);
  EXPECT_EQ(load_be32(&r.data[0]), 2u);  // generation
  // Wrong key: conflict. Right key: changes it.
  EXPECT_EQ(prout(h.a, kRegister, 0, 0x99, 0xa2).status, Status::reservation_conflict);
  EXPECT_TRUE(prout(h.a, kRegister, 0, 0xa1, 0xa2).good());
  EXPECT_TRUE(prout(h.a, kRegisterIgnore, 0, 0x1234, 0xa3).good());
  EXPECT_EQ(keys(h.a), (std::vector<uint64_t>{0xa3, 0xb1}));
  // Unregister.
  EXPECT_TRUE(prout(h.a, kRegister, 0, 0xa3, 0).good());
  EXPECT_EQ(keys(h.a), (std::vector<uint64_t>{0xb1}));
  // Unregistered nexus registering with a non-zero key: conflict.
  EXPECT_EQ(prout(h.a, kRegister, 0, 0x5, 0xa4).status, Status::reservation_conflict);
  EXPECT_EQ(load_be32(&prin(h.a, 0).data[0]), 5u);
}

TEST_F(PrTest, ParameterChecks) {
  EXPECT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1, 0, 20).is(SenseKey::illegal_request, Asc::parameter_list_length_error));
  EXPECT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1, 0x01).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));  // APTPL
  EXPECT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1, 0x04).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));  // ALL_TG_PT
  EXPECT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1, 0x08).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));  // SPEC_I_PT
  EXPECT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  EXPECT_TRUE(prout(h.a, kReserve, 0x02, 0xa1, 0).invalid_field(2));  // type 2 is not a type
  EXPECT_TRUE(prout(h.a, kReserve, 0x11, 0xa1, 0).invalid_field(2));  // scope
  EXPECT_TRUE(prout(h.a, 7, 0, 0xa1, 0).invalid_field(1));            // REGISTER AND MOVE
  EXPECT_TRUE(prin(h.a, 4).invalid_field(1));
  EXPECT_EQ(prout(c, kReserve, 1, 0, 0).status, Status::reservation_conflict);  // not registered
  EXPECT_EQ(prout(h.a, kReserve, 1, 0xbad, 0).status, Status::reservation_conflict);  // wrong key
}

TEST_F(PrTest, ReserveReadReservationRelease) {
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  Reply r = prin(h.a, 1);
  EXPECT_EQ(load_be32(&r.data[4]), 0u);
  ASSERT_TRUE(prout(h.a, kReserve, 1, 0xa1, 0).good());
  r = prin(h.b, 1);
  ASSERT_EQ(load_be32(&r.data[4]), 16u);
  EXPECT_EQ(load_be64(&r.data[8]), 0xa1u);
  EXPECT_EQ(r.data[8 + 13], 1);
  EXPECT_TRUE(prout(h.a, kReserve, 1, 0xa1, 0).good());  // same again: fine
  EXPECT_EQ(prout(h.a, kReserve, 3, 0xa1, 0).status, Status::reservation_conflict);  // other type
  EXPECT_EQ(prout(h.b, kReserve, 1, 0xb1, 0).status, Status::reservation_conflict);
  EXPECT_TRUE(prout(h.b, kRelease, 1, 0xb1, 0).good());  // not the holder: nothing happens
  EXPECT_TRUE(h.lun().reservations().reserved());
  EXPECT_TRUE(prout(h.a, kRelease, 3, 0xa1, 0).is(SenseKey::illegal_request, Asc::invalid_release_of_pr));
  EXPECT_TRUE(prout(h.a, kRelease, 1, 0xa1, 0).good());
  EXPECT_FALSE(h.lun().reservations().reserved());
  EXPECT_EQ(load_be32(&prin(h.a, 0).data[0]), 2u);  // RESERVE/RELEASE do not bump the generation
}

struct MatrixCase {
  uint8_t type;
  bool reg_read, reg_write, unreg_read, unreg_write;
};

TEST_F(PrTest, ConflictMatrix) {
  const MatrixCase cases[] = {
      {1, true, false, true, false},   // Write Exclusive
      {3, false, false, false, false}, // Exclusive Access
      {5, true, true, true, false},    // WE - Registrants Only
      {6, true, true, false, false},   // EA - Registrants Only
      {7, true, true, true, false},    // WE - All Registrants
      {8, true, true, false, false},   // EA - All Registrants
  };
  for (const auto& mc : cases) {
    SCOPED_TRACE(int(mc.type));
    ASSERT_TRUE(prout(h.a, kRegisterIgnore, 0, 0, 0xa1).good());
    ASSERT_TRUE(prout(h.b, kRegisterIgnore, 0, 0, 0xb1).good());
    ASSERT_TRUE(prout(h.a, kReserve, mc.type, 0xa1, 0).good());
    EXPECT_TRUE(can_read(h.a));
    EXPECT_TRUE(can_write(h.a));
    EXPECT_EQ(can_read(h.b), mc.reg_read);
    EXPECT_EQ(can_write(h.b), mc.reg_write);
    EXPECT_EQ(can_read(c), mc.unreg_read);
    EXPECT_EQ(can_write(c), mc.unreg_write);
    if (!mc.unreg_read) {
      EXPECT_EQ(read_status(c), Status::reservation_conflict);
    }
    // Always allowed: INQUIRY, TEST UNIT READY, READ CAPACITY, REPORT LUNS, PERSISTENT RESERVE IN.
    EXPECT_TRUE(h.in(cdb6(op::kInquiry, 0, 36), 36, &c).good());
    EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &c).good());
    EXPECT_TRUE(h.in({op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8, &c).good());
    EXPECT_TRUE(prin(c, 0).good());
    // Mode select and cache sync are writes.
    EXPECT_EQ(h.none(cdb10(op::kSyncCache10, 0, 0), &c).status, Status::reservation_conflict);
    ASSERT_TRUE(prout(h.a, kClear, 0, 0xa1, 0).good());
    h.clear_ua(&h.b);
  }
}

TEST_F(PrTest, AllRegistrantsAreHolders) {
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  ASSERT_TRUE(prout(h.a, kReserve, 8, 0xa1, 0).good());
  EXPECT_TRUE(prout(h.b, kReserve, 8, 0xb1, 0).good());  // b holds it too
  Reply r = prin(h.a, 1);
  EXPECT_EQ(load_be64(&r.data[8]), 0u);  // key 0 for all-registrants
  // The reservation stays while any registrant is left.
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0xa1, 0).good());
  EXPECT_TRUE(h.lun().reservations().reserved());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0xb1, 0).good());
  EXPECT_FALSE(h.lun().reservations().reserved());
}

TEST_F(PrTest, ClearRaisesReservationsPreempted) {
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  ASSERT_TRUE(prout(h.a, kReserve, 1, 0xa1, 0).good());
  EXPECT_TRUE(prout(h.b, kClear, 0, 0xb1, 0).good());
  EXPECT_TRUE(keys(h.b).empty());
  EXPECT_FALSE(h.lun().reservations().reserved());
  Reply ua = h.none(cdb6(op::kTestUnitReady, 0, 0), &h.a);
  EXPECT_TRUE(ua.is(SenseKey::unit_attention, Asc::reservations_preempted)) << int(ua.key) << " " << int(ua.asc) << "/" << int(ua.ascq);
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &h.b).good());
}

TEST_F(PrTest, PreemptTakesTheReservation) {
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  ASSERT_TRUE(prout(h.a, kReserve, 1, 0xa1, 0).good());
  EXPECT_TRUE(prout(h.b, kPreempt, 3, 0xb1, 0xa1).good());
  EXPECT_EQ(keys(h.b), (std::vector<uint64_t>{0xb1}));
  Reply r = prin(h.b, 1);
  EXPECT_EQ(load_be64(&r.data[8]), 0xb1u);
  EXPECT_EQ(r.data[8 + 13], 3);
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &h.a).is(SenseKey::unit_attention, Asc::registrations_preempted));
  EXPECT_EQ(read_status(h.a), Status::reservation_conflict);
  // Preempting a key nobody has: conflict. Key zero with a reservation that is not ours: invalid.
  EXPECT_EQ(prout(h.b, kPreempt, 3, 0xb1, 0x777).status, Status::reservation_conflict);
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa5).good());
  EXPECT_TRUE(prout(h.b, kPreempt, 3, 0xb1, 0).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
}

TEST_F(PrTest, PreemptWithoutReservationRemovesRegistrations) {
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  EXPECT_TRUE(prout(h.b, kPreempt, 1, 0xb1, 0xa1).good());
  EXPECT_EQ(keys(h.b), (std::vector<uint64_t>{0xb1}));
  EXPECT_FALSE(h.lun().reservations().reserved());
}

TEST_F(PrTest, PreemptAndAbortAbortsThePreemptedNexusTasks) {
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  ASSERT_TRUE(prout(h.a, kReserve, 3, 0xa1, 0).good());
  EXPECT_TRUE(prout(h.b, kPreemptAbort, 3, 0xb1, 0xa1).good());
  EXPECT_EQ(keys(h.b), (std::vector<uint64_t>{0xb1}));
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &h.a).is(SenseKey::unit_attention, Asc::registrations_preempted));
}

TEST_F(PrTest, HolderUnregisteringReleasesAndNotifiesForRegistrantsOnly) {
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  ASSERT_TRUE(prout(h.a, kReserve, 5, 0xa1, 0).good());
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0xa1, 0).good());
  EXPECT_FALSE(h.lun().reservations().reserved());
  EXPECT_TRUE(h.none(cdb6(op::kTestUnitReady, 0, 0), &h.b).is(SenseKey::unit_attention, Asc::reservations_released));
}

TEST_F(PrTest, ReportCapabilitiesAndFullStatus) {
  Reply r = prin(h.a, 2);
  ASSERT_EQ(r.data.size(), 8u);
  EXPECT_EQ(load_be16(&r.data[0]), 8);
  EXPECT_EQ(r.data[3] & 0x80, 0x80);  // TMV
  EXPECT_EQ(load_be16(&r.data[4]), 0xea01);
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.b, kRegister, 0, 0, 0xb1).good());
  ASSERT_TRUE(prout(h.a, kReserve, 1, 0xa1, 0).good());
  r = prin(h.a, 3);
  ASSERT_TRUE(r.good());
  EXPECT_EQ(load_be32(&r.data[4]) + 8, r.data.size());
  const uint8_t* d = &r.data[8];
  EXPECT_EQ(load_be64(d), 0xa1u);
  EXPECT_EQ(d[12] & 1, 1);  // R_HOLDER
  EXPECT_EQ(d[13], 1);
  EXPECT_EQ(load_be16(d + 18), 1);
  uint32_t tid_len = load_be32(d + 20);
  EXPECT_EQ(d[24], 0x45);  // format 01b, iSCSI
  std::string tid(reinterpret_cast<const char*>(d + 28));
  EXPECT_EQ(tid, "iqn.2024-01.test:a,i,0x23d000000001");
  EXPECT_EQ(tid_len % 4, 0u);
  const uint8_t* d2 = d + 24 + tid_len;
  EXPECT_EQ(load_be64(d2), 0xb1u);
  EXPECT_EQ(d2[12] & 1, 0);
}

TEST_F(PrTest, PersistentReservationsSurviveNexusLoss) {
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  ASSERT_TRUE(prout(h.a, kReserve, 3, 0xa1, 0).good());
  h.lun().nexus_lost(h.a);
  ItNexus again = h.a;
  again.id = 99;  // a new session of the same initiator port
  EXPECT_TRUE(can_read(again));
  EXPECT_EQ(read_status(h.b), Status::reservation_conflict);
}

TEST_F(PrTest, LegacyReserveRelease) {
  EXPECT_TRUE(h.none({op::kReserve6, 0, 0, 0, 0, 0}, &h.a).good());
  EXPECT_EQ(read_status(h.b), Status::reservation_conflict);
  EXPECT_EQ(h.none({op::kReserve6, 0, 0, 0, 0, 0}, &h.b).status, Status::reservation_conflict);
  EXPECT_TRUE(h.in(cdb6(op::kInquiry, 0, 36), 36, &h.b).good());
  EXPECT_TRUE(h.none({op::kRelease6, 0, 0, 0, 0, 0}, &h.b).good());  // not the holder: no effect
  EXPECT_EQ(read_status(h.b), Status::reservation_conflict);
  EXPECT_TRUE(can_read(h.a));
  EXPECT_TRUE(h.none({op::kRelease6, 0, 0, 0, 0, 0}, &h.a).good());
  EXPECT_TRUE(can_read(h.b));
  // RESERVE(10) and a LUN reset dropping it.
  EXPECT_TRUE(h.none({op::kReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, &h.b).good());
  EXPECT_EQ(read_status(h.a), Status::reservation_conflict);
  h.lun().reset(ResetKind::lun_reset);
  h.clear_ua(&h.a);
  EXPECT_TRUE(can_read(h.a));
  // With persistent reservation registrations, RESERVE(6) conflicts.
  ASSERT_TRUE(prout(h.a, kRegister, 0, 0, 0xa1).good());
  EXPECT_EQ(h.none({op::kReserve6, 0, 0, 0, 0, 0}, &h.a).status, Status::reservation_conflict);
}

}  // namespace
}  // namespace vcp::scsi::test
