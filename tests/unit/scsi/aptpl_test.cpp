// Persistent reservations kept through a restart (APTPL, SPC-4 5.13.5): a logical unit whose
// shared state has a PrStore (the target's state_dir) reports PTPL_C, keeps what a REGISTER
// with APTPL asked for in its file, and a new state on the same file (the target started again)
// has the registrations and the reservation back. Also the file's text, as hostile input.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "harness.hpp"
#include "target/scsi/pr_store.hpp"
#include "target/scsi/shared_state.hpp"

namespace vcp::scsi::test {
namespace {

constexpr uint8_t kRegister = 0, kReserve = 1, kRegisterIgnore = 6;
constexpr uint8_t kAptpl = 0x01;
constexpr uint8_t kExclusiveAccess = 3, kWriteExclusiveAllRegistrants = 7;
constexpr const char* kSerial = "lu-serial-1";

// One start of the target as far as one LUN goes: a backend, a new shared state that keeps its
// reservations in `path`, and a Lun on it.
struct Unit {
  std::unique_ptr<BlockBackend> backend;
  std::unique_ptr<BackendQueue> queue;
  std::shared_ptr<SharedLuState> shared;
  std::unique_ptr<Lun> lun;
  std::string note;
  bool ok = false;
  std::string error;

  Unit(const std::string& path, const std::string& serial = kSerial) {
    std::string why;
    backend = make_backend("ram:size=4M", &why);
    if (!backend) {
      ADD_FAILURE() << why;
      return;
    }
    auto q = backend->open_queue(0);
    if (!q) {
      ADD_FAILURE() << "open_queue";
      return;
    }
    queue = std::move(*q);
    shared = std::make_shared<SharedLuState>(ModePages{});
    if (!path.empty() && !shared->keep_reservations(std::make_unique<PrStore>(path, serial), &error, &note)) return;
    LunConfig cfg;
    cfg.target_name = "iqn.2024-01.vcp:target";
    lun = std::make_unique<Lun>(cfg, *backend, *queue, shared);
    ok = true;
  }
};

class AptplTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vcp-aptpl-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
    path = pr_store_path(dir, "iqn.2024-01.vcp:Target", 3);
    a = make_nexus(1, "iqn.2024-01.test:a", 0x23d000000001);
    b = make_nexus(2, "iqn.2024-01.test:b", 0x23d000000002);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  static Reply prout(Unit& u, const ItNexus& n, uint8_t action, uint8_t type, uint64_t key, uint64_t sa_key,
                     uint8_t flags = 0) {
    std::vector<uint8_t> cdb = {op::kPrOut, action, type, 0, 0, 0, 0, 0, 24, 0};
    std::vector<uint8_t> p(24, 0);
    store_be64(&p[0], key);
    store_be64(&p[8], sa_key);
    p[20] = flags;
    return run_on(*u.lun, cdb, DataDir::out, 24, p, &n);
  }
  static Reply prin(Unit& u, const ItNexus& n, uint8_t action) {
    return run_on(*u.lun, {op::kPrIn, action, 0, 0, 0, 0, 0, 0x04, 0x00, 0}, DataDir::in, 1024, {}, &n);
  }
  static std::vector<uint64_t> keys(Unit& u, const ItNexus& n) {
    Reply r = prin(u, n, 0);
    std::vector<uint64_t> k;
    for (size_t off = 8; off + 8 <= r.data.size(); off += 8) k.push_back(load_be64(&r.data[off]));
    return k;
  }
  static void clear_ua(Unit& u, const ItNexus& n) {
    for (int i = 0; i < 16; ++i)
      if (run_on(*u.lun, cdb16(op::kTestUnitReady, 0, 0), DataDir::none, 0, {}, &n).good()) return;
    ADD_FAILURE() << "unit attentions never cleared";
  }
  static Status read_status(Unit& u, const ItNexus& n) {
    return run_on(*u.lun, cdb16(op::kRead16, 0, 1), DataDir::in, 512, {}, &n).status;
  }
  bool file_exists() const { return access(path.c_str(), F_OK) == 0; }

  std::string dir, path;
  ItNexus a, b;
};

TEST_F(AptplTest, TheFileIsNamedByTargetAndLun) {
  EXPECT_EQ(path, dir + "/iqn.2024-01.vcp:target.lun3.pr");
  EXPECT_EQ(pr_store_path("/d", "iqn.x/../y Z", 0), "/d/iqn.x_.._y_z.lun0.pr");
}

TEST_F(AptplTest, ARegistrationWithAptplIsKeptThroughARestart) {
  {
    Unit u(path);
    ASSERT_TRUE(u.ok) << u.error;
    EXPECT_TRUE(u.note.empty()) << u.note;
    clear_ua(u, a);
    clear_ua(u, b);
    Reply caps = prin(u, a, 2);
    ASSERT_TRUE(caps.good());
    EXPECT_EQ(caps.data[2] & 0x01, 0x01) << "PTPL_C";
    EXPECT_EQ(caps.data[3] & 0x01, 0x00) << "PTPL_A before any APTPL";
    ASSERT_TRUE(prout(u, a, kRegister, 0, 0, 0xa1, kAptpl).good());
    EXPECT_TRUE(file_exists());
    ASSERT_TRUE(prout(u, b, kRegisterIgnore, 0, 0, 0xb1, kAptpl).good());
    ASSERT_TRUE(prout(u, a, kReserve, kExclusiveAccess, 0xa1, 0).good());
    EXPECT_EQ(prin(u, a, 2).data[3] & 0x01, 0x01) << "PTPL_A";
    EXPECT_EQ(read_status(u, b), Status::reservation_conflict);
  }
  // The target starts again: a new state on the same file.
  Unit u(path);
  ASSERT_TRUE(u.ok) << u.error;
  EXPECT_NE(u.note.find("restored"), std::string::npos) << u.note;
  EXPECT_NE(u.note.find("2 registrations, reserved"), std::string::npos) << u.note;
  clear_ua(u, a);
  clear_ua(u, b);
  EXPECT_EQ(keys(u, b), (std::vector<uint64_t>{0xa1, 0xb1}));
  EXPECT_EQ(load_be32(&prin(u, b, 0).data[0]), 2u) << "the generation";
  Reply r = prin(u, b, 1);
  ASSERT_EQ(load_be32(&r.data[4]), 16u);
  EXPECT_EQ(load_be64(&r.data[8]), 0xa1u) << "the holder's key";
  EXPECT_EQ(r.data[8 + 13], kExclusiveAccess);
  EXPECT_EQ(read_status(u, b), Status::reservation_conflict) << "the reservation holds after the restart";
  EXPECT_EQ(read_status(u, a), Status::good);
  EXPECT_EQ(prin(u, a, 2).data[3] & 0x01, 0x01) << "PTPL_A stays";
  // What the status report says of the LU.
  EXPECT_EQ(u.shared->reservations_summary(),
            "2 PR registrations, reserved (Exclusive Access) by iqn.2024-01.test:a, kept in " + path);
}

TEST_F(AptplTest, TheLastRegisterDecides) {
  {
    Unit u(path);
    ASSERT_TRUE(u.ok) << u.error;
    clear_ua(u, a);
    clear_ua(u, b);
    ASSERT_TRUE(prout(u, a, kRegister, 0, 0, 0xa1, kAptpl).good());
    ASSERT_TRUE(file_exists());
    // APTPL is a register's only: a RESERVE with the bit set neither fails nor changes it.
    ASSERT_TRUE(prout(u, a, kReserve, kExclusiveAccess, 0xa1, 0, kAptpl).good());
    // A register without APTPL: nothing kept from now on, the file goes.
    ASSERT_TRUE(prout(u, b, kRegister, 0, 0, 0xb1).good());
    EXPECT_FALSE(file_exists());
    EXPECT_EQ(prin(u, a, 2).data[3] & 0x01, 0x00) << "PTPL_A";
    EXPECT_EQ(u.shared->reservations_summary(), "2 PR registrations, reserved (Exclusive Access) by iqn.2024-01.test:a");
  }
  Unit u(path);
  ASSERT_TRUE(u.ok) << u.error;
  EXPECT_TRUE(u.note.empty()) << u.note;
  clear_ua(u, a);
  clear_ua(u, b);
  EXPECT_TRUE(keys(u, a).empty());
  EXPECT_EQ(read_status(u, b), Status::good);
}

TEST_F(AptplTest, WithoutAStoreAptplIsRefused) {
  Unit u("");
  ASSERT_TRUE(u.ok);
  clear_ua(u, a);
  EXPECT_EQ(u.shared->reservations_summary(), "");
  EXPECT_EQ(prin(u, a, 2).data[2] & 0x01, 0x00) << "PTPL_C";
  EXPECT_TRUE(prout(u, a, kRegister, 0, 0, 0xa1, kAptpl).is(SenseKey::illegal_request, Asc::invalid_field_in_parameter_list));
  EXPECT_TRUE(keys(u, a).empty());
}

TEST_F(AptplTest, AStateThatCannotBeWrittenFailsTheCommandAndChangesNothing) {
  Unit u(path);
  ASSERT_TRUE(u.ok) << u.error;
  clear_ua(u, a);
  clear_ua(u, b);
  ASSERT_TRUE(prout(u, a, kRegister, 0, 0, 0xa1, kAptpl).good());
  // The new file cannot be made (a directory in its way; root ignores permissions).
  ASSERT_EQ(mkdir((path + ".new").c_str(), 0700), 0);
  Reply r = prout(u, b, kRegister, 0, 0, 0xb1, kAptpl);
  EXPECT_TRUE(r.is(SenseKey::hardware_error, Asc::internal_target_failure));
  EXPECT_EQ(keys(u, a), (std::vector<uint64_t>{0xa1})) << "b's registration was not taken";
  // Nor a change that would end the keeping: a register without APTPL must remove the file.
  ASSERT_EQ(rmdir((path + ".new").c_str()), 0);
  ASSERT_EQ(rename(path.c_str(), (path + ".x").c_str()), 0);
  ASSERT_EQ(mkdir(path.c_str(), 0700), 0);  // unlink() of a directory fails
  EXPECT_TRUE(prout(u, b, kRegister, 0, 0, 0xb1).is(SenseKey::hardware_error, Asc::internal_target_failure));
  EXPECT_EQ(keys(u, a), (std::vector<uint64_t>{0xa1}));
}

TEST_F(AptplTest, AFileThatCannotBeReadFailsTheLunSayingWhere) {
  std::ofstream(path) << "vcp-pr 1\nlu lu-serial-1\ngeneration 1\nregistration zz 1 1 iqn.x\n";
  Unit u(path);
  EXPECT_FALSE(u.ok);
  EXPECT_NE(u.error.find(path + ": line 4: expected 'registration KEY ISID PORT NAME'"), std::string::npos) << u.error;
  EXPECT_NE(u.error.find("move the file away"), std::string::npos) << u.error;
}

TEST_F(AptplTest, AnotherLusFileIsNotRestored) {
  {
    Unit u(path, "old-disk");
    ASSERT_TRUE(u.ok) << u.error;
    clear_ua(u, a);
    ASSERT_TRUE(prout(u, a, kRegister, 0, 0, 0xa1, kAptpl).good());
  }
  Unit u(path, "new-disk");
  ASSERT_TRUE(u.ok) << u.error;
  EXPECT_NE(u.note.find("serial 'old-disk', not this one's ('new-disk'): not restored"), std::string::npos) << u.note;
  clear_ua(u, a);
  EXPECT_TRUE(keys(u, a).empty());
}

// ---- The text, as input that may have been damaged ----

PersistentReservations made_state() {
  PersistentReservations pr;
  pr.set_ptpl_capable(true);
  return pr;
}

TEST(PrStateText, RoundTripsEveryField) {
  struct NoEvents : PrEvents {
    void pr_unit_attention(const Registration&, Asc) override {}
    void pr_abort_tasks(const Registration&) override {}
  } ev;
  PersistentReservations pr = made_state();
  const ItNexus odd = make_nexus(7, "iqn.odd name%with\nnewline\xff", 0xffffffffffff);
  const ItNexus dash = make_nexus(8, "-", 0);
  std::vector<uint8_t> cdb = {op::kPrOut, kRegister, 0, 0, 0, 0, 0, 0, 24, 0};
  std::vector<uint8_t> p(24, 0);
  for (const ItNexus* n : {&odd, &dash}) {
    store_be64(&p[8], n == &odd ? ~0ull : 1);
    p[20] = kAptpl;
    ASSERT_TRUE(pr.out(*n, cdb.data(), p.data(), 24, ev).good());
  }
  cdb[1] = kReserve;
  cdb[2] = kExclusiveAccess;
  store_be64(&p[0], ~0ull);
  ASSERT_TRUE(pr.out(odd, cdb.data(), p.data(), 24, ev).good());

  PrStore store("/nonexistent/x.pr", "serial with space");
  const std::string text = store.file_text(pr);
  PersistentReservations back = made_state();
  std::string serial, error;
  ASSERT_TRUE(PrStore::parse_file(text, &back, &serial, &error)) << error << "\n" << text;
  EXPECT_EQ(serial, "serial with space");
  EXPECT_EQ(back.persisted_text(), pr.persisted_text());
  EXPECT_TRUE(back.ptpl_active());
  EXPECT_EQ(back.generation(), pr.generation());
  EXPECT_EQ(back.registrations(), 2u);
  EXPECT_TRUE(back.registered(odd));
  EXPECT_TRUE(back.registered(dash));
  EXPECT_FALSE(back.conflicts(odd, PrAccess::write)) << "odd holds the reservation";
  EXPECT_TRUE(back.conflicts(dash, PrAccess::read));

  // An all-registrants reservation names no holder.
  PersistentReservations all = made_state();
  ASSERT_TRUE(all.restore_text("generation 4\nregistration 00000000000000a1 000000000001 1 iqn.a\n"
                               "reservation 7 0 0 -\n",
                               &error))
      << error;
  EXPECT_EQ(all.type(), static_cast<PrType>(kWriteExclusiveAllRegistrants));
  EXPECT_EQ(all.persisted_text(), "generation 4\nregistration 00000000000000a1 000000000001 1 iqn.a\nreservation 7 0 0 -\n");
}

TEST(PrStateText, MalformedTextIsRefusedSayingWhereAndChangesNothing) {
  const char* reg = "registration 00000000000000a1 000000000001 1 iqn.a\n";
  const std::pair<std::string, std::string> cases[] = {
      {"", "no 'generation' line"},
      {"generation 1", "line 1: no newline at the end"},
      {"generation x\n", "line 1: expected 'generation N'"},
      {"generation 4294967296\n", "line 1: expected 'generation N'"},
      {"generation 1\ngeneration 2\n", "line 2: a second generation"},
      {"generation 1\nregistration 0 1 1 iqn.a\n", "line 2: a registration with key 0"},
      {"generation 1\nregistration 1 1000000000000 1 iqn.a\n", "line 2: expected 'registration"},
      {"generation 1\nregistration 1 1 65536 iqn.a\n", "line 2: expected 'registration"},
      {"generation 1\nregistration 1 1 1 iqn.a extra\n", "line 2: expected 'registration"},
      {"generation 1\nregistration 1 1 1 iqn%4\n", "line 2: expected 'registration"},
      {"generation 1\nregistration 1 1 1 iqn%zz\n", "line 2: expected 'registration"},
      {"generation 1\nregistration 1 1 1 -\n", "line 2: a registration with no initiator name"},
      {std::string("generation 1\n") + reg + reg, "line 3: a second registration of the same I_T nexus"},
      {std::string("generation 1\n") + reg + "reservation 2 1 1 iqn.a\n", "line 3: expected 'reservation"},
      {std::string("generation 1\n") + reg + "reservation 3 1 1 iqn.b\n", "the reservation's holder is not registered"},
      {"generation 1\nreservation 7 0 0 -\n", "the reservation's holder is not registered"},
      {std::string("generation 1\n") + reg + "reservation 3 1 1 iqn.a\nreservation 3 1 1 iqn.a\n",
       "line 4: a second reservation"},
      {"generation 1\nsomething else\n", "line 2: unknown line 'something'"},
  };
  for (const auto& [text, want] : cases) {
    PersistentReservations pr = made_state();
    std::string error;
    EXPECT_FALSE(pr.restore_text(text, &error)) << text;
    EXPECT_NE(error.find(want), std::string::npos) << "text:\n" << text << "error: " << error;
    EXPECT_EQ(pr.registrations(), 0u);
    EXPECT_FALSE(pr.ptpl_active());
  }
  // Too many registrations.
  std::string many = "generation 1\n";
  for (int i = 0; i <= static_cast<int>(PersistentReservations::kMaxRegistrations); ++i)
    many += "registration 1 " + std::to_string(i) + " 1 iqn.a\n";
  PersistentReservations pr = made_state();
  std::string error;
  EXPECT_FALSE(pr.restore_text(many, &error));
  EXPECT_NE(error.find("more than 128 registrations"), std::string::npos) << error;

  // The file's own lines.
  std::string serial;
  EXPECT_FALSE(PrStore::parse_file("vcp-pr 2\nlu x\ngeneration 1\n", &pr, &serial, &error));
  EXPECT_NE(error.find("not a reservations file of this version"), std::string::npos) << error;
  EXPECT_FALSE(PrStore::parse_file("vcp-pr 1\nserial x\ngeneration 1\n", &pr, &serial, &error));
  EXPECT_NE(error.find("line 2: expected 'lu SERIAL'"), std::string::npos) << error;
  EXPECT_FALSE(PrStore::parse_file("vcp-pr 1\nlu x\ngeneration 1\nbad\n", &pr, &serial, &error));
  EXPECT_NE(error.find("line 4: unknown line 'bad'"), std::string::npos) << error;
}

}  // namespace
}  // namespace vcp::scsi::test
